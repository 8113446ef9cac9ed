/*
 * Random access into a .vma.gz by access points, as zlib's zran example
 * describes: one inflate pass over the file stops at deflate block
 * boundaries and, every VMAI_GZ_SPAN bytes of output, records where it is
 * (compressed byte, unused bits of the byte before) and the 32 KiB of
 * output before it, the history the next blocks may refer to. A read
 * starts a raw inflate at the nearest point before it (inflatePrime for
 * the bits, inflateSetDictionary for the window) and decompresses at most
 * one span to reach its offset. The windows go to an unlinked file in the
 * cache directory (32 KiB per MiB of archive), the points stay in memory
 * (24 bytes each). Each gzip member starts with a point of its own.
 * Internal to libvma. SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <unistd.h>

#include <zlib.h>

#include "gz_points.h"
#include "io.h"
#include "block_map.h"

#define WINDOW 32768u
#define CHUNK 65536u

void vmai_gz_map_free(struct vmai_gz_map *m)
{
    if (m == NULL)
        return;
    if (m->win_fd >= 0)
        close(m->win_fd);
    vmai_block_cache_free(m->cache);
    free(m->points);
    free(m);
}

static int add_point(struct vmai_gz_map *m, uint64_t out, uint64_t in, unsigned bits,
                     bool member_start, const unsigned char *win, unsigned win_pos)
{
    if (vmai_grow((void **)&m->points, &m->cap, m->count, sizeof(*m->points)) != VMA_OK)
        return VMA_ERR_NOMEM;
    struct vmai_gz_point *p = &m->points[m->count];
    *p = (struct vmai_gz_point){ out, in, (uint8_t)bits, member_start };
    if (!member_start) {
        /* The window is circular: its oldest byte is at win_pos. */
        uint64_t at = (uint64_t)m->count * WINDOW;
        if (vmai_write_full(m->win_fd, win + win_pos, WINDOW - win_pos, (int64_t)at, NULL,
                            false) != 0 ||
            vmai_write_full(m->win_fd, win, win_pos, (int64_t)(at + WINDOW - win_pos), NULL,
                            false) != 0)
            return VMA_ERR_IO;
    }
    if (m->count > 0 && out - m->points[m->count - 1].out > m->max_gap)
        m->max_gap = out - m->points[m->count - 1].out;
    m->count++;
    return VMA_OK;
}

int vmai_gz_map_build(int fd, int win_fd, const struct vmai_cancel *cancel,
                      struct vmai_gz_map **out, char *err, size_t errlen)
{
    struct vmai_gz_map *m = calloc(1, sizeof(*m));
    unsigned char *in = malloc(CHUNK), *win = calloc(1, WINDOW);
    z_stream s;
    memset(&s, 0, sizeof(s));
    int rc = VMA_ERR_NOMEM;
    bool z_open = false;
    if (m == NULL || in == NULL || win == NULL)
        goto out;
    m->win_fd = win_fd;
    if ((m->cache = vmai_block_cache_new()) == NULL || inflateInit2(&s, 15 + 16) != Z_OK)
        goto out;
    z_open = true;
    uint64_t totin = 0, totout = 0, last = 0, file_pos = 0;
    bool ended = false;
    if ((rc = add_point(m, 0, 0, 0, true, win, 0)) != VMA_OK)
        goto out;
    for (;;) {
        if (vmai_cancelled(cancel)) {
            rc = VMA_ERR_CANCELED;
            goto out;
        }
        if (s.avail_in == 0) {
            ssize_t n = pread(fd, in, CHUNK, (off_t)file_pos);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                rc = VMA_ERR_IO;
                goto out;
            }
            if (n == 0) {
                rc = ended ? VMA_OK : VMA_ERR_TRUNCATED;
                goto out;
            }
            file_pos += (uint64_t)n;
            s.next_in = in;
            s.avail_in = (uInt)n;
        }
        if (ended) {
            /* After a member: another one, or the end (trailing zeros). */
            if (s.next_in[0] != 0x1f) {
                rc = VMA_OK;
                goto out;
            }
            inflateReset2(&s, 15 + 16);
            ended = false;
            if ((rc = add_point(m, totout, totin, 0, true, win, 0)) != VMA_OK)
                goto out;
            last = totout;
        }
        if (s.avail_out == 0) {
            s.next_out = win;
            s.avail_out = WINDOW;
        }
        uInt ain = s.avail_in, aout = s.avail_out;
        int zr = inflate(&s, Z_BLOCK);
        totin += ain - s.avail_in;
        totout += aout - s.avail_out;
        if (zr == Z_STREAM_END) {
            ended = true;
            continue;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = zr == Z_MEM_ERROR ? VMA_ERR_NOMEM : VMA_ERR_CORRUPT;
            goto out;
        }
        /* At the end of a deflate block that is not the member's last. */
        if ((s.data_type & 128) && !(s.data_type & 64) && totout - last >= VMAI_GZ_SPAN) {
            unsigned pos = WINDOW - s.avail_out;
            if ((rc = add_point(m, totout, totin, (unsigned)s.data_type & 7, false, win,
                                pos % WINDOW)) != VMA_OK)
                goto out;
            last = totout;
        }
    }
