/*
 * The reader's state, shared by reader.c (header, extent stream, rules)
 * and restore.c (targets). Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_READER_INTERNAL_H
#define LIBVMA_READER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "clusterset.h"
#include "format.h"
#include "input.h"
#include "io.h"
#include "vma.h"

struct vmai_clock;
struct vmai_throttle;
struct vmai_target;

struct vma_reader {
    char err[VMAI_ERRLEN];
    int status;                 /* sticky failure, VMA_OK while healthy */
    int fd;
    bool own_fd;
    struct vmai_input *in;      /* bytes of the archive, decompressed */
    struct vmai_cancel cancel;  /* vma_reader_cancel() */
    bool opened;
    bool consumed;              /* the extent stream was read (or tried) */
    bool restored;              /* vma_reader_restore() succeeded */

    unsigned char *header_buf;  /* header_size bytes; hdr points into it */
    struct vmai_header hdr;

    struct vmai_cset seen[VMA_DEV_SLOTS]; /* clusters of each disk read so far */
    size_t seen_mem;                 /* bytes the sets allocated */
    uint64_t vmstate_next[VMA_DEV_SLOTS];
    unsigned char *extent_head;      /* 512 bytes */
    unsigned char *extent_data;      /* 4096-aligned, the largest extent's data so far */
    size_t extent_cap;               /* its size */

    uint64_t offset;            /* archive bytes consumed */
    uint64_t clusters;
    uint64_t zero_cluster_bytes;
    uint64_t zero_block_bytes;

    vma_progress_fn progress;
    void *progress_opaque;

    /* Called after each extent's clusters were handed out, before its
     * buffer is reused (restore flushes its merged writes there). */
    int (*extent_done)(vma_reader *r);

    struct vmai_target *targets[VMA_DEV_SLOTS];
    struct vmai_pending_write {     /* restore: stored blocks not yet written */
        unsigned dev_id;            /* 0: none */
        uint64_t off;
        const unsigned char *data;  /* inside extent_data */
        size_t len;
    } pending;
    struct vmai_throttle *throttles; /* list of bandwidth budgets */
    const struct vmai_clock *clock;  /* of the throttles; NULL: real (tests set one) */
};

/* Record a failure on the handle (first one wins) and return status. */
int vmai_reader_fail(vma_reader *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* vma_reader_open_fd() on len bytes at data, which must outlive the
 * reader: the same checks, decoded in the caller's thread (no descriptor,
 * no threads). For the fuzz targets; a public form would wrap this. */
int vmai_reader_open_memory(vma_reader *r, const void *data, size_t len);

/* Run the extent stream, calling fn per cluster. Used by read and restore. */
int vmai_reader_run(vma_reader *r, vma_cluster_fn fn, void *opaque);

/* The bandwidth budget of dev_id's target (NULL: none), for tests. */
const struct vmai_throttle *vmai_target_throttle(const vma_reader *r, unsigned dev_id);

/* Free targets; remove created files unless the restore succeeded. */
void vmai_targets_free(vma_reader *r);

#endif
