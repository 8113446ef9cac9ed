/*
 * Reads through a table of independent compressed blocks (see
 * block_map.h). SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block_map.h"

size_t vmai_seek_table_find(const void *base, size_t count, size_t stride, size_t key_off,
                            uint64_t off)
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

/* Decoded blocks, least recently used first out. */
struct vmai_block_cache {
    pthread_mutex_t lock;
    uint64_t tick;
    struct {
        size_t block;
        unsigned char *data; /* max_dst bytes, NULL: empty */
        uint64_t used;
    } slot[VMAI_BLOCK_CACHE_SLOTS];
};

struct vmai_block_map *vmai_block_map_new(const char *what,
                                          int (*decode)(const struct vmai_block_map *, int,
                                                        size_t, unsigned char *))
{
    struct vmai_block_map *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->what = what;
    m->decode = decode;
    if ((m->cache = vmai_block_cache_new()) == NULL) {
        free(m);
        return NULL;
    }
    return m;
}

struct vmai_block_cache *vmai_block_cache_new(void)
{
    struct vmai_block_cache *c = calloc(1, sizeof(*c));
    if (c != NULL && pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        c = NULL;
    }
    return c;
}

void vmai_block_cache_free(struct vmai_block_cache *c)
{
    if (c == NULL)
        return;
    for (unsigned s = 0; s < VMAI_BLOCK_CACHE_SLOTS; s++)
        free(c->slot[s].data);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

bool vmai_block_cache_copy(struct vmai_block_cache *c, size_t i, unsigned char *out,
                           uint64_t skip, size_t n)
{
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    for (unsigned s = 0; s < VMAI_BLOCK_CACHE_SLOTS && !hit; s++)
        if (c->slot[s].data != NULL && c->slot[s].block == i) {
            memcpy(out, c->slot[s].data + skip, n);
            c->slot[s].used = ++c->tick;
            hit = true;
        }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void vmai_block_cache_put(struct vmai_block_cache *c, size_t i, unsigned char **data)
{
    pthread_mutex_lock(&c->lock);
    unsigned lru = 0;
    for (unsigned s = 0; s < VMAI_BLOCK_CACHE_SLOTS; s++) {
        if (c->slot[s].data != NULL && c->slot[s].block == i) { /* another thread was first */
            pthread_mutex_unlock(&c->lock);
            return;
        }
        if (c->slot[s].used < c->slot[lru].used)
            lru = s;
    }
    unsigned char *old = c->slot[lru].data;
    c->slot[lru].block = i;
    c->slot[lru].data = *data;
    c->slot[lru].used = ++c->tick;
    *data = old;
    pthread_mutex_unlock(&c->lock);
}

int vmai_grow(void **array, size_t *cap, size_t count, size_t size)
{
    if (count < *cap)
        return VMA_OK;
    size_t n = *cap + *cap / 2 + 64;
    void *p = realloc(*array, n * size);
    if (p == NULL)
        return VMA_ERR_NOMEM;
    *array = p;
    *cap = n;
    return VMA_OK;
}

int vmai_block_map_add(struct vmai_block_map *m, uint64_t file_off, uint32_t src,
                       uint32_t dst, uint32_t sum, bool has_sum)
{
    if (vmai_grow((void **)&m->blocks, &m->cap, m->count, sizeof(*m->blocks)) != VMA_OK)
        return VMA_ERR_NOMEM;
    m->blocks[m->count++] = (struct vmai_block){ m->size, file_off, src, dst, sum, has_sum };
    m->size += dst;
    if (src > m->max_src)
        m->max_src = src;
    if (dst > m->max_dst)
        m->max_dst = dst;
    return VMA_OK;
}

void vmai_block_map_free(struct vmai_block_map *m)
{
    if (m == NULL)
        return;
    vmai_block_cache_free(m->cache);
    free(m->blocks);
    free(m);
}

int vmai_block_map_read(const struct vmai_block_map *m, int fd, void *buf, size_t len,
                        uint64_t off, char *err, size_t errlen)
{
    if (off > m->size || len > m->size - off) {
        snprintf(err, errlen, "read of archive bytes %llu+%zu past the end of the %ss",
                 (unsigned long long)off, len, m->what);
        return VMA_ERR_TRUNCATED;
    }
    size_t i = vmai_seek_table_find(m->blocks, m->count, sizeof(*m->blocks),
                                    offsetof(struct vmai_block, dec_off), off);
    unsigned char *out = buf, *tmp = NULL;
    int rc = VMA_OK;
    for (; len > 0 && i < m->count; i++) {
        const struct vmai_block *k = &m->blocks[i];
        uint64_t skip = off - k->dec_off;
        size_t n = k->dst - skip < len ? (size_t)(k->dst - skip) : len;
        if (skip == 0 && n == k->dst) { /* the whole block: straight into buf */
            rc = m->decode(m, fd, i, out);
        } else if (!vmai_block_cache_copy(m->cache, i, out, skip, n)) {
            if (tmp == NULL && (tmp = malloc(m->max_dst)) == NULL)
                rc = VMA_ERR_NOMEM;
            if (rc == VMA_OK && (rc = m->decode(m, fd, i, tmp)) == VMA_OK) {
                memcpy(out, tmp + skip, n);
                vmai_block_cache_put(m->cache, i, &tmp);
            }
        }
        if (rc != VMA_OK)
            break;
        out += n;
        off += n;
        len -= n;
    }
    free(tmp);
    if (rc != VMA_OK) {
        const struct vmai_block *k = &m->blocks[i < m->count ? i : 0];
        snprintf(err, errlen, "%s at compressed byte %llu (archive bytes %llu-%llu) %s",
                 m->what, (unsigned long long)k->file_off, (unsigned long long)k->dec_off,
                 (unsigned long long)(k->dec_off + k->dst - 1),
                 rc == VMA_ERR_NOMEM       ? "(out of memory)"
                 : rc == VMA_ERR_IO        ? strerror(errno)
                 : rc == VMA_ERR_TRUNCATED ? "is cut short"
                                           : "is damaged");
    }
    return rc;
}
