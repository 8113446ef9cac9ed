/*
 * Limits through the API: the writer accepts a disk of exactly
 * 2^48 bytes (2^32 clusters of 64 KiB) and refuses one byte more with a
 * clear message; a vmstate stream is not bounded. The reader opens a
 * header with a 2^48-byte disk, reports its size, and reading an archive
 * that holds only its first cluster fails with "missing cluster 1 of
 * 4294967296" (so the 512 MiB cluster map was allocated and checked).
 *
 * Usage: limits_api
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "format.h"
#include "vma.h"
#include "vmatest.h"

static int g_fail;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            g_fail++;                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                 \
            fputc('\n', stderr);                          \
        }                                                 \
    } while (0)

static void writer_limits(void)
{
    vma_writer *w = vma_writer_new();
    CHECK(w != NULL, "vma_writer_new");
    if (w == NULL)
        return;
    int id = vma_writer_add_device(w, "drive-max", VMA_MAX_DEVICE_SIZE);
    CHECK(id == 1, "a 2^48-byte disk: %d %s", id, vma_writer_error(w));
    id = vma_writer_add_device(w, "drive-over", VMA_MAX_DEVICE_SIZE + 1);
    CHECK(id == VMA_ERR_LIMIT, "2^48 + 1: %s", vma_status_name(id));
    CHECK(strstr(vma_writer_error(w), "'drive-over' size 281474976710657 is out of range") !=
              NULL,
          "message: '%s'", vma_writer_error(w));
    id = vma_writer_add_device(w, "drive-huge", UINT64_MAX);
    CHECK(id == VMA_ERR_LIMIT, "2^64 - 1: %s", vma_status_name(id));
    id = vma_writer_add_device(w, "drive-zero", 0);
    CHECK(id == VMA_ERR_LIMIT, "size 0: %s", vma_status_name(id));
    id = vma_writer_add_device(w, VMA_VMSTATE_NAME, VMA_MAX_DEVICE_SIZE * 4);
    CHECK(id == 2, "a vmstate of 2^50 bytes is not bounded: %d %s", id, vma_writer_error(w));
    vma_writer_free(w);
}

static void reader_limits(void)
{
    static const unsigned char uuid[16] = {0x6c, 0x69, 0x6d, 0x69, 0x74, 0x73, 0, 1,
                                           2, 3, 4, 5, 6, 7, 8, 9};
    struct vt_hdr *h = calloc(1, sizeof(*h));
    if (h == NULL)
        abort();
    memcpy(h->uuid, uuid, 16);
    h->dev[1].name.str = "drive-max";
    h->dev[1].size = VMA_MAX_DEVICE_SIZE;
    struct vt_buf b = {0};
    vt_header_build(&b, h);
    static const struct vt_ent e[] = {{1, 0, 0x0001}, {1, 0xffffffffu, 0x0000}};
    vt_extent(&b, uuid, e, 2);
    free(h);

    int fd = memfd_create("limits", MFD_CLOEXEC);
    CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
    if (fd < 0)
        return;
    CHECK(vt_write_fd(fd, b.p, b.len) == 0, "write");
    CHECK(lseek(fd, 0, SEEK_SET) == 0, "lseek");
    vma_reader *r = vma_reader_new();
    int rc = vma_reader_open_fd(r, fd);
    CHECK(rc == VMA_OK, "open: %s", vma_reader_error(r));
    CHECK(vma_reader_device_size(r, 1) == VMA_MAX_DEVICE_SIZE, "size %llu",
          (unsigned long long)vma_reader_device_size(r, 1));
    rc = vma_reader_read(r, NULL, NULL);
    CHECK(rc == VMA_ERR_TRUNCATED, "read: %s: %s", vma_status_name(rc), vma_reader_error(r));
    CHECK(strstr(vma_reader_error(r), "missing cluster 1 of 4294967296") != NULL,
          "message: '%s'", vma_reader_error(r));
    uint64_t clusters = 0;
    vma_reader_counters(r, &clusters, NULL, NULL);
    CHECK(clusters == 2, "clusters read: %llu (the last cluster 2^32-1 was accepted)",
          (unsigned long long)clusters);
    vma_reader_free(r);
    close(fd);
    vt_free(&b);
}

int main(void)
{
    writer_limits();
    reader_limits();
    if (g_fail) {
        fprintf(stderr, "limits_api: %d failures\n", g_fail);
        return 1;
    }
    printf("limits_api: all checks passed\n");
    return 0;
}
