/*
 * The in-memory index of a random-access image: for each device the
 * clusters that hold data and where their stored blocks lie, and where
 * each extent starts. Built by image.c's pass, saved and loaded by
 * index_file.c. Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_RA_INDEX_H
#define LIBVMA_RA_INDEX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "format.h"

/* One cluster that holds data: 12 bytes, 4-aligned. The offset (48 bits)
 * is where its first stored block lies in the data file (the plain archive
 * or the cache); its other stored blocks follow, in block order. */
struct vmai_ra_entry {
    uint32_t num;     /* cluster number */
    uint16_t mask;    /* stored blocks; never 0 (all-zero clusters have no entry) */
    uint16_t off_hi;
    uint32_t off_lo;
};

/* Offsets must fit the entry's 48 bits (256 TiB of archive). */
#define VMAI_RA_MAX_OFFSET ((uint64_t)1 << 48)

static inline uint64_t vmai_ra_off(const struct vmai_ra_entry *e)
{
    return ((uint64_t)e->off_hi << 32) | e->off_lo;
}

/* One device's entries, sorted by cluster number once the open is done. */
struct vmai_ra_dev {
    struct vmai_ra_entry *e;
    uint64_t count, cap;
    uint64_t size;          /* readable size */
    uint64_t stream_len;    /* vmstate: clusters of the stream seen */
    bool unsorted;          /* an entry came after a higher cluster number */
    /* Salvage mode, disks: the clusters the pass read (the reader's set);
     * a cluster outside it is lost and fails reads. NULL: all present. */
    const struct vmai_cset *present;
    /* Loaded from an index file: one bit per entry, set once the extent
     * header it lies in named it (check_entry() in image.c). NULL: the
     * entries come from this open's own pass. */
    _Atomic uint64_t *checked;
};

struct vmai_ra_index {
    struct vmai_ra_dev dev[VMA_DEV_SLOTS];
    /* Where each extent of the archive (or its decompressed stream)
     * starts, ascending: recorded by the pass when reads go in place, and
     * saved with the index, so that an entry loaded from it can be checked
     * against the extent header it lies in. */
    uint64_t *extents;
    uint64_t extent_count, extent_cap;
};

/* Free all entries, the extent table and the check bits; ix is then
 * empty (and may be filled again). */
void vmai_ra_clear(struct vmai_ra_index *ix);

#endif
