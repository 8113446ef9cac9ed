/*
 * The VMA on-disk structures: integer helpers, MD5, header and extent
 * decoding with every check the format asks for, and encoding.
 * Memory buffers only; no I/O here.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <md5.h> /* libmd: see README, "Dependencies" */

#include "format.h"

static const unsigned char header_magic[4] = {'V', 'M', 'A', 0};

/* Fuzzing builds skip the MD5 comparisons so that mutated inputs reach the
 * semantic checks behind them (the usual libFuzzer convention). */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define md5_differs(a, b) ((void)(a), (void)(b), 0)
#else
#define md5_differs(a, b) (memcmp((a), (b), 16) != 0)
#endif
static const unsigned char extent_magic[4] = {'V', 'M', 'A', 'E'};

static int fail(int status, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(int status, char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

uint16_t vmai_get_be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
uint16_t vmai_get_le16(const unsigned char *p) { return (uint16_t)(p[1] << 8 | p[0]); }

uint32_t vmai_get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t vmai_get_le64(const unsigned char *p)
{
    return (uint64_t)vmai_get_le32(p) | (uint64_t)vmai_get_le32(p + 4) << 32;
}

uint32_t vmai_get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t vmai_get_be64(const unsigned char *p)
{
    return (uint64_t)vmai_get_be32(p) << 32 | vmai_get_be32(p + 4);
}

void vmai_put_be16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

void vmai_put_le16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

void vmai_put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

void vmai_put_le64(unsigned char *p, uint64_t v)
{
    vmai_put_le32(p, (uint32_t)v);
    vmai_put_le32(p + 4, (uint32_t)(v >> 32));
}

void vmai_put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

void vmai_put_be64(unsigned char *p, uint64_t v)
{
    vmai_put_be32(p, (uint32_t)(v >> 32));
    vmai_put_be32(p + 4, (uint32_t)v);
}

void vmai_md5_zeroed(const unsigned char *buf, size_t len, size_t md5_off,
                     unsigned char out[16])
{
    static const unsigned char zero[16];
    MD5_CTX ctx;
    MD5Init(&ctx);
    MD5Update(&ctx, buf, md5_off);
    MD5Update(&ctx, zero, 16);
    MD5Update(&ctx, buf + md5_off + 16, len - md5_off - 16);
    MD5Final(out, &ctx);
}

bool vmai_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    /* Data blocks usually differ from zero in the first bytes: check 16
     * bytes by hand, then let libc's vectorized memcmp compare the buffer
     * with itself shifted by 16 bytes (all equal + a zero head = all zero),
     * which runs at memory speed. */
    if (len < 32) {
        for (size_t i = 0; i < len; i++)
            if (p[i] != 0)
                return false;
        return true;
    }
    uint64_t a, b;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    return (a | b) == 0 && memcmp(p, p + 16, len - 16) == 0;
}

uint64_t vmai_cluster_count(uint64_t size)
{
    return size / VMA_CLUSTER_SIZE + (size % VMA_CLUSTER_SIZE != 0);
}

void vmai_blockinfo_decode(uint64_t v, struct vmai_blockinfo *bi)
{
    bi->mask = (uint16_t)(v >> 48);
    bi->reserved = (uint8_t)(v >> 40);
    bi->dev_id = (uint8_t)(v >> 32);
    bi->cluster_num = (uint32_t)v;
}

uint64_t vmai_blockinfo_encode(const struct vmai_blockinfo *bi)
{
    return (uint64_t)bi->mask << 48 | (uint64_t)bi->reserved << 40 |
           (uint64_t)bi->dev_id << 32 | bi->cluster_num;
}

int vmai_header_prefix(const unsigned char *buf, size_t len, uint32_t *header_size,
                       char *err, size_t errlen)
{
    if (len < VMA_HEADER_FIXED_SIZE)
        return fail(VMA_ERR_TRUNCATED, err, errlen,
                    "header: only %zu of %u bytes", len, VMA_HEADER_FIXED_SIZE);
    if (memcmp(buf, header_magic, 4) != 0)
        return fail(VMA_ERR_CORRUPT, err, errlen, "not a VMA archive (bad magic at offset 0)");
    uint32_t version = vmai_get_be32(buf + VMA_HOFF_VERSION);
    if (version != 1)
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "header: unsupported version %u at offset 4 (expected 1)", version);
    uint32_t hsize = vmai_get_be32(buf + VMA_HOFF_HEADER_SIZE);
    uint32_t boff = vmai_get_be32(buf + VMA_HOFF_BLOB_OFFSET);
    uint32_t bsize = vmai_get_be32(buf + VMA_HOFF_BLOB_SIZE);
    if (hsize % 512 != 0 || hsize <= VMA_HEADER_FIXED_SIZE || hsize > VMA_MAX_HEADER_SIZE)
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "header: bad header_size %u at offset 56 (must be a multiple of 512, "
                    "above %u and at most %u)",
                    hsize, VMA_HEADER_FIXED_SIZE, VMA_MAX_HEADER_SIZE);
    if (boff < VMA_HEADER_FIXED_SIZE || boff >= hsize || bsize > hsize - boff)
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "header: blob buffer (offset %u, size %u) is not inside the blob table "
                    "(%u..%u)",
                    boff, bsize, VMA_HEADER_FIXED_SIZE, hsize);
    *header_size = hsize;
    return VMA_OK;
}

