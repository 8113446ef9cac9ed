/*
 * The input byte layer: plain, zstd (libzstd), gzip (zlib) or lzop (the
 * lzop container around liblzo2's LZO1X), picked by magic bytes. A
 * compressed stream is decompressed ahead by one producer thread into a
 * ring of chunks. The consumer (the
 * archive reader) copies out of the ring; the producer stops at the end of
 * the stream or at the first error, which the consumer sees at the same
 * position in the stream.
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
#include <zlib.h>
#include <zstd.h>

#include "input.h"
#include "io.h"
#include "vma.h"

#define CHUNK_SIZE (4u << 20)  /* decompressed bytes per ring slot */
#define RING_SLOTS 4u
#define RAW_SIZE (1u << 20)    /* compressed bytes per read(2) */
#define SNIFF_LEN 9u
#define LZO_MAX_BLOCK (64u << 20) /* lzop's own limit */

enum codec { CODEC_NONE, CODEC_ZSTD, CODEC_GZIP, CODEC_LZO };

static const unsigned char zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
static const unsigned char gzip_magic[2] = {0x1f, 0x8b};
static const unsigned char lzop_magic[9] = {0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a};

/* lzop header flags we must honour. */
#define LZOP_ADLER32_D 0x0001u
#define LZOP_ADLER32_C 0x0002u
#define LZOP_EXTRA_FIELD 0x0040u
#define LZOP_CRC32_D 0x0100u
#define LZOP_CRC32_C 0x0200u
#define LZOP_FILTER 0x0800u
#define LZOP_H_CRC32 0x1000u

struct chunk {
    unsigned char *data;
    size_t len;
};

struct vmai_input {
    int fd;
    enum codec codec;

    /* Compressed (or, for plain, sniffed) bytes not yet consumed. */
    unsigned char *raw;
    size_t raw_len, raw_pos;
    bool raw_eof;
    uint64_t raw_total;     /* compressed bytes read, for messages */

    ZSTD_DCtx *zstd;
    size_t zstd_last;       /* last ZSTD_decompressStream result: 0 = frame end */
    z_stream gz;
    bool gz_init, gz_member_done;
    uint32_t lzo_flags;
    bool lzo_header_done, lzo_end;
    unsigned char *lzo_block, *lzo_packed;
    size_t lzo_len, lzo_pos, lzo_cap;

    /* The ring, guarded by mu. */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct chunk ring[RING_SLOTS];
    unsigned head, count;   /* consumer takes ring[head]; count filled */
    bool done, stop;
    int status;             /* producer's error, VMA_OK at a clean end */
    int pending;            /* codec error held back until its bytes are out */
    char err[VMAI_ERRLEN];
    size_t cur_pos;         /* consumer's position in ring[head] */
};

/* --- compressed bytes from the descriptor --- */

static int raw_fill(struct vmai_input *in)
{
    if (in->raw_pos < in->raw_len || in->raw_eof)
        return VMA_OK;
    ssize_t n;
    int old;
    /* Only the read may be cancelled: the consumer may stop early while a
     * pipe writer is idle. */
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
    do
        n = read(in->fd, in->raw, RAW_SIZE);
    while (n < 0 && errno == EINTR);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    if (n < 0) {
        vmai_errorf(in->err, "read error after %llu input bytes: %s",
                    (unsigned long long)in->raw_total, strerror(errno));
        return VMA_ERR_IO;
    }
    in->raw_pos = 0;
    in->raw_len = (size_t)n;
    in->raw_total += (uint64_t)n;
    in->raw_eof = n == 0;
    return VMA_OK;
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
            vmai_errorf(in->err, "lzop stream truncated in %s", what);
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

/* --- codecs: each fills out[0..cap) and returns bytes, 0 at the end --- */

/* An error after some bytes were produced: hand out the bytes now and the
 * error on the next call, so it shows at its place in the stream. */
static ssize_t fail_after(struct vmai_input *in, int status, size_t done)
{
    if (done == 0)
        return status;
    in->pending = status;
    return (ssize_t)done;
}

static ssize_t produce_plain(struct vmai_input *in, unsigned char *out, size_t cap)
{
    size_t done = 0;
    if (in->raw_pos < in->raw_len) { /* the sniffed bytes first */
        done = in->raw_len - in->raw_pos < cap ? in->raw_len - in->raw_pos : cap;
        memcpy(out, in->raw + in->raw_pos, done);
        in->raw_pos += done;
    }
    while (done < cap && !in->raw_eof) {
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
        ssize_t n = read(in->fd, out + done, cap - done);
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            vmai_errorf(in->err, "read error after %llu bytes: %s",
                        (unsigned long long)(in->raw_total + done), strerror(errno));
            in->raw_total += done;
            return fail_after(in, VMA_ERR_IO, done);
        }
        in->raw_eof = n == 0;
        done += (size_t)n;
    }
    in->raw_total += done;
    return (ssize_t)done;
}

