/*
 * The lookup the in-place readers of compressed archives share: in a table
 * sorted by a uint64_t field (the decompressed offset where a block or
 * access point begins), the last entry at or before an offset. Internal to
 * libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_SEEK_TABLE_H
#define LIBVMA_SEEK_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Index of the last of count entries (each stride bytes, the key at
 * key_off) whose key is <= off; 0 when there is none. */
static inline size_t vmai_seek_table_find(const void *base, size_t count, size_t stride,
                                          size_t key_off, uint64_t off)
{
    size_t lo = 0, hi = count;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t key;
        memcpy(&key, (const char *)base + mid * stride + key_off, sizeof(key));
        if (key <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

#endif
