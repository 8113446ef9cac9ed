/*
 * Index files in a cache directory (see index_cache.c). Internal to libvma.
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_INDEX_CACHE_H
#define LIBVMA_INDEX_CACHE_H

#include <stdint.h>
#include <sys/stat.h>

#include "vma.h"

/* <dir>/<uuid in hex>-<size>-<device>-<inode>.vmaidx of the archive
 * (st: its stat), malloc()ed, or NULL. */
char *vmai_index_cache_path(const char *dir, const vma_reader *r, const struct stat *st);

/* Mark an index file as just used (its mtime), for the eviction order. */
void vmai_index_cache_touch(const char *path);

/* Remove the least recently used index files of dir (ours by name only)
 * until they take at most max_bytes; never `keep`. */
void vmai_index_cache_evict(const char *dir, uint64_t max_bytes, const char *keep);

#endif
