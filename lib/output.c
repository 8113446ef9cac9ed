/*
 * The output byte layer, mirror of the input layer: bytes go to a
 * descriptor as they are, or compressed as a standard .zst (libzstd, up
 * to 4 worker threads), .gz (zlib) or .lzo (the lzop file format around
 * liblzo2's LZO1X-1) that the usual tools decompress. Knows nothing of VMA.
 * The .zst is in zstd's seekable format (contrib/seekable_format): frames
 * of ZSTD_FRAME bytes of input, each compressed on its own, then the seek
 * table in a skippable frame that plain zstd -d passes over; random access
 * (zst_frames.c) then reads an archive in place, one frame per miss.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lzo/lzo1x.h>
#include <zlib.h>
#include <zstd.h>

#include "format.h"
#include "io.h"
#include "output.h"
#include "vma.h"

#define LZO_BLOCK (256u * 1024) /* lzop's default block size */

/* zstd's memory bound (see zstd_params()). */
#define ZSTD_FAST_LEVELS 9          /* levels with small tables ... */
#define ZSTD_WORKERS_FAST 4         /* ... get up to 4 workers, */
#define ZSTD_WORKERS_SLOW 2         /* higher levels up to 2 */
#define ZSTD_SLOW_JOB_SIZE (2u << 20) /* from level 17 (see zstd_params()) */
#define ZSTD_SLOW_JOB_LEVEL 17
#define ZSTD_MAX_WINDOW_LEVEL 19    /* higher levels keep its window and tables */

/* Seekable zstd: 4 MiB of archive per frame. A random read decompresses a
 * whole frame (about 5 ms at zstd's speed), and small frames cost ratio
 * (each starts with an empty window): 4 MiB keeps both small (about 1%
 * larger than one frame at level 3). Each frame is split into 1 MiB jobs
 * so that zstd's workers still share every frame. */
#define ZSTD_FRAME (4u << 20)
#define ZSTD_FRAME_JOB (1u << 20)
#define SEEK_SKIPPABLE_MAGIC 0x184D2A5Eu
#define SEEK_MAGIC 0x8F92EAB1u

struct vmai_output {
    int fd;
    const struct vmai_cancel *cancel;
    bool may_block;          /* a pipe or the like: writes wait in poll(2) */
    enum vmai_codec codec;
    unsigned char *buf;      /* compressed bytes waiting for write(2) */
    size_t cap;
    ZSTD_CCtx *zstd;
    uint64_t frame_in;       /* input bytes in the current zstd frame */
    uint64_t frame_at;       /* output byte where it began */
    uint32_t *seek;          /* seek table: compressed, decompressed size */
    size_t frames, seek_cap;
    z_stream gz;
    bool gz_init;
    unsigned char *lzo_in, *lzo_work;
    size_t lzo_fill;
    uint64_t written;        /* bytes written to fd */
};

static int put(struct vmai_output *o, const void *buf, size_t len, char *err, size_t errlen)
{
    if (vmai_write_full(o->fd, buf, len, -1, o->cancel, o->may_block) != 0) {
        if (errno == ECANCELED) {
            snprintf(err, errlen, "cancelled");
            return VMA_ERR_CANCELED;
        }
        /* where this write began: part of it may have gone out */
        snprintf(err, errlen, "write of %zu bytes at output byte %llu failed: %s", len,
                 (unsigned long long)o->written, strerror(errno));
        return VMA_ERR_IO;
    }
    o->written += len;
    return VMA_OK;
}

