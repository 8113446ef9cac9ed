/*
 * Unit tests of the sparse cluster sets (lib/clusterset.h): insert and
 * duplicate detection in both leaf forms (sorted array, bitmap) and across
 * the conversion, the first missing cluster (never-allocated leaves,
 * partial last leaf, full sets), the edges at 2^32-1, the memory counter
 * against a plain bitmap and a random order against a reference bitmap.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clusterset.h"

#define MAXC ((uint64_t)1 << 32)

static uint64_t rng_state = 0x13198a2e03707344ull;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void test_empty(void **state)
{
    (void)state;
    size_t mem = 0;
    struct vmai_cset s;
    assert_int_equal(vmai_cset_init(&s, 0, &mem), 0);
    assert_int_equal(vmai_cset_first_missing(&s), 0);
    assert_int_equal(vmai_cset_insert(&s, 0), 0); /* out of range: nothing added */
    assert_int_equal(vmai_cset_contains(&s, 0), 0);
    vmai_cset_free(&s);
    vmai_cset_free(&s); /* a freed set is zeroed: freeing again is a no-op */
    assert_int_equal(vmai_cset_init(&s, 1, &mem), 0);
    assert_int_equal(vmai_cset_first_missing(&s), 0);
    assert_int_equal(vmai_cset_insert(&s, 0), 1);
    assert_int_equal(vmai_cset_insert(&s, 0), 0);
    assert_int_equal(vmai_cset_insert(&s, 1), 0);
    assert_int_equal(vmai_cset_first_missing(&s), 1);
    vmai_cset_free(&s);
}

static void test_duplicates_array_and_bitmap(void **state)
{
    (void)state;
    size_t mem = 0;
    struct vmai_cset s;
    assert_int_equal(vmai_cset_init(&s, 200000, &mem), 0);
    /* descending inserts into one leaf: every one goes through the array's
     * middle, then the leaf turns into a bitmap at 4097 */
    for (uint64_t n = 65535; n >= 65536 - 5000; n--) {
        assert_int_equal(vmai_cset_insert(&s, n), 1);
        assert_int_equal(vmai_cset_insert(&s, n), 0);
        assert_true(vmai_cset_contains(&s, n));
    }
    for (uint64_t n = 65536 - 5000; n < 65536; n++)
        assert_int_equal(vmai_cset_insert(&s, n), 0);
    assert_false(vmai_cset_contains(&s, 65536 - 5001));
    assert_false(vmai_cset_contains(&s, 65536));
    assert_int_equal(s.stored, 5000);
    assert_int_equal(vmai_cset_first_missing(&s), 0);
    vmai_cset_free(&s);
}

static void test_first_missing(void **state)
{
    (void)state;
    size_t mem = 0;
    struct vmai_cset s;
    uint64_t count = 3 * 65536 + 17; /* a partial last leaf */
    assert_int_equal(vmai_cset_init(&s, count, &mem), 0);
    for (uint64_t n = 0; n < 65536; n++)
        assert_int_equal(vmai_cset_insert(&s, n), 1);
    /* leaf 1 never allocated */
    assert_int_equal(vmai_cset_first_missing(&s), 65536);
    for (uint64_t n = 65536; n < 2 * 65536; n++)
        if (n != 65536 + 4000)
            assert_int_equal(vmai_cset_insert(&s, n), 1);
    assert_int_equal(vmai_cset_first_missing(&s), 65536 + 4000); /* bitmap leaf */
    assert_int_equal(vmai_cset_insert(&s, 65536 + 4000), 1);
    assert_int_equal(vmai_cset_first_missing(&s), 2 * 65536);
    for (uint64_t n = 2 * 65536; n < 3 * 65536; n++)
        assert_int_equal(vmai_cset_insert(&s, n), 1);
    for (uint64_t n = count - 1; n > count - 10; n--)
        assert_int_equal(vmai_cset_insert(&s, n), 1);
    assert_int_equal(vmai_cset_first_missing(&s), 3 * 65536); /* array leaf */
    for (uint64_t n = 3 * 65536; n < count; n++)
        vmai_cset_insert(&s, n);
    assert_int_equal(s.stored, count);
    assert_int_equal(vmai_cset_first_missing(&s), count);
    vmai_cset_free(&s);
}

