/* Fuzz target: random access (vma_image_open, then reads and data ranges)
 * on hostile archives: plain, seekable or single-frame .zst (seek table,
 * cache), .gz (access points) and .lzo (the block scan). Inputs of odd
 * length open in salvage mode. The input is a memfd, opened by its
 * /proc/self/fd path as a file would be. SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuzz.h"
#include "vma.h"

#define READ_MAX (4u << 20) /* bytes read per device, at most */

static void read_device(vma_image *img, unsigned d, unsigned char *buf)
{
    uint64_t size = vma_image_device_size(img, d), done = 0, pos = 0, off, len;
    /* Odd-sized reads from the start, then one across the end. */
    for (uint64_t at = 0; at < size && done < READ_MAX; at += 65521, done += 65521)
        (void)vma_image_pread(img, d, buf, 65521, at);
    (void)vma_image_pread(img, d, buf, 8192, size > 4096 ? size - 4096 : 0);
    /* The data ranges, and a read at the start of each. */
    for (unsigned k = 0; k < 256 && vma_image_next_data(img, d, pos, &off, &len) == VMA_OK &&
                         len > 0;
         k++) {
        (void)vma_image_pread(img, d, buf, len < 4096 ? (size_t)len : 4096, off);
        pos = off + len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char buf[65536];
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof(path));
    if (fd < 0)
        return 0;
    vma_image *img = vma_image_new();
    if (img != NULL &&
        (size % 2 == 0 || vma_image_set_salvage(img, VMA_SALVAGE_FORCE_HEADER, NULL, NULL) ==
                              VMA_OK) &&
        vma_image_open(img, path, VMA_IMAGE_NO_INDEX_FILE) == VMA_OK) {
        const vma_reader *r = vma_image_reader(img);
        for (unsigned d = vma_reader_next_device(r, 0); d != 0; d = vma_reader_next_device(r, d))
            read_device(img, d, buf);
    }
    vma_image_free(img);
    close(fd);
    return 0;
}
