/*
 * Test helpers shared by the tests that build archives by hand (vma_craft,
 * negative_reader, the corruption matrix and others): a byte buffer, an
 * archive builder that lays out headers and extents by hand (so tests
 * can make archives no writer would produce), re-signing of header and
 * extent MD5s, and file helpers. Uses the internal format code for the
 * integer helpers, MD5 and extent encoding only.
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_TESTS_VMATEST_H
#define LIBVMA_TESTS_VMATEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"

/* ---------------------------------------------------------------- */
/* growing byte buffer                                               */
/* ---------------------------------------------------------------- */

struct vt_buf {
    unsigned char *p;
    size_t len, cap;
};

static inline void vt_reserve(struct vt_buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + extra)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (p == NULL) {
        fprintf(stderr, "vmatest: out of memory\n");
        abort();
    }
    b->p = p;
    b->cap = cap;
}

static inline void vt_append(struct vt_buf *b, const void *data, size_t len)
{
    vt_reserve(b, len);
    if (data != NULL)
        memcpy(b->p + b->len, data, len);
    else
        memset(b->p + b->len, 0, len);
    b->len += len;
}

static inline void vt_free(struct vt_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static inline void vt_copy(struct vt_buf *dst, const unsigned char *p, size_t len)
{
    dst->len = 0;
    vt_append(dst, p, len);
}

/* ---------------------------------------------------------------- */
/* header builder                                                    */
/* ---------------------------------------------------------------- */

/* A name given as a C string (stored with its NUL), or as raw blob bytes
 * (raw != NULL: exactly rawlen bytes, for empty or unterminated names). */
struct vt_name {
    const char *str;
    const void *raw;
    size_t rawlen;
};

struct vt_conf {
    struct vt_name name;
    const void *data;
    size_t len;
};

struct vt_dev {
    struct vt_name name; /* str == NULL && raw == NULL: slot unused */
    uint64_t size;
};

struct vt_hdr {
    unsigned char uuid[16];
    int64_t ctime;
    unsigned nconf;
    struct vt_conf conf[VMA_MAX_CONFIGS]; /* stored in slots 0..nconf-1 */
    struct vt_dev dev[VMA_DEV_SLOTS];     /* indexed by slot (dev_id) */
    uint32_t extra_table;                 /* extra blob table bytes (multiple of 512) */
};

static inline uint32_t vt_blob_add(struct vt_buf *blobs, const void *data, size_t len)
{
    uint32_t off = (uint32_t)blobs->len;
    unsigned char l[2];
    vmai_put_le16(l, (uint16_t)len);
    vt_append(blobs, l, 2);
    vt_append(blobs, data, len);
    return off;
}

static inline uint32_t vt_blob_name(struct vt_buf *blobs, const struct vt_name *n)
{
    if (n->raw != NULL)
        return vt_blob_add(blobs, n->raw, n->rawlen);
    return vt_blob_add(blobs, n->str, strlen(n->str) + 1);
}

static inline int vt_name_used(const struct vt_name *n)
{
    return n->str != NULL || n->raw != NULL;
}

/* Recompute the header MD5 (header_size taken from the buffer). */
static inline void vt_resign_header(unsigned char *hdr)
{
    uint32_t hs = vmai_get_be32(hdr + VMA_HOFF_HEADER_SIZE);
    vmai_md5_zeroed(hdr, hs, VMA_HOFF_MD5, hdr + VMA_HOFF_MD5);
}

/* Recompute an extent header's MD5. */
static inline void vt_resign_extent(unsigned char *ext)
{
    vmai_md5_zeroed(ext, VMA_EXTENT_HEADER_SIZE, VMA_EOFF_MD5, ext + VMA_EOFF_MD5);
}

/* Append a header laid out as the deployed writer does (blob buffer at
 * 12288, blob 0 unused, table rounded up to 512, at least 512). Returns
 * header_size. */
static inline uint32_t vt_header_build(struct vt_buf *out, const struct vt_hdr *h)
{
    struct vt_buf blobs = {0};
    unsigned char zero = 0;
    vt_append(&blobs, &zero, 1);
    unsigned char fixed[VMA_HEADER_FIXED_SIZE];
    memset(fixed, 0, sizeof(fixed));
    memcpy(fixed, "VMA\0", 4);
    vmai_put_be32(fixed + VMA_HOFF_VERSION, 1);
    memcpy(fixed + VMA_HOFF_UUID, h->uuid, 16);
    vmai_put_be64(fixed + VMA_HOFF_CTIME, (uint64_t)h->ctime);
    for (unsigned i = 0; i < h->nconf; i++) {
        uint32_t n = vt_blob_name(&blobs, &h->conf[i].name);
        uint32_t d = vt_blob_add(&blobs, h->conf[i].data, h->conf[i].len);
        vmai_put_be32(fixed + VMA_HOFF_CONFIG_NAMES + 4 * i, n);
        vmai_put_be32(fixed + VMA_HOFF_CONFIG_DATA + 4 * i, d);
    }
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++) {
        if (!vt_name_used(&h->dev[i].name))
            continue;
        unsigned char *di = fixed + VMA_HOFF_DEV_INFO + VMA_DEV_INFO_SIZE * i;
        vmai_put_be32(di, vt_blob_name(&blobs, &h->dev[i].name));
        vmai_put_be64(di + 8, h->dev[i].size);
    }
    uint32_t bsize = (uint32_t)blobs.len;
    uint32_t table = (bsize + 511) / 512 * 512 + h->extra_table;
    uint32_t hs = VMA_HEADER_FIXED_SIZE + table;
    vmai_put_be32(fixed + VMA_HOFF_BLOB_OFFSET, VMA_HEADER_FIXED_SIZE);
    vmai_put_be32(fixed + VMA_HOFF_BLOB_SIZE, bsize);
    vmai_put_be32(fixed + VMA_HOFF_HEADER_SIZE, hs);
    size_t start = out->len;
    vt_append(out, fixed, sizeof(fixed));
    vt_append(out, blobs.p, blobs.len);
    vt_append(out, NULL, table - bsize);
    vt_resign_header(out->p + start);
    vt_free(&blobs);
    return hs;
}

