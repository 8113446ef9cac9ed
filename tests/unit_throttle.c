/*
 * Unit tests of the restore bandwidth limits (lib/throttle.h): which
 * budget each target gets (a private limit is its own, a group is shared
 * by name: a defect once gave a private limit the budget made
 * last), and the budget itself counted on a fake clock, through a whole
 * restore too. A set cancel switch ends a throttle wait that would take
 * decades. Nothing here measures time.
 *
 * Usage: unit_throttle
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reader_internal.h"
#include "rmtree.h"
#include "throttle.h"
#include "vma.h"

/* --- a fake clock: time moves only when the throttle sleeps ---------- */

struct fake_clock {
    uint64_t now;     /* ns */
    uint64_t slept;   /* ns, the sum of all sleeps */
    unsigned sleeps;
};

static uint64_t fake_now(void *opaque) { return ((struct fake_clock *)opaque)->now; }

static int fake_sleep(void *opaque, const struct vmai_cancel *c, uint64_t ns)
{
    struct fake_clock *f = opaque;
    if (vmai_cancelled(c)) {
        errno = ECANCELED;
        return -1;
    }
    f->now += ns;
    f->slept += ns;
    f->sleeps++;
    return 0;
}

static void fake_init(struct fake_clock *f, struct vmai_clock *clk)
{
    memset(f, 0, sizeof(*f));
    f->now = 1000000000000ull; /* any start */
    *clk = (struct vmai_clock){fake_now, fake_sleep, f};
}

/* --- budgets --------------------------------------------------------- */

static void t_get_private_and_groups(void **state)
{
    (void)state;
    struct vmai_throttle *list = NULL;
    struct vmai_throttle *a = vmai_throttle_get(&list, NULL, 1000);
    struct vmai_throttle *b = vmai_throttle_get(&list, NULL, 2000);
    struct vmai_throttle *g = vmai_throttle_get(&list, "g", 3000);
    struct vmai_throttle *g0 = vmai_throttle_get(&list, "g", 0);
    struct vmai_throttle *c = vmai_throttle_get(&list, NULL, 4000);
    struct vmai_throttle *h = vmai_throttle_get(&list, "h", 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_ptr_not_equal(a, b); /* two private limits in a row */
    assert_ptr_equal(g, g0);    /* a group is shared by name */
    assert_ptr_not_equal(c, g); /* a private limit after a group */
    assert_ptr_not_equal(h, g);
    assert_int_equal(a->bps, 1000);
    assert_int_equal(b->bps, 2000);
    assert_int_equal(g->bps, 3000); /* joining with 0 keeps the rate */
    assert_int_equal(c->bps, 4000);
    assert_int_equal(h->bps, 0);
    assert_int_equal(vmai_throttle_get(&list, "g", 5000)->bps, 5000); /* last non-zero wins */
    vmai_throttle_free_all(&list);
    assert_null(list);
}

static void t_wait_counts_on_fake_clock(void **state)
{
    (void)state;
    struct fake_clock f;
    struct vmai_clock clk;
    fake_init(&f, &clk);
    struct vmai_throttle *list = NULL;
    struct vmai_throttle *t = vmai_throttle_get(&list, NULL, 1000); /* 1000 B/s */
    assert_int_equal(vmai_throttle_wait(t, 500, &clk, NULL), 0);
    assert_int_equal(f.slept, 500000000ull);
    assert_int_equal(vmai_throttle_wait(t, 250, &clk, NULL), 0);
    assert_int_equal(f.slept, 750000000ull);
    /* Idle for 2 s: the budget saved is spent before any sleep. */
    f.now += 2000000000ull;
    assert_int_equal(vmai_throttle_wait(t, 2000, &clk, NULL), 0);
    assert_int_equal(f.sleeps, 2);
    assert_int_equal(vmai_throttle_wait(t, 1000, &clk, NULL), 0);
    /* 3750 bytes at 1000 B/s: due 3.75 s after the start, 2 s were idle */
    assert_int_equal(f.slept, 1750000000ull);
    /* No limit: no sleep. */
    struct vmai_throttle *none = vmai_throttle_get(&list, NULL, 0);
    assert_int_equal(vmai_throttle_wait(none, 1u << 30, &clk, NULL), 0);
    assert_int_equal(vmai_throttle_wait(NULL, 1u << 30, &clk, NULL), 0);
    assert_int_equal(f.sleeps, 3);
    vmai_throttle_free_all(&list);
}

/* With the real clock: 1 GiB at 1 B/s would take 34 years; a set switch
 * ends the wait (this test ends at all only if it does). */
static void t_wait_cancelled(void **state)
{
    (void)state;
    struct vmai_cancel c;
    assert_int_equal(vmai_cancel_open(&c), 0);
    struct vmai_throttle *list = NULL;
    struct vmai_throttle *t = vmai_throttle_get(&list, NULL, 1);
    vmai_cancel_fire(&c);
    errno = 0;
    assert_int_equal(vmai_throttle_wait(t, 1u << 30, NULL, &c), -1);
    assert_int_equal(errno, ECANCELED);
    /* the same without an eventfd: the flag is looked at in 10 ms steps */
    vmai_cancel_close(&c);
    errno = 0;
    assert_int_equal(vmai_throttle_wait(t, 1u << 30, NULL, &c), -1);
    assert_int_equal(errno, ECANCELED);
    vmai_throttle_free_all(&list);
}

/* --- through the reader's targets ----------------------------------- */

/* An archive with `n` one-cluster devices d1..dn, written into dir. */
static void make_archive(const char *path, unsigned n)
{
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    assert_int_equal(vma_writer_open_path(w, path), VMA_OK);
    static unsigned char cluster[VMA_CLUSTER_SIZE];
    memset(cluster, 0x5a, sizeof(cluster));
    for (unsigned i = 1; i <= n; i++) {
        char name[16];
        snprintf(name, sizeof(name), "d%u", i);
        assert_int_equal(vma_writer_add_device(w, name, VMA_CLUSTER_SIZE), (int)i);
    }
    for (unsigned i = 1; i <= n; i++) {
        assert_int_equal(vma_writer_write_cluster(w, i, 0, cluster), VMA_OK);
        assert_int_equal(vma_writer_close_device(w, i), VMA_OK);
    }
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
}

/* A reader on a new archive of n one-cluster devices in dir, each with a
 * new file as its target; clk (may be NULL) is the throttles' clock. */
static vma_reader *open_with_targets(const char *dir, unsigned n, const struct vmai_clock *clk)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/a.vma", dir);
    make_archive(path, n);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_open_path(r, path), VMA_OK);
    r->clock = clk;
    for (unsigned id = 1; id <= n; id++) {
        snprintf(path, sizeof(path), "%s/d%u.raw", dir, id);
        assert_int_equal(vma_reader_target_create(r, id, path), VMA_OK);
    }
    return r;
}