/* The blob chain: which offsets start a blob, and which are already used. */
struct blob_map {
    const unsigned char *buf; /* blob buffer */
    uint32_t size;
    uint32_t base;            /* header offset of the blob buffer */
    unsigned char *state;     /* per offset: 0 = none, 1 = blob start, 2 = start used */
};

static int blob_map_build(struct blob_map *m, char *err, size_t errlen)
{
    m->state = calloc(m->size ? m->size : 1, 1);
    if (m->state == NULL)
        return fail(VMA_ERR_NOMEM, err, errlen, "header: out of memory for %u blob bytes",
                    m->size);
    uint32_t pos = 1;
    while (pos < m->size) {
        if (m->size - pos < 2)
            return fail(VMA_ERR_CORRUPT, err, errlen,
                        "header: blob at offset %u has a cut length field (blob_buffer_size %u)",
                        pos, m->size);
        uint32_t len = vmai_get_le16(m->buf + pos);
        if (len > m->size - pos - 2)
            return fail(VMA_ERR_CORRUPT, err, errlen,
                        "header: blob at offset %u of %u bytes runs past blob_buffer_size %u",
                        pos, len, m->size);
        m->state[pos] = 1;
        pos += 2 + len;
    }
    return VMA_OK;
}

/* Look up a blob by pointer: must be a chain start, not yet used. */
static int blob_get(struct blob_map *m, uint32_t ptr, const char *what, unsigned slot,
                    const unsigned char **data, size_t *len, char *err, size_t errlen)
{
    if (ptr >= m->size || m->state[ptr] == 0)
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "header: %s %u points to blob offset %u, which is not a blob start "
                    "(blob_buffer_size %u)",
                    what, slot, ptr, m->size);
    if (m->state[ptr] == 2)
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "header: %s %u points to blob offset %u, which another entry uses too",
                    what, slot, ptr);
    m->state[ptr] = 2;
    *len = vmai_get_le16(m->buf + ptr);
    *data = m->buf + ptr + 2;
    return VMA_OK;
}

static int blob_get_name(struct blob_map *m, uint32_t ptr, const char *what, unsigned slot,
                         const char **name, char *err, size_t errlen)
{
    const unsigned char *data = NULL;
    size_t len = 0;
    int rc = blob_get(m, ptr, what, slot, &data, &len, err, errlen);
    if (rc != VMA_OK)
        return rc;
    if (len == 0)
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "header: %s %u name blob at offset %u is empty", what, slot, ptr);
    if (data[len - 1] != 0 || memchr(data, 0, len - 1) != NULL)
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "header: %s %u name blob at offset %u is not one NUL-terminated string",
                    what, slot, ptr);
    *name = (const char *)data;
    if (!vma_name_is_valid(*name)) {
        char q[280];
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "header: %s %u has an unsafe or invalid name '%s' at header offset %llu "
                    "(empty, '/', '.', '..', control characters or longer than %u bytes)",
                    what, slot, vmai_escape(q, sizeof(q), *name, 64),
                    (unsigned long long)m->base + ptr + 2, VMA_MAX_NAME_LEN);
    }
    return VMA_OK;
}