static ssize_t produce_zstd(struct vmai_input *in, unsigned char *out, size_t cap)
{
    ZSTD_outBuffer ob = {out, cap, 0};
    while (ob.pos < ob.size) {
        int rc = raw_fill(in);
        if (rc != VMA_OK)
            return fail_after(in, rc, ob.pos);
        ZSTD_inBuffer ib = {in->raw, in->raw_len, in->raw_pos};
        size_t before = ob.pos, before_in = ib.pos;
        size_t ret = ZSTD_decompressStream(in->zstd, &ob, &ib);
        in->raw_pos = ib.pos;
        if (ZSTD_isError(ret)) {
            vmai_errorf(in->err, "zstd stream corrupt near compressed byte %llu: %s",
                        (unsigned long long)(in->raw_total - in->raw_len + in->raw_pos),
                        ZSTD_getErrorName(ret));
            return fail_after(in, VMA_ERR_CORRUPT, ob.pos);
        }
        /* 0 means "a frame ended here"; a call on empty input after that
         * returns a hint for the next frame, which is not truncation. */
        if (ob.pos != before || ib.pos != before_in)
            in->zstd_last = ret;
        if (ob.pos == before && in->raw_pos == in->raw_len && in->raw_eof)
            break; /* nothing buffered, nothing left */
    }
    if (ob.pos == 0 && in->zstd_last != 0) {
        vmai_errorf(in->err, "zstd stream truncated after %llu compressed bytes",
                    (unsigned long long)in->raw_total);
        return VMA_ERR_TRUNCATED;
    }
    return (ssize_t)ob.pos;
}

static ssize_t produce_gzip(struct vmai_input *in, unsigned char *out, size_t cap)
{
    in->gz.next_out = out;
    in->gz.avail_out = (uInt)cap;
    while (in->gz.avail_out > 0) {
        int rc = raw_fill(in);
        if (rc != VMA_OK)
            return fail_after(in, rc, cap - in->gz.avail_out);
        if (in->raw_pos == in->raw_len && in->raw_eof) {
            if (!in->gz_member_done) {
                vmai_errorf(in->err, "gzip stream truncated after %llu compressed bytes",
                            (unsigned long long)in->raw_total);
                return fail_after(in, VMA_ERR_TRUNCATED, cap - in->gz.avail_out);
            }
            break;
        }
        if (in->gz_member_done) { /* concatenated members, as gzip allows */
            inflateReset(&in->gz);
            in->gz_member_done = false;
        }
        in->gz.next_in = in->raw + in->raw_pos;
        in->gz.avail_in = (uInt)(in->raw_len - in->raw_pos);
        int zr = inflate(&in->gz, Z_NO_FLUSH);
        in->raw_pos = in->raw_len - in->gz.avail_in;
        if (zr == Z_STREAM_END) {
            in->gz_member_done = true;
        } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
            vmai_errorf(in->err, "gzip stream corrupt near compressed byte %llu: %s",
                        (unsigned long long)(in->raw_total - in->raw_len + in->raw_pos),
                        in->gz.msg ? in->gz.msg : "inflate failed");
            return fail_after(in, VMA_ERR_CORRUPT, cap - in->gz.avail_out);
        }
    }
    return (ssize_t)(cap - in->gz.avail_out);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
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
    if (version >= 0x0940 && (rc = lzo_field(in, b, 2, &adler, &crc)) != VMA_OK)
        return rc; /* version needed to extract */
    if ((rc = lzo_field(in, b, version >= 0x0940 ? 2 : 1, &adler, &crc)) != VMA_OK)
        return rc;
    if (b[0] < 1 || b[0] > 3) {
        vmai_errorf(in->err, "lzop method %u is not LZO1X", b[0]);
        return VMA_ERR_CORRUPT;
    }
    if ((rc = lzo_field(in, b, 4, &adler, &crc)) != VMA_OK)
        return rc;
    in->lzo_flags = be32(b);
    if ((in->lzo_flags & LZOP_FILTER) && (rc = lzo_field(in, b, 4, &adler, &crc)) != VMA_OK)
        return rc;
    /* mode, mtime (low, and high from 0.94 on), name length, name */
    if ((rc = lzo_field(in, b, version >= 0x0940 ? 13 : 9, &adler, &crc)) != VMA_OK)
        return rc;
    size_t name_len = b[version >= 0x0940 ? 12 : 8];
    if ((rc = lzo_field(in, b, name_len, &adler, &crc)) != VMA_OK)
        return rc;
    uint32_t want = (in->lzo_flags & LZOP_H_CRC32) ? (uint32_t)crc : (uint32_t)adler;
    if ((rc = raw_get(in, b, 4, "the header")) != VMA_OK)
        return rc;
    if (be32(b) != want) {
        vmai_errorf(in->err, "lzop header checksum mismatch");
        return VMA_ERR_CORRUPT;
    }
    if (in->lzo_flags & LZOP_EXTRA_FIELD) { /* skip it: length, data, checksum */
        if ((rc = raw_get(in, b, 4, "the extra field")) != VMA_OK)
            return rc;
        for (uint32_t left = be32(b) + 4; left > 0 && rc == VMA_OK;) {
            size_t n = left < sizeof(b) ? left : sizeof(b);
            rc = raw_get(in, b, n, "the extra field");
            left -= (uint32_t)n;
        }
    }
    return rc;
}

