/*
 * Random access into an lzop stream by its independent blocks (see
 * lzo_blocks.c). Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_LZO_BLOCKS_H
#define LIBVMA_LZO_BLOCKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vma.h"

struct vmai_lzo_block {
    uint64_t dec_off;   /* where its bytes begin in the decompressed stream */
    uint64_t file_off;  /* where its compressed data begins in the file */
    uint32_t src, dst;  /* compressed and decompressed sizes */
    uint32_t sum;       /* checksum of the decompressed data */
    bool has_sum;
};

struct vmai_lzo_map {
    struct vmai_lzo_block *blocks;  /* 32 bytes per block of 256 KiB */
    size_t count, cap;
    uint32_t flags;                 /* lzop header flags */
    uint32_t max_dst;
    uint64_t size;                  /* decompressed bytes */
};

/* Scan the block headers of the lzop file on fd (its header was already
 * checked by the reader). */
int vmai_lzo_map_scan(int fd, struct vmai_lzo_map **out, char *err, size_t errlen);

/* Read len decompressed bytes at off: decompresses and checks the blocks
 * needed. Thread-safe. */
int vmai_lzo_map_read(const struct vmai_lzo_map *m, int fd, void *buf, size_t len,
                      uint64_t off, char *err, size_t errlen);

void vmai_lzo_map_free(struct vmai_lzo_map *m);

#endif
