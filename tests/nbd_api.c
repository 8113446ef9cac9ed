/*
 * Public API tests of the NBD restore target (include/vma.h only):
 * which paths go through NBD, refusals, a qcow2 restore checked with
 * qemu-img, a target opened by a thread that ends before the restore (the
 * qemu-nbd it started must live on: it dies with its parent, and the
 * kernel's "parent" is the thread that forked), and a cancel while
 * qemu-nbd does not start (the child must be reaped by the library: this
 * process is its parent, so a zombie would still answer kill(pid, 0)). Needs qemu-img and qemu-nbd; skips otherwise.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rmtree.h"
#include "vma.h"

static char g_tmp[1024];
static const char *g_golden = "tests/golden";

static char *path_in(const char *name)
{
    return vt_path_in(g_tmp, name);
}

static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static bool have_qemu(void)
{
    return sh("command -v qemu-img >/dev/null && command -v qemu-nbd >/dev/null") == 0;
}

static vma_reader *open_basic(void)
{
    char path[2048];
    snprintf(path, sizeof(path), "%s/basic.vma", g_golden);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_open_path(r, path), VMA_OK);
    return r;
}

static void t_is_nbd(void **state)
{
    (void)state;
    static const struct {
        const char *format, *path;
        int want;
    } cases[] = {
        {NULL, "/var/lib/vz/images/100/vm-100-disk-0.raw", 0},
        {"raw", "/dev/pve/vm-100-disk-0", 0},
        {NULL, "relative:name.raw", 0},
        {NULL, "rbdx:pool/img", 0},
        {NULL, NULL, 0},
        {"qcow2", "/images/d0.qcow2", 1},
        {"vmdk", "d0.vmdk", 1},
        {NULL, "rbd:rbd/vm-100-disk-0:conf=/etc/pve/ceph.conf:id=admin", 1},
        {"raw", "iscsi://10.0.0.5/iqn.2003-01.org.x:sn.1/0", 1},
        {NULL, "nbd:unix:/run/x.sock", 1},
        {NULL, "ssh://host/path", 1},
        {NULL, "https://host/disk.img", 1},
        {NULL, "nbd://127.0.0.1:10809/export", 1},
        {"raw", "nbd+unix:///?socket=/run/x.sock", 1},
        {"qcow2", "nbd+unix:///?socket=/run/x.sock", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = vma_path_needs_nbd(cases[i].format, cases[i].path);
        if (got != cases[i].want)
            fail_msg("vma_path_needs_nbd(%s, %s) = %d, want %d",
                     cases[i].format ? cases[i].format : "NULL",
                     cases[i].path ? cases[i].path : "NULL", got, cases[i].want);
    }
}

static void t_refusals(void **state)
{
    (void)state;
    vma_reader *r = open_basic();
    unsigned id = vma_reader_find_device(r, "drive-scsi0");
    assert_int_equal(vma_reader_target_nbd(r, id, "raw", "/tmp/x.raw", 0), VMA_ERR_INVALID);
    assert_non_null(strstr(vma_reader_error(r), "is a raw file"));
    vma_reader_free(r);

    r = open_basic();
    assert_int_equal(vma_reader_target_nbd(r, id, "qcow2", NULL, 0), VMA_ERR_INVALID);
    vma_reader_free(r);

    r = open_basic();
    assert_int_equal(vma_reader_target_nbd(r, 77, "qcow2", "/x.qcow2", 0), VMA_ERR_NOT_FOUND);
    vma_reader_free(r);
}

static void t_qcow2_restore(void **state)
{
    (void)state;
    if (!have_qemu())
        skip();
    /* the reference: drive-scsi0 as a raw file */
    vma_reader *r = open_basic();
    unsigned scsi = vma_reader_find_device(r, "drive-scsi0");
    unsigned efi = vma_reader_find_device(r, "drive-efidisk0");
    assert_int_equal(vma_reader_target_create(r, scsi, path_in("ref.raw")), VMA_OK);
    assert_int_equal(vma_reader_target_skip(r, efi), VMA_OK);
    assert_int_equal(vma_reader_restore(r), VMA_OK);
    vma_reader_free(r);

    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' %llu", path_in("d0.qcow2"),
                        (unsigned long long)8388608), 0);
    r = open_basic();
    assert_int_equal(
        vma_reader_target_nbd(r, scsi, "qcow2", path_in("d0.qcow2"), VMA_TARGET_WRITE_ZEROS),
        VMA_OK);
    assert_int_equal(vma_reader_target_limit(r, scsi, 1000000000, "g"), VMA_OK);
    assert_int_equal(vma_reader_target_skip(r, efi), VMA_OK);
    int rc = vma_reader_restore(r);
    if (rc != VMA_OK)
        fail_msg("restore: %s", vma_reader_error(r));
    vma_reader_free(r);
    assert_int_equal(sh("qemu-img compare -q -f qcow2 -F raw '%s' '%s'", path_in("d0.qcow2"),
                        path_in("ref.raw")),
                     0);
}