out:
    if (z_open)
        inflateEnd(&s);
    free(in);
    free(win);
    if (rc != VMA_OK) {
        snprintf(err, errlen, "gzip access points: %s",
                 rc == VMA_ERR_NOMEM       ? "out of memory"
                 : rc == VMA_ERR_IO        ? strerror(errno)
                 : rc == VMA_ERR_CANCELED  ? "cancelled"
                 : rc == VMA_ERR_TRUNCATED ? "the gzip stream is cut short"
                                           : "the gzip stream is damaged");
        if (m != NULL)
            m->win_fd = -1; /* the caller's */
        vmai_gz_map_free(m);
        return rc;
    }
    m->size = totout;
    if (totout - m->points[m->count - 1].out > m->max_gap)
        m->max_gap = totout - m->points[m->count - 1].out;
    *out = m;
    return VMA_OK;
}

/* Decompress from point i on: skip bytes, then fill buf with up to len
 * bytes. Sets *got to the bytes written (fewer at a member's end). */
static int from_point(const struct vmai_gz_map *m, int fd, size_t i, uint64_t skip,
                      unsigned char *buf, size_t len, size_t *got)
{
    const struct vmai_gz_point *p = &m->points[i];
    z_stream s;
    memset(&s, 0, sizeof(s));
    unsigned char *in = malloc(CHUNK), *scratch = malloc(WINDOW);
    int rc = VMA_ERR_NOMEM;
    bool z_open = false;
    *got = 0;
    if (in == NULL || scratch == NULL || inflateInit2(&s, p->member_start ? 15 + 16 : -15) != Z_OK)
        goto out;
    z_open = true;
    uint64_t pos = p->in;
    if (!p->member_start) {
        if (p->bits) {
            unsigned char c;
            if ((rc = vmai_pread_exact(fd, &c, 1, p->in - 1, NULL)) != VMA_OK)
                goto out;
            inflatePrime(&s, p->bits, c >> (8 - p->bits));
        }
        if ((rc = vmai_pread_exact(m->win_fd, scratch, WINDOW, (uint64_t)i * WINDOW, NULL)) != VMA_OK)
            goto out;
        inflateSetDictionary(&s, scratch, WINDOW);
    }
    rc = VMA_OK;
    while (*got < len) {
        if (s.avail_in == 0) {
            ssize_t n = pread(fd, in, CHUNK, (off_t)pos);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                rc = n < 0 ? VMA_ERR_IO : VMA_ERR_TRUNCATED;
                break;
            }
            pos += (uint64_t)n;
            s.next_in = in;
            s.avail_in = (uInt)n;
        }
        if (skip > 0) {
            s.next_out = scratch;
            s.avail_out = skip < WINDOW ? (uInt)skip : WINDOW;
        } else {
            size_t want = len - *got;
            s.next_out = buf + *got;
            s.avail_out = want < (1u << 30) ? (uInt)want : (1u << 30);
        }
        uInt aout = s.avail_out;
        int zr = inflate(&s, Z_NO_FLUSH);
        uint64_t made = aout - s.avail_out;
        if (skip > 0)
            skip -= made;
        else
            *got += (size_t)made;
        if (zr == Z_STREAM_END)
            break;
        if (zr != Z_OK && !(zr == Z_BUF_ERROR && s.avail_in == 0)) {
            rc = zr == Z_MEM_ERROR ? VMA_ERR_NOMEM : VMA_ERR_CORRUPT;
            break;
        }
    }
