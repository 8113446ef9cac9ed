/*
 * Random access into a seekable zstd file. The format (zstd's
 * contrib/seekable_format) ends with a skippable frame (magic 0x184D2A5E)
 * that lists every frame's compressed and decompressed size, then a 9-byte
 * footer: frame count, a descriptor byte (bit 7: a 4-byte checksum per
 * entry) and the magic 0x8F92EAB1. Plain zstd -d skips that frame. The
 * table is input like any other: its sizes must add up to the file, and
 * each frame is bounded. A read decompresses only the frames it needs
 * (zstd checks a frame's own checksum when it has one). Internal to libvma.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "format.h"
#include "zst_frames.h"

#define SKIPPABLE_MAGIC 0x184D2A5Eu
#define SEEKABLE_MAGIC 0x8F92EAB1u
#define FOOTER 9u
#define MAX_FRAME (1u << 30) /* decompressed bytes of one frame we accept */

/* Decompress frame i into out; zstd checks the frame's checksum if any. */
static int zst_decode(const struct vmai_block_map *m, int fd, size_t i, unsigned char *out)
{
    const struct vmai_block *f = &m->blocks[i];
    unsigned char *packed = malloc(f->src);
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    int rc = packed != NULL && dctx != NULL ? vmai_pread_exact(fd, packed, f->src, f->file_off, NULL)
                                            : VMA_ERR_NOMEM;
    if (rc == VMA_OK) {
        size_t got = ZSTD_decompressDCtx(dctx, out, f->dst, packed, f->src);
        if (ZSTD_isError(got) || got != f->dst)
            rc = VMA_ERR_CORRUPT;
    }
    ZSTD_freeDCtx(dctx);
    free(packed);
    return rc;
}

int vmai_zst_map_load(int fd, uint64_t file_size, struct vmai_block_map **out, char *err,
                      size_t errlen)
{
    unsigned char foot[FOOTER];
    if (file_size < 8 + FOOTER || vmai_pread_exact(fd, foot, FOOTER, file_size - FOOTER, NULL) != VMA_OK ||
        vmai_get_le32(foot + 5) != SEEKABLE_MAGIC)
        return VMA_ERR_NOT_FOUND;
    uint32_t n = vmai_get_le32(foot);
    unsigned esize = (foot[4] & 0x80) ? 12 : 8;
    uint64_t table = (uint64_t)n * esize + FOOTER; /* the skippable frame's content */
    if ((foot[4] & 0x7c) != 0 || n == 0 || table + 8 > file_size) {
        snprintf(err, errlen, "seekable zstd: the seek table's footer is invalid");
        return VMA_ERR_CORRUPT;
    }
    uint64_t start = file_size - table - 8;
    unsigned char head[8];
    unsigned char *t = malloc((size_t)table);
    struct vmai_block_map *m = vmai_block_map_new("zstd frame", zst_decode);
    if (t == NULL || m == NULL) {
        free(t);
        vmai_block_map_free(m);
        snprintf(err, errlen, "out of memory for a seek table of %u frames", n);
        return VMA_ERR_NOMEM;
    }
    int rc = vmai_pread_exact(fd, head, 8, start, NULL);
    if (rc == VMA_OK)
        rc = vmai_pread_exact(fd, t, (size_t)table, start + 8, NULL);
    const char *why = NULL;
    if (rc != VMA_OK)
        why = "cannot be read";
    else if (vmai_get_le32(head) != SKIPPABLE_MAGIC || vmai_get_le32(head + 4) != table)
        why = "its skippable frame header does not match the footer";
    uint64_t in = 0;
    for (uint32_t i = 0; why == NULL && i < n; i++) {
        uint32_t src = vmai_get_le32(t + (size_t)i * esize), dst = vmai_get_le32(t + (size_t)i * esize + 4);
        if (src == 0 || dst == 0 || dst > MAX_FRAME || in + src > start) {
            why = "a frame's sizes are out of bounds";
            break;
        }
        if (vmai_block_map_add(m, in, src, dst, 0, false) != VMA_OK) {
            why = "does not fit in memory";
            break;
        }
        in += src;
    }
    if (why == NULL && in != start)
        why = "its frames do not add up to the file";
    free(t);
    if (why != NULL) {
        vmai_block_map_free(m);
        snprintf(err, errlen, "seekable zstd: the seek table %s", why);
        return rc != VMA_OK ? rc : VMA_ERR_CORRUPT;
    }
    *out = m;
    return VMA_OK;
}
