/*
 * The NBD restore target (see restore_nbd.h). Like nbdcopy: many aio
 * requests in flight, bounded by count and bytes; errors come back in
 * completion callbacks and are reported at the next call. A request sends
 * from the caller's buffer while the caller counts it (the restore's
 * extent buffers, taken in turn: the copy cost a qcow2 restore a fifth of
 * its time), else from a copy of its own. Finished request buffers go back
 * to a small pool: a fresh multi-MB malloc per request is an mmap, page
 * faults and an munmap each time, which cost more CPU than the copy itself.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "restore_nbd.h"
#include "vma.h"

#ifdef VMA_HAVE_NBD

#include "libnbd_load.h"

#include "io.h"
#include "nbd.h"

#define MAX_REQUESTS 64u          /* in flight */
#define MAX_BYTES (8u << 20)      /* of data in flight */
#define POOL_BYTES (8u << 20)     /* of idle request buffers kept for reuse */
#define BUF_ROUND (256u << 10)    /* buffer sizes are multiples of this */
#define MAX_ZERO (1u << 30)       /* one write-zeroes request */
#define ZERO_BUF (1u << 20)       /* fallback: zeros written as data */

struct vmai_nbd_target {
    struct vmai_nbd *c;
    struct nbd_handle *h;
    bool can_zero, can_flush;
    uint64_t max_write;           /* the server's largest payload */
    uint64_t in_flight_bytes;
    uint64_t zero_off, zero_len;  /* zero run not yet sent */
    unsigned char *zeros;         /* ZERO_BUF zero bytes, when !can_zero */
    int failed_errno;             /* first request that failed */
    uint64_t failed_off, failed_len;
    bool failed_zero;
    struct request *pool;         /* idle buffers */
    uint64_t pool_bytes;
    struct request *lent;         /* vmai_nbd_target_buffer()'s, not sent yet */
};

struct request {
    struct request *next;         /* in the pool */
    struct vmai_nbd_target *t;
    uint64_t off, len;
    size_t cap;                   /* bytes of data[] */
    bool zero;
    unsigned *refs;               /* a write from the caller's buffer */
    unsigned char data[];         /* a write's own copy */
};

/* A request with room for len bytes: from the pool, else new. */
static struct request *request_get(struct vmai_nbd_target *t, size_t len)
{
    if (len == 0) { /* write-zeroes: no data */
        struct request *q = malloc(sizeof(*q));
        if (q != NULL)
            q->cap = 0;
        return q;
    }
    for (struct request **pp = &t->pool; *pp != NULL; pp = &(*pp)->next) {
        struct request *q = *pp;
        if (q->cap >= len) {
            *pp = q->next;
            t->pool_bytes -= q->cap;
            return q;
        }
    }
    size_t cap = (len + BUF_ROUND - 1) / BUF_ROUND * BUF_ROUND;
    struct request *q = vmai_buffer_new(sizeof(*q) + cap);
    if (q != NULL)
        q->cap = cap;
    return q;
}

static void request_free(struct request *q)
{
    if (q->cap == 0)
        free(q);
    else
        vmai_buffer_free(q, sizeof(*q) + q->cap);
}

/* libnbd is done with a request (its .free): keep the buffer if there is
 * room in the pool. */
static void request_put(void *opaque)
{
    struct request *q = opaque;
    struct vmai_nbd_target *t = q->t;
    if (q->refs != NULL)
        --*q->refs;
    if (q->cap == 0 || t->pool_bytes + q->cap > POOL_BYTES) {
        request_free(q);
        return;
    }
    q->next = t->pool;
    t->pool = q;
    t->pool_bytes += q->cap;
}

static int request_done(void *opaque, int *error)
{
    struct request *q = opaque;
    struct vmai_nbd_target *t = q->t;
    if (!q->zero || t->zeros != NULL)
        t->in_flight_bytes -= q->len;
    if (*error != 0 && t->failed_errno == 0) {
        t->failed_errno = *error;
        t->failed_off = q->off;
        t->failed_len = q->len;
        t->failed_zero = q->zero;
    }
    return 1; /* retire the command */
}