/* Decode the next lzop block into lzo_block; sets lzo_end at the end mark. */
static int lzo_block(struct vmai_input *in)
{
    unsigned char b[8];
    int rc = raw_get(in, b, 4, "a block header");
    if (rc != VMA_OK)
        return rc;
    uint32_t dst_len = be32(b);
    if (dst_len == 0) {
        in->lzo_end = true;
        return VMA_OK;
    }
    if ((rc = raw_get(in, b, 4, "a block header")) != VMA_OK)
        return rc;
    uint32_t src_len = be32(b);
    if (dst_len > LZO_MAX_BLOCK || src_len > dst_len || src_len == 0) {
        vmai_errorf(in->err, "lzop block sizes %u -> %u are invalid", src_len, dst_len);
        return VMA_ERR_CORRUPT;
    }
    uint32_t sum_d = 0;
    unsigned nd = !!(in->lzo_flags & LZOP_ADLER32_D) + !!(in->lzo_flags & LZOP_CRC32_D);
    unsigned nc = src_len < dst_len ? !!(in->lzo_flags & LZOP_ADLER32_C) +
                                          !!(in->lzo_flags & LZOP_CRC32_C) : 0;
    for (unsigned i = 0; i < nd + nc; i++) {
        if ((rc = raw_get(in, b, 4, "a block checksum")) != VMA_OK)
            return rc;
        if (i == 0)
            sum_d = be32(b); /* the first data checksum is the one we check */
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
        rc = raw_get(in, in->lzo_block, dst_len, "block data");
    } else {
        rc = raw_get(in, in->lzo_packed, src_len, "block data");
        lzo_uint out_len = dst_len;
        if (rc == VMA_OK &&
            (lzo1x_decompress_safe(in->lzo_packed, src_len, in->lzo_block, &out_len, NULL) !=
                 LZO_E_OK ||
             out_len != dst_len)) {
            vmai_errorf(in->err, "lzop block near compressed byte %llu does not decompress",
                        (unsigned long long)in->raw_total);
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
            vmai_errorf(in->err, "lzop block checksum mismatch near compressed byte %llu",
                        (unsigned long long)in->raw_total);
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
        if (in->lzo_pos == in->lzo_len && (rc = lzo_block(in)) != VMA_OK)
            return fail_after(in, rc, done);
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
    case CODEC_ZSTD: return produce_zstd(in, out, cap);
    case CODEC_GZIP: return produce_gzip(in, out, cap);
    case CODEC_LZO: return produce_lzo(in, out, cap);
    case CODEC_NONE: break;
    }
    return produce_plain(in, out, cap);
}

/* --- the read-ahead thread --- */

static void *producer(void *arg)
{
    struct vmai_input *in = arg;
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    for (;;) {
        pthread_mutex_lock(&in->mu);
        while (in->count == RING_SLOTS && !in->stop)
            pthread_cond_wait(&in->cv, &in->mu);
        bool stop = in->stop;
        struct chunk *c = &in->ring[(in->head + in->count) % RING_SLOTS];
        pthread_mutex_unlock(&in->mu);
        if (stop)
            break;
        ssize_t n = produce(in, c->data, CHUNK_SIZE);
        pthread_mutex_lock(&in->mu);
        if (n > 0) {
            c->len = (size_t)n;
            in->count++;
        } else {
            in->status = n < 0 ? (int)n : VMA_OK;
            in->done = true;
        }
        pthread_cond_broadcast(&in->cv);
        pthread_mutex_unlock(&in->mu);
        if (n <= 0)
            break;
    }
    return NULL;
}

ssize_t vmai_input_read(struct vmai_input *in, void *buf, size_t len, char *err, size_t errlen)
{
    unsigned char *dst = buf;
    size_t got = 0;
    if (in->codec == CODEC_NONE) {
        /* Plain archives are read straight into the caller's buffer: the
         * kernel's read-ahead already overlaps I/O, and a ring would only
         * add a copy. */
        ssize_t n = produce(in, dst, len);
        if (n < 0)
            snprintf(err, errlen, "%s", in->err);
        return n;
    }
    pthread_mutex_lock(&in->mu);
    while (got < len) {
        while (in->count == 0 && !in->done)
            pthread_cond_wait(&in->cv, &in->mu);
        if (in->count == 0) { /* the producer finished */
            if (in->status != VMA_OK) {
                snprintf(err, errlen, "%s", in->err);
                pthread_mutex_unlock(&in->mu);
                return in->status;
            }
            break;
        }
        struct chunk *c = &in->ring[in->head];
        size_t n = c->len - in->cur_pos < len - got ? c->len - in->cur_pos : len - got;
        pthread_mutex_unlock(&in->mu); /* copy without holding the lock */
        memcpy(dst + got, c->data + in->cur_pos, n);
        pthread_mutex_lock(&in->mu);
        got += n;
        in->cur_pos += n;
        if (in->cur_pos == c->len) {
            in->head = (in->head + 1) % RING_SLOTS;
            in->count--;
            in->cur_pos = 0;
            pthread_cond_broadcast(&in->cv);
        }
    }
    pthread_mutex_unlock(&in->mu);
    return (ssize_t)got;
}

int vmai_input_open(struct vmai_input **out, int fd, char *err, size_t errlen)
{
    *out = NULL;
    struct vmai_input *in = calloc(1, sizeof(*in));
    if (in == NULL || (in->raw = malloc(RAW_SIZE)) == NULL) {
        free(in);
        snprintf(err, errlen, "out of memory");
        return VMA_ERR_NOMEM;
    }
    in->fd = fd;
    pthread_mutex_init(&in->mu, NULL);
    pthread_cond_init(&in->cv, NULL);
    *out = in;

    ssize_t n = vmai_read_full(fd, in->raw, SNIFF_LEN);
    if (n < 0) {
        snprintf(err, errlen, "read error at offset 0: %s", strerror(errno));
        return VMA_ERR_IO;
    }
    in->raw_len = (size_t)n;
    in->raw_total = (uint64_t)n;
    in->raw_eof = (size_t)n < SNIFF_LEN;
    if ((size_t)n >= sizeof(zstd_magic) && memcmp(in->raw, zstd_magic, 4) == 0) {
        in->codec = CODEC_ZSTD;
        in->zstd = ZSTD_createDCtx();
        if (in->zstd == NULL) {
            snprintf(err, errlen, "out of memory for zstd");
            return VMA_ERR_NOMEM;
        }
    } else if ((size_t)n >= sizeof(gzip_magic) && memcmp(in->raw, gzip_magic, 2) == 0) {
        in->codec = CODEC_GZIP;
        if (inflateInit2(&in->gz, 15 + 16) != Z_OK) {
            snprintf(err, errlen, "cannot start zlib");
            return VMA_ERR_NOMEM;
        }
        in->gz_init = true;
    } else if ((size_t)n >= sizeof(lzop_magic) && memcmp(in->raw, lzop_magic, 9) == 0) {
        in->codec = CODEC_LZO;
        if (lzo_init() != LZO_E_OK) {
            snprintf(err, errlen, "cannot start liblzo2");
            return VMA_ERR_NOMEM;
        }
    }
    if (in->codec == CODEC_NONE)
        return VMA_OK; /* no read-ahead thread: see vmai_input_read() */
    for (unsigned i = 0; i < RING_SLOTS; i++) {
        in->ring[i].data = malloc(CHUNK_SIZE);
        if (in->ring[i].data == NULL) {
            snprintf(err, errlen, "out of memory for the read-ahead buffers");
            return VMA_ERR_NOMEM;
        }
    }
    if (pthread_create(&in->thread, NULL, producer, in) != 0) {
        snprintf(err, errlen, "cannot start the read-ahead thread");
        return VMA_ERR_NOMEM;
    }
    in->thread_started = true;
    return VMA_OK;
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
    if (in->thread_started) {
        pthread_mutex_lock(&in->mu);
        in->stop = true;
        pthread_cond_broadcast(&in->cv);
        pthread_mutex_unlock(&in->mu);
        pthread_cancel(in->thread); /* only takes effect inside a blocked read */
        pthread_join(in->thread, NULL);
    }
    for (unsigned i = 0; i < RING_SLOTS; i++)
        free(in->ring[i].data);
    ZSTD_freeDCtx(in->zstd);
    if (in->gz_init)
        inflateEnd(&in->gz);
    free(in->lzo_block);
    free(in->lzo_packed);
    free(in->raw);
    pthread_mutex_destroy(&in->mu);
    pthread_cond_destroy(&in->cv);
    free(in);
}
