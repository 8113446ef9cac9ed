/*
 * The reader's state, shared by reader.c (header, extent stream, rules),
 * salvage.c (the resyncing loop), restore.c (targets), image.c (random
 * access builds its index from the reader's pass) and consumer.c.
 * Internal to libvma.
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_READER_INTERNAL_H
#define LIBVMA_READER_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "clusterset.h"
#include "format.h"
#include "input.h"
#include "io.h"
#include "vma.h"

struct vmai_clock;
struct vmai_salvage;
struct vmai_throttle;
struct vmai_target;

/* Extent buffers a restore to NBD targets takes turns among: with 8 MiB of
 * requests in flight and extents of up to 3.8 MB, four keep qemu-nbd busy. */
#define VMAI_EXTENT_RING 4

struct vma_reader {
    char err[VMAI_ERRLEN];
    int status;                 /* sticky failure, VMA_OK while healthy */
    int fd;
    bool own_fd;
    struct vmai_input *in;      /* bytes of the archive, decompressed */
    const char *codec;          /* its codec's name, kept by vmai_reader_end_input() */
    struct vmai_salvage *salvage; /* salvage mode (salvage.c), NULL: off */
    vma_read_fn read_fn;        /* open_callback's source, or NULL */
    void *read_opaque;
    struct vmai_cancel cancel;  /* vma_reader_cancel() */
    struct vmai_owner owner;    /* the process that made it (vmai_reader_forked()) */
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
    /* A restore to NBD targets sends stored data straight from the extent
     * buffers, so the reader takes turns among extent_ring of them (else
     * 1): the buffers, their sizes, the one in extent_data, and the
     * requests still reading each; extent_reuse waits for those before a
     * buffer is reused. */
    unsigned char *extent_bufs[VMAI_EXTENT_RING];
    size_t extent_caps[VMAI_EXTENT_RING];
    unsigned extent_ring, extent_slot;
    unsigned extent_refs[VMAI_EXTENT_RING];
    int (*extent_reuse)(vma_reader *r, unsigned slot);

    uint64_t offset;            /* archive bytes consumed */
    _Atomic uint64_t clusters;  /* read by vma_reader_counters() from any thread */
    _Atomic uint64_t zero_cluster_bytes;
    _Atomic uint64_t zero_block_bytes;
    /* Bytes inside each device read so far: stored, and zero (blocks not
     * stored or clusters stored all-zero); vma_reader_device_counters(). */
    _Atomic uint64_t dev_stored[VMA_DEV_SLOTS];
    _Atomic uint64_t dev_zero[VMA_DEV_SLOTS];

    vma_progress_fn progress;
    void *progress_opaque;

    /* Called after each extent's clusters were handed out, before its
     * buffer is reused (restore flushes its merged writes there). */
    int (*extent_done)(vma_reader *r);

    struct vmai_target *targets[VMA_DEV_SLOTS];
    struct vmai_pending_write {     /* restore: stored blocks not yet written */
        unsigned dev_id;            /* 0: none */
        uint64_t off;
        const unsigned char *data;  /* inside extent_data or a target's stage */
        size_t len;
    } pending;
    struct vmai_throttle *throttles; /* list of bandwidth budgets */
    const struct vmai_clock *clock;  /* of the throttles; NULL: real (tests set one) */
};

/* Count one cluster of dev_id (its zero mask) in the archive's and the
 * device's counters; called by the reading thread only. Returns the
 * clusters counted so far. */
uint64_t vmai_reader_count_cluster(vma_reader *r, unsigned dev_id, uint32_t cluster, uint16_t mask);

/* Record a failure on the handle (first one wins) and return status. */
int vmai_reader_fail(vma_reader *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Refuse a call (bad argument, a path that cannot be opened): the message
 * is set but the reader stays usable. On an ended reader, its status and
 * first message stay. Returns status. */
int vmai_reader_refuse(vma_reader *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Make extent_data a buffer for the next extent's len bytes (4096-aligned):
 * the same one, or with extent_ring > 1 the next in turn once extent_reuse
 * let it go. */
int vmai_reader_extent_buffer(vma_reader *r, size_t len);

/* Run the extent stream, calling fn per cluster. Used by read and restore. */
int vmai_reader_run(vma_reader *r, vma_cluster_fn fn, void *opaque);

/* VMA_OK in the process that made r; in a child after fork(), refuses
 * (VMA_ERR_INVALID, the message names both processes). */
int vmai_reader_forked(vma_reader *r);

/* No more extents will be read (random access after its pass, or after
 * loading an index file): stop and join the input's read-ahead and
 * decoder threads and free it, keeping only the codec's name. A process
 * that forks later then holds no thread state of ours. */
void vmai_reader_end_input(vma_reader *r);

/* Salvage mode (salvage.c): the header check that may be forced (with
 * salvage off: vmai_header_parse into r->hdr), the extent stream that
 * reads past damage, and freeing its state (NULL is a no-op). */
int vmai_salvage_header(vma_reader *r, const unsigned char *buf, size_t len, char *err,
                        size_t errlen);
int vmai_salvage_run(vma_reader *r, vma_cluster_fn fn, void *opaque);
void vmai_salvage_free(struct vmai_salvage *s);

/* The bandwidth budget of dev_id's target (NULL: none), for tests. */
const struct vmai_throttle *vmai_target_throttle(const vma_reader *r, unsigned dev_id);

/* Free targets; remove created files unless the restore succeeded. */
void vmai_targets_free(vma_reader *r);

#endif
