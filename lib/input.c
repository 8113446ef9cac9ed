/*
 * The input byte layer: plain, zstd (libzstd), gzip (zlib) or lzop (the
 * lzop container around liblzo2's LZO1X), picked by magic bytes. A
 * compressed stream goes through two threads, each filling a ring of
 * chunks (a bounded queue): one reads the compressed bytes, one decodes
 * them, so that neither the kernel's copy nor the caller's work holds up
 * the decoder, which is what limits the speed. The consumer (the archive
 * reader) copies out of the decoded ring. Each stage stops at the end of
 * its stream or at its first error, which the next stage sees at the same
 * position in the stream. A seekable zstd file read from its start skips
 * both rings: its frames are decoded on several cores (zst_pool.c). An
 * input from memory (fuzzing, embedding) has no descriptor and no
 * threads: the caller's thread decodes on demand, with the same codec
 * code and checks; only the transport differs.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lzo/lzo1x.h>
#define ZLIB_CONST /* next_in points into the read-only raw ring */
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "codec.h"
#include "format.h"
#include "input.h"
#include "io.h"
#include "vma.h"
#include "zst_pool.h"

#define RAW_SIZE (1u << 20)    /* compressed bytes per ring slot */
#define RING_SLOTS 4u
#define SNIFF_LEN 9u
#define DISCARD_SIZE (128u << 10) /* as cat's buffer: fits the L2 cache */
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define CHUNK_SIZE (4u << 20)  /* decompressed bytes per ring slot */
#define LZO_READ_MAX_BLOCK LZO_MAX_BLOCK /* lzop's own limit */
#define ZSTD_WINDOWLOG_OURS 27 /* 128 MiB: zstd's own default limit */
#else
/* fuzz/run.sh's build: under ASan each large buffer costs a shadow
 * memset and page faults, most of a fuzz input's time. Smaller limits
 * there (still above what vma create and lzop write: 2 MiB windows,
 * 256 KiB blocks) keep the same checks, for both paths alike. */
#define CHUNK_SIZE (64u << 10)
#define LZO_READ_MAX_BLOCK (1u << 20)
#define ZSTD_WINDOWLOG_OURS 21
#endif
#define ZSTD_HEAD_MAX 6        /* magic, frame header descriptor, window descriptor */

struct chunk {
    unsigned char *data;
    size_t len;
    bool gap;                     /* salvage: bytes were skipped after these */
    char gap_msg[VMAI_ERRLEN];
};

struct vmai_input;

/* A bounded queue of chunks that one thread fills with fill() and the
 * consumer empties; the state is guarded by mu. */
struct ring {
    ssize_t (*fill)(struct vmai_input *in, unsigned char *out, size_t cap);
    size_t chunk_size;
    struct vmai_input *in;
    char *err;              /* where fill() writes its messages (VMAI_ERRLEN) */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct chunk slot[RING_SLOTS];
    unsigned head, count;   /* the consumer takes slot[head]; count filled */
    bool done, stop;
    int status;             /* fill()'s error, VMA_OK at a clean end */
    size_t cur_pos;         /* the consumer's position in slot[head] */
    bool held;              /* slot[head] is lent out by ring_take() */
    bool gaps;              /* the decoded ring: chunks may end at a gap */
    bool gap_hit;           /* the consumer stopped at a gap (its message:) */
    char gap_msg[VMAI_ERRLEN];
};

struct vmai_input {
    int fd;                 /* -1 for a callback or memory input */
    vmai_read_fn read_fn;   /* the caller's source instead of fd, or NULL */
    void *read_opaque;
    /* An input from memory: compressed bytes are handed to the decoder
     * as read(2) gives a regular file's (the sniffed bytes, then chunks
     * of RAW_SIZE), and decoded into one chunk of CHUNK_SIZE at a time as
     * the ring's filler does, so that messages and the reads where errors
     * show are the descriptor's. No rings, no threads. */
    bool memory;
    const unsigned char *mem;
    size_t mem_len, mem_pos;
    unsigned char *chunk;   /* decoded bytes, as one ring slot */
    size_t chunk_len, chunk_pos;
    bool chunk_done;        /* the decoder ended, with chunk_status */
    int chunk_status;
    bool chunk_gap;         /* salvage: bytes were skipped after the chunk */
    char chunk_gap_msg[VMAI_ERRLEN];
    const struct vmai_cancel *cancel;
    bool may_block;         /* a pipe or the like: reads wait in poll(2) */
    enum vmai_codec codec;

    /* Compressed (or, for plain, sniffed) bytes not yet consumed: the
     * sniffed bytes, then one chunk of the raw ring after another. */
    unsigned char sniff[SNIFF_LEN];
    const unsigned char *raw;
    size_t raw_len, raw_pos;
    bool raw_eof;
    uint64_t raw_total;     /* compressed bytes taken, for messages */

    ZSTD_DCtx *zstd;
    size_t zstd_last;       /* last ZSTD_decompressStream result: 0 = frame end */
    bool zstd_full;         /* that call filled the output: it may hold more */
    uint64_t zstd_frame_at; /* compressed offset where the current frame began */
    unsigned char zstd_head[ZSTD_HEAD_MAX]; /* its first bytes, for messages */
    size_t zstd_head_len;
    z_stream gz;
    bool gz_init, gz_member_done;
    bool gz_padding;        /* in the zeros after the last member */
    unsigned gz_members;    /* members decoded to their end */
    uint64_t gz_member_end; /* compressed offset after the last one */
    uint32_t lzo_flags;
    bool lzo_header_done, lzo_end;
    uint64_t lzo_blocks;    /* blocks begun, for messages */
    uint64_t lzo_block_at;  /* compressed offset of the current block */
    unsigned char *lzo_block, *lzo_packed;
    size_t lzo_len, lzo_pos, lzo_cap;

    struct ring raw_ring;   /* compressed bytes, filled by read_raw() */
    struct ring ring;       /* decoded bytes, filled by produce() */
    int pending;            /* decoder error held back until its bytes are out */
    bool resync;            /* salvage: skip a bad lzop block or zstd frame */
    bool gap;               /* the decoder skipped bytes after what it returned */
    bool lzo_skippable;     /* the failed lzop block's bytes were all read */
    bool zstd_skip;         /* looking for the next zstd frame */
    uint64_t zstd_bad_at;   /* compressed offset of the frame that failed */
    char err[VMAI_ERRLEN];  /* the decoder's (or plain reading's) message */
    int raw_pending;        /* the same for the raw reader */
    uint64_t raw_read;      /* bytes read(2) by the raw reader */
    char raw_err[VMAI_ERRLEN];
    struct vmai_zst_pool *pool; /* seekable zstd file: frames on several cores */
    unsigned char *discard;     /* DISCARD_SIZE bytes for plain reads dropped */
};

