/*
 * Fuzz target: the loader of <archive>.vmaidx files (lib/index_file.c).
 * An index file is input like any other: one planted next to an archive
 * in a shared backup directory must be refused or, if accepted, lead
 * reads only to bytes of the archive. The archive is fixed (written once,
 * with a fixed uuid and ctime, its file's ctime set), so that its valid index is a
 * seed the fuzzer can mutate; every accepted index is then read through
 * in full. VMA_FUZZ_INDEX_SEED=<path> writes that valid index (fuzz/
 * make-corpus.sh). SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "image_internal.h"

static vma_image *img;
static int idx_fd = -1;
static char idx_path[64];
static unsigned char *buf;

/* Two disks with data, holes and zero blocks, and a vmstate stream. */
static int write_archive(int fd)
{
    static const unsigned char uuid[16] = { 'f', 'u', 'z', 'z', 'i', 'd', 'x' };
    static unsigned char cluster[VMA_CLUSTER_SIZE];
    vma_writer *w = vma_writer_new();
    if (w == NULL || vma_writer_set_uuid(w, uuid) != VMA_OK ||
        vma_writer_set_ctime(w, 1700000000) != VMA_OK || vma_writer_open_fd(w, fd) != VMA_OK)
        return -1;
    int a = vma_writer_add_device(w, "drive-scsi0", 9 * VMA_CLUSTER_SIZE + 5000);
    int b = vma_writer_add_device(w, "drive-scsi1", 3 * VMA_CLUSTER_SIZE);
    int v = vma_writer_add_device(w, VMA_VMSTATE_NAME, 2 * VMA_CLUSTER_SIZE);
    if (a < 0 || b < 0 || v < 0)
        return -1;
    for (uint32_t c = 0; c < 10; c++) {
        memset(cluster, 0, sizeof(cluster));
        if (c % 3 != 1) /* every third cluster all zero; the others part zero */
            for (unsigned k = 0; k < VMA_CLUSTER_SIZE; k += VMA_BLOCK_SIZE * (1 + c % 2))
                memset(cluster + k, (int)(c + 1), VMA_BLOCK_SIZE);
        if (vma_writer_write_cluster(w, (unsigned)a, c, cluster) != VMA_OK ||
            (c < 3 && vma_writer_write_cluster(w, (unsigned)b, c, cluster) != VMA_OK) ||
            (c < 2 && vma_writer_write_cluster(w, (unsigned)v, c, cluster) != VMA_OK))
            return -1;
    }
    for (int d = 1; d <= 3; d++)
        if (vma_writer_close_device(w, (unsigned)d) != VMA_OK)
            return -1;
    int rc = vma_writer_finish(w);
    vma_writer_free(w);
    return rc == VMA_OK ? 0 : -1;
}

static int setup(void)
{
    int fd = memfd_create("archive", 0);
    if (fd < 0 || write_archive(fd) != 0)
        abort();
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    img = vma_image_new();
    if (img == NULL || vma_image_open(img, path, VMA_IMAGE_NO_INDEX_FILE) != VMA_OK)
        abort();
    /* A fixed inode change time: the index records it, and the seed must
     * match (nobody can set it on a file, so it is set on our copy of its
     * status). */
    img->st.st_ctim = (struct timespec){ 1700000000, 0 };
    const char *seed = getenv("VMA_FUZZ_INDEX_SEED");
    char err[VMAI_ERRLEN];
    const struct vmai_index_binding b = {
        .r = img->r, .st = &img->st, .data_size = (uint64_t)img->st.st_size};
    if (seed != NULL && vmai_index_save(&img->ix, &b, seed, err, sizeof(err)) != VMA_OK)
        abort();
    idx_fd = memfd_create("index", 0);
    if (idx_fd < 0 || fchmod(idx_fd, 0600) != 0) /* a memfd is 0777: no index of ours */
        abort();
    snprintf(idx_path, sizeof(idx_path), "/proc/self/fd/%d", idx_fd);
    buf = malloc(16 * VMA_CLUSTER_SIZE);
    return buf != NULL ? 0 : -1;
}

/* Everything an accepted index leads to: every byte of every device,
 * and its data ranges. */
static void read_all(void)
{
    const vma_reader *r = vma_image_reader(img);
    for (unsigned d = vma_reader_next_device(r, 0); d != 0; d = vma_reader_next_device(r, d)) {
        uint64_t size = vma_image_device_size(img, d), off, len, pos = 0;
        if (size > 16 * VMA_CLUSTER_SIZE)
            abort(); /* the loader let a readable size past the header's through */
        (void)vma_image_pread(img, d, buf, (size_t)size, 0);
        while (vma_image_next_data(img, d, pos, &off, &len) == VMA_OK && len > 0) {
            if (off < pos || off + len > size)
                abort();
            pos = off + len;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (img == NULL && setup() != 0)
        return 0;
    if (ftruncate(idx_fd, 0) != 0 || (size > 0 && pwrite(idx_fd, data, size, 0) != (ssize_t)size))
        abort();
    char err[VMAI_ERRLEN];
    vmai_image_index_reset(img);
    const struct vmai_index_binding b = {
        .r = img->r, .st = &img->st, .data_size = (uint64_t)img->st.st_size};
    dev_t dev;
    ino_t ino;
    if (vmai_index_load(&img->ix, &b, idx_path, &dev, &ino, err, sizeof(err)) == VMA_OK)
        read_all();
    return 0;
}