/* ---------------------------------------------------------------- */
/* extents                                                           */
/* ---------------------------------------------------------------- */

struct vt_ent {
    unsigned dev;
    uint32_t cluster;
    uint16_t mask;
};

/* The content the builder stores for a block: never all zero. */
static inline void vt_block_fill(unsigned char *p, unsigned dev, uint32_t cluster,
                                 unsigned block)
{
    uint32_t x = (uint32_t)dev * 2654435761u ^ cluster * 40503u ^ block * 977u ^ 0x9e3779b9u;
    for (unsigned i = 0; i < VMA_BLOCK_SIZE; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)(x | 1);
    }
}

/* Append one extent of n entries (n <= 59) with builder data. */
static inline void vt_extent(struct vt_buf *out, const unsigned char uuid[16],
                             const struct vt_ent *ents, unsigned n)
{
    struct vmai_extent e;
    memset(&e, 0, sizeof(e));
    for (unsigned i = 0; i < n; i++) {
        e.info[i].dev_id = (uint8_t)ents[i].dev;
        e.info[i].cluster_num = ents[i].cluster;
        e.info[i].mask = ents[i].mask;
    }
    unsigned char head[VMA_EXTENT_HEADER_SIZE];
    vmai_extent_encode(head, uuid, &e);
    vt_append(out, head, sizeof(head));
    unsigned char block[VMA_BLOCK_SIZE];
    for (unsigned i = 0; i < n; i++)
        for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++)
            if (ents[i].mask & (1u << b)) {
                vt_block_fill(block, ents[i].dev, ents[i].cluster, b);
                vt_append(out, block, sizeof(block));
            }
}

/* Offsets of the extents of an archive (walks block_count); returns how
 * many were found (at most max). */
static inline unsigned vt_extent_offsets(const unsigned char *p, size_t len, size_t *offs,
                                         unsigned max)
{
    if (len < VMA_HEADER_FIXED_SIZE)
        return 0;
    size_t off = vmai_get_be32(p + VMA_HOFF_HEADER_SIZE);
    unsigned n = 0;
    while (off + VMA_EXTENT_HEADER_SIZE <= len && n < max) {
        offs[n++] = off;
        off += VMA_EXTENT_HEADER_SIZE +
               (size_t)vmai_get_be16(p + off + VMA_EOFF_BLOCK_COUNT) * VMA_BLOCK_SIZE;
    }
    return n;
}

/* ---------------------------------------------------------------- */
/* files                                                             */
/* ---------------------------------------------------------------- */

static inline int vt_read_file(const char *path, struct vt_buf *b)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    b->len = 0;
    for (;;) {
        vt_reserve(b, 65536);
        ssize_t n = read(fd, b->p + b->len, b->cap - b->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        b->len += (size_t)n;
    }
    close(fd);
    return 0;
}

static inline int vt_write_fd(int fd, const void *p, size_t len)
{
    const unsigned char *c = p;
    while (len > 0) {
        ssize_t n = write(fd, c, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c += n;
        len -= (size_t)n;
    }
    return 0;
}

static inline int vt_write_file(const char *path, const void *p, size_t len, int excl)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : O_TRUNC), 0644);
    if (fd < 0)
        return -1;
    int rc = vt_write_fd(fd, p, len);
    if (close(fd) != 0)
        rc = -1;
    return rc;
}

#endif
