/* Fuzz target: a salvage read (resync past bad extents, skipped lzop
 * blocks and zstd frames, streams that end in a codec error), from memory;
 * plain, .zst, .gz and .lzo inputs alike (the input layer tells them apart
 * by their magic). SPDX-License-Identifier: MIT */
#include <stdlib.h>

#include "fuzz.h"
#include "vma.h"

static int touch_cluster(void *opaque, unsigned dev_id, uint32_t cluster_num, uint16_t mask,
                         const unsigned char *data)
{
    (void)dev_id;
    (void)cluster_num;
    /* Every stored block's first and last byte, so ASan sees a short one. */
    unsigned *sum = opaque, n = 0;
    for (unsigned b = 0; b < 16; b++)
        if (mask & (1u << b)) {
            *sum += data[n * 4096u] + data[n * 4096u + 4095u];
            n++;
        }
    return 0;
}

static void count_event(void *opaque, int event, uint64_t offset, uint64_t length,
                        const char *message)
{
    (void)offset;
    (void)length;
    if (message == NULL || vma_salvage_event_name(event) == NULL)
        abort();
    ++*(unsigned *)opaque;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vma_reader *r = vma_reader_new();
    unsigned sum = 0, events = 0;
    if (r != NULL && vma_reader_set_salvage(r, VMA_SALVAGE_FORCE_HEADER, count_event, &events) ==
                         VMA_OK &&
        vma_reader_open_memory(r, data, size) == VMA_OK) {
        (void)vma_reader_read(r, touch_cluster, &sum);
        /* The runs of what was read, as the salvage report walks them. */
        for (unsigned d = vma_reader_next_device(r, 0); d != 0; d = vma_reader_next_device(r, d)) {
            uint64_t c = 0, n;
            int present;
            for (unsigned k = 0; k < 64 && (n = vma_reader_cluster_run(r, d, c, &present)) > 0; k++)
                c += n;
        }
    }
    vma_reader_free(r);
    return 0;
}
