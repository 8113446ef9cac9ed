/*
 * interleaved: writes an archive whose clusters arrive out of order, as
 * several writer threads make them: two disks and their clusters in a
 * seeded shuffle (so each device's clusters come interleaved with the
 * other's and out of offset order), plus the raw images the archive
 * holds, for `vma checksum` and `vma extract` to be compared with.
 *
 *   interleaved OUT.vma A.raw B.raw
 *
 * Public API only. Exit 0 on success, 1 with a message otherwise.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vma.h"

#define A_SIZE (5u * VMA_CLUSTER_SIZE + 3 * VMA_BLOCK_SIZE) /* 6 clusters */
#define B_SIZE (3u * VMA_CLUSTER_SIZE + 1024)               /* 4 clusters, cut in a block */

static uint32_t seed = 12345;

static uint32_t next_rand(void)
{
    seed = seed * 1103515245u + 12345u;
    return seed >> 8;
}

/* Blocks of random data, zero blocks and whole zero clusters. */
static void fill(unsigned char *p, size_t size)
{
    for (size_t off = 0; off < size; off += VMA_BLOCK_SIZE) {
        size_t len = size - off < VMA_BLOCK_SIZE ? size - off : VMA_BLOCK_SIZE;
        uint32_t kind = next_rand() % 4;

        for (size_t i = 0; i < len; i++)
            p[off + i] = kind == 0 ? 0 : (unsigned char)next_rand();
        if ((off / VMA_CLUSTER_SIZE) % 4 == 2) /* cluster 2: all zero */
            memset(p + off, 0, len);
    }
}

static int write_file(const char *path, const unsigned char *p, size_t len)
{
    FILE *f = fopen(path, "wb");

    if (!f || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "interleaved: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static unsigned char a[6 * VMA_CLUSTER_SIZE], b[4 * VMA_CLUSTER_SIZE];
    struct { int dev; unsigned cluster; } order[10];
    unsigned n = 0, i;
    int ida, idb;
    vma_writer *w;

    if (argc != 4) {
        fprintf(stderr, "usage: interleaved OUT.vma A.raw B.raw\n");
        return 1;
    }
    fill(a, A_SIZE);
    fill(b, B_SIZE);
    for (i = 0; i < 6; i++)
        order[n].dev = 0, order[n++].cluster = i;
    for (i = 0; i < 4; i++)
        order[n].dev = 1, order[n++].cluster = i;
    for (i = n - 1; i > 0; i--) { /* Fisher-Yates, seeded */
        unsigned j = next_rand() % (i + 1);
        __typeof__(order[0]) t = order[i];

        order[i] = order[j];
        order[j] = t;
    }
    /* Make sure of the case that matters: cluster 0 of A comes last. */
    for (i = 0; i < n; i++) {
        if (order[i].dev == 0 && order[i].cluster == 0) {
            __typeof__(order[0]) t = order[i];

            order[i] = order[n - 1];
            order[n - 1] = t;
        }
    }
    w = vma_writer_new();
    if (!w || vma_writer_open_path(w, argv[1]) != VMA_OK)
        goto fail;
    ida = vma_writer_add_device(w, "drive-a", A_SIZE);
    idb = vma_writer_add_device(w, "drive-b", B_SIZE);
    if (ida < 0 || idb < 0)
        goto fail;
    for (i = 0; i < n; i++) {
        const unsigned char *src = order[i].dev == 0 ? a : b;

        if (vma_writer_write_cluster(w, order[i].dev == 0 ? (unsigned)ida : (unsigned)idb,
                                     order[i].cluster,
                                     src + (size_t)order[i].cluster * VMA_CLUSTER_SIZE) != VMA_OK)
            goto fail;
    }
    if (vma_writer_close_device(w, (unsigned)ida) != VMA_OK ||
        vma_writer_close_device(w, (unsigned)idb) != VMA_OK || vma_writer_finish(w) != VMA_OK)
        goto fail;
    vma_writer_free(w);
    return write_file(argv[2], a, A_SIZE) || write_file(argv[3], b, B_SIZE);
fail:
    fprintf(stderr, "interleaved: %s\n", w ? vma_writer_error(w) : "out of memory");
    vma_writer_free(w);
    return 1;
}