/* --- the rings --- */

static void *ring_thread(void *arg)
{
    struct ring *r = arg;
    int old;
    /* Cancellation is only enabled while the raw reader waits for input
     * (poll(2) and read(2)): see read_upto() and vmai_input_free(). */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (r->count == RING_SLOTS && !r->stop)
            pthread_cond_wait(&r->cv, &r->mu);
        bool stop = r->stop;
        struct chunk *c = &r->slot[(r->head + r->count) % RING_SLOTS];
        pthread_mutex_unlock(&r->mu);
        if (stop)
            break;
        /* Each slot's pages are put in place at its first use, here:
         * the first chunk is ready sooner, and page by page faults cost a
         * fifth of a 270 MB .zst verify. */
        ssize_t n;
        if (c->data == NULL && (c->data = vmai_buffer_new(r->chunk_size)) == NULL) {
            snprintf(r->err, VMAI_ERRLEN, "out of memory for the decoded input");
            n = VMA_ERR_NOMEM;
        } else {
            n = r->fill(r->in, c->data, r->chunk_size);
        }
        /* in->gap is the decoder's own (this thread's) state. */
        bool gap = r->gaps && n >= 0 && r->in->gap;
        if (gap) {
            r->in->gap = false;
            snprintf(c->gap_msg, sizeof(c->gap_msg), "%s", r->err);
        }
        pthread_mutex_lock(&r->mu);
        if (n > 0 || gap) {
            c->len = (size_t)n;
            c->gap = gap;
            r->count++;
        } else {
            r->status = n < 0 ? (int)n : VMA_OK;
            r->done = true;
        }
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (n < 0 || (n == 0 && !gap))
            break;
    }
    return NULL;
}

/* Allocate the slots and start the thread that fills them. */
static int ring_start(struct ring *r, struct vmai_input *in, size_t chunk_size,
                      ssize_t (*fill)(struct vmai_input *, unsigned char *, size_t),
                      char *errbuf)
{
    r->in = in;
    r->fill = fill;
    r->chunk_size = chunk_size;
    r->err = errbuf;
    if (vmai_thread_start(&r->thread, ring_thread, r) != 0)
        return VMA_ERR_NOMEM;
    r->started = true;
    return VMA_OK;
}

/* Hand the consumed slot back to the filler. Called with mu held. */
static void ring_advance(struct ring *r)
{
    r->head = (r->head + 1) % RING_SLOTS;
    r->count--;
    r->cur_pos = 0;
    r->held = false;
    pthread_cond_broadcast(&r->cv);
}

/* Wait for a filled slot. Called with mu held; returns false at the end of
 * the stream (or when stopped), with *status the filler's result. */
static bool ring_wait(struct ring *r, int *status)
{
    while (r->count == 0 && !r->done && !r->stop)
        pthread_cond_wait(&r->cv, &r->mu);
    if (r->count > 0)
        return true;
    *status = r->stop ? VMA_ERR_IO : r->status;
    return false;
}

/* Lend out the next filled slot without copying it (the slot lent out
 * before is handed back first). *len is 0 at a clean end. */