/* Brute force: the first n >= from whose membership is want. */
static uint64_t slow_next(const struct vmai_cset *s, uint64_t from, int want)
{
    for (uint64_t n = from; n < s->count; n++)
        if (vmai_cset_contains(s, n) == want)
            return n;
    return s->count;
}

/* vmai_cset_next agrees with contains() over leaves of every kind: absent,
 * sorted array, bitmap, full, and a partial last leaf. */
static void test_next(void **state)
{
    (void)state;
    size_t mem = 0;
    struct vmai_cset s;
    uint64_t count = 5 * 65536 + 100;
    assert_int_equal(vmai_cset_init(&s, count, &mem), 0);
    assert_int_equal(vmai_cset_next(&s, 0, 1), count);
    assert_int_equal(vmai_cset_next(&s, 7, 0), 7);
    srand(7);
    for (int i = 0; i < 300; i++) /* leaf 1: a sparse array */
        vmai_cset_insert(&s, 65536 + (uint64_t)(rand() % 65536));
    for (uint64_t n = 2 * 65536; n < 3 * 65536; n++) /* leaf 2: a bitmap with gaps */
        if (rand() % 97 != 0)
            vmai_cset_insert(&s, n);
    for (uint64_t n = 3 * 65536; n < 4 * 65536; n++) /* leaf 3: full */
        vmai_cset_insert(&s, n);
    for (uint64_t n = 5 * 65536; n < count - 3; n++) /* partial last leaf, 3 missing */
        vmai_cset_insert(&s, n);
    for (uint64_t from = 0; from < count; from += 1 + (uint64_t)(rand() % 700)) {
        assert_int_equal(vmai_cset_next(&s, from, 1), slow_next(&s, from, 1));
        assert_int_equal(vmai_cset_next(&s, from, 0), slow_next(&s, from, 0));
    }
    assert_int_equal(vmai_cset_next(&s, 3 * 65536, 0), 4 * 65536);
    assert_int_equal(vmai_cset_next(&s, count - 3, 0), count - 3);
    assert_int_equal(vmai_cset_next(&s, count, 0), count);
    for (uint64_t n = 0; n < count; n++)
        vmai_cset_insert(&s, n);
    assert_int_equal(vmai_cset_next(&s, 0, 0), count);
    assert_int_equal(vmai_cset_next(&s, 12345, 1), 12345);
    vmai_cset_free(&s);
}

static void test_edges_2_32(void **state)
{
    (void)state;
    size_t mem = 0;
    struct vmai_cset s;
    assert_int_equal(vmai_cset_init(&s, MAXC, &mem), 0);
    assert_int_equal(vmai_cset_insert(&s, MAXC - 1), 1);
    assert_int_equal(vmai_cset_insert(&s, MAXC - 1), 0);
    assert_int_equal(vmai_cset_insert(&s, MAXC), 0); /* out of range */
    assert_true(vmai_cset_contains(&s, MAXC - 1));
    assert_false(vmai_cset_contains(&s, MAXC - 2));
    assert_false(vmai_cset_contains(&s, MAXC));
    assert_int_equal(vmai_cset_first_missing(&s), 0);
    for (uint64_t n = MAXC - 65536; n < MAXC; n++)
        assert_int_equal(vmai_cset_insert(&s, n), n != MAXC - 1);
    assert_true(vmai_cset_contains(&s, MAXC - 65536));
    assert_int_equal(s.stored, 65536);
    assert_int_equal(vmai_cset_insert(&s, 0), 1);
    assert_int_equal(vmai_cset_first_missing(&s), 1);
    /* a declared 2^32-cluster device costs its 2 KiB top array, not 512 MiB */
    assert_true(mem < 16 * 1024);
    vmai_cset_free(&s);

    /* the last leaf full but its next-to-last cluster */
    mem = 0;
    assert_int_equal(vmai_cset_init(&s, 65536 * 2, &mem), 0);
    for (uint64_t n = 0; n < 65536 * 2; n++)
        if (n != 65536 * 2 - 2)
            vmai_cset_insert(&s, n);
    assert_int_equal(vmai_cset_first_missing(&s), 65536 * 2 - 2);
    vmai_cset_free(&s);
}

