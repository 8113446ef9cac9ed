/*
 * Write-behind (see write_behind.h). The restore loop fills a window of
 * WINDOW bytes and posts it; the thread starts its writeback, then waits
 * until the window before it is on disk and drops that one from the page
 * cache. At most one posted window waits for the thread, so dirty data
 * stays under four windows: the one being filled, the posted one, the one
 * being written and the one waited for.
 * SPDX-License-Identifier: MIT
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "write_behind.h"

#define WINDOW (32u << 20)

struct range {
    uint64_t lo, hi; /* hi == lo: none */
};

struct vmai_write_behind {
    int fd;
    struct range filling; /* being written by the restore loop */
    uint64_t filled;      /* bytes written into it */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct range posted;  /* waits for the thread; under lock */
    bool stop;            /* under lock */
    pthread_t thread;
};

static void *writeback_thread(void *arg)
{
    struct vmai_write_behind *w = arg;
    struct range prev = {0, 0};
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->stop && w->posted.hi == w->posted.lo)
            pthread_cond_wait(&w->cond, &w->lock);
        if (w->stop)
            break;
        struct range cur = w->posted;
        w->posted = (struct range){0, 0};
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        /* Errors here are not the restore's: its fsync() reports them. */
        sync_file_range(w->fd, (off_t)cur.lo, (off_t)(cur.hi - cur.lo), SYNC_FILE_RANGE_WRITE);
        if (prev.hi > prev.lo) {
            sync_file_range(w->fd, (off_t)prev.lo, (off_t)(prev.hi - prev.lo),
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER);
            posix_fadvise(w->fd, (off_t)prev.lo, (off_t)(prev.hi - prev.lo),
                          POSIX_FADV_DONTNEED);
        }
        prev = cur;
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

struct vmai_write_behind *vmai_write_behind_new(int fd)
{
    struct vmai_write_behind *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->fd = fd;
    if (pthread_mutex_init(&w->lock, NULL) != 0) {
        free(w);
        return NULL;
    }
    if (pthread_cond_init(&w->cond, NULL) != 0) {
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
    }
    if (pthread_create(&w->thread, NULL, writeback_thread, w) != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
    }
    return w;
}

void vmai_write_behind_add(struct vmai_write_behind *w, uint64_t off, uint64_t len)
{
    struct range *f = &w->filling;
    if (w->filled == 0) {
        *f = (struct range){off, off + len};
    } else {
        f->lo = off < f->lo ? off : f->lo;
        f->hi = off + len > f->hi ? off + len : f->hi;
    }
    w->filled += len;
    if (w->filled < WINDOW)
        return;
    pthread_mutex_lock(&w->lock);
    while (w->posted.hi != w->posted.lo)
        pthread_cond_wait(&w->cond, &w->lock);
    w->posted = *f;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    w->filled = 0;
}

void vmai_write_behind_free(struct vmai_write_behind *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
