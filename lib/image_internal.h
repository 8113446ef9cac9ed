/*
 * The random-access image's state: image.c (index pass, reads), and the
 * fuzz target of index files. Its index is a vmai_ra_index (ra_index.h),
 * which index_file.c saves and loads. Internal to libvma.
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
#include "index_file.h"
#include "ra_index.h"
#include "vma.h"

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
    struct vmai_ra_index ix;    /* where each cluster's data lies */
    /* An index file found stale or forged by a read: the start of the
     * extent that disagreed (0: none); every later read fails. */
    _Atomic uint64_t bad_extent;
    char *index_path;           /* the loaded index file, to drop it then */
    dev_t index_dev;
    ino_t index_ino;
};

/* Forget the index (entries, extent table, check bits) and that one was
 * refuted: before a load, or after a refused one. */
void vmai_image_index_reset(vma_image *img);

#endif