/* Dense sets cost about one bit per cluster; scattered ones a few bytes. */
static void test_memory(void **state)
{
    (void)state;
    size_t mem = 0;
    struct vmai_cset s;
    uint64_t count = (uint64_t)1 << 24; /* 1 TiB */
    assert_int_equal(vmai_cset_init(&s, count, &mem), 0);
    /* every other cluster: one bit per cluster, within 1 % of a bitmap */
    for (uint64_t n = 0; n < count; n += 2)
        assert_int_equal(vmai_cset_insert(&s, n), 1);
    assert_int_equal(vmai_cset_first_missing(&s), 1);
    assert_true(mem >= count / 8);
    assert_true(mem < count / 8 + count / 8 / 100);
    /* the rest: full leaves are freed, the complete set costs its directory */
    for (uint64_t n = 1; n < count; n += 2)
        assert_int_equal(vmai_cset_insert(&s, n), 1);
    assert_int_equal(vmai_cset_first_missing(&s), count);
    assert_true(mem < 4096);
    for (uint64_t n = 0; n < count; n += 4099) {
        assert_true(vmai_cset_contains(&s, n));
        assert_int_equal(vmai_cset_insert(&s, n), 0);
    }
    vmai_cset_free(&s);

    /* a small device: its one short leaf is full while still an array */
    mem = 0;
    assert_int_equal(vmai_cset_init(&s, 3, &mem), 0);
    size_t empty = mem;
    assert_int_equal(vmai_cset_insert(&s, 2), 1);
    assert_int_equal(vmai_cset_insert(&s, 0), 1);
    assert_int_equal(vmai_cset_first_missing(&s), 1);
    assert_int_equal(vmai_cset_insert(&s, 1), 1);
    assert_int_equal(vmai_cset_first_missing(&s), 3);
    assert_int_equal(vmai_cset_insert(&s, 1), 0);
    assert_true(vmai_cset_contains(&s, 0) && vmai_cset_contains(&s, 2));
    assert_int_equal(mem, empty + 2048 + 16); /* the middle node only */
    vmai_cset_free(&s);

    mem = 0;
    assert_int_equal(vmai_cset_init(&s, MAXC, &mem), 0);
    for (uint64_t n = 0; n < MAXC; n += 32768)
        assert_int_equal(vmai_cset_insert(&s, n), 1);
    /* 131072 clusters in 65536 leaves: bytes per cluster, not 512 MiB */
    assert_true(mem < 131072 * 40);
    assert_int_equal(vmai_cset_first_missing(&s), 1);
    vmai_cset_free(&s);
}

/* Random order against a plain bitmap. */
static void test_random_against_bitmap(void **state)
{
    (void)state;
    size_t mem = 0;
    struct vmai_cset s;
    uint64_t count = 5 * 65536 + 300;
    uint64_t *ref = calloc((size_t)(count + 63) / 64, 8);
    assert_non_null(ref);
    assert_int_equal(vmai_cset_init(&s, count, &mem), 0);
    for (unsigned i = 0; i < 400000; i++) {
        /* half the inserts in a narrow window so leaves pass 4096 */
        uint64_t n = (i & 1) ? rnd() % count : 65536 + rnd() % 9000;
        int was = (int)((ref[n / 64] >> (n % 64)) & 1);
        assert_int_equal(vmai_cset_contains(&s, n), was);
        assert_int_equal(vmai_cset_insert(&s, n), !was);
        ref[n / 64] |= (uint64_t)1 << (n % 64);
    }
    uint64_t want = count, stored = 0;
    for (uint64_t n = 0; n < count; n++) {
        int in = (int)((ref[n / 64] >> (n % 64)) & 1);
        stored += (uint64_t)in;
        if (!in && want == count)
            want = n;
        assert_int_equal(vmai_cset_contains(&s, n), in);
    }
    assert_int_equal(s.stored, stored);
    assert_int_equal(vmai_cset_first_missing(&s), want);
    vmai_cset_free(&s);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_duplicates_array_and_bitmap),
        cmocka_unit_test(test_first_missing),
        cmocka_unit_test(test_next),
        cmocka_unit_test(test_edges_2_32),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_random_against_bitmap),
    };
    return cmocka_run_group_tests_name("unit_clusterset", tests, NULL, NULL);
}