int vmai_codec_parse(const char *spec, enum vmai_codec *codec, int *level)
{
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    int lo, hi;
    if (n == 4 && strncmp(spec, "none", 4) == 0) {
        *codec = VMAI_CODEC_NONE, *level = 0, lo = 0, hi = 0;
    } else if (n == 4 && strncmp(spec, "zstd", 4) == 0) {
        *codec = VMAI_CODEC_ZSTD, *level = VMAI_ZSTD_LEVEL_DEFAULT, lo = 1, hi = VMAI_ZSTD_LEVEL_MAX;
    } else if ((n == 4 && strncmp(spec, "gzip", 4) == 0) || (n == 2 && strncmp(spec, "gz", 2) == 0)) {
        *codec = VMAI_CODEC_GZIP, *level = VMAI_GZIP_LEVEL_DEFAULT, lo = 1, hi = VMAI_GZIP_LEVEL_MAX;
    } else if (n == 3 && strncmp(spec, "lzo", 3) == 0) {
        *codec = VMAI_CODEC_LZO, *level = 1, lo = 1, hi = 1;
    } else {
        return VMA_ERR_INVALID;
    }
    if (colon != NULL) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (colon[1] == '\0' || *end != '\0' || v < lo || v > hi)
            return VMA_ERR_INVALID;
        *level = (int)v;
    }
    return VMA_OK;
}

/* The lzop file header: version 1.040, LZO1X-1, adler32 of the data. */
static int lzop_header(struct vmai_output *o, char *err, size_t errlen)
{
    unsigned char h[64];
    size_t n = 0;
    memcpy(h, lzop_magic, sizeof lzop_magic);
    n = sizeof lzop_magic;
    size_t start = n;
    h[n++] = LZOP_VERSION_MAX >> 8, h[n++] = LZOP_VERSION_MAX & 0xff; /* lzop 1.040 */
    h[n++] = (unsigned char)(lzo_version() >> 8), h[n++] = (unsigned char)lzo_version();
    h[n++] = LZOP_VERSION_NEW_HEADER >> 8, h[n++] = LZOP_VERSION_NEW_HEADER & 0xff; /* needed */
    h[n++] = 1;                                   /* method: LZO1X-1 */
    h[n++] = 3;                                   /* level */
    vmai_put_be32(h + n, LZOP_ADLER32_D), n += 4;          /* flags: adler32 of the data */
    vmai_put_be32(h + n, 0100644), n += 4;                 /* mode */
    vmai_put_be32(h + n, 0), n += 4;                       /* mtime low */
    vmai_put_be32(h + n, 0), n += 4;                       /* mtime high */
    h[n++] = 0;                                   /* no name */
    vmai_put_be32(h + n, (uint32_t)adler32(adler32(0, NULL, 0), h + start, (uInt)(n - start))), n += 4;
    return put(o, h, n, err, errlen);
}

static int lzop_block(struct vmai_output *o, char *err, size_t errlen)
{
    if (o->lzo_fill == 0)
        return VMA_OK;
    unsigned char head[12];
    lzo_uint clen = 0;
    if (lzo1x_1_compress(o->lzo_in, o->lzo_fill, o->buf, &clen, o->lzo_work) != LZO_E_OK) {
        snprintf(err, errlen, "lzo compression failed");
        return VMA_ERR_IO;
    }
    bool stored = clen >= o->lzo_fill; /* incompressible: store as is */
    vmai_put_be32(head, (uint32_t)o->lzo_fill);
    vmai_put_be32(head + 4, stored ? (uint32_t)o->lzo_fill : (uint32_t)clen);
    vmai_put_be32(head + 8, (uint32_t)adler32(adler32(0, NULL, 0), o->lzo_in, (uInt)o->lzo_fill));
    int rc = put(o, head, sizeof(head), err, errlen);
    if (rc == VMA_OK)
        rc = put(o, stored ? o->lzo_in : o->buf, stored ? o->lzo_fill : clen, err, errlen);
    o->lzo_fill = 0;
    return rc;
}

static int zstd_run(struct vmai_output *o, const void *buf, size_t len, ZSTD_EndDirective mode,
                    char *err, size_t errlen);

/* Worker threads compress while the caller produces the next data. Each
 * worker holds the level's match tables and its jobs' buffers, so memory
 * grows with workers and level: bounded here, whatever the core count
 * (figures per level in the README; the bound is stated in vma.h). */