out:
    if (z_open)
        inflateEnd(&s);
    free(in);
    free(scratch);
    return rc;
}

/* Spans longer than this (a deflate block may make many MiB) are not kept. */
#define CACHE_SPAN_MAX (8u << 20)

/* Serve a read that starts in span lo and does not cover it whole from
 * the decoded span, decoding and keeping it first when needed. *got: the
 * bytes served, 0 when the caller must inflate itself (a whole span, a
 * long one, an error: the caller's path reports it). */
static int from_cached_span(const struct vmai_gz_map *m, int fd, size_t lo, uint64_t off,
                            unsigned char *out, size_t len, size_t *got)
{
    uint64_t start = m->points[lo].out;
    uint64_t end = lo + 1 < m->count ? m->points[lo + 1].out : m->size;
    uint64_t span = end - start, skip = off - start;
    size_t n = span - skip < len ? (size_t)(span - skip) : len;
    *got = 0;
    if ((skip == 0 && n == span) || span > CACHE_SPAN_MAX)
        return VMA_OK;
    if (vmai_block_cache_copy(m->cache, lo, out, skip, n)) {
        *got = n;
        return VMA_OK;
    }
    unsigned char *data = malloc((size_t)span);
    size_t made = 0;
    if (data == NULL)
        return VMA_ERR_NOMEM;
    int rc = from_point(m, fd, lo, 0, data, (size_t)span, &made);
    if (rc == VMA_OK && made == span) {
        memcpy(out, data + skip, n);
        *got = n;
        vmai_block_cache_put(m->cache, lo, &data);
    }
    free(data);
    return rc;
}

int vmai_gz_map_read(const struct vmai_gz_map *m, int fd, void *buf, size_t len, uint64_t off,
                     char *err, size_t errlen)
{
    unsigned char *out = buf;
    while (len > 0) {
        if (off >= m->size) {
            snprintf(err, errlen, "read of archive byte %llu past the gzip stream's end",
                     (unsigned long long)off);
            return VMA_ERR_TRUNCATED;
        }
        /* The last point at or before off. */
        size_t lo = vmai_seek_table_find(m->points, m->count, sizeof(*m->points),
                                         offsetof(struct vmai_gz_point, out), off);
        size_t got = 0;
        if (from_cached_span(m, fd, lo, off, out, len, &got) == VMA_OK && got > 0) {
            out += got;
            off += got;
            len -= got;
            continue;
        }
        int rc = from_point(m, fd, lo, off - m->points[lo].out, out, len, &got);
        if (rc != VMA_OK || got == 0) {
            snprintf(err, errlen, "gzip data after compressed byte %llu %s",
                     (unsigned long long)m->points[lo].in,
                     rc == VMA_ERR_NOMEM ? "(out of memory)"
                     : rc == VMA_ERR_IO  ? strerror(errno)
                                         : "is damaged or cut short");
            return rc != VMA_OK ? rc : VMA_ERR_CORRUPT;
        }
        out += got;
        off += got;
        len -= got;
    }
    return VMA_OK;
}
