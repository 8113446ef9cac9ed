/*
 * The random-access image's state, shared by image.c (index pass, reads)
 * and index_file.c (save and load of <archive>.vmaidx). Internal to libvma.
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_IMAGE_INTERNAL_H
#define LIBVMA_IMAGE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "format.h"
#include "io.h"
#include "block_map.h"
#include "gz_points.h"
#include "vma.h"

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

struct vma_image {
    char err[VMAI_ERRLEN];
    pthread_mutex_t lock;       /* err, after the open */
    vma_reader *r;
    int archive_fd;
    int data_fd;                /* archive_fd, or the cache file */
    struct vmai_block_map *blocks; /* .vma.lzo, seekable .vma.zst: read in place */
    struct vmai_gz_map *gz;     /* .vma.gz read in place by access points */
    struct stat st;             /* of the archive, at open */
    bool opened;
    bool salvage;               /* vma_image_set_salvage() was called */
    int index_state;
    int cb_status;              /* failure inside the index pass's callback */
    char *cache_dir;
    char *index_dir;            /* NULL: <archive>.vmaidx beside it */
    uint64_t index_dir_max;     /* bytes of index files kept there */
    uint64_t cache_pos;         /* bytes of the cache written so far */
    vma_progress_fn progress;
    void *progress_opaque;
    vma_cache_fn notice;
    void *notice_opaque;
    struct vmai_ra_dev dev[VMA_DEV_SLOTS];
    /* Where each extent of the archive (or its decompressed stream)
     * starts, ascending: recorded by the pass when reads go in place, and
     * saved with the index, so that an entry loaded from it can be checked
     * against the extent header it lies in. */
    uint64_t *extents;
    uint64_t extent_count, extent_cap;
    /* An index file found stale or forged by a read: the start of the
     * extent that disagreed (0: none); every later read fails. */
    _Atomic uint64_t bad_extent;
    char *index_path;           /* the loaded index file, to drop it then */
    dev_t index_dev;
    ino_t index_ino;
};

/* Save the index to path atomically (temporary file, rename). Returns
 * VMA_OK or a status with a message in err. */
int vmai_index_save(const vma_image *img, const char *path, char *err, size_t errlen);

/* Load and check the index at path against the open reader and the
 * archive's stat. VMA_ERR_NOT_FOUND when there is no such file; any other
 * failure means the file is refused (err says why). */
int vmai_index_load(vma_image *img, const char *path, char *err, size_t errlen);

/* Free all entries (and the extent table and check bits). */
void vmai_ra_clear(vma_image *img);

#endif