static void zstd_params(ZSTD_CCtx *z, int level)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int max = level <= ZSTD_FAST_LEVELS ? ZSTD_WORKERS_FAST : ZSTD_WORKERS_SLOW;
    int workers = cores < 1 ? 1 : cores > max ? max : (int)cores;
    ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(z, ZSTD_c_nbWorkers, workers);
    if (level < ZSTD_SLOW_JOB_LEVEL) {
        /* zstd's own job size (from 8 MiB at level 3) would make each
         * 4 MiB frame one job: one worker busy, the frame end waiting. */
        ZSTD_CCtx_setParameter(z, ZSTD_c_jobSize, ZSTD_FRAME_JOB);
    } else {
        /* A cancel waits for the jobs under way (ZSTD_freeCCtx()): at
         * these levels an 8 MiB job takes seconds, so smaller jobs, each
         * with a quarter window of history before it (about 0.3% larger
         * archives, the same speed, less memory). */
        ZSTD_CCtx_setParameter(z, ZSTD_c_jobSize, ZSTD_SLOW_JOB_SIZE);
        ZSTD_CCtx_setParameter(z, ZSTD_c_overlapLog, 7);
    }
    if (level > ZSTD_MAX_WINDOW_LEVEL) {
        /* Levels 20-22 would take a 128 MiB window with 512 MiB tables per
         * worker: they keep level 19's window and tables, with their own
         * deeper search. Readers then need no --long either. */
        ZSTD_CCtx_setParameter(z, ZSTD_c_windowLog, 23);
        ZSTD_CCtx_setParameter(z, ZSTD_c_chainLog, 24);
        ZSTD_CCtx_setParameter(z, ZSTD_c_hashLog, 22);
    }
}