static int request_failed(struct vmai_nbd_target *t, char *err)
{
    /* Requests cut off by a lost connection: say why it was lost. */
    if (t->failed_errno == ENOTCONN || nbd_aio_is_dead(t->h) || nbd_aio_is_closed(t->h))
        return vmai_nbd_fail(t->c, err, "lost the connection to %s",
                             vmai_nbd_server(t->c));
    vmai_errorf(err, "%s of %llu bytes at offset %llu failed: %s",
                t->failed_zero ? "write-zeroes" : "write", (unsigned long long)t->failed_len,
                (unsigned long long)t->failed_off, strerror(t->failed_errno));
    return -1;
}

/* Wait until one more request of len bytes fits in the window. */
static int make_room(struct vmai_nbd_target *t, uint64_t len, char *err)
{
    /* Take the replies that came meanwhile: errors show early, and a
     * throttled restore, whose window never fills, still retires them. */
    if (vmai_nbd_progress(t->c, err) != 0)
        return -1;
    for (;;) {
        if (t->failed_errno != 0)
            return request_failed(t, err);
        int n = nbd_aio_in_flight(t->h);
        if (n >= 0 && (unsigned)n < MAX_REQUESTS &&
            (n == 0 || t->in_flight_bytes + len <= MAX_BYTES))
            return 0;
        if (vmai_nbd_poll(t->c, err) != 0)
            return -1;
    }
}

/* Wait until the window has room for `room` more bytes in flight, then
 * take a request for [off, off + len) with a data buffer of data_len
 * bytes; NULL after a failure, in err. */
static struct request *request_start(struct vmai_nbd_target *t, uint64_t off, uint64_t len,
                                     uint64_t room, size_t data_len, bool zero, char *err)
{
    if (make_room(t, room, err) != 0)
        return NULL;
    struct request *q = request_get(t, data_len);
    if (q == NULL) {
        vmai_errorf(err, "out of memory");
        return NULL;
    }
    q->t = t;
    q->off = off;
    q->len = len;
    q->zero = zero;
    q->refs = NULL;
    return q;
}

/* Queue q, whose off and len are set, as a write of data. */
static int queue_pwrite(struct vmai_nbd_target *t, struct request *q, const void *data,
                        char *err)
{
    nbd_completion_callback cb = {.callback = request_done, .user_data = q, .free = request_put};
    uint64_t len = q->len, off = q->off; /* libnbd frees q through .free on failure too */
    t->in_flight_bytes += len;
    if (nbd_aio_pwrite(t->h, data, len, off, cb, 0) < 0)
        return vmai_nbd_fail(t->c, err, "write of %llu bytes at offset %llu failed",
                             (unsigned long long)len, (unsigned long long)off);
    return 0;
}

/* A write of buf: a copy, unless it is our zeros or the caller counts its
 * requests in refs. */
static int send_write(struct vmai_nbd_target *t, const void *buf, size_t len, uint64_t off,
                      bool zero, unsigned *refs, char *err)
{
    bool copy = buf != t->zeros && refs == NULL;
    struct request *q = request_start(t, off, len, len, copy ? len : 0, zero, err);
    if (q == NULL)
        return -1;
    if (copy)
        memcpy(q->data, buf, len);
    if (refs != NULL) {
        q->refs = refs;
        ++*refs;
    }
    return queue_pwrite(t, q, copy ? q->data : buf, err);
}

unsigned vmai_nbd_target_in_flight(const struct vmai_nbd_target *t)
{
    int n = nbd_aio_in_flight(t->h);
    return n >= 0 ? (unsigned)n : 1; /* dead: a wait says why */
}

int vmai_nbd_target_wait(struct vmai_nbd_target *t, char *err)
{
    if (vmai_nbd_poll(t->c, err) != 0)
        return -1;
    return t->failed_errno != 0 ? request_failed(t, err) : 0;
}

