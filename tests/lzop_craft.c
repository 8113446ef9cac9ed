/*
 * lzop_craft: rewrites the header of an lzop file (as lzop 1.04 or
 * `vma create --compress=lzo` write it) with the optional fields lzop
 * knows, for the framing tests (tests/cli/framing.sh):
 *
 *   lzop_craft IN OUT [hcrc] [extra=TEXT] [badextra] [filter=N]
 *                     [multipart] [flags=0xN] [needed=0xNNNN] [method=N]
 *
 * hcrc: header checksum CRC-32 (LZOP_H_CRC32) instead of Adler-32; extra:
 * an extra field (LZOP_EXTRA_FIELD) with its checksum, badextra spoils that
 * checksum; filter: the filter field (LZOP_FILTER); multipart: LZOP_MULTIPART;
 * flags: more flag bits; needed: "version needed to extract"; method: the
 * method byte. The blocks are copied unchanged. Exit 0, or 1 with a message.
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "codec.h"
#include "vmatest.h"

static int die(const char *msg)
{
    fprintf(stderr, "lzop_craft: %s\n", msg);
    return 1;
}

/* lib/format.h's vmai_put_be32, returning the bytes written. */
static size_t put32(unsigned char *p, uint32_t v)
{
    vmai_put_be32(p, v);
    return 4;
}

static uint32_t sum(int crc, const unsigned char *p, size_t n)
{
    return crc ? (uint32_t)crc32(crc32(0, NULL, 0), p, (uInt)n)
               : (uint32_t)adler32(adler32(0, NULL, 0), p, (uInt)n);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return die("usage: lzop_craft IN OUT [options] (see the source)");
    struct vt_buf b = {0};
    if (vt_read_file(argv[1], &b) != 0)
        return die("cannot read the input");
    const unsigned char *p = b.p;
    /* magic 9, version 2, library version 2, needed 2, method 1, level 1 */
    if (b.len < 50 || memcmp(p, lzop_magic, sizeof lzop_magic) != 0 ||
        vmai_get_be32(p + 9) >> 16 < LZOP_VERSION_NEW_HEADER)
        return die("not an lzop file of version 0.94 or later");
    uint32_t flags = vmai_get_be32(p + 17);
    size_t pos = 21 + ((flags & LZOP_FILTER) ? 4 : 0) + 12;
    size_t name_len = p[pos];
    pos += 1 + name_len + 4; /* name, header checksum */
    if ((flags & LZOP_EXTRA_FIELD) || pos > b.len)
        return die("unexpected input header");

    int hcrc = 0, badextra = 0, multipart = 0;
    const char *extra = NULL;
    long filter = -1, needed = -1, method = -1;
    uint32_t more = 0;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "hcrc") == 0)
            hcrc = 1;
        else if (strcmp(a, "badextra") == 0)
            badextra = 1;
        else if (strcmp(a, "multipart") == 0)
            multipart = 1;
        else if (strncmp(a, "extra=", 6) == 0)
            extra = a + 6;
        else if (strncmp(a, "filter=", 7) == 0)
            filter = strtol(a + 7, NULL, 0);
        else if (strncmp(a, "flags=", 6) == 0)
            more = (uint32_t)strtoul(a + 6, NULL, 0);
        else if (strncmp(a, "needed=", 7) == 0)
            needed = strtol(a + 7, NULL, 0);
        else if (strncmp(a, "method=", 7) == 0)
            method = strtol(a + 7, NULL, 0);
        else
            return die("unknown option");
    }
    flags &= ~(LZOP_FILTER | LZOP_H_CRC32);
    flags |= more | (hcrc ? LZOP_H_CRC32 : 0) | (multipart ? LZOP_MULTIPART : 0) |
             (filter >= 0 ? LZOP_FILTER : 0) | (extra ? LZOP_EXTRA_FIELD : 0);

    unsigned char h[1024];
    size_t n = 0;
    memcpy(h, p, 21); /* magic .. level */
    n = 21;
    if (needed >= 0)
        h[13] = (unsigned char)(needed >> 8), h[14] = (unsigned char)needed;
    if (method >= 0)
        h[15] = (unsigned char)method;
    n = 17;
    n += put32(h + n, flags);
    if (filter >= 0)
        n += put32(h + n, (uint32_t)filter);
    size_t rest = 21 + ((vmai_get_be32(p + 17) & LZOP_FILTER) ? 4 : 0);
    memcpy(h + n, p + rest, 13 + name_len); /* mode, mtime, name */
    n += 13 + name_len;
    n += put32(h + n, sum(hcrc, h + 9, n - 9));
    if (extra != NULL) {
        size_t start = n, len = strlen(extra);
        if (len > 512)
            return die("extra field too long");
        n += put32(h + n, (uint32_t)len);
        memcpy(h + n, extra, len);
        n += len;
        n += put32(h + n, sum(hcrc, h + start, n - start) ^ (badextra ? 1u : 0u));
    }
    FILE *f = fopen(argv[2], "wb");
    if (f == NULL || fwrite(h, 1, n, f) != n || fwrite(p + pos, 1, b.len - pos, f) != b.len - pos ||
        fclose(f) != 0)
        return die("cannot write the output");
    free(b.p);
    return 0;
}