static int header_parse_configs(const unsigned char *buf, struct blob_map *m,
                                struct vmai_header *h, char *err, size_t errlen)
{
    h->config_count = 0;
    for (unsigned i = 0; i < VMA_MAX_CONFIGS; i++) {
        uint32_t name_ptr = vmai_get_be32(buf + VMA_HOFF_CONFIG_NAMES + 4 * i);
        uint32_t data_ptr = vmai_get_be32(buf + VMA_HOFF_CONFIG_DATA + 4 * i);
        if (name_ptr == 0 || data_ptr == 0)
            continue; /* a slot is in use only when both are set */
        struct vmai_config *c = &h->configs[h->config_count];
        int rc = blob_get_name(m, name_ptr, "config", i, &c->name, err, errlen);
        if (rc == VMA_OK)
            rc = blob_get(m, data_ptr, "config data", i, &c->data, &c->len, err, errlen);
        if (rc != VMA_OK)
            return rc;
        for (unsigned j = 0; j < h->config_count; j++)
            if (strcmp(h->configs[j].name, c->name) == 0)
                return fail(VMA_ERR_CORRUPT, err, errlen,
                            "header: config %u has the same name '%s' as an earlier config",
                            i, c->name);
        h->config_count++;
    }
    return VMA_OK;
}

static int header_parse_devices(const unsigned char *buf, struct blob_map *m,
                                struct vmai_header *h, char *err, size_t errlen)
{
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++) {
        const unsigned char *di = buf + VMA_HOFF_DEV_INFO + VMA_DEV_INFO_SIZE * i;
        uint32_t name_ptr = vmai_get_be32(di);
        uint64_t size = vmai_get_be64(di + 8);
        struct vmai_device *d = &h->devices[i];
        memset(d, 0, sizeof(*d));
        if (name_ptr == 0 && size == 0)
            continue;
        if (name_ptr == 0)
            return fail(VMA_ERR_CORRUPT, err, errlen,
                        "header: device slot %u has a size (%llu) but no name", i,
                        (unsigned long long)size);
        const char *name;
        int rc = blob_get_name(m, name_ptr, "device", i, &name, err, errlen);
        if (rc != VMA_OK)
            return rc;
        if (size == 0)
            continue; /* a named slot of size 0 is not in use */
        if (i == 0 || i == VMA_DEV_SLOTS - 1)
            return fail(VMA_ERR_CORRUPT, err, errlen,
                        "header: device '%s' in slot %u (dev_ids are 1..254)", name, i);
        bool vmstate = strcmp(name, VMA_VMSTATE_NAME) == 0;
        if (!vmstate && size > VMA_MAX_DEVICE_SIZE)
            return fail(VMA_ERR_CORRUPT, err, errlen,
                        "header: device '%s' (slot %u) size %llu is beyond the format's "
                        "limit of 2^32 clusters",
                        name, i, (unsigned long long)size);
        for (unsigned j = 1; j < i; j++)
            if (h->devices[j].name != NULL && strcmp(h->devices[j].name, name) == 0)
                return fail(VMA_ERR_CORRUPT, err, errlen,
                            "header: device slot %u has the same name '%s' as slot %u", i,
                            name, j);
        d->name = name;
        d->size = size;
        d->is_vmstate = vmstate;
    }
    return VMA_OK;
}

static int header_parse(const unsigned char *buf, size_t len, struct vmai_header *h,
                        bool check_md5, char *err, size_t errlen)
{
    uint32_t hsize;
    int rc = vmai_header_prefix(buf, len, &hsize, err, errlen);
    if (rc != VMA_OK)
        return rc;
    if (len < hsize)
        return fail(VMA_ERR_TRUNCATED, err, errlen, "header: only %zu of %u bytes", len,
                    hsize);
    unsigned char md5[16];
    vmai_md5_zeroed(buf, hsize, VMA_HOFF_MD5, md5);
    if (check_md5 && md5_differs(md5, buf + VMA_HOFF_MD5))
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "header: MD5 checksum mismatch (bytes 0..%u)", hsize - 1);

    memset(h, 0, sizeof(*h));
    memcpy(h->uuid, buf + VMA_HOFF_UUID, 16);
    h->ctime = (int64_t)vmai_get_be64(buf + VMA_HOFF_CTIME);
    h->header_size = hsize;
    h->blob_offset = vmai_get_be32(buf + VMA_HOFF_BLOB_OFFSET);
    h->blob_size = vmai_get_be32(buf + VMA_HOFF_BLOB_SIZE);

    struct blob_map m = {buf + h->blob_offset, h->blob_size, h->blob_offset, NULL};
    rc = blob_map_build(&m, err, errlen);
    if (rc == VMA_OK)
        rc = header_parse_configs(buf, &m, h, err, errlen);
    if (rc == VMA_OK)
        rc = header_parse_devices(buf, &m, h, err, errlen);
    free(m.state);
    return rc;
}

