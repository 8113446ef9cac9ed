/*
 * Random access into compressed archives made of independent blocks (lzop
 * blocks, seekable zstd frames): a table of where each block's bytes lie
 * in the decompressed stream and in the file; a read decodes just the
 * blocks it needs. Also the exact pread the in-place readers share.
 * Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_BLOCK_MAP_H
#define LIBVMA_BLOCK_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"

#include "vma.h"

struct vmai_block_cache;

struct vmai_block {
    uint64_t dec_off;   /* where its bytes begin in the decompressed stream */
    uint64_t file_off;  /* where its compressed data begins in the file */
    uint32_t src, dst;  /* compressed and decompressed sizes */
    uint32_t sum;       /* lzop: checksum of the decompressed data */
    bool has_sum;
};

struct vmai_block_map {
    struct vmai_block *blocks;  /* 32 bytes per block */
    size_t count, cap;
    uint32_t flags;             /* lzop header flags */
    uint32_t max_src, max_dst;
    uint64_t size;              /* decompressed bytes */
    const char *what;           /* "lzop block", "zstd frame" */
    /* Decode block i into out (dst bytes), checking what can be checked. */
    int (*decode)(const struct vmai_block_map *m, int fd, size_t i, unsigned char *out);
    struct vmai_block_cache *cache; /* the last blocks read in part */
};

/* A new empty map, or NULL when out of memory. */
struct vmai_block_map *vmai_block_map_new(const char *what,
                                          int (*decode)(const struct vmai_block_map *, int,
                                                        size_t, unsigned char *));

/* Append a block (dec_off is set from the blocks before). */
int vmai_block_map_add(struct vmai_block_map *m, uint64_t file_off, uint32_t src,
                       uint32_t dst, uint32_t sum, bool has_sum);

/* Read len decompressed bytes at off. Thread-safe. A block read in part
 * is kept decoded (the last VMAI_BLOCK_CACHE_SLOTS of them: 16 MiB for
 * 4 MiB zstd frames), so sequential reads smaller than a block decode
 * each block once. */
#define VMAI_BLOCK_CACHE_SLOTS 4

/* Blocks that decode to more than this are not read in place (vma_image
 * caches the archive instead): a read holds a whole block, and the cache
 * VMAI_BLOCK_CACHE_SLOTS more, so this bounds memory at 80 MiB plus 16 MiB
 * per read in flight, whatever frame size a file declares. */
#define VMAI_IN_PLACE_MAX_BLOCK (16u << 20)
int vmai_block_map_read(const struct vmai_block_map *m, int fd, void *buf, size_t len,
                        uint64_t off, char *err, size_t errlen);

void vmai_block_map_free(struct vmai_block_map *m);

/* The decoded-block cache itself, also for gzip's access-point spans:
 * blocks are named by index; buffers are malloc()ed by the caller and
 * owned by the cache once put. */
struct vmai_block_cache *vmai_block_cache_new(void);
void vmai_block_cache_free(struct vmai_block_cache *c);

/* Copy n bytes at skip of block i: true when the cache had it. */
bool vmai_block_cache_copy(struct vmai_block_cache *c, size_t i, unsigned char *out,
                           uint64_t skip, size_t n);

/* Keep *data (block i decoded) in the least recently used slot; *data
 * gets that slot's old buffer (or NULL), for the caller to reuse or free.
 * When another thread put block i first, *data is left to the caller. */
void vmai_block_cache_put(struct vmai_block_cache *c, size_t i, unsigned char **data);

/* Index of the last of count entries (each stride bytes, a uint64_t key at
 * key_off, sorted) whose key is <= off; 0 when there is none. */
size_t vmai_seek_table_find(const void *base, size_t count, size_t stride, size_t key_off,
                            uint64_t off);

/* Make room for one more element in a growing array (by half). */
int vmai_grow(void **array, size_t *cap, size_t count, size_t size);


#endif
