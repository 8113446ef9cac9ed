/*
 * Sequential reading of a seekable zstd file on several cores. One zstd
 * stream decodes at the speed of one core; a seekable file's frames are
 * independent and the seek table says where each one lies, so workers
 * (one per core, at most POOL_WORKERS) each pread and decode a whole
 * frame, and the reader takes them back in frame order. At most
 * workers + 1 frames are in flight, each at most POOL_MAX_FRAME bytes, so
 * memory stays bounded (about 40 MB with 4 workers and our 4 MiB frames).
 * zstd checks each frame's content checksum when it has one; a frame must
 * decode to exactly the size the table gives it.
 * SPDX-License-Identifier: MIT
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "block_map.h"
#include "io.h"
#include "vma.h"
#include "zst_frames.h"
#include "zst_pool.h"

#define POOL_WORKERS 4
#define POOL_MAX_FRAME (16u << 20) /* larger frames: the one-thread stream */
/* One slot more than workers: the reader hands a slot back as soon as it
 * has taken the frame out, and fewer slots keep the frames in the cache
 * (+2 slots took 15% more CPU for a 270 MB verify). */
#define POOL_SLOTS (POOL_WORKERS + 1)

struct frame_slot {
    unsigned char *data;    /* max_dst bytes, reused (no page faults per frame);
                             * made by the worker that first fills the slot, so
                             * that the workers put the pages in place at once */
    size_t frame;           /* which frame the slot holds */
    bool ready;
    int status;
    char msg[VMAI_ERRLEN];
};

struct vmai_zst_pool {
    int fd;
    const struct vmai_cancel *cancel;
    struct vmai_block_map *map;
    unsigned workers, slots;
    pthread_t thread[POOL_WORKERS];
    unsigned started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct frame_slot slot[POOL_SLOTS];
    size_t next;            /* the next frame a worker takes */
    size_t deliver;         /* the next frame the reader takes */
    bool stop;
    struct frame_slot *cur; /* the frame being handed out */
    size_t cur_len, cur_pos;
};

/* Decode frame i into data (packed: room for its compressed bytes); on
 * failure a message in msg. */
static int decode(struct vmai_zst_pool *p, ZSTD_DCtx *dctx, size_t i, unsigned char *packed,
                  unsigned char *data, char *msg)
{
    const struct vmai_block *f = &p->map->blocks[i];
    int rc = vmai_pread_exact(p->fd, packed, f->src, f->file_off, NULL);
    if (rc != VMA_OK) {
        snprintf(msg, VMAI_ERRLEN, "zstd frame %zu at compressed byte %llu cannot be read", i,
                 (unsigned long long)f->file_off);
    } else {
        size_t got = ZSTD_decompressDCtx(dctx, data, f->dst, packed, f->src);
        if (ZSTD_isError(got) && ZSTD_getErrorCode(got) == ZSTD_error_dstSize_tooSmall) {
            snprintf(msg, VMAI_ERRLEN,
                     "zstd frame %zu at compressed byte %llu decompresses to more than the "
                     "%u bytes the seek table says", i, (unsigned long long)f->file_off, f->dst);
            rc = VMA_ERR_CORRUPT;
        } else if (ZSTD_isError(got)) {
            snprintf(msg, VMAI_ERRLEN, "zstd frame %zu at compressed byte %llu is corrupt: %s", i,
                     (unsigned long long)f->file_off, ZSTD_getErrorName(got));
            rc = VMA_ERR_CORRUPT;
        } else if (got != f->dst) {
            snprintf(msg, VMAI_ERRLEN,
                     "zstd frame %zu at compressed byte %llu decompresses to %zu bytes, "
                     "the seek table says %u", i, (unsigned long long)f->file_off, got, f->dst);
            rc = VMA_ERR_CORRUPT;
        }
    }
    return rc;
}