int vmai_header_parse(const unsigned char *buf, size_t len, struct vmai_header *h,
                      char *err, size_t errlen)
{
    return header_parse(buf, len, h, true, err, errlen);
}

int vmai_header_parse_unverified(const unsigned char *buf, size_t len, struct vmai_header *h,
                                 char *err, size_t errlen)
{
    return header_parse(buf, len, h, false, err, errlen);
}

int vmai_extent_parse(const unsigned char buf[VMA_EXTENT_HEADER_SIZE],
                      const unsigned char uuid[16], struct vmai_extent *e, char *err,
                      size_t errlen)
{
    if (memcmp(buf, extent_magic, 4) != 0)
        return fail(VMA_ERR_CORRUPT, err, errlen, "bad extent magic");
    unsigned char md5[16];
    vmai_md5_zeroed(buf, VMA_EXTENT_HEADER_SIZE, VMA_EOFF_MD5, md5);
    if (md5_differs(md5, buf + VMA_EOFF_MD5))
        return fail(VMA_ERR_CORRUPT, err, errlen, "extent header MD5 checksum mismatch");
    if (vmai_get_be16(buf + VMA_EOFF_RESERVED) != 0)
        return fail(VMA_ERR_CORRUPT, err, errlen, "extent reserved field is 0x%04x, not 0",
                    vmai_get_be16(buf + VMA_EOFF_RESERVED));
    if (memcmp(buf + VMA_EOFF_UUID, uuid, 16) != 0)
        return fail(VMA_ERR_CORRUPT, err, errlen, "extent uuid differs from the header's");
    e->block_count = vmai_get_be16(buf + VMA_EOFF_BLOCK_COUNT);
    unsigned blocks = 0;
    for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
        struct vmai_blockinfo *bi = &e->info[i];
        vmai_blockinfo_decode(vmai_get_be64(buf + VMA_EOFF_BLOCKINFO + 8 * i), bi);
        if (bi->reserved != 0)
            return fail(VMA_ERR_CORRUPT, err, errlen,
                        "extent blockinfo %u has reserved bits set (0x%02x)", i, bi->reserved);
        if (bi->dev_id != 0)
            blocks += vmai_popcount16(bi->mask);
    }
    if (blocks != e->block_count)
        return fail(VMA_ERR_CORRUPT, err, errlen,
                    "extent block_count %u disagrees with its masks (%u blocks)",
                    e->block_count, blocks);
    return VMA_OK;
}

void vmai_extent_encode(unsigned char buf[VMA_EXTENT_HEADER_SIZE], const unsigned char uuid[16],
                        const struct vmai_extent *e)
{
    unsigned blocks = 0;
    memset(buf, 0, VMA_EXTENT_HEADER_SIZE);
    memcpy(buf, extent_magic, 4);
    memcpy(buf + VMA_EOFF_UUID, uuid, 16);
    for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
        vmai_put_be64(buf + VMA_EOFF_BLOCKINFO + 8 * i, vmai_blockinfo_encode(&e->info[i]));
        if (e->info[i].dev_id != 0)
            blocks += vmai_popcount16(e->info[i].mask);
    }
    vmai_put_be16(buf + VMA_EOFF_BLOCK_COUNT, (uint16_t)blocks);
    vmai_md5_zeroed(buf, VMA_EXTENT_HEADER_SIZE, VMA_EOFF_MD5, buf + VMA_EOFF_MD5);
}

/* Append one blob to the table; returns its offset. */
static uint32_t blob_append(unsigned char *blobs, uint32_t *used, const void *data, size_t len,
                            bool add_nul)
{
    uint32_t off = *used;
    size_t total = len + (add_nul ? 1 : 0);
    vmai_put_le16(blobs + off, (uint16_t)total);
    memcpy(blobs + off + 2, data, len);
    if (add_nul)
        blobs[off + 2 + len] = 0;
    *used += (uint32_t)(2 + total);
    return off;
}