unsigned char *vmai_nbd_target_buffer(struct vmai_nbd_target *t, size_t cap, char *err)
{
    if (cap > t->max_write) {
        vmai_errorf(err, "a write of %zu bytes is more than the server's largest, %llu", cap,
                    (unsigned long long)t->max_write);
        return NULL;
    }
    if (t->lent == NULL && (t->lent = request_start(t, 0, 0, cap, cap, false, err)) == NULL)
        return NULL;
    return t->lent->data;
}

uint64_t vmai_nbd_target_max_write(const struct vmai_nbd_target *t) { return t->max_write; }

int vmai_nbd_target_send(struct vmai_nbd_target *t, size_t len, uint64_t off, char *err)
{
    struct request *q = t->lent;
    t->lent = NULL;
    q->off = off;
    q->len = len;
    return queue_pwrite(t, q, q->data, err); /* room was made when it was lent */
}

/* Send the pending zero run: write-zeroes without NO_HOLE, so qcow2 makes
 * zero clusters (and with --discard=unmap may free space); a server that
 * cannot zero gets zeros as data. */
static int send_zero(struct vmai_nbd_target *t, char *err)
{
    uint64_t off = t->zero_off, len = t->zero_len;
    t->zero_len = 0;
    if (len == 0)
        return 0;
    if (t->zeros != NULL) {
        while (len > 0) {
            size_t n = len < ZERO_BUF ? (size_t)len : ZERO_BUF;
            if (send_write(t, t->zeros, n, off, true, NULL, err) != 0)
                return -1;
            off += n;
            len -= n;
        }
        return 0;
    }
    struct request *q = request_start(t, off, len, 0, 0, true, err);
    if (q == NULL)
        return -1;
    nbd_completion_callback cb = {.callback = request_done, .user_data = q, .free = request_put};
    if (nbd_aio_zero(t->h, len, off, cb, 0) < 0)
        return vmai_nbd_fail(t->c, err, "write-zeroes of %llu bytes at offset %llu failed",
                             (unsigned long long)len, (unsigned long long)off);
    return 0;
}

int vmai_nbd_target_open(struct vmai_nbd_target **out, const char *format, const char *path,
                         unsigned flags, const struct vmai_cancel *cancel, uint64_t *size,
                         char *err)
{
    *out = NULL;
    struct vmai_nbd_target *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        vmai_errorf(err, "out of memory");
        return -1;
    }
    unsigned nflags = 0;
    if (flags & VMA_TARGET_DIRECT)
        nflags |= VMAI_NBD_DIRECT;
    if (flags & VMA_TARGET_SYNC)
        nflags |= VMAI_NBD_SYNC;
    if (flags & VMA_TARGET_WRITE_ZEROS)
        nflags |= VMAI_NBD_DISCARD; /* thin images get the space back, as holes do */
    if (vmai_nbd_open(&t->c, format, path, nflags, cancel, err) != 0) {
        free(t);
        return -1;
    }
    t->h = vmai_nbd_handle(t->c);
    t->can_zero = nbd_can_zero(t->h) == 1;
    t->can_flush = nbd_can_flush(t->h) == 1;
    int64_t max = nbd_get_block_size(t->h, LIBNBD_SIZE_MAXIMUM);
    t->max_write = max > 0 ? (uint64_t)max : (32u << 20);
    if (!t->can_zero && (t->zeros = calloc(1, ZERO_BUF)) == NULL) {
        vmai_nbd_target_free(t);
        vmai_errorf(err, "out of memory");
        return -1;
    }
    *size = vmai_nbd_size(t->c);
    *out = t;
    return 0;
}