/* Each target's limit as the restore map gives it: d1 and d4 private,
 * d2 and d3 in group g (d3 joins with 0). The defect made d4 join g. */
static void t_targets_get_their_own_budget(void **state)
{
    (void)state;
    char dir[] = "/tmp/vma-throttle-XXXXXX";
    assert_non_null(mkdtemp(dir));
    vma_reader *r = open_with_targets(dir, 5, NULL);
    assert_int_equal(vma_reader_target_limit(r, 1, 1000, NULL), VMA_OK);
    assert_int_equal(vma_reader_target_limit(r, 2, 2000, "g"), VMA_OK);
    assert_int_equal(vma_reader_target_limit(r, 3, 0, "g"), VMA_OK);
    assert_int_equal(vma_reader_target_limit(r, 4, 4000, NULL), VMA_OK);
    const struct vmai_throttle *t1 = vmai_target_throttle(r, 1), *t2 = vmai_target_throttle(r, 2),
                               *t3 = vmai_target_throttle(r, 3), *t4 = vmai_target_throttle(r, 4);
    assert_non_null(t1);
    assert_non_null(t4);
    assert_ptr_equal(t2, t3);
    assert_ptr_not_equal(t4, t2);
    assert_ptr_not_equal(t4, t1);
    assert_ptr_not_equal(t1, t2);
    assert_null(vmai_target_throttle(r, 5));
    assert_int_equal(t1->bps, 1000);
    assert_int_equal(t2->bps, 2000);
    assert_int_equal(t4->bps, 4000);
    vma_reader_free(r);
    vt_rm_tree(dir);
}

/* A whole restore on the fake clock: two private limits, each device's
 * bytes counted against its own rate only. d1 (64 KiB at 64 KiB/s) is
 * due after 1 s; d2 starts then and is due 0.5 s later at 128 KiB/s.
 * Shared (the defect), both would run at d2's rate: 1 s in all. */
static void t_restore_budget_on_fake_clock(void **state)
{
    (void)state;
    char dir[] = "/tmp/vma-throttle-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct fake_clock f;
    struct vmai_clock clk;
    fake_init(&f, &clk);
    vma_reader *r = open_with_targets(dir, 2, &clk);
    assert_int_equal(vma_reader_target_limit(r, 1, 65536, NULL), VMA_OK);
    assert_int_equal(vma_reader_target_limit(r, 2, 131072, NULL), VMA_OK);
    assert_int_equal(vma_reader_restore(r), VMA_OK);
    assert_int_equal(f.sleeps, 2);
    assert_int_equal(f.slept, 1500000000ull);
    vma_reader_free(r);
    vt_rm_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_get_private_and_groups),
        cmocka_unit_test(t_wait_counts_on_fake_clock),
        cmocka_unit_test(t_wait_cancelled),
        cmocka_unit_test(t_targets_get_their_own_budget),
        cmocka_unit_test(t_restore_budget_on_fake_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