struct opener {
    vma_reader *r;
    unsigned id;
    const char *path;
    int rc;
};

static void *open_target(void *arg)
{
    struct opener *o = arg;
    o->rc = vma_reader_target_nbd(o->r, o->id, "qcow2", o->path, 0);
    return NULL;
}

static void t_target_from_ended_thread(void **state)
{
    (void)state;
    if (!have_qemu())
        skip();
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' %llu", path_in("th.qcow2"),
                        (unsigned long long)8388608), 0);
    vma_reader *r = open_basic();
    struct opener o = {r, vma_reader_find_device(r, "drive-scsi0"), path_in("th.qcow2"), -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, open_target, &o), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (o.rc != VMA_OK)
        fail_msg("target_nbd in a thread: %s", vma_reader_error(r));
    struct timespec ts = {0, 100 * 1000 * 1000}; /* a signal would be due by now */
    nanosleep(&ts, NULL);
    assert_int_equal(vma_reader_target_skip(r, vma_reader_find_device(r, "drive-efidisk0")),
                     VMA_OK);
    int rc = vma_reader_restore(r);
    if (rc != VMA_OK)
        fail_msg("restore after the opening thread ended: %s", vma_reader_error(r));
    vma_reader_free(r);
}

static void *cancel_later(void *arg)
{
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    vma_reader_cancel(arg);
    return NULL;
}

static void t_cancel_while_starting(void **state)
{
    (void)state;
    /* A qemu-nbd that never serves: it records its pid and sleeps. */
    char dir[2048], pidfile[2048], old_path[4096];
    snprintf(dir, sizeof(dir), "%s", path_in("hangbin"));
    snprintf(pidfile, sizeof(pidfile), "%s", path_in("hang.pid"));
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(sh("printf '#!/bin/sh\\necho $$ >\"%s\"\\nexec sleep 600\\n' >'%s/qemu-nbd' "
                        "&& chmod +x '%s/qemu-nbd'",
                        pidfile, dir, dir),
                     0);
    const char *p = getenv("PATH");
    snprintf(old_path, sizeof(old_path), "%s", p ? p : "/usr/bin:/bin");
    char fake_path[4096];
    snprintf(fake_path, sizeof(fake_path), "%s:/usr/bin:/bin", dir);
    setenv("PATH", fake_path, 1);

    vma_reader *r = open_basic();
    unsigned scsi = vma_reader_find_device(r, "drive-scsi0");
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_later, r), 0);
    int rc = vma_reader_target_nbd(r, scsi, "qcow2", path_in("never.qcow2"), 0);
    pthread_join(th, NULL);
    setenv("PATH", old_path, 1);
    if (rc != VMA_ERR_CANCELED)
        fail_msg("target_nbd: %d %s", rc, vma_reader_error(r));

    FILE *f = fopen(pidfile, "r");
    assert_non_null(f);
    int pid = 0;
    assert_int_equal(fscanf(f, "%d", &pid), 1);
    fclose(f);
    /* Stopped and reaped before the call returned: no such process. */
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    vma_reader_free(r);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        g_golden = argv[1];
    signal(SIGPIPE, SIG_IGN);
    if (vt_mkdtemp(g_tmp, sizeof(g_tmp), "vma-nbdapi") == NULL) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_is_nbd),
        cmocka_unit_test(t_refusals),
        cmocka_unit_test(t_qcow2_restore),
        cmocka_unit_test(t_target_from_ended_thread),
        cmocka_unit_test(t_cancel_while_starting),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    vt_rm_tree(g_tmp);
    return rc;
}