static int ring_take(struct ring *r, const unsigned char **data, size_t *len)
{
    int status = VMA_OK;
    pthread_mutex_lock(&r->mu);
    if (r->held)
        ring_advance(r);
    if (ring_wait(r, &status)) {
        r->held = true;
        *data = r->slot[r->head].data;
        *len = r->slot[r->head].len;
    } else {
        *data = NULL;
        *len = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return status;
}

/* Copy up to len bytes out of the ring; fewer only at the end (or, with
 * resync, at a gap or before an error). */
static ssize_t ring_read(struct ring *r, unsigned char *dst, size_t len, char *err,
                         size_t errlen)
{
    size_t got = 0;
    int status = VMA_OK;
    pthread_mutex_lock(&r->mu);
    while (got < len && ring_wait(r, &status)) {
        struct chunk *c = &r->slot[r->head];
        size_t n = c->len - r->cur_pos < len - got ? c->len - r->cur_pos : len - got;
        if (dst != NULL) {
            pthread_mutex_unlock(&r->mu); /* copy without holding the lock */
            memcpy(dst + got, c->data + r->cur_pos, n);
            pthread_mutex_lock(&r->mu);
        }
        got += n;
        r->cur_pos += n;
        if (r->cur_pos == c->len) {
            bool gap = c->gap;
            if (gap) { /* stop here: the caller must learn of the gap */
                r->gap_hit = true;
                memcpy(r->gap_msg, c->gap_msg, sizeof(r->gap_msg));
            }
            ring_advance(r);
            if (gap)
                break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    /* Salvage keeps what was decoded before an error: a short read now,
     * the error (still the ring's) at the next one. */
    if (status != VMA_OK && (got == 0 || !r->in->resync)) {
        snprintf(err, errlen, "%s", r->err);
        return status;
    }
    return (ssize_t)got;
}

/* Ask the filler to stop, and wait for it. With `cancel`, a filler waiting
 * for an idle pipe is cancelled there. */
static void ring_stop(struct ring *r, bool cancel)
{
    if (!r->started)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (cancel)
        pthread_cancel(r->thread);
    pthread_join(r->thread, NULL);
    r->started = false;
}

static void ring_free(struct ring *r)
{
    for (unsigned i = 0; i < RING_SLOTS; i++)
        vmai_buffer_free(r->slot[i].data, r->chunk_size);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

/* --- bytes from the descriptor --- */

/* An error after some bytes were produced: hand out the bytes now and the
 * error on the next call, so it shows at its place in the stream. */
static ssize_t fail_after(int *pending, int status, size_t done)
{
    if (done == 0)
        return status;
    *pending = status;
    return (ssize_t)done;
}

/* One read from the source: the descriptor, or the caller's callback
 * (which a cancel cannot interrupt: it is checked before each call). */
static ssize_t source_read(const struct vmai_input *in, void *buf, size_t len)
{
    if (in->read_fn == NULL)
        return vmai_read_some(in->fd, buf, len, in->cancel, in->may_block);
    if (vmai_cancelled(in->cancel)) {
        errno = ECANCELED;
        return -1;
    }
    errno = 0;
    ssize_t n = in->read_fn(in->read_opaque, buf, len);
    if (n < 0 && errno == 0)
        errno = EIO;
    return n > (ssize_t)len ? (errno = EIO, -1) : n;
}

/* read(2) into out[*done..cap) until it is full or the file ends (*eof),
 * or after one successful read(2) when `once`. Returns 0, or -1 with errno
 * set (ECANCELED once the caller's switch is set). Only the raw reader
 * thread is cancellable by vmai_input_free(), and only while it waits for
 * data: the consumer may stop early while a pipe writer is idle. */
static int read_upto(const struct vmai_input *in, unsigned char *out, size_t cap, bool once,
                     size_t *done, bool *eof)
{
    /* Never unwind through a caller's callback. */
    bool cancellable = once && in->read_fn == NULL;
    while (*done < cap && !*eof) {
        int old;
        if (cancellable)
            pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
        ssize_t n = source_read(in, out + *done, cap - *done);
        int saved = errno;
        if (cancellable)
            pthread_setcancelstate(old, &old);
        if (n < 0) {
            errno = saved;
            return -1;
        }
        *eof = n == 0;
        *done += (size_t)n;
        if (once)
            break;
    }
    return 0;
}

/* Say why read_upto() failed, after raw_read bytes; returns the status. */
static int read_failed(const struct vmai_input *in, char *err)
{
    if (errno == ECANCELED) {
        vmai_errorf(err, "cancelled");
        return VMA_ERR_CANCELED;
    }
    vmai_errorf(err, "read error after %llu input bytes: %s", (unsigned long long)in->raw_read,
                strerror(errno));
    return VMA_ERR_IO;
}

/* The raw ring's filler: compressed bytes as they come, one read(2) per
 * chunk, so that what a slow pipe writer sent is decoded at once. */
static ssize_t read_raw(struct vmai_input *in, unsigned char *out, size_t cap)
{
    if (in->raw_pending != VMA_OK)
        return in->raw_pending;
    size_t done = 0;
    bool eof = false;
    int rc = read_upto(in, out, cap, true, &done, &eof);
    in->raw_read += done;
    return rc != 0 ? fail_after(&in->raw_pending, read_failed(in, in->raw_err), done)
                   : (ssize_t)done;
}

/* The decoder's next compressed bytes, once the current ones are used up:
 * the next chunk of the raw ring, taken without a copy. */
static int raw_fill(struct vmai_input *in)
{
    if (in->raw_pos < in->raw_len || in->raw_eof)
        return VMA_OK;
    if (in->memory) { /* the next chunk, as read_raw() would get it */
        size_t n = in->mem_len - in->mem_pos < RAW_SIZE ? in->mem_len - in->mem_pos : RAW_SIZE;
        in->raw = n > 0 ? in->mem + in->mem_pos : in->sniff;
        in->mem_pos += n;
        in->raw_pos = 0;
        in->raw_len = n;
        in->raw_total += n;
        in->raw_eof = n == 0;
        return VMA_OK;
    }
    const unsigned char *data;
    size_t len;
    int rc = ring_take(&in->raw_ring, &data, &len);
    if (rc != VMA_OK) {
        vmai_errorf(in->err, "%s", in->raw_err);
        return rc;
    }
    in->raw = data != NULL ? data : in->sniff; /* never NULL: raw + 0 must be valid */
    in->raw_pos = 0;
    in->raw_len = len;
    in->raw_total += len;
    in->raw_eof = len == 0;
    return VMA_OK;
}

/* True when the decoder has used up its compressed bytes and the raw ring
 * has none ready: a decoder holding some output then hands it out rather
 * than wait, so that a reader of a slow pipe sees each byte as it comes. */
static bool raw_waiting(struct vmai_input *in)
{
    if (in->memory || in->raw_pos < in->raw_len || in->raw_eof)
        return false;
    struct ring *r = &in->raw_ring;
    pthread_mutex_lock(&r->mu);
    bool waiting = r->count == (r->held ? 1u : 0u) && !r->done;
    pthread_mutex_unlock(&r->mu);
    return waiting;
}

/* Exactly len compressed bytes (lzop framing). */
static int raw_get(struct vmai_input *in, void *dst, size_t len, const char *what)
{
    unsigned char *d = dst;
    while (len > 0) {
        int rc = raw_fill(in);
        if (rc != VMA_OK)
            return rc;
        if (in->raw_eof) {
            vmai_errorf(in->err, "lzop stream truncated in %s after %llu compressed bytes", what,
                        (unsigned long long)in->raw_total);
            return VMA_ERR_TRUNCATED;
        }
        size_t n = in->raw_len - in->raw_pos;
        n = n < len ? n : len;
        memcpy(d, in->raw + in->raw_pos, n);
        in->raw_pos += n;
        d += n;
        len -= n;
    }
    return VMA_OK;
}

/* A plain archive, read in the caller's thread: the sniffed bytes, then
 * read(2) straight into the caller's buffer. */
static ssize_t produce_plain(struct vmai_input *in, unsigned char *out, size_t cap)
{
    size_t done = 0;
    if (in->raw_pos < in->raw_len) {
        done = in->raw_len - in->raw_pos < cap ? in->raw_len - in->raw_pos : cap;
        memcpy(out, in->raw + in->raw_pos, done);
        in->raw_pos += done;
    }
    size_t sniffed = done;
    int rc = read_upto(in, out, cap, false, &done, &in->raw_eof);
    in->raw_read += done - sniffed;
    return rc != 0 ? fail_after(&in->pending, read_failed(in, in->err), done) : (ssize_t)done;
}

/* --- codecs: each fills out[0..cap) and returns bytes, 0 at the end --- */

/* The decoder has used up its compressed bytes: take the next ones. When
 * none are ready and it holds `produced` bytes of output, it hands those
 * out first (returns 1), so that a reader of a slow pipe sees each byte
 * as soon as it arrives. Else VMA_OK or a negative status. */
static int raw_more(struct vmai_input *in, size_t produced)
{
    if (produced > 0 && raw_waiting(in))
        return 1;
    return raw_fill(in);
}

/* The compressed offset of the decoder's next input byte. */
static uint64_t raw_offset(const struct vmai_input *in)
{
    return in->raw_total - in->raw_len + in->raw_pos;
}

/* Keep the first bytes of the current zstd frame, for the message of a
 * frame refused for its window. */
static void zstd_keep_head(struct vmai_input *in, const unsigned char *p, size_t n)
{
    while (n-- > 0 && in->zstd_head_len < ZSTD_HEAD_MAX)
        in->zstd_head[in->zstd_head_len++] = *p++;
}

/* A frame whose window is over our limit: say so, with its size and how
 * to read it anyway (zstd's own message is "requires too much memory"). */
static void zstd_window_error(struct vmai_input *in)
{
    const unsigned char *h = in->zstd_head;
    char size[64] = "a window";
    /* RFC 8878 3.1.1.1: the window descriptor follows the frame header
     * descriptor unless Single_Segment_flag (bit 5) is set. */
    if (in->zstd_head_len == ZSTD_HEAD_MAX && !(h[4] & 0x20)) {
        unsigned log = 10u + (h[5] >> 3);
        unsigned long long base = 1ull << log;
        unsigned long long window = base + base / 8 * (h[5] & 7u);
        snprintf(size, sizeof(size), "a %llu MiB window", window >> 20);
    }
    vmai_errorf(in->err,
                "zstd frame at compressed byte %llu needs %s, over the %u MiB that vma "
                "decodes (written with --long?): read it with "
                "'zstd -dc --long=31 <archive> | vma <command> -'",
                (unsigned long long)in->zstd_frame_at, size, (1u << ZSTD_WINDOWLOG_OURS) >> 20);
}

/* Salvage: after a corrupt frame, skip to the next zstd frame magic in
 * the compressed bytes. Returns 1 when found (raw_pos is at it), 0 when
 * more input is needed (everything before was dropped). */
static int zstd_find_frame(struct vmai_input *in)
{
    const unsigned char *p = NULL;
    while (in->raw_pos < in->raw_len) {
        p = memmem(in->raw + in->raw_pos, in->raw_len - in->raw_pos, zstd_magic,
                   sizeof(zstd_magic));
        if (p == NULL || raw_offset(in) + (size_t)(p - in->raw - in->raw_pos) != in->zstd_bad_at)
            break;
        in->raw_pos = (size_t)(p - in->raw) + 1; /* not the frame that failed again */
        p = NULL;
    }
    if (p == NULL) {
        in->raw_pos = in->raw_len; /* a magic across two chunks costs one frame more */
        return 0;
    }
    in->raw_pos = (size_t)(p - in->raw);
    in->zstd_skip = false;
    in->zstd_frame_at = raw_offset(in);
    in->zstd_head_len = 0;
    return 1;
}

/* Salvage: how many compressed bytes the next ZSTD_decompressStream()
 * call may have. A failing call hands out nothing, not even what it
 * flushed before the error, and a frame that is all in is decoded in one
 * pass: so each call either flushes what the decoder holds (no input:
 * the last call filled the output) or takes one step of the frame, at
 * most the size its last return value hints, less the next block
 * header's 3 bytes (a frame's start: its magic and descriptor). What was
 * decoded before an error then all comes out, as zstd -dc writes it. */
static size_t zstd_step(const struct vmai_input *in)
{
    if (in->zstd_full)
        return 0;
    if (in->zstd_last == 0)
        return 5;
    return in->zstd_last > 3 ? in->zstd_last - 3 : in->zstd_last;
}

static ssize_t produce_zstd(struct vmai_input *in, unsigned char *out, size_t cap)
{
    ZSTD_outBuffer ob = {out, cap, 0};
    while (in->zstd_skip && !zstd_find_frame(in)) {
        if (in->raw_eof)
            return 0;
        int rc = raw_more(in, 0);
        if (rc != VMA_OK && rc != 1)
            return rc;
    }
    /* Decompress first, even from no new input: zstd may hold output that
     * did not fit last time. Skippable frames (at the start, between
     * frames) and concatenated frames are libzstd's business. */
    while (ob.pos < ob.size) {
        ZSTD_inBuffer ib = {in->raw, in->raw_len, in->raw_pos};
        size_t before = ob.pos, before_in = ib.pos;
        if (in->resync && zstd_step(in) < ib.size - ib.pos)
            ib.size = ib.pos + zstd_step(in);
        size_t ret = ZSTD_decompressStream(in->zstd, &ob, &ib);
        in->zstd_full = ob.pos == ob.size;
        if (ZSTD_isError(ret)) {
            if (ZSTD_getErrorCode(ret) == ZSTD_error_frameParameter_windowTooLarge) {
                zstd_keep_head(in, in->raw + before_in, in->raw_len - before_in);
                zstd_window_error(in);
                in->raw_pos = ib.pos;
                return fail_after(&in->pending, VMA_ERR_LIMIT, ob.pos);
            }
            vmai_errorf(in->err, "zstd stream corrupt near compressed byte %llu: %s",
                        (unsigned long long)(raw_offset(in) + (ib.pos - before_in)),
                        ZSTD_getErrorName(ret));
            in->raw_pos = ib.pos;
            if (in->resync) { /* the frame is lost; go on at the next one */
                size_t n = strlen(in->err);
                snprintf(in->err + n, sizeof(in->err) - n,
                         "; the rest of the zstd frame at compressed byte %llu skipped (what "
                         "came out of it is unproven: its checksum comes at its end)",
                         (unsigned long long)in->zstd_frame_at);
                ZSTD_DCtx_reset(in->zstd, ZSTD_reset_session_only);
                in->zstd_bad_at = in->zstd_frame_at;
                in->zstd_last = 0;
                in->zstd_skip = true;
                in->gap = true;
                return (ssize_t)ob.pos;
            }
            return fail_after(&in->pending, VMA_ERR_CORRUPT, ob.pos);
        }
        zstd_keep_head(in, in->raw + before_in, ib.pos - before_in);
        in->raw_pos = ib.pos;
        /* 0 means "a frame ended here"; a call on empty input after that
         * returns a hint for the next frame, which is not truncation. */
        if (ob.pos != before || ib.pos != before_in) {
            in->zstd_last = ret;
            if (ret == 0) {
                in->zstd_frame_at = raw_offset(in);
                in->zstd_head_len = 0;
            }
        }
        if (ob.pos == ob.size || in->raw_pos < in->raw_len)
            continue;
        if (in->raw_eof)
            break; /* nothing buffered, nothing left */
        int rc = raw_more(in, ob.pos);
        if (rc == 1)
            break;
        if (rc != VMA_OK)
            return fail_after(&in->pending, rc, ob.pos);
    }
    if (ob.pos == 0 && in->zstd_last != 0) {
        vmai_errorf(in->err, "zstd stream truncated after %llu compressed bytes (in the frame "
                             "at compressed byte %llu)",
                    (unsigned long long)in->raw_total, (unsigned long long)in->zstd_frame_at);
        return VMA_ERR_TRUNCATED;
    }
    return (ssize_t)ob.pos;
}

static ssize_t produce_gzip(struct vmai_input *in, unsigned char *out, size_t cap)
{
    in->gz.next_out = out;
    in->gz.avail_out = (uInt)cap;
    while (in->gz.avail_out > 0) {
        int rc;
        if (in->gz_member_done) {
            if (in->raw_pos == in->raw_len) {
                if (in->raw_eof)
                    break; /* the end, after a whole member */
                if ((rc = raw_more(in, cap - in->gz.avail_out)) == 1)
                    break;
                if (rc != VMA_OK)
                    return fail_after(&in->pending, rc, cap - in->gz.avail_out);
                continue;
            }
            /* After a member: another member (gzip -c a b, cat a.gz b.gz),
             * or zeros up to the end (a copy padded to a tape or device
             * block), which gzip -dc accepts too. Nothing else. */
            unsigned char c = in->raw[in->raw_pos];
            if (in->gz_padding || c == 0) {
                in->gz_padding = true;
                const unsigned char *p = in->raw + in->raw_pos;
                size_t n = in->raw_len - in->raw_pos, i = 0;
                while (i < n && p[i] == 0)
                    i++;
                in->raw_pos += i;
                if (i == n)
                    continue;
                vmai_errorf(in->err,
                            "gzip: non-zero byte at compressed byte %llu in the padding after "
                            "the member ending at compressed byte %llu",
                            (unsigned long long)raw_offset(in),
                            (unsigned long long)in->gz_member_end);
                return fail_after(&in->pending, VMA_ERR_CORRUPT, cap - in->gz.avail_out);
            }
            if (c != gzip_magic[0]) {
                vmai_errorf(in->err,
                            "gzip: data at compressed byte %llu after the member ending there "
                            "is neither another gzip member nor zero padding",
                            (unsigned long long)raw_offset(in));
                return fail_after(&in->pending, VMA_ERR_CORRUPT, cap - in->gz.avail_out);
            }
            inflateReset(&in->gz);
            in->gz_member_done = false;
        }
        /* Inflate first, even from no new input: zlib may hold output that
         * did not fit last time. */
        in->gz.next_in = in->raw + in->raw_pos;
        in->gz.avail_in = (uInt)(in->raw_len - in->raw_pos);
        int zr = inflate(&in->gz, Z_NO_FLUSH);
        in->raw_pos = in->raw_len - in->gz.avail_in;
        if (zr == Z_STREAM_END) {
            in->gz_member_done = true;
            in->gz_members++;
            in->gz_member_end = raw_offset(in);
        } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
            const char *why = in->gz.msg ? in->gz.msg : "inflate failed";
            if (in->gz_members > 0 && in->gz.total_out == 0)
                vmai_errorf(in->err,
                            "gzip: data after the member ending at compressed byte %llu is "
                            "neither another gzip member nor zero padding (%s)",
                            (unsigned long long)in->gz_member_end, why);
            else
                vmai_errorf(in->err, "gzip stream corrupt near compressed byte %llu: %s",
                            (unsigned long long)raw_offset(in), why);
            return fail_after(&in->pending, VMA_ERR_CORRUPT, cap - in->gz.avail_out);
        }
        if (in->gz.avail_out == 0 || in->raw_pos < in->raw_len || in->gz_member_done)
            continue;
        /* zlib wants more input */
        if (in->raw_eof) {
            vmai_errorf(in->err, "gzip stream truncated after %llu compressed bytes",
                        (unsigned long long)in->raw_total);
            return fail_after(&in->pending, VMA_ERR_TRUNCATED, cap - in->gz.avail_out);
        }
        if ((rc = raw_more(in, cap - in->gz.avail_out)) == 1)
            break;
        if (rc != VMA_OK)
            return fail_after(&in->pending, rc, cap - in->gz.avail_out);
    }
    return (ssize_t)(cap - in->gz.avail_out);
}

/* Read one lzop header field of n bytes, adding it to the header checksum. */
static int lzo_field(struct vmai_input *in, unsigned char *buf, size_t n, uLong *adler,
                     uLong *crc)
{
    int rc = raw_get(in, buf, n, "the header");
    if (rc == VMA_OK) {
        *adler = adler32(*adler, buf, (uInt)n);
        *crc = crc32(*crc, buf, (uInt)n);
    }
    return rc;
}

static int lzo_header(struct vmai_input *in)
{
    unsigned char b[256];
    uLong adler = adler32(0, NULL, 0), crc = crc32(0, NULL, 0);
    int rc = raw_get(in, b, sizeof(lzop_magic), "the magic");
    if (rc != VMA_OK || (rc = lzo_field(in, b, 4, &adler, &crc)) != VMA_OK)
        return rc;
    unsigned version = (unsigned)b[0] << 8 | b[1];
    if (version >= LZOP_VERSION_NEW_HEADER) { /* version needed to extract */
        if ((rc = lzo_field(in, b, 2, &adler, &crc)) != VMA_OK)
            return rc;
        unsigned needed = (unsigned)b[0] << 8 | b[1];
        if (needed > LZOP_VERSION_MAX) {
            vmai_errorf(in->err, "lzop file needs lzop version %x.%03x to extract (supported: "
                                 "up to 1.040)", needed >> 12, needed & 0xfffu);
            return VMA_ERR_CORRUPT;
        }
    }
    if ((rc = lzo_field(in, b, version >= LZOP_VERSION_NEW_HEADER ? 2 : 1, &adler, &crc)) != VMA_OK)
        return rc;
    if (b[0] < 1 || b[0] > 3) { /* 1-3: LZO1X-1, LZO1X-1(15), LZO1X-999 */
        vmai_errorf(in->err, "lzop method %u not supported (only the LZO1X methods 1-3)", b[0]);
        return VMA_ERR_CORRUPT;
    }
    if ((rc = lzo_field(in, b, 4, &adler, &crc)) != VMA_OK)
        return rc;
    in->lzo_flags = vmai_get_be32(b);
    /* What lzop itself refuses, refused as clearly. */
    if (in->lzo_flags & LZOP_RESERVED) {
        vmai_errorf(in->err, "lzop header has unknown flags 0x%x",
                    in->lzo_flags & LZOP_RESERVED);
        return VMA_ERR_CORRUPT;
    }
    /* LZOP_MULTIPART only marks a file as one part of several: lzop
     * decodes it (with a warning), and so do we; a part that is not the
     * whole archive then ends early, which the reader reports. */
    if (in->lzo_flags & LZOP_FILTER) {
        if ((rc = lzo_field(in, b, 4, &adler, &crc)) != VMA_OK)
            return rc;
        if (vmai_get_be32(b) != 0) {
            vmai_errorf(in->err, "lzop filter %u not supported", vmai_get_be32(b));
            return VMA_ERR_CORRUPT;
        }
    }
    /* mode, mtime (low, and high from 0.94 on), name length, name */
    if ((rc = lzo_field(in, b, version >= LZOP_VERSION_NEW_HEADER ? 13 : 9, &adler, &crc)) != VMA_OK)
        return rc;
    size_t name_len = b[version >= LZOP_VERSION_NEW_HEADER ? 12 : 8];
    if ((rc = lzo_field(in, b, name_len, &adler, &crc)) != VMA_OK)
        return rc;
    uint32_t want = (in->lzo_flags & LZOP_H_CRC32) ? (uint32_t)crc : (uint32_t)adler;
    if ((rc = raw_get(in, b, 4, "the header")) != VMA_OK)
        return rc;
    if (vmai_get_be32(b) != want) {
        vmai_errorf(in->err, "lzop header checksum mismatch");
        return VMA_ERR_CORRUPT;
    }
    if (in->lzo_flags & LZOP_EXTRA_FIELD) {
        /* length, data, and a checksum of both (the header's kind): the
         * data means nothing to us, its checksum is still checked */
        adler = adler32(0, NULL, 0), crc = crc32(0, NULL, 0);
        if ((rc = lzo_field(in, b, 4, &adler, &crc)) != VMA_OK)
            return rc;
        for (uint32_t left = vmai_get_be32(b); left > 0 && rc == VMA_OK;) {
            size_t n = left < sizeof(b) ? left : sizeof(b);
            rc = lzo_field(in, b, n, &adler, &crc);
            left -= (uint32_t)n;
        }
        want = (in->lzo_flags & LZOP_H_CRC32) ? (uint32_t)crc : (uint32_t)adler;
        if (rc != VMA_OK || (rc = raw_get(in, b, 4, "the header")) != VMA_OK)
            return rc;
        if (vmai_get_be32(b) != want) {
            vmai_errorf(in->err, "lzop header extra field checksum mismatch");
            return VMA_ERR_CORRUPT;
        }
    }
    return rc;
}

/* Block number (from 0) and offset of the current lzop block, for messages. */
#define LZO_WHERE(in) (unsigned long long)((in)->lzo_blocks - 1), \
                      (unsigned long long)(in)->lzo_block_at

/* raw_get() for a part of the current block: a truncation names it. */
static int lzo_get(struct vmai_input *in, void *dst, size_t len, const char *what)
{
    int rc = raw_get(in, dst, len, what);
    if (rc == VMA_ERR_TRUNCATED)
        vmai_errorf(in->err,
                    "lzop stream truncated in %s of block %llu at compressed byte %llu "
                    "(%llu compressed bytes in all)",
                    what, LZO_WHERE(in), (unsigned long long)in->raw_total);
    return rc;
}

/* Decode the next lzop block into lzo_block; sets lzo_end at the end mark. */
static int lzo_block(struct vmai_input *in)
{
    unsigned char b[8];
    in->lzo_block_at = raw_offset(in);
    in->lzo_blocks++;
    int rc = lzo_get(in, b, 4, "the header");
    if (rc != VMA_OK)
        return rc;
    uint32_t dst_len = vmai_get_be32(b);
    if (dst_len == 0) {
        in->lzo_end = true;
        return VMA_OK;
    }
    if ((rc = lzo_get(in, b, 4, "the header")) != VMA_OK)
        return rc;
    uint32_t src_len = vmai_get_be32(b);
    if (dst_len > LZO_READ_MAX_BLOCK || src_len > dst_len || src_len == 0) {
        vmai_errorf(in->err, "lzop block %llu at compressed byte %llu: sizes %u -> %u are invalid",
                    LZO_WHERE(in), src_len, dst_len);
        return VMA_ERR_CORRUPT;
    }
    uint32_t sum_d = 0;
    unsigned nd = !!(in->lzo_flags & LZOP_ADLER32_D) + !!(in->lzo_flags & LZOP_CRC32_D);
    unsigned nc = src_len < dst_len ? !!(in->lzo_flags & LZOP_ADLER32_C) +
                                          !!(in->lzo_flags & LZOP_CRC32_C) : 0;
    for (unsigned i = 0; i < nd + nc; i++) {
        if ((rc = lzo_get(in, b, 4, "the checksum")) != VMA_OK)
            return rc;
        if (i == 0)
            sum_d = vmai_get_be32(b); /* the first data checksum is the one we check */
    }
    if (dst_len > in->lzo_cap) { /* lzop writes 256 KiB blocks; grow only as needed */
        free(in->lzo_block);
        free(in->lzo_packed);
        in->lzo_block = malloc(dst_len);
        in->lzo_packed = malloc(dst_len);
        in->lzo_cap = in->lzo_block && in->lzo_packed ? dst_len : 0;
        if (in->lzo_cap == 0) {
            vmai_errorf(in->err, "out of memory for a %u-byte lzop block", dst_len);
            return VMA_ERR_NOMEM;
        }
    }
    if (src_len == dst_len) { /* stored */
        rc = lzo_get(in, in->lzo_block, dst_len, "the data");
    } else {
        rc = lzo_get(in, in->lzo_packed, src_len, "the data");
        lzo_uint out_len = dst_len;
        if (rc == VMA_OK &&
            (lzo1x_decompress_safe(in->lzo_packed, src_len, in->lzo_block, &out_len, NULL) !=
                 LZO_E_OK ||
             out_len != dst_len)) {
            vmai_errorf(in->err, "lzop block %llu at compressed byte %llu does not decompress",
                        LZO_WHERE(in));
            in->lzo_skippable = true;
            return VMA_ERR_CORRUPT;
        }
    }
    if (rc != VMA_OK)
        return rc;
    if (nd > 0) {
        uint32_t got = (in->lzo_flags & LZOP_ADLER32_D)
                           ? (uint32_t)adler32(adler32(0, NULL, 0), in->lzo_block, dst_len)
                           : (uint32_t)crc32(crc32(0, NULL, 0), in->lzo_block, dst_len);
        if (got != sum_d) {
            vmai_errorf(in->err, "lzop block %llu at compressed byte %llu: checksum mismatch",
                        LZO_WHERE(in));
            in->lzo_skippable = true;
            return VMA_ERR_CORRUPT;
        }
    }
    in->lzo_len = dst_len;
    in->lzo_pos = 0;
    return VMA_OK;
}

static ssize_t produce_lzo(struct vmai_input *in, unsigned char *out, size_t cap)
{
    int rc;
    if (!in->lzo_header_done) {
        if ((rc = lzo_header(in)) != VMA_OK)
            return rc;
        in->lzo_header_done = true;
    }
    size_t done = 0;
    while (done < cap && !in->lzo_end) {
        /* Hand out each block as soon as it is decoded: the next one may
         * be only partly in (see raw_more()). */
        if (in->lzo_pos == in->lzo_len && done > 0)
            break;
        if (in->lzo_pos == in->lzo_len && (rc = lzo_block(in)) != VMA_OK) {
            /* Salvage: a block that was read whole but is bad is skipped
             * (its sizes told where the next one starts). */
            if (in->resync && in->lzo_skippable) {
                in->lzo_skippable = false;
                in->lzo_len = in->lzo_pos = 0;
                size_t n = strlen(in->err);
                snprintf(in->err + n, sizeof(in->err) - n, "; the block skipped");
                in->gap = true;
                return (ssize_t)done;
            }
            return fail_after(&in->pending, rc, done);
        }
        if (in->lzo_end)
            break; /* the end mark: no block buffer to copy from */
        size_t n = in->lzo_len - in->lzo_pos;
        n = n < cap - done ? n : cap - done;
        memcpy(out + done, in->lzo_block + in->lzo_pos, n);
        in->lzo_pos += n;
        done += n;
    }
    return (ssize_t)done;
}

static ssize_t produce(struct vmai_input *in, unsigned char *out, size_t cap)
{
    if (in->pending != VMA_OK)
        return in->pending;
    switch (in->codec) {
    case VMAI_CODEC_ZSTD: return produce_zstd(in, out, cap);
    case VMAI_CODEC_GZIP: return produce_gzip(in, out, cap);
    case VMAI_CODEC_LZO: return produce_lzo(in, out, cap);
    case VMAI_CODEC_NONE: break;
    }
    return produce_plain(in, out, cap);
}

/* Plain bytes read and dropped: through a buffer small enough to stay in
 * the CPU cache (a multi-MB one made each read(2) a walk through memory:
 * plain verify ran at half the speed of cat). */
static ssize_t plain_discard(struct vmai_input *in, size_t len)
{
    if (in->discard == NULL && (in->discard = malloc(DISCARD_SIZE)) == NULL) {
        snprintf(in->err, sizeof(in->err), "out of memory");
        return VMA_ERR_NOMEM;
    }
    size_t done = 0;
    while (done < len) {
        size_t want = len - done < DISCARD_SIZE ? len - done : DISCARD_SIZE;
        ssize_t n = produce(in, in->discard, want);
        if (n < 0)
            return fail_after(&in->pending, (int)n, done);
        done += (size_t)n;
        if ((size_t)n < want)
            break;
    }
    return (ssize_t)done;
}

/* --- the interface --- */

/* A compressed input from memory: ring_read() on a ring whose filler
 * runs in the caller's thread, one chunk at a time. */
static ssize_t memory_read(struct vmai_input *in, unsigned char *buf, size_t len, char *err,
                           size_t errlen)
{
    size_t got = 0;
    while (got < len) {
        if (in->chunk_pos == in->chunk_len) {
            if (in->chunk_done)
                break;
            if (in->chunk == NULL && (in->chunk = malloc(CHUNK_SIZE)) == NULL) {
                snprintf(err, errlen, "out of memory for the decoded input");
                return VMA_ERR_NOMEM;
            }
            ssize_t n = produce(in, in->chunk, CHUNK_SIZE);
            in->chunk_pos = 0;
            in->chunk_len = n > 0 ? (size_t)n : 0;
            /* As ring_thread(): a chunk (even an empty one) may end at a gap. */
            in->chunk_gap = in->resync && n >= 0 && in->gap;
            if (in->chunk_gap) {
                in->gap = false;
                snprintf(in->chunk_gap_msg, sizeof(in->chunk_gap_msg), "%s", in->err);
            } else if (n <= 0) {
                in->chunk_done = true;
                in->chunk_status = n < 0 ? (int)n : VMA_OK;
                break;
            }
        }
        size_t n = in->chunk_len - in->chunk_pos < len - got ? in->chunk_len - in->chunk_pos
                                                             : len - got;
        if (buf != NULL)
            memcpy(buf + got, in->chunk + in->chunk_pos, n);
        in->chunk_pos += n;
        got += n;
        if (in->chunk_pos == in->chunk_len && in->chunk_gap) { /* as ring_read() */
            in->chunk_gap = false;
            in->ring.gap_hit = true;
            memcpy(in->ring.gap_msg, in->chunk_gap_msg, sizeof(in->ring.gap_msg));
            break;
        }
    }
    if (got < len && in->chunk_status != VMA_OK && (got == 0 || !in->resync)) {
        snprintf(err, errlen, "%s", in->err);
        return in->chunk_status;
    }
    return (ssize_t)got;
}

ssize_t vmai_input_read(struct vmai_input *in, void *buf, size_t len, char *err, size_t errlen)
{
    if (in->pool != NULL) {
        /* Straight from the decoded frames into the caller's buffer (a
         * short count means the end, so an error wins, as in ring_read()). */
        size_t got = 0;
        while (got < len) {
            ssize_t n = vmai_zst_pool_read(in->pool, buf != NULL ? (unsigned char *)buf + got : NULL,
                                           len - got, err, errlen);
            if (n < 0)
                return n;
            if (n == 0)
                break;
            got += (size_t)n;
        }
        return (ssize_t)got;
    }
    if (in->memory && vmai_cancelled(in->cancel)) {
        snprintf(err, errlen, "cancelled");
        return VMA_ERR_CANCELED;
    }
    if (in->memory && in->codec != VMAI_CODEC_NONE)
        return memory_read(in, buf, len, err, errlen);
    if (in->codec != VMAI_CODEC_NONE)
        return ring_read(&in->ring, buf, len, err, errlen);
    /* Plain archives are read straight into the caller's buffer: the
     * kernel's read-ahead already overlaps I/O, and a ring would only add a
     * copy. */
    ssize_t n = buf != NULL ? produce(in, buf, len) : plain_discard(in, len);
    if (n >= 0 && (size_t)n < len && in->pending != VMA_OK && (n == 0 || !in->resync))
        n = in->pending; /* short because of an error: say which (salvage: next time) */
    if (n < 0)
        snprintf(err, errlen, "%s", in->err);
    return n;
}

bool vmai_input_gap(struct vmai_input *in, char *msg, size_t msglen)
{
    if (!in->ring.gap_hit)
        return false;
    in->ring.gap_hit = false;
    snprintf(msg, msglen, "%s", in->ring.gap_msg);
    return true;
}

static struct vmai_input *input_new(int fd, vmai_read_fn fn, void *opaque,
                                    const struct vmai_cancel *cancel, bool resync)
{
    struct vmai_input *in = calloc(1, sizeof(*in));
    if (in == NULL)
        return NULL;
    in->fd = fd;
    in->read_fn = fn;
    in->read_opaque = opaque;
    in->cancel = cancel;
    in->raw = in->sniff;
    in->resync = resync;
    in->ring.gaps = resync;
    pthread_mutex_init(&in->raw_ring.mu, NULL);
    pthread_cond_init(&in->raw_ring.cv, NULL);
    pthread_mutex_init(&in->ring.mu, NULL);
    pthread_cond_init(&in->ring.cv, NULL);
    return in;
}

/* Pick the codec from the first n bytes (in->sniff) and set it up. */
static int pick_codec(struct vmai_input *in, size_t n, char *err, size_t errlen)
{
    if (n >= sizeof(zstd_magic) &&
        (memcmp(in->sniff, zstd_magic, 4) == 0 ||
         ((in->sniff[0] & 0xf0) == 0x50 && memcmp(in->sniff + 1, zstd_skippable, 3) == 0))) {
        in->codec = VMAI_CODEC_ZSTD;
        in->zstd = ZSTD_createDCtx();
        /* Our limit, set here rather than left to libzstd's default. */
        if (in->zstd == NULL ||
            ZSTD_isError(ZSTD_DCtx_setParameter(in->zstd, ZSTD_d_windowLogMax,
                                                ZSTD_WINDOWLOG_OURS))) {
            snprintf(err, errlen, "out of memory for zstd");
            return VMA_ERR_NOMEM;
        }
    } else if (n >= sizeof(gzip_magic) && memcmp(in->sniff, gzip_magic, 2) == 0) {
        in->codec = VMAI_CODEC_GZIP;
        if (inflateInit2(&in->gz, 15 + 16) != Z_OK) {
            snprintf(err, errlen, "cannot start zlib");
            return VMA_ERR_NOMEM;
        }
        in->gz_init = true;
    } else if (n >= sizeof(lzop_magic) && memcmp(in->sniff, lzop_magic, 9) == 0) {
        in->codec = VMAI_CODEC_LZO;
        if (lzo_init() != LZO_E_OK) {
            snprintf(err, errlen, "cannot start liblzo2");
            return VMA_ERR_NOMEM;
        }
    }
    return VMA_OK;
}

int vmai_input_open_ex(struct vmai_input **out, int fd, vmai_read_fn fn, void *opaque,
                       const struct vmai_cancel *cancel, bool resync, char *err, size_t errlen)
{
    struct vmai_input *in = input_new(fd, fn, opaque, cancel, resync);
    *out = in;
    if (in == NULL) {
        snprintf(err, errlen, "out of memory");
        return VMA_ERR_NOMEM;
    }
    in->may_block = fn == NULL && vmai_fd_may_block(fd);
    size_t sniffed = 0;
    bool sniff_eof = false;
    if (read_upto(in, in->sniff, SNIFF_LEN, false, &sniffed, &sniff_eof) != 0) {
        int rc = read_failed(in, in->err);
        snprintf(err, errlen, "%s", in->err);
        return rc;
    }
    in->raw_len = sniffed;
    in->raw_total = in->raw_read = (uint64_t)sniffed;
    in->raw_eof = sniffed < SNIFF_LEN;
    int rc = pick_codec(in, sniffed, err, errlen);
    if (rc != VMA_OK)
        return rc;
    if (in->codec == VMAI_CODEC_NONE)
        return VMA_OK; /* no threads: see vmai_input_read() */
    /* A seekable zstd file read from its start: decoded frame by frame on
     * several cores (salvage keeps the stream, which can resync). */
    if (in->codec == VMAI_CODEC_ZSTD && fn == NULL && !resync &&
        lseek(fd, 0, SEEK_CUR) == (off_t)sniffed) {
        int rc = vmai_zst_pool_start(&in->pool, fd, cancel, err, errlen);
        if (rc == VMA_OK)
            return VMA_OK; /* no rings: see vmai_input_read() */
        if (rc != VMA_ERR_NOT_FOUND)
            return rc;
    }
    if (ring_start(&in->raw_ring, in, RAW_SIZE, read_raw, in->raw_err) != VMA_OK ||
        ring_start(&in->ring, in, CHUNK_SIZE, produce, in->err) != VMA_OK) {
        snprintf(err, errlen, "cannot start the read-ahead threads (out of memory?)");
        return VMA_ERR_NOMEM;
    }
    return VMA_OK;
}

int vmai_input_open_memory(struct vmai_input **out, const void *data, size_t len,
                           const struct vmai_cancel *cancel, bool resync, char *err,
                           size_t errlen)
{
    struct vmai_input *in = input_new(-1, NULL, NULL, cancel, resync);
    *out = in;
    if (in == NULL) {
        snprintf(err, errlen, "out of memory");
        return VMA_ERR_NOMEM;
    }
    in->memory = true;
    in->mem = data;
    in->mem_len = len;
    size_t n = len < SNIFF_LEN ? len : SNIFF_LEN;
    if (n > 0)
        memcpy(in->sniff, data, n);
    int rc = pick_codec(in, n, err, errlen);
    /* A plain input is all there: raw is the whole of it, nothing is left
     * to read(2). A decoder starts from the sniffed bytes (raw_fill()). */
    in->mem_pos = in->codec == VMAI_CODEC_NONE ? len : n;
    in->raw_len = in->mem_pos;
    in->raw_total = in->raw_read = (uint64_t)in->mem_pos;
    in->raw_eof = in->codec == VMAI_CODEC_NONE || n < SNIFF_LEN;
    if (in->raw_len > 0)
        in->raw = data;
    return rc;
}

const char *vmai_input_codec(const struct vmai_input *in)
{
    static const char *const names[] = {"none", "zstd", "gzip", "lzo"};
    return names[in->codec];
}

void vmai_input_free(struct vmai_input *in)
{
    if (in == NULL)
        return;
    /* The reader first: stopping it also wakes a decoder waiting for it. */
    ring_stop(&in->raw_ring, in->read_fn == NULL);
    ring_stop(&in->ring, false);
    vmai_zst_pool_free(in->pool);
    ring_free(&in->raw_ring);
    ring_free(&in->ring);
    ZSTD_freeDCtx(in->zstd);
    if (in->gz_init)
        inflateEnd(&in->gz);
    free(in->lzo_block);
    free(in->lzo_packed);
    free(in->chunk);
    free(in->discard);
    free(in);
}