int vmai_nbd_target_write(struct vmai_nbd_target *t, const void *buf, size_t len,
                          uint64_t off, unsigned *refs, char *err)
{
    const unsigned char *p = buf;
    while (len > 0) {
        size_t n = len < t->max_write ? len : (size_t)t->max_write;
        if (send_write(t, p, n, off, false, refs, err) != 0)
            return -1;
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

int vmai_nbd_target_zero(struct vmai_nbd_target *t, uint64_t off, uint64_t len, char *err)
{
    if (t->zero_len > 0 && t->zero_off + t->zero_len == off && t->zero_len + len <= MAX_ZERO) {
        t->zero_len += len;
        return 0;
    }
    if (send_zero(t, err) != 0)
        return -1;
    t->zero_off = off;
    t->zero_len = len;
    return 0;
}

int vmai_nbd_target_finish(struct vmai_nbd_target *t, char *err)
{
    if (send_zero(t, err) != 0 || vmai_nbd_drain(t->c, 0, err) != 0)
        return -1;
    if (t->failed_errno != 0)
        return request_failed(t, err);
    if (t->can_flush) {
        int64_t cookie = nbd_aio_flush(t->h, NBD_NULL_COMPLETION, 0);
        if (cookie < 0)
            return vmai_nbd_fail(t->c, err, "flush");
        char why[VMAI_ERRLEN];
        if (vmai_nbd_wait_cookie(t->c, cookie, why, NULL) != 0) {
            vmai_errorf(err, "flush failed: %s", why);
            return -1;
        }
    }
    return vmai_nbd_finish(t->c, err);
}

void vmai_nbd_target_free(struct vmai_nbd_target *t)
{
    if (t == NULL)
        return;
    vmai_nbd_close(t->c); /* hands back the requests still queued */
    if (t->lent != NULL)
        request_free(t->lent);
    while (t->pool != NULL) {
        struct request *q = t->pool;
        t->pool = q->next;
        request_free(q);
    }
    free(t->zeros);
    free(t);
}

#else /* built without libnbd */

int vmai_nbd_target_open(struct vmai_nbd_target **out, const char *format, const char *path,
                         unsigned flags, const struct vmai_cancel *cancel, uint64_t *size,
                         char *err)
{
    (void)format, (void)path, (void)flags, (void)cancel, (void)size;
    *out = NULL;
    vmai_errorf(err, "libvma was built without NBD support (meson -Dnbd=disabled)");
    return -1;
}

int vmai_nbd_target_write(struct vmai_nbd_target *t, const void *buf, size_t len,
                          uint64_t off, unsigned *refs, char *err)
{
    (void)t, (void)buf, (void)len, (void)off, (void)refs;
    vmai_errorf(err, "no NBD support");
    return -1;
}

unsigned vmai_nbd_target_in_flight(const struct vmai_nbd_target *t)
{
    (void)t;
    return 0;
}

int vmai_nbd_target_wait(struct vmai_nbd_target *t, char *err)
{
    (void)t;
    vmai_errorf(err, "no NBD support");
    return -1;
}

unsigned char *vmai_nbd_target_buffer(struct vmai_nbd_target *t, size_t cap, char *err)
{
    (void)t, (void)cap;
    vmai_errorf(err, "no NBD support");
    return NULL;
}

int vmai_nbd_target_send(struct vmai_nbd_target *t, size_t len, uint64_t off, char *err)
{
    (void)t, (void)len, (void)off;
    vmai_errorf(err, "no NBD support");
    return -1;
}

uint64_t vmai_nbd_target_max_write(const struct vmai_nbd_target *t)
{
    (void)t;
    return 0;
}

int vmai_nbd_target_zero(struct vmai_nbd_target *t, uint64_t off, uint64_t len, char *err)
{
    (void)t, (void)off, (void)len;
    vmai_errorf(err, "no NBD support");
    return -1;
}

int vmai_nbd_target_finish(struct vmai_nbd_target *t, char *err)
{
    (void)t;
    vmai_errorf(err, "no NBD support");
    return -1;
}

void vmai_nbd_target_free(struct vmai_nbd_target *t) { (void)t; }

#endif
