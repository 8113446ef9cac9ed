/*
 * Random access into a .vma.lzo: lzop compresses in independent blocks
 * (256 KiB by default), each with its sizes and checksums in front. A scan
 * of the block headers (pread, skipping the data) maps decompressed
 * offsets to blocks; a read then decompresses only the blocks it needs and
 * checks their checksums, so a damaged block fails the reads that need it
 * (VMA_ERR_CORRUPT) and nothing else. Internal to libvma.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lzo/lzo1x.h>
#include <zlib.h>

#include "codec.h"
#include "format.h"
#include "lzo_blocks.h"


struct cursor {
    int fd;
    uint64_t pos;
};

static int get(struct cursor *c, void *buf, size_t n)
{
    int rc = vmai_pread_exact(c->fd, buf, n, c->pos, NULL);
    c->pos += n;
    return rc;
}

static int lzo_decode(const struct vmai_block_map *m, int fd, size_t i, unsigned char *out);

int vmai_lzo_map_scan(int fd, struct vmai_block_map **out, char *err, size_t errlen)
{
    struct vmai_block_map *m = vmai_block_map_new("lzop block", lzo_decode);
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return VMA_ERR_NOMEM;
    }
    struct cursor c = { fd, 9 }; /* after the magic, checked by the reader */
    unsigned char b[256];
    int rc = get(&c, b, 4);
    unsigned version = (unsigned)b[0] << 8 | b[1];
    if (rc == VMA_OK && version >= LZOP_VERSION_NEW_HEADER)
        rc = get(&c, b, 2);
    if (rc == VMA_OK)
        rc = get(&c, b, version >= LZOP_VERSION_NEW_HEADER ? 2 : 1);
    if (rc == VMA_OK)
        rc = get(&c, b, 4);
    m->flags = vmai_get_be32(b);
    if (rc == VMA_OK && (m->flags & LZOP_FILTER))
        rc = get(&c, b, 4);
    if (rc == VMA_OK)
        rc = get(&c, b, version >= LZOP_VERSION_NEW_HEADER ? 13 : 9);
    if (rc == VMA_OK)
        c.pos += b[version >= LZOP_VERSION_NEW_HEADER ? 12 : 8] + 4u; /* name, header checksum */
    if (rc == VMA_OK && (m->flags & LZOP_EXTRA_FIELD) && (rc = get(&c, b, 4)) == VMA_OK)
        c.pos += vmai_get_be32(b) + 4u;
    while (rc == VMA_OK) {
        if ((rc = get(&c, b, 4)) != VMA_OK)
            break;
        uint32_t dst = vmai_get_be32(b);
        if (dst == 0)
            break;
        if ((rc = get(&c, b, 4)) != VMA_OK)
            break;
        uint32_t src = vmai_get_be32(b);
        if (dst > LZO_MAX_BLOCK || src > dst || src == 0) {
            rc = VMA_ERR_CORRUPT;
            break;
        }
        unsigned nd = !!(m->flags & LZOP_ADLER32_D) + !!(m->flags & LZOP_CRC32_D);
        unsigned nc = src < dst ? !!(m->flags & LZOP_ADLER32_C) + !!(m->flags & LZOP_CRC32_C) : 0;
        uint32_t sum = 0;
        if (nd > 0 && (rc = get(&c, b, 4)) == VMA_OK)
            sum = vmai_get_be32(b);
        c.pos += 4u * (nd + nc - (nd > 0));
        if ((rc = vmai_block_map_add(m, c.pos, src, dst, sum, nd > 0)) != VMA_OK)
            break;
        c.pos += src;
    }
    if (rc != VMA_OK) {
        snprintf(err, errlen, "lzop block table: %s near compressed byte %llu",
                 rc == VMA_ERR_NOMEM ? "out of memory" : rc == VMA_ERR_IO ? strerror(errno)
                                                                          : "damaged",
                 (unsigned long long)c.pos);
        vmai_block_map_free(m);
        return rc;
    }
    *out = m;
    return VMA_OK;
}

/* Decompress block i into out (dst bytes) and check its data checksum. */
static int lzo_decode(const struct vmai_block_map *m, int fd, size_t i, unsigned char *out)
{
    const struct vmai_block *k = &m->blocks[i];
    struct cursor c = { fd, k->file_off };
    unsigned char *packed = k->src < k->dst ? malloc(k->src) : out;
    if (packed == NULL)
        return VMA_ERR_NOMEM;
    int rc = get(&c, packed, k->src);
    lzo_uint len = k->dst;
    if (rc == VMA_OK && packed != out &&
        (lzo1x_decompress_safe(packed, k->src, out, &len, NULL) != LZO_E_OK || len != k->dst))
        rc = VMA_ERR_CORRUPT;
    if (packed != out)
        free(packed);
    if (rc == VMA_OK && k->has_sum) {
        uint32_t got = (m->flags & LZOP_ADLER32_D)
                           ? (uint32_t)adler32(adler32(0, NULL, 0), out, k->dst)
                           : (uint32_t)crc32(crc32(0, NULL, 0), out, k->dst);
        if (got != k->sum)
            rc = VMA_ERR_CORRUPT;
    }
    return rc;
}

