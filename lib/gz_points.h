/*
 * Random access into a gzip stream by access points (see gz_points.c).
 * Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_GZ_POINTS_H
#define LIBVMA_GZ_POINTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vma.h"

struct vmai_cancel;

/* Output bytes between two access points: a read decompresses at most
 * this much before its first byte. */
#define VMAI_GZ_SPAN (1u << 20)

/* Points lie at deflate block ends, so a long block makes a longer gap; a
 * stream with a gap above this is not read in place (vma_image caches it). */
#define VMAI_GZ_MAX_GAP (8u << 20)

struct vmai_gz_point {
    uint64_t out;       /* decompressed offset */
    uint64_t in;        /* compressed offset of the next whole byte */
    uint8_t bits;       /* bits of the byte before `in` still to use */
    bool member_start;  /* a gzip member begins here: no window */
};

struct vmai_gz_map {
    struct vmai_gz_point *points;
    size_t count, cap;
    int win_fd;         /* point i's window at i * 32 KiB (owned) */
    uint64_t size;      /* decompressed bytes */
    uint64_t max_gap;   /* most decompressed bytes between two points */
    struct vmai_block_cache *cache; /* spans read in part, decoded */
};

/* One inflate pass over the gzip file on fd; windows go to win_fd (an
 * unlinked file, owned by the map on success). */
int vmai_gz_map_build(int fd, int win_fd, const struct vmai_cancel *cancel,
                      struct vmai_gz_map **out, char *err, size_t errlen);

/* Read len decompressed bytes at off. Thread-safe. A span between two
 * points read in part stays decoded (block_map.h's cache), so sequential
 * reads smaller than a span inflate it once. */
int vmai_gz_map_read(const struct vmai_gz_map *m, int fd, void *buf, size_t len, uint64_t off,
                     char *err, size_t errlen);

void vmai_gz_map_free(struct vmai_gz_map *m);

#endif
