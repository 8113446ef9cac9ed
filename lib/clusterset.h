/*
 * A set of cluster numbers (0 to 2^32-1) whose memory follows the clusters
 * it holds, not the device size: a small top array sized by the device
 * (one pointer per 2^24 clusters, at most 256), middle nodes of 256 leaf
 * pointers and leaves of 2^16 clusters, each allocated when its first
 * cluster arrives. A leaf is a sorted array of 16-bit offsets while it
 * holds up to 4096 clusters (2 bytes each), then an 8 KiB bitmap (one bit
 * per cluster), and is freed once full: a complete device costs only its
 * directory (2 KiB per 1 TiB).
 * Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_CLUSTERSET_H
#define LIBVMA_CLUSTERSET_H

#include <stddef.h>
#include <stdint.h>

struct vmai_cset_mid;

struct vmai_cset {
    uint64_t count;              /* clusters of the device: 0 to 2^32 */
    uint64_t stored;             /* clusters in the set */
    struct vmai_cset_mid **top;  /* count / 2^24 rounded up, NULL until used */
    size_t *mem;                 /* bytes allocated, shared by several sets */
};

/* Set up an empty set for a device of count clusters (at most 2^32);
 * mem accumulates the bytes the set allocates (the caller's budget).
 * Returns 0, or -1 when out of memory. */
int vmai_cset_init(struct vmai_cset *s, uint64_t count, size_t *mem);

/* Free everything; the set may be initialized again. free of a zeroed
 * struct is a no-op. */
void vmai_cset_free(struct vmai_cset *s);

/* Add cluster n (< count): returns 1 if added, 0 if it was already in the
 * set, -1 when out of memory (the set is unchanged). */
int vmai_cset_insert(struct vmai_cset *s, uint64_t n);

/* 1 if cluster n is in the set, else 0. */
int vmai_cset_contains(const struct vmai_cset *s, uint64_t n);

/* The lowest cluster number below count that is not in the set, or count
 * when every cluster is. */
uint64_t vmai_cset_first_missing(const struct vmai_cset *s);

/* The lowest cluster number from `from` on (below count) that is in the
 * set (want != 0) or not in it (want == 0), or count when there is none.
 * Skips absent and full leaves whole. */
uint64_t vmai_cset_next(const struct vmai_cset *s, uint64_t from, int want);

#endif