int vmai_header_encode(const struct vmai_header *h, unsigned char **out, size_t *out_len,
                       char *err, size_t errlen)
{
    /* Size the blob buffer first: offset 0 is never used. */
    uint64_t need = 1;
    for (unsigned i = 0; i < h->config_count; i++)
        need += 2 + strlen(h->configs[i].name) + 1 + 2 + h->configs[i].len;
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++)
        if (h->devices[i].name != NULL)
            need += 2 + strlen(h->devices[i].name) + 1;
    uint64_t table = (need + 511) / 512 * 512;
    uint64_t hsize = VMA_HEADER_FIXED_SIZE + table;
    if (hsize > VMA_WRITER_MAX_HEADER_SIZE)
        return fail(VMA_ERR_LIMIT, err, errlen,
                    "header of %llu bytes would exceed the %u bytes a VMA reader accepts "
                    "(configs and names too large)",
                    (unsigned long long)hsize, VMA_WRITER_MAX_HEADER_SIZE);
    unsigned char *buf = calloc(1, (size_t)hsize);
    if (buf == NULL)
        return fail(VMA_ERR_NOMEM, err, errlen, "out of memory for a %llu-byte header",
                    (unsigned long long)hsize);

    unsigned char *blobs = buf + VMA_HEADER_FIXED_SIZE;
    uint32_t used = 1;
    memcpy(buf, header_magic, 4);
    vmai_put_be32(buf + VMA_HOFF_VERSION, 1);
    memcpy(buf + VMA_HOFF_UUID, h->uuid, 16);
    vmai_put_be64(buf + VMA_HOFF_CTIME, (uint64_t)h->ctime);
    for (unsigned i = 0; i < h->config_count; i++) {
        const struct vmai_config *c = &h->configs[i];
        uint32_t n = blob_append(blobs, &used, c->name, strlen(c->name), true);
        uint32_t d = blob_append(blobs, &used, c->data, c->len, false);
        vmai_put_be32(buf + VMA_HOFF_CONFIG_NAMES + 4 * i, n);
        vmai_put_be32(buf + VMA_HOFF_CONFIG_DATA + 4 * i, d);
    }
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++) {
        const struct vmai_device *d = &h->devices[i];
        if (d->name == NULL)
            continue;
        unsigned char *di = buf + VMA_HOFF_DEV_INFO + VMA_DEV_INFO_SIZE * i;
        vmai_put_be32(di, blob_append(blobs, &used, d->name, strlen(d->name), true));
        vmai_put_be64(di + 8, d->size);
    }
    vmai_put_be32(buf + VMA_HOFF_BLOB_OFFSET, VMA_HEADER_FIXED_SIZE);
    vmai_put_be32(buf + VMA_HOFF_BLOB_SIZE, used);
    vmai_put_be32(buf + VMA_HOFF_HEADER_SIZE, (uint32_t)hsize);
    vmai_md5_zeroed(buf, (size_t)hsize, VMA_HOFF_MD5, buf + VMA_HOFF_MD5);
    *out = buf;
    *out_len = (size_t)hsize;
    return VMA_OK;
}

const char *vmai_escape(char *dst, size_t dstlen, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    for (; s != NULL && s[i] != '\0' && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[9] = {(char)c, 0};
        if (c == '\\' || c == '\n' || c == '\r' || c == '\t') {
            e[0] = '\\';
            e[1] = c == '\\' ? '\\' : c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20 || c == 0x7f || (c == 0xc2 && (unsigned char)s[i + 1] >= 0x80 &&
                                             (unsigned char)s[i + 1] <= 0x9f)) {
            /* C0, DEL and UTF-8 C1 (two bytes) as \xNN each */
            unsigned n = c == 0xc2 ? 2 : 1;
            for (unsigned k = 0; k < n; k++) {
                unsigned char b = (unsigned char)s[i + k];
                e[4 * k] = '\\';
                e[4 * k + 1] = 'x';
                e[4 * k + 2] = hex[b >> 4];
                e[4 * k + 3] = hex[b & 15];
            }
            i += n - 1;
        }
        size_t n = strlen(e);
        if (o + n + 4 > dstlen) /* room for "..." and the NUL */
            break;
        memcpy(dst + o, e, n);
        o += n;
    }
    if (s != NULL && s[i] != '\0' && o + 4 <= dstlen) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o < dstlen ? o : dstlen - 1] = '\0';
    return dst;
}
