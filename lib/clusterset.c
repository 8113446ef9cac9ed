/*
 * Sparse cluster sets: see clusterset.h. SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "clusterset.h"

#define LEAF_BITS 16u
#define MID_BITS 8u
#define LEAF_SPAN ((uint64_t)1 << LEAF_BITS)             /* clusters per leaf */
#define MID_SPAN ((uint64_t)1 << (LEAF_BITS + MID_BITS)) /* clusters per middle node */
#define MID_SLOTS (1u << MID_BITS)
#define ARRAY_MAX 4096u    /* past this a sorted array is larger than the bitmap */
#define ARRAY_FIRST 4u
#define BITMAP_WORDS (LEAF_SPAN / 64)
/* What malloc adds to each block, counted so the budget follows RSS. */
#define MALLOC_EXTRA 16u

struct leaf {
    uint32_t n;       /* clusters present */
    uint32_t cap;     /* array entries; 0: data is a bitmap */
    uint64_t data[];  /* cap uint16_t offsets, sorted, or BITMAP_WORDS words */
};

struct vmai_cset_mid {
    struct leaf *leaf[MID_SLOTS];
};

static size_t leaf_bytes(uint32_t cap)
{
    size_t data = cap != 0 ? ((size_t)cap * 2 + 7) / 8 * 8 : BITMAP_WORDS * 8;
    return sizeof(struct leaf) + data;
}

/* A leaf whose clusters are all present is freed and points here: a
 * complete device, the common end state, costs its directory only. */
static const struct leaf full_leaf; /* only its address is used */
#define FULL ((struct leaf *)&full_leaf)

static uint64_t leaf_len(const struct vmai_cset *s, uint64_t n)
{
    uint64_t base = n / LEAF_SPAN * LEAF_SPAN;
    return s->count - base < LEAF_SPAN ? s->count - base : LEAF_SPAN;
}

/* Count one more cluster in *lp; a leaf that became full is freed. */
static void leaf_added(struct vmai_cset *s, struct leaf **lp, uint64_t n)
{
    struct leaf *l = *lp;
    l->n++;
    s->stored++;
    if (l->n == leaf_len(s, n)) {
        *s->mem -= leaf_bytes(l->cap) + MALLOC_EXTRA;
        free(l);
        *lp = FULL;
    }
}

int vmai_cset_init(struct vmai_cset *s, uint64_t count, size_t *mem)
{
    memset(s, 0, sizeof(*s));
    s->count = count;
    s->mem = mem;
    size_t slots = (size_t)((count + MID_SPAN - 1) / MID_SPAN);
    if (slots == 0)
        return 0;
    s->top = calloc(slots, sizeof(*s->top));
    if (s->top == NULL)
        return -1;
    *s->mem += slots * sizeof(*s->top) + MALLOC_EXTRA;
    return 0;
}

void vmai_cset_free(struct vmai_cset *s)
{
    if (s->top != NULL) {
        size_t slots = (size_t)((s->count + MID_SPAN - 1) / MID_SPAN);
        for (size_t t = 0; t < slots; t++) {
            if (s->top[t] == NULL)
                continue;
            for (unsigned m = 0; m < MID_SLOTS; m++)
                if (s->top[t]->leaf[m] != FULL)
                    free(s->top[t]->leaf[m]);
            free(s->top[t]);
        }
        free(s->top);
    }
    memset(s, 0, sizeof(*s));
}

static struct leaf *find_leaf(const struct vmai_cset *s, uint64_t n)
{
    const struct vmai_cset_mid *mid = s->top[n / MID_SPAN];
    return mid != NULL ? mid->leaf[(n / LEAF_SPAN) % MID_SLOTS] : NULL;
}

/* Index of the first entry >= x in a sorted array. */
static uint32_t lower_bound(const uint16_t *v, uint32_t n, uint16_t x)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A full array becomes a bitmap; returns the new leaf or NULL. */
static struct leaf *to_bitmap(struct vmai_cset *s, struct leaf *old)
{
    struct leaf *b = calloc(1, leaf_bytes(0));
    if (b == NULL)
        return NULL;
    const uint16_t *v = (const uint16_t *)old->data;
    for (uint32_t i = 0; i < old->n; i++)
        b->data[v[i] / 64] |= (uint64_t)1 << (v[i] % 64);
    b->n = old->n;
    *s->mem += leaf_bytes(0) - leaf_bytes(old->cap);
    free(old);
    return b;
}