static void *worker(void *arg)
{
    struct vmai_zst_pool *p = arg;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    unsigned char *packed = vmai_buffer_new(p->map->max_src);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* A frame to do, with a free slot for it (slots turn in order). */
        while (!p->stop && p->next < p->map->count && p->next - p->deliver >= p->slots)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop || p->next >= p->map->count)
            break;
        size_t i = p->next++;
        struct frame_slot *s = &p->slot[i % p->slots]; /* free: the reader is past it */
        pthread_mutex_unlock(&p->mu);
        char msg[VMAI_ERRLEN] = "";
        int rc = dctx == NULL || packed == NULL ? VMA_ERR_NOMEM : VMA_OK;
        if (rc != VMA_OK)
            snprintf(msg, sizeof(msg), "out of memory for a zstd decoder");
        else if (vmai_cancelled(p->cancel))
            rc = VMA_ERR_CANCELED, snprintf(msg, sizeof(msg), "cancelled");
        else if (s->data == NULL && (s->data = vmai_buffer_new(p->map->max_dst)) == NULL)
            rc = VMA_ERR_NOMEM, snprintf(msg, sizeof(msg), "out of memory for a zstd frame");
        else
            rc = decode(p, dctx, i, packed, s->data, msg);
        pthread_mutex_lock(&p->mu);
        s->frame = i, s->status = rc, s->ready = true;
        memcpy(s->msg, msg, sizeof(msg));
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    ZSTD_freeDCtx(dctx);
    vmai_buffer_free(packed, p->map->max_src);
    return NULL;
}

int vmai_zst_pool_start(struct vmai_zst_pool **out, int fd, const struct vmai_cancel *cancel,
                        char *err, size_t errlen)
{
    *out = NULL;
    struct stat st;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 2 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return VMA_ERR_NOT_FOUND;
    struct vmai_block_map *map = NULL;
    int rc = vmai_zst_map_load(fd, (uint64_t)st.st_size, &map, err, errlen);
    if (rc != VMA_OK)
        return VMA_ERR_NOT_FOUND; /* a bad table: the one-thread stream says what is wrong */
    if (map->max_dst > POOL_MAX_FRAME || map->max_src > POOL_MAX_FRAME + (POOL_MAX_FRAME >> 4) ||
        map->count < 2) {
        vmai_block_map_free(map);
        return VMA_ERR_NOT_FOUND;
    }
    struct vmai_zst_pool *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        vmai_block_map_free(map);
        snprintf(err, errlen, "out of memory");
        return VMA_ERR_NOMEM;
    }
    p->fd = fd;
    p->cancel = cancel;
    p->map = map;
    p->workers = cores > POOL_WORKERS ? POOL_WORKERS : (unsigned)cores;
    p->slots = p->workers + 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (unsigned i = 0; i < p->workers; i++) {
        if (vmai_thread_start(&p->thread[i], worker, p) != 0) {
            vmai_zst_pool_free(p);
            snprintf(err, errlen, "cannot start the zstd decoding threads");
            return VMA_ERR_NOMEM;
        }
        p->started++;
    }
    *out = p;
    return VMA_OK;
}

ssize_t vmai_zst_pool_read(struct vmai_zst_pool *p, unsigned char *out, size_t cap, char *err,
                           size_t errlen)
{
    if (p->cur == NULL) {
        pthread_mutex_lock(&p->mu);
        if (p->deliver == p->map->count) {
            pthread_mutex_unlock(&p->mu);
            return 0;
        }
        struct frame_slot *s = &p->slot[p->deliver % p->slots];
        while (!p->stop && !(s->ready && s->frame == p->deliver))
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            snprintf(err, errlen, "stopped");
            return VMA_ERR_CANCELED;
        }
        int rc = s->status;
        if (rc != VMA_OK) {
            snprintf(err, errlen, "%s", s->msg);
            pthread_mutex_unlock(&p->mu);
            return rc;
        }
        p->cur = s, p->cur_len = p->map->blocks[p->deliver].dst, p->cur_pos = 0;
        pthread_mutex_unlock(&p->mu);
    }
    size_t n = p->cur_len - p->cur_pos < cap ? p->cur_len - p->cur_pos : cap;
    if (out != NULL) /* NULL: dropped (vmai_input_read()) */
        memcpy(out, p->cur->data + p->cur_pos, n);
    p->cur_pos += n;
    if (p->cur_pos == p->cur_len) { /* the slot is free for frame deliver + slots */
        pthread_mutex_lock(&p->mu);
        p->cur->ready = false;
        p->cur = NULL;
        p->deliver++;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    return (ssize_t)n;
}

/* Wake the workers and a reader that waits, for good (before they are
 * joined). */
static void pool_stop(struct vmai_zst_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void vmai_zst_pool_free(struct vmai_zst_pool *p)
{
    if (p == NULL)
        return;
    pool_stop(p);
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->thread[i], NULL);
    for (unsigned i = 0; i < POOL_SLOTS; i++)
        vmai_buffer_free(p->slot[i].data, p->map->max_dst);
    vmai_block_map_free(p->map);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
