/*
 * Helpers for what every consumer of the reader writes by hand: a cluster
 * expanded from its mask and packed blocks, and the fraction of a read
 * done. SPDX-License-Identifier: MIT
 */
#include <stdatomic.h>
#include <string.h>

#include "reader_internal.h"

void vma_cluster_expand(uint16_t mask, const unsigned char *data, unsigned char *out)
{
    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++) {
        unsigned char *dst = out + (size_t)b * VMA_BLOCK_SIZE;
        if (mask & (1u << b)) {
            memcpy(dst, data, VMA_BLOCK_SIZE);
            data += VMA_BLOCK_SIZE;
        } else {
            memset(dst, 0, VMA_BLOCK_SIZE);
        }
    }
}

double vma_reader_progress(const vma_reader *r)
{
    uint64_t total = 0;
    for (unsigned i = 1; i < VMA_DEV_SLOTS; i++)
        if (r->hdr.devices[i].name != NULL)
            total += vmai_cluster_count(r->hdr.devices[i].size);
    uint64_t done = atomic_load_explicit(&r->clusters, memory_order_relaxed);
    if (total == 0)
        return r->consumed ? 1.0 : 0.0;
    /* A vmstate stream may run past its recorded size. */
    return done >= total ? 1.0 : (double)done / (double)total;
}