int vmai_cset_insert(struct vmai_cset *s, uint64_t n)
{
    if (n >= s->count)
        return 0;
    struct vmai_cset_mid **midp = &s->top[n / MID_SPAN];
    if (*midp == NULL) {
        *midp = calloc(1, sizeof(**midp));
        if (*midp == NULL)
            return -1;
        *s->mem += sizeof(**midp) + MALLOC_EXTRA;
    }
    struct leaf **lp = &(*midp)->leaf[(n / LEAF_SPAN) % MID_SLOTS];
    struct leaf *l = *lp;
    uint16_t x = (uint16_t)(n % LEAF_SPAN);
    if (l == FULL)
        return 0;
    if (l == NULL) {
        l = malloc(leaf_bytes(ARRAY_FIRST));
        if (l == NULL)
            return -1;
        l->n = 0;
        l->cap = ARRAY_FIRST;
        *lp = l;
        *s->mem += leaf_bytes(ARRAY_FIRST) + MALLOC_EXTRA;
    }
    if (l->cap == 0) {
        uint64_t bit = (uint64_t)1 << (x % 64);
        if (l->data[x / 64] & bit)
            return 0;
        l->data[x / 64] |= bit;
        leaf_added(s, lp, n);
        return 1;
    }
    uint16_t *v = (uint16_t *)l->data;
    /* Clusters mostly come in ascending order: appending is the fast path. */
    uint32_t pos = l->n;
    if (l->n > 0 && v[l->n - 1] >= x) {
        pos = lower_bound(v, l->n, x);
        if (v[pos] == x)
            return 0;
    }
    if (l->n == l->cap) {
        if (l->cap == ARRAY_MAX) {
            l = to_bitmap(s, l);
            if (l == NULL)
                return -1;
            *lp = l;
            return vmai_cset_insert(s, n);
        }
        struct leaf *g = realloc(l, leaf_bytes(l->cap * 2));
        if (g == NULL)
            return -1;
        *s->mem += leaf_bytes(g->cap * 2) - leaf_bytes(g->cap);
        g->cap *= 2;
        *lp = l = g;
        v = (uint16_t *)l->data;
    }
    memmove(v + pos + 1, v + pos, (size_t)(l->n - pos) * sizeof(*v));
    v[pos] = x;
    leaf_added(s, lp, n);
    return 1;
}

int vmai_cset_contains(const struct vmai_cset *s, uint64_t n)
{
    if (n >= s->count)
        return 0;
    const struct leaf *l = find_leaf(s, n);
    if (l == NULL || l == FULL)
        return l == FULL;
    uint16_t x = (uint16_t)(n % LEAF_SPAN);
    if (l->cap == 0)
        return (l->data[x / 64] >> (x % 64)) & 1;
    const uint16_t *v = (const uint16_t *)l->data;
    uint32_t pos = lower_bound(v, l->n, x);
    return pos < l->n && v[pos] == x;
}

/* Within one partly filled leaf: the first offset >= x (below len) whose
 * membership is want, or len. */
static uint32_t leaf_next(const struct leaf *l, uint32_t x, uint32_t len, int want)
{
    if (l->cap != 0) {
        const uint16_t *v = (const uint16_t *)l->data;
        uint32_t i = lower_bound(v, l->n, (uint16_t)x);
        if (want)
            return i < l->n ? v[i] : len;
        /* Skip the run of consecutive members that starts at x. */
        while (i < l->n && v[i] == x)
            i++, x++;
        return x < len ? x : len;
    }
    for (uint32_t w = x / 64; w < BITMAP_WORDS && (uint64_t)w * 64 < len; w++) {
        uint64_t bits = want ? l->data[w] : ~l->data[w];
        if (w == x / 64)
            bits &= ~(uint64_t)0 << (x % 64);
        if (bits != 0) {
            uint32_t at = w * 64 + (uint32_t)__builtin_ctzll(bits);
            return at < len ? at : len;
        }
    }
    return len;
}

uint64_t vmai_cset_next(const struct vmai_cset *s, uint64_t from, int want)
{
    want = want != 0;
    if (!want && s->stored == s->count)
        return s->count;
    if (want && s->stored == 0)
        return s->count;
    for (uint64_t n = from; n < s->count; n = n / LEAF_SPAN * LEAF_SPAN + LEAF_SPAN) {
        const struct leaf *l = find_leaf(s, n);
        if (l == NULL || l == FULL) {
            if ((l == FULL) == want)
                return n;
            continue;
        }
        uint64_t base = n / LEAF_SPAN * LEAF_SPAN;
        uint32_t len = (uint32_t)leaf_len(s, n);
        uint32_t at = leaf_next(l, (uint32_t)(n - base), len, want);
        if (at < len)
            return base + at;
    }
    return s->count;
}

uint64_t vmai_cset_first_missing(const struct vmai_cset *s) { return vmai_cset_next(s, 0, 0); }