int vmai_output_open(struct vmai_output **out, int fd, const struct vmai_cancel *cancel,
                     enum vmai_codec codec, int level, char *err, size_t errlen)
{
    struct vmai_output *o = calloc(1, sizeof(*o));
    *out = o;
    if (o == NULL) {
        snprintf(err, errlen, "out of memory");
        return VMA_ERR_NOMEM;
    }
    o->fd = fd;
    o->cancel = cancel;
    o->may_block = vmai_fd_may_block(fd);
    o->codec = codec;
    switch (codec) {
    case VMAI_CODEC_NONE:
        return VMA_OK;
    case VMAI_CODEC_ZSTD:
        o->cap = ZSTD_CStreamOutSize();
        o->zstd = ZSTD_createCCtx();
        if (o->zstd != NULL)
            zstd_params(o->zstd, level);
        break;
    case VMAI_CODEC_GZIP:
        o->cap = 1u << 18;
        if (deflateInit2(&o->gz, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            break;
        o->gz_init = true;
        break;
    case VMAI_CODEC_LZO:
        o->cap = LZO_BLOCK + LZO_BLOCK / 16 + 64 + 3;
        /* lzo_work stays NULL on any failure: checked below. */
        if (lzo_init() == LZO_E_OK && (o->lzo_in = malloc(LZO_BLOCK)) != NULL)
            o->lzo_work = malloc(LZO1X_1_MEM_COMPRESS);
        break;
    }
    o->buf = malloc(o->cap);
    bool ok = o->buf != NULL && (codec != VMAI_CODEC_ZSTD || o->zstd != NULL) &&
              (codec != VMAI_CODEC_GZIP || o->gz_init) &&
              (codec != VMAI_CODEC_LZO || o->lzo_work != NULL);
    if (!ok) {
        snprintf(err, errlen, "cannot start the compressor (out of memory?)");
        return VMA_ERR_NOMEM;
    }
    if (codec == VMAI_CODEC_ZSTD) {
        /* zstd's first call starts its workers: do it now, with every
         * signal blocked, as for all the library's threads (see io.h). */
        sigset_t old;
        vmai_signals_block(&old);
        int rc = zstd_run(o, NULL, 0, ZSTD_e_continue, err, errlen);
        vmai_signals_restore(&old);
        return rc;
    }
    return codec == VMAI_CODEC_LZO ? lzop_header(o, err, errlen) : VMA_OK;
}

static int zstd_run(struct vmai_output *o, const void *buf, size_t len, ZSTD_EndDirective mode,
                    char *err, size_t errlen)
{
    ZSTD_inBuffer in = {buf, len, 0};
    for (;;) {
        ZSTD_outBuffer ob = {o->buf, o->cap, 0};
        size_t left = ZSTD_compressStream2(o->zstd, &ob, &in, mode);
        if (ZSTD_isError(left)) {
            snprintf(err, errlen, "zstd compression failed: %s", ZSTD_getErrorName(left));
            return VMA_ERR_IO;
        }
        int rc = ob.pos > 0 ? put(o, o->buf, ob.pos, err, errlen) : VMA_OK;
        if (rc != VMA_OK)
            return rc;
        if (mode == ZSTD_e_continue ? in.pos == in.size : left == 0)
            return VMA_OK;
    }
}

/* End the current frame and note its sizes for the seek table (8 bytes
 * per 4 MiB frame: 2 MiB per TiB of archive). */
static int zstd_frame_end(struct vmai_output *o, char *err, size_t errlen)
{
    int rc = zstd_run(o, NULL, 0, ZSTD_e_end, err, errlen);
    if (rc != VMA_OK)
        return rc;
    uint64_t packed = o->written - o->frame_at;
    if (o->frames == UINT32_MAX || packed > UINT32_MAX) {
        snprintf(err, errlen, "zstd frame %zu does not fit the seek table", o->frames);
        return VMA_ERR_INVALID;
    }
    if (o->frames == o->seek_cap) {
        size_t cap = o->seek_cap ? o->seek_cap * 2 : 256;
        uint32_t *t = realloc(o->seek, cap * 2 * sizeof(*t));
        if (t == NULL) {
            snprintf(err, errlen, "out of memory for the seek table of %zu frames", cap);
            return VMA_ERR_NOMEM;
        }
        o->seek = t, o->seek_cap = cap;
    }
    o->seek[2 * o->frames] = (uint32_t)packed;
    o->seek[2 * o->frames + 1] = (uint32_t)o->frame_in;
    o->frames++;
    o->frame_at = o->written, o->frame_in = 0;
    return VMA_OK;
}

static int zstd_write(struct vmai_output *o, const void *buf, size_t len, char *err,
                      size_t errlen)
{
    const unsigned char *p = buf;
    while (len > 0) {
        size_t n = ZSTD_FRAME - o->frame_in < len ? (size_t)(ZSTD_FRAME - o->frame_in) : len;
        int rc = zstd_run(o, p, n, ZSTD_e_continue, err, errlen);
        if (rc != VMA_OK)
            return rc;
        o->frame_in += n, p += n, len -= n;
        if (o->frame_in == ZSTD_FRAME && (rc = zstd_frame_end(o, err, errlen)) != VMA_OK)
            return rc;
    }
    return VMA_OK;
}

/* The last frame, then the seek table: a skippable frame holding each
 * frame's compressed and decompressed size (no per-frame checksum in the
 * table: every frame carries zstd's own content checksum), then the
 * footer (frame count, descriptor 0, the seekable magic). */
static int zstd_finish(struct vmai_output *o, char *err, size_t errlen)
{
    int rc = o->frame_in > 0 || o->frames == 0 ? zstd_frame_end(o, err, errlen) : VMA_OK;
    if (rc != VMA_OK)
        return rc;
    uint64_t content = (uint64_t)o->frames * 8 + 9;
    size_t n = 0, cap = o->cap & ~(size_t)7; /* whole entries per write */
    vmai_put_le32(o->buf, SEEK_SKIPPABLE_MAGIC);
    vmai_put_le32(o->buf + 4, (uint32_t)content);
    n = 8;
    for (size_t i = 0; i < o->frames; i++) {
        if (n + 8 > cap) {
            if ((rc = put(o, o->buf, n, err, errlen)) != VMA_OK)
                return rc;
            n = 0;
        }
        vmai_put_le32(o->buf + n, o->seek[2 * i]);
        vmai_put_le32(o->buf + n + 4, o->seek[2 * i + 1]);
        n += 8;
    }
    if (n + 9 > cap) {
        if ((rc = put(o, o->buf, n, err, errlen)) != VMA_OK)
            return rc;
        n = 0;
    }
    vmai_put_le32(o->buf + n, (uint32_t)o->frames);
    o->buf[n + 4] = 0; /* descriptor: no checksums */
    vmai_put_le32(o->buf + n + 5, SEEK_MAGIC);
    return put(o, o->buf, n + 9, err, errlen);
}

static int gzip_run(struct vmai_output *o, const void *buf, size_t len, int flush, char *err,
                    size_t errlen)
{
    o->gz.next_in = (Bytef *)buf;
    o->gz.avail_in = (uInt)len;
    int zr;
    do {
        o->gz.next_out = o->buf;
        o->gz.avail_out = (uInt)o->cap;
        zr = deflate(&o->gz, flush);
        if (zr == Z_STREAM_ERROR) {
            snprintf(err, errlen, "gzip compression failed");
            return VMA_ERR_IO;
        }
        size_t n = o->cap - o->gz.avail_out;
        int rc = n > 0 ? put(o, o->buf, n, err, errlen) : VMA_OK;
        if (rc != VMA_OK)
            return rc;
    } while (o->gz.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
    return VMA_OK;
}

int vmai_output_write(struct vmai_output *o, const void *buf, size_t len, char *err,
                      size_t errlen)
{
    switch (o->codec) {
    case VMAI_CODEC_ZSTD:
        return zstd_write(o, buf, len, err, errlen);
    case VMAI_CODEC_GZIP:
        return gzip_run(o, buf, len, Z_NO_FLUSH, err, errlen);
    case VMAI_CODEC_LZO: {
        const unsigned char *p = buf;
        while (len > 0) {
            size_t n = LZO_BLOCK - o->lzo_fill < len ? LZO_BLOCK - o->lzo_fill : len;
            memcpy(o->lzo_in + o->lzo_fill, p, n);
            o->lzo_fill += n;
            p += n;
            len -= n;
            int rc = o->lzo_fill == LZO_BLOCK ? lzop_block(o, err, errlen) : VMA_OK;
            if (rc != VMA_OK)
                return rc;
        }
        return VMA_OK;
    }
    case VMAI_CODEC_NONE:
        break;
    }
    return put(o, buf, len, err, errlen);
}

int vmai_output_finish(struct vmai_output *o, char *err, size_t errlen)
{
    static const unsigned char lzop_end[4];
    switch (o->codec) {
    case VMAI_CODEC_ZSTD:
        return zstd_finish(o, err, errlen);
    case VMAI_CODEC_GZIP:
        return gzip_run(o, NULL, 0, Z_FINISH, err, errlen);
    case VMAI_CODEC_LZO: {
        int rc = lzop_block(o, err, errlen);
        if (rc != VMA_OK)
            return rc;
        return put(o, lzop_end, sizeof(lzop_end), err, errlen);
    }
    case VMAI_CODEC_NONE:
        break;
    }
    return VMA_OK;
}

void vmai_output_free(struct vmai_output *o)
{
    if (o == NULL)
        return;
    ZSTD_freeCCtx(o->zstd);
    free(o->seek);
    if (o->gz_init)
        deflateEnd(&o->gz);
    free(o->lzo_in);
    free(o->lzo_work);
    free(o->buf);
    free(o);
}
