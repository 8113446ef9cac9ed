/*
 * What an embedder relies on, through the public header only: the error
 * model (refused calls leave a handle usable, fatal ones end it), a
 * failed open that keeps nothing (no read-ahead thread), the writer's
 * progress callback calling device_stats (a deadlock before), counters
 * read from another thread, per-thread error messages, commands as their
 * own calls (a path is a path), target flags and descriptors checked at
 * setup, and what the header promises about counts, messages and
 * descriptors. Threads here are also what the TSan stage of
 * scripts/test.sh runs.
 * SPDX-License-Identifier: MIT
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "rmtree.h"
#include "vma.h"

#define CL VMA_CLUSTER_SIZE

static const char *golden;
static char dir[] = "/tmp/vma-embed-XXXXXX";

/* base/name in one of a few rotating buffers (several per call are fine). */
static char *join(const char *base, const char *name)
{
    static char buf[8][4200];
    static unsigned n;
    char *p = buf[n++ % 8];
    snprintf(p, sizeof(buf[0]), "%s/%s", base, name);
    return p;
}

static char *gpath(const char *name) { return join(golden, name); }
static char *tpath(const char *name) { return join(dir, name); }

static int threads_now(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* A writer on a new file with one device of `size` bytes; *id gets it. */
static vma_writer *writer_with(const char *path, uint64_t size, unsigned *id)
{
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    assert_int_equal(vma_writer_open_path(w, path), VMA_OK);
    int rc = vma_writer_add_device(w, "drive-scsi0", size);
    assert_true(rc > 0);
    *id = (unsigned)rc;
    return w;
}

/* --- the error model ------------------------------------------------ */

static void t_reader_refused_then_usable(void **state)
{
    (void)state;
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    /* refused: a path that cannot be opened, then a non-VMA file */
    assert_int_equal(vma_reader_open_path(r, tpath("missing.vma")), VMA_ERR_IO);
    assert_non_null(strstr(vma_reader_error(r), "missing.vma"));
    assert_int_equal(vma_reader_status(r), VMA_OK);
    assert_int_equal(vma_reader_open_path(r, gpath("basic.conf")), VMA_ERR_CORRUPT);
    assert_int_equal(vma_reader_status(r), VMA_OK);
    /* the retry works */
    assert_int_equal(vma_reader_open_path(r, gpath("basic.vma")), VMA_OK);
    assert_int_equal(vma_reader_open_path(r, gpath("basic.vma")), VMA_ERR_INVALID);
    assert_int_equal(vma_reader_status(r), VMA_OK);

    /* refused targets: unknown device, existing file, flags, descriptors */
    assert_int_equal(vma_reader_target_skip(r, 99), VMA_ERR_NOT_FOUND);
    assert_int_equal(vma_reader_target_create(r, 1, gpath("basic.vma")), VMA_ERR_EXISTS);
    assert_int_equal(vma_reader_target_create(r, 1, tpath("no/such/dir")), VMA_ERR_IO);
    assert_int_equal(vma_reader_target_open(r, 1, tpath("x"), 0x80), VMA_ERR_INVALID);
    assert_non_null(strstr(vma_reader_error(r), "unknown target flags"));
    int ro = open(gpath("basic.vma"), O_RDONLY);
    assert_true(ro >= 0);
    assert_int_equal(vma_reader_target_fd(r, 1, ro, 0), VMA_ERR_INVALID);
    assert_non_null(strstr(vma_reader_error(r), "not open for writing"));
    close(ro);
    int wfd = open(tpath("fd.raw"), O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(wfd >= 0);
    assert_int_equal(ftruncate(wfd, 8388608), 0);
    int closed = dup(wfd);
    close(closed);
    assert_int_equal(vma_reader_target_fd(r, 1, closed, 0), VMA_ERR_INVALID);
    assert_int_equal(vma_reader_target_fd(r, 1, wfd, VMA_TARGET_DIRECT), VMA_ERR_INVALID);
    assert_int_equal(vma_reader_target_fd(r, 1, wfd, 0x100), VMA_ERR_INVALID);
    assert_int_equal(vma_reader_target_limit(r, 2, 1000, NULL), VMA_ERR_INVALID);
    assert_int_equal(vma_reader_status(r), VMA_OK);

    /* after all that, the restore works */
    assert_int_equal(vma_reader_target_fd(r, 1, wfd, VMA_TARGET_WRITE_ZEROS), VMA_OK);
    assert_int_equal(vma_reader_target_create(r, 2, tpath("efi.raw")), VMA_OK);
    assert_int_equal(vma_reader_restore(r), VMA_OK);
    vma_reader_free(r);
    /* the caller's descriptor stays open */
    assert_true(fcntl(wfd, F_GETFD) >= 0);
    struct stat st;
    assert_int_equal(fstat(wfd, &st), 0);
    assert_int_equal(st.st_size, 8388608);
    close(wfd);
}

/* Whether two files have the same size and bytes. */
static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int ca = 0, cb = 0;
    if (fa != NULL && fb != NULL)
        do {
            ca = getc(fa);
            cb = getc(fb);
        } while (ca == cb && ca != EOF);
    int same = fa != NULL && fb != NULL && ca == cb;
    if (fa != NULL)
        fclose(fa);
    if (fb != NULL)
        fclose(fb);
    return same;
}

/* vma_reader_target_fd() on a file shorter than the device: the restore
 * returned VMA_OK and left the disk short by its trailing zero blocks
 * (12 KiB of basic.vma's drive-scsi0), with or without WRITE_ZEROS. */
static void t_target_fd_short_file(void **state)
{
    (void)state;
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, gpath("basic.vma")), VMA_OK);
    assert_int_equal(vma_reader_target_create(r, 1, tpath("short-ref1.raw")), VMA_OK);
    assert_int_equal(vma_reader_target_create(r, 2, tpath("short-ref2.raw")), VMA_OK);
    assert_int_equal(vma_reader_restore(r), VMA_OK);
    vma_reader_free(r);
    for (unsigned flags = 0; flags <= VMA_TARGET_WRITE_ZEROS; flags += VMA_TARGET_WRITE_ZEROS) {
        int fd1 = open(tpath("short1.raw"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fd2 = open(tpath("short2.raw"), O_RDWR | O_CREAT | O_TRUNC, 0600);
        assert_true(fd1 >= 0 && fd2 >= 0);
        assert_int_equal(ftruncate(fd2, 1000), 0); /* shorter, not empty */
        r = vma_reader_new();
        assert_int_equal(vma_reader_open_path(r, gpath("basic.vma")), VMA_OK);
        assert_int_equal(vma_reader_target_fd(r, 1, fd1, flags), VMA_OK);
        assert_int_equal(vma_reader_target_fd(r, 2, fd2, flags), VMA_OK);
        assert_int_equal(vma_reader_restore(r), VMA_OK);
        vma_reader_free(r);
        close(fd1);
        close(fd2);
        assert_true(same_file(tpath("short1.raw"), tpath("short-ref1.raw")));
        assert_true(same_file(tpath("short2.raw"), tpath("short-ref2.raw")));
    }
    /* longer: never shrunk */
    int fd = open(tpath("long.raw"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 540672 + 4096), 0);
    r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, gpath("basic.vma")), VMA_OK);
    assert_int_equal(vma_reader_target_skip(r, 1), VMA_OK);
    assert_int_equal(vma_reader_target_fd(r, 2, fd, 0), VMA_OK);
    assert_int_equal(vma_reader_restore(r), VMA_OK);
    vma_reader_free(r);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 540672 + 4096);
    close(fd);
    /* a file that may not grow (a sealed memfd) is refused, naming the
     * device; the reader stays usable */
    fd = memfd_create("short", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 4096), 0);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW), 0);
    r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, gpath("basic.vma")), VMA_OK);
    assert_int_equal(vma_reader_target_fd(r, 2, fd, 0), VMA_ERR_IO);
    assert_non_null(strstr(vma_reader_error(r), "drive-efidisk0"));
    assert_string_equal(vma_last_error(), vma_reader_error(r));
    assert_int_equal(vma_reader_status(r), VMA_OK);
    assert_int_equal(vma_reader_target_skip(r, 2), VMA_OK);
    vma_reader_free(r);
    close(fd);
}

static void t_reader_fatal_sticks(void **state)
{
    (void)state;
    /* the first 1 MB of basic.vma: a truncated archive */
    int in = open(gpath("basic.vma"), O_RDONLY);
    int out = open(tpath("short.vma"), O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(in >= 0 && out >= 0);
    static char buf[1 << 20];
    assert_int_equal(read(in, buf, sizeof(buf)), sizeof(buf));
    assert_int_equal(write(out, buf, sizeof(buf)), sizeof(buf));
    close(in);
    close(out);
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, tpath("short.vma")), VMA_OK);
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_ERR_TRUNCATED);
    char first[600];
    snprintf(first, sizeof(first), "%s", vma_reader_error(r));
    assert_int_equal(vma_reader_status(r), VMA_ERR_TRUNCATED);
    /* later calls: the same status, the first message */
    assert_int_equal(vma_reader_target_skip(r, 1), VMA_ERR_TRUNCATED);
    assert_int_equal(vma_reader_restore(r), VMA_ERR_TRUNCATED);
    assert_string_equal(vma_reader_error(r), first);
    assert_string_equal(vma_last_error(), first);
    vma_reader_free(r);
}

static int stop_at_third(void *opaque, unsigned dev_id, uint32_t cluster, uint16_t mask,
                         const unsigned char *data)
{
    (void)dev_id, (void)cluster, (void)mask, (void)data;
    return ++*(int *)opaque == 3;
}

static int stop_progress(void *opaque, uint64_t a, uint64_t b)
{
    (void)opaque, (void)a, (void)b;
    return 1;
}

static void t_callback_stop_message(void **state)
{
    (void)state;
    vma_reader *r = vma_reader_new();
    int calls = 0;
    assert_int_equal(vma_reader_open_path(r, gpath("basic.vma")), VMA_OK);
    assert_int_equal(vma_reader_read(r, stop_at_third, &calls), VMA_ERR_CALLBACK);
    assert_null(strstr(vma_reader_error(r), "cancel"));
    assert_non_null(strstr(vma_reader_error(r), "stopped by the cluster callback"));
    vma_reader_free(r);

    r = vma_reader_new();
    vma_reader_set_progress(r, stop_progress, NULL);
    assert_int_equal(vma_reader_open_path(r, gpath("basic.vma")), VMA_OK);
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_ERR_CALLBACK);
    assert_null(strstr(vma_reader_error(r), "cancel"));
    vma_reader_free(r);

    unsigned id;
    vma_writer *w = writer_with(tpath("stop.vma"), 2 * CL, &id);
    vma_writer_set_progress(w, stop_progress, NULL);
    assert_int_equal(vma_writer_write_cluster(w, id, 0, NULL), VMA_ERR_CALLBACK);
    assert_null(strstr(vma_writer_error(w), "cancel"));
    assert_non_null(strstr(vma_writer_error(w), "stopped by the progress callback"));
    /* fatal: the writer is ended */
    assert_int_equal(vma_writer_status(w), VMA_ERR_CALLBACK);
    assert_int_equal(vma_writer_write_cluster(w, id, 1, NULL), VMA_ERR_CALLBACK);
    assert_int_equal(vma_writer_finish(w), VMA_ERR_CALLBACK);
    vma_writer_free(w);
    assert_int_equal(access(tpath("stop.vma"), F_OK), -1);
}

static void t_writer_refused_then_usable(void **state)
{
    (void)state;
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    assert_int_equal(vma_writer_open_path(w, gpath("basic.vma")), VMA_ERR_EXISTS);
    assert_int_equal(vma_writer_open_path(w, tpath("no/such/dir.vma")), VMA_ERR_IO);
    char *missing[] = {"/nonexistent/vma-command", NULL};
    assert_int_equal(vma_writer_open_command(w, missing), VMA_ERR_IO);
    assert_int_equal(vma_writer_add_device(w, "a/b", CL), VMA_ERR_INVALID);
    assert_int_equal(vma_writer_status(w), VMA_OK);
    assert_int_equal(vma_writer_open_path(w, tpath("ok.vma")), VMA_OK);
    int id = vma_writer_add_device(w, "drive-scsi0", CL);
    assert_int_equal(id, 1);
    assert_int_equal(vma_writer_write_cluster(w, 7, 0, NULL), VMA_ERR_INVALID);
    assert_int_equal(vma_writer_write_cluster(w, 1, 5, NULL), VMA_ERR_INVALID);
    assert_int_equal(vma_writer_status(w), VMA_OK);
    assert_int_equal(vma_writer_write_cluster(w, 1, 0, NULL), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, 1), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, tpath("ok.vma")), VMA_OK);
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_OK);
    vma_reader_free(r);
}

/* A disk of 1000 bytes: recorded as 1024 (Proxmox's reader works in
 * 512-byte sectors and failed on it), bytes 1000-1023 read as zeros
 * whatever the cluster held there; the vmstate size stays as given. */
static void t_writer_rounds_to_sectors(void **state)
{
    (void)state;
    static unsigned char buf[CL];
    memset(buf, 0xab, 1000);
    memset(buf + 1000, 0xcd, CL - 1000);
    unsigned id;
    vma_writer *w = writer_with(tpath("odd.vma"), 1000, &id);
    assert_int_equal(vma_writer_device_size(w, id), 1024);
    int fid = vma_writer_add_device(w, "drive-scsi1", 1000);
    int vid = vma_writer_add_device(w, VMA_VMSTATE_NAME, 1000);
    assert_true(fid > 0 && vid > 0);
    assert_int_equal(vma_writer_device_size(w, (unsigned)vid), 1000);
    assert_int_equal(vma_writer_device_size(w, 99), 0);
    assert_int_equal(vma_writer_write_cluster(w, id, 0, buf), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, id), VMA_OK);
    int src = open(tpath("odd-src.raw"), O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(src >= 0);
    assert_int_equal(write(src, buf, 1000), 1000);
    assert_int_equal(vma_writer_write_device_fd(w, (unsigned)fid, src, 1000), VMA_OK);
    close(src);
    assert_int_equal(vma_writer_write_cluster(w, (unsigned)vid, 0, buf), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, (unsigned)vid), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);

    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, tpath("odd.vma")), VMA_OK);
    assert_int_equal(vma_reader_device_size(r, id), 1024);
    assert_int_equal(vma_reader_device_size(r, (unsigned)fid), 1024);
    assert_int_equal(vma_reader_device_size(r, (unsigned)vid), 1000);
    assert_int_equal(vma_reader_target_create(r, id, tpath("odd1.raw")), VMA_OK);
    assert_int_equal(vma_reader_target_create(r, (unsigned)fid, tpath("odd2.raw")), VMA_OK);
    assert_int_equal(vma_reader_target_skip(r, (unsigned)vid), VMA_OK);
    assert_int_equal(vma_reader_restore(r), VMA_OK);
    vma_reader_free(r);
    memset(buf + 1000, 0, 24);
    int want = open(tpath("odd-want.raw"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_int_equal(write(want, buf, 1024), 1024);
    close(want);
    assert_true(same_file(tpath("odd1.raw"), tpath("odd-want.raw")));
    assert_true(same_file(tpath("odd2.raw"), tpath("odd-want.raw")));
}

/* Every argument error of the writer is a refusal: the call changes
 * nothing, sets the message (also as the thread's last error), and the
 * right call then works. write_device_fd() with a source larger than the
 * device ended the writer before. */
#define REFUSED(w, call, status)                                             \
    do {                                                                     \
        assert_int_equal((call), (status));                                  \
        assert_int_equal(vma_writer_status(w), VMA_OK);                      \
        assert_true(vma_writer_error(w)[0] != '\0');                         \
        assert_string_equal(vma_last_error(), vma_writer_error(w));          \
    } while (0)

static void t_writer_argument_errors(void **state)
{
    (void)state;
    static unsigned char buf[CL];
    memset(buf, 0x5a, sizeof(buf));
    int src = open(tpath("arg-src.raw"), O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(src >= 0);
    assert_int_equal(write(src, buf, CL), CL);
    assert_int_equal(write(src, buf, CL), CL);
    int wo = open(tpath("arg-src.raw"), O_WRONLY);
    int closed = fcntl(src, F_DUPFD, 900); /* a number no later open takes */
    close(closed);

    vma_writer *w = vma_writer_new();
    unsigned char uuid[16] = {1};
    REFUSED(w, vma_writer_set_uuid(w, NULL), VMA_ERR_INVALID);
    assert_int_equal(vma_writer_set_uuid(w, uuid), VMA_OK);
    int ro = open(gpath("basic.vma"), O_RDONLY);
    REFUSED(w, vma_writer_open_fd(w, ro), VMA_ERR_INVALID);
    REFUSED(w, vma_writer_open_fd(w, closed), VMA_ERR_INVALID);
    close(ro);
    int a = vma_writer_add_device(w, "drive-a", 2 * CL);
    int b = vma_writer_add_device(w, "drive-b", CL);
    assert_true(a > 0 && b > 0);
    /* no output yet: clusters and finish are refused */
    REFUSED(w, vma_writer_write_cluster(w, (unsigned)b, 0, buf), VMA_ERR_INVALID);
    REFUSED(w, vma_writer_write_device_fd(w, (unsigned)a, src, 2 * CL), VMA_ERR_INVALID);
    REFUSED(w, vma_writer_finish(w), VMA_ERR_INVALID);
    assert_int_equal(vma_writer_open_path(w, tpath("args.vma")), VMA_OK);

    /* the source larger than the device, bad descriptors, unknown device */
    REFUSED(w, vma_writer_write_device_fd(w, (unsigned)a, src, 2 * CL + 1), VMA_ERR_INVALID);
    assert_non_null(strstr(vma_writer_error(w), "drive-a"));
    REFUSED(w, vma_writer_write_device_fd(w, (unsigned)a, -1, 2 * CL), VMA_ERR_INVALID);
    REFUSED(w, vma_writer_write_device_fd(w, (unsigned)a, closed, 2 * CL), VMA_ERR_INVALID);
    REFUSED(w, vma_writer_write_device_fd(w, (unsigned)a, wo, 2 * CL), VMA_ERR_INVALID);
    REFUSED(w, vma_writer_write_device_fd(w, 77, src, CL), VMA_ERR_INVALID);
    REFUSED(w, vma_writer_write_device_source(w, (unsigned)a, NULL), VMA_ERR_INVALID);
    REFUSED(w, vma_writer_device_stats(w, 77, NULL, NULL), VMA_ERR_NOT_FOUND);
    /* a device that already has clusters is not written whole again */
    assert_int_equal(vma_writer_write_cluster(w, (unsigned)b, 0, buf), VMA_OK);
    REFUSED(w, vma_writer_write_device_fd(w, (unsigned)b, src, CL), VMA_ERR_INVALID);
    /* finish with a device open: refused, the device may still be closed */
    REFUSED(w, vma_writer_finish(w), VMA_ERR_INCOMPLETE);
    assert_non_null(strstr(vma_writer_error(w), "drive-a"));
    assert_int_equal(vma_writer_close_device(w, (unsigned)b), VMA_OK);
    REFUSED(w, vma_writer_write_device_fd(w, (unsigned)b, src, CL), VMA_ERR_INVALID);

    /* the right calls work, and the archive verifies */
    assert_int_equal(vma_writer_write_device_fd(w, (unsigned)a, src, 2 * CL), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
    close(src);
    close(wo);
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, tpath("args.vma")), VMA_OK);
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_OK);
    uint64_t stored = 0;
    vma_reader_device_counters(r, (unsigned)a, &stored, NULL);
    assert_int_equal(stored, 2 * CL);
    vma_reader_device_counters(r, (unsigned)b, &stored, NULL);
    assert_int_equal(stored, CL);
    vma_reader_free(r);
}

/* A command that cannot be started for want of descriptors is refused
 * like a missing one (it ended the writer before). */
static void t_writer_exec_no_descriptors(void **state)
{
    (void)state;
    vma_writer *w = vma_writer_new();
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int lowest = dup(0);
    assert_true(lowest >= 0);
    close(lowest);
    low = old;
    low.rlim_cur = (rlim_t)lowest; /* no new descriptor from here */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    char *cat[] = {"cat", NULL};
    int rc = vma_writer_open_command(w, cat);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(rc, VMA_ERR_IO);
    assert_int_equal(vma_writer_status(w), VMA_OK);
    assert_non_null(strstr(vma_writer_error(w), "exec:cat"));
    assert_string_equal(vma_last_error(), vma_writer_error(w));
    int null_fd = open("/dev/null", O_WRONLY);
    assert_int_equal(vma_writer_open_fd(w, null_fd), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
    close(null_fd);
}

/* --- a failed open_fd keeps no thread --------------------------------- */

static void *feed(void *arg)
{
    int fd = *(int *)arg;
    int in = open(gpath("basic.vma.zst"), O_RDONLY);
    static char buf[3000]; /* a zstd frame cut short */
    ssize_t n = read(in, buf, sizeof(buf));
    if (n > 0 && write(fd, buf, (size_t)n) != n)
        n = -1;
    close(in);
    close(fd);
    return NULL;
}

static void *nothing(void *arg) { return arg; }

static void t_open_fd_failure_releases(void **state)
{
    (void)state;
    /* a thread started and joined first: a sanitizer's own helper thread
     * (TSan starts one with the first thread) is then counted before too */
    pthread_t warm;
    assert_int_equal(pthread_create(&warm, NULL, nothing, NULL), 0);
    pthread_join(warm, NULL);
    int before = threads_now();
    int p[2];
    assert_int_equal(pipe(p), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, feed, &p[1]), 0);
    vma_reader *r = vma_reader_new();
    int rc = vma_reader_open_fd(r, p[0]);
    assert_true(rc == VMA_ERR_TRUNCATED || rc == VMA_ERR_CORRUPT);
    pthread_join(t, NULL);
    /* the read-ahead threads are gone before free, the fd is the caller's */
    assert_int_equal(threads_now(), before);
    assert_int_equal(vma_reader_status(r), VMA_OK);
    assert_true(fcntl(p[0], F_GETFD) >= 0);
    vma_reader_free(r);
    close(p[0]);
}

/* --- fork ------------------------------------------------------------- */

/* In the child: what a reader made by the parent answers (0 if right). */
static int child_reader(vma_reader *r)
{
    if (vma_reader_read(r, NULL, NULL) != VMA_ERR_INVALID)
        return 1;
    if (strstr(vma_reader_error(r), "after fork") == NULL ||
        strcmp(vma_last_error(), vma_reader_error(r)) != 0)
        return 2;
    if (vma_reader_target_skip(r, 1) != VMA_ERR_INVALID ||
        vma_reader_restore(r) != VMA_ERR_INVALID ||
        vma_reader_open_path(r, gpath("basic.vma")) != VMA_ERR_INVALID)
        return 3;
    vma_reader_cancel(r); /* must not reach the parent's reader */
    vma_reader_free(r);   /* must not wait for the parent's threads */
    return 0;
}

static int child_writer(vma_writer *w, unsigned id)
{
    if (vma_writer_write_cluster(w, id, 1, NULL) != VMA_ERR_INVALID ||
        strstr(vma_last_error(), "after fork") == NULL)
        return 4;
    if (vma_writer_close_device(w, id) != VMA_ERR_INVALID ||
        vma_writer_finish(w) != VMA_ERR_INVALID || vma_writer_status(w) != VMA_ERR_INVALID ||
        vma_writer_add_config(w, "x.conf", "x", 1) != VMA_ERR_INVALID)
        return 5;
    vma_writer_cancel(w);
    vma_writer_free(w); /* must not remove the parent's file */
    return 0;
}

/* A source and a backup made by the parent: refused, and free returns. */
static int child_source_backup(vma_source *s, vma_backup *b)
{
    /* (a build without libnbd refuses every open, and holds nothing) */
    if (vma_source_open(s, "qcow2", "/nonexistent.qcow2") != VMA_ERR_INVALID ||
        (strstr(vma_source_error(s), "source made in process") == NULL &&
         strstr(vma_source_error(s), "without NBD support") == NULL) ||
        strcmp(vma_last_error(), vma_source_error(s)) != 0)
        return 6;
    if (vma_backup_open(b, "/nonexistent.qmp") != VMA_ERR_INVALID ||
        strstr(vma_backup_error(b), "backup made in process") == NULL ||
        vma_backup_set_timeout(b, 5) != VMA_ERR_INVALID ||
        vma_backup_set_qga(b, "/x") != VMA_ERR_INVALID ||
        vma_backup_run(b, NULL) != VMA_ERR_INVALID ||
        vma_backup_cleanup(b, "/nonexistent.qmp", NULL) != VMA_ERR_INVALID)
        return 7;
    vma_source_cancel(s);
    vma_backup_cancel(b);
    vma_source_free(s);
    vma_backup_free(b);
    return 0;
}

/* A compressed reader (read-ahead threads running) and a zstd writer
 * (compression threads) used in a child after fork(): clear errors at
 * once, free returns; the parent's handles go on unharmed. The child
 * hung in vma_reader_read() before (lzo 6 runs of 6, zstd 3 of 6); an
 * alarm ends it then. */
static void t_fork(void **state)
{
    (void)state;
    static const char *const names[] = {"basic.vma.zst", "basic.vma.lzo"};
    vma_reader *r[2];
    for (int i = 0; i < 2; i++) {
        r[i] = vma_reader_new();
        assert_int_equal(vma_reader_open_path(r[i], gpath(names[i])), VMA_OK);
    }
    unsigned id;
    vma_writer *w = vma_writer_new();
    assert_int_equal(vma_writer_set_compression(w, "zstd"), VMA_OK);
    assert_int_equal(vma_writer_open_path(w, tpath("fork.vma.zst")), VMA_OK);
    int rc = vma_writer_add_device(w, "drive-scsi0", 2 * CL);
    assert_true(rc > 0);
    id = (unsigned)rc;
    static unsigned char buf[CL];
    memset(buf, 0x42, sizeof(buf));
    assert_int_equal(vma_writer_write_cluster(w, id, 0, buf), VMA_OK);

    vma_source *src = vma_source_new();
    vma_backup *bk = vma_backup_new();
    assert_non_null(src);
    assert_non_null(bk);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        int code = child_reader(r[0]);
        if (code == 0)
            code = child_reader(r[1]);
        if (code == 0)
            code = child_writer(w, id);
        if (code == 0)
            code = child_source_backup(src, bk);
        _exit(code);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st))
        fail_msg("the child was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    assert_int_equal(WEXITSTATUS(st), 0);
    /* the parent's go on: their calls are not refused */
    assert_int_equal(vma_backup_set_timeout(bk, 5), VMA_OK);
    vma_backup_free(bk);
    assert_int_not_equal(vma_source_open(src, "qcow2", "/nonexistent.qcow2"), VMA_OK);
    assert_null(strstr(vma_source_error(src), "after fork"));
    vma_source_free(src);

    for (int i = 0; i < 2; i++) {
        assert_int_equal(vma_reader_read(r[i], NULL, NULL), VMA_OK);
        vma_reader_free(r[i]);
    }
    assert_int_equal(vma_writer_write_cluster(w, id, 1, NULL), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, id), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
    vma_reader *v = vma_reader_new();
    assert_int_equal(vma_reader_open_path(v, tpath("fork.vma.zst")), VMA_OK);
    assert_int_equal(vma_reader_read(v, NULL, NULL), VMA_OK);
    vma_reader_free(v);
}

/* --- threads ----------------------------------------------------------- */

struct stats_cb {
    vma_writer *w;
    unsigned id;
    uint64_t last, calls;
};

static int stats_in_progress(void *opaque, uint64_t bytes, uint64_t zeros)
{
    struct stats_cb *s = opaque;
    uint64_t dev_bytes = 0;
    (void)zeros;
    /* deadlocked on the writer's lock before */
    if (vma_writer_device_stats(s->w, s->id, &dev_bytes, NULL) != VMA_OK)
        return 1;
    if (bytes < s->last)
        return 1; /* totals only grow */
    s->last = bytes;
    s->calls++;
    return 0;
}

static unsigned char data5a[CL]; /* filled before the threads start */

struct worker {
    vma_writer *w;
    unsigned id;
    uint32_t first, step, count;
    int rc;
};

static void *write_some(void *arg)
{
    struct worker *k = arg;
    for (uint32_t c = k->first; c < k->count && k->rc == VMA_OK; c += k->step)
        k->rc = vma_writer_write_cluster(k->w, k->id, c, (c & 1) ? data5a : NULL);
    return NULL;
}

static void t_device_stats_from_progress(void **state)
{
    (void)state;
    alarm(60); /* a deadlock fails the test instead of hanging it */
    unsigned id;
    vma_writer *w = writer_with(tpath("stats.vma"), 64 * (uint64_t)CL, &id);
    struct stats_cb s = {.w = w, .id = id};
    memset(data5a, 0x5a, sizeof(data5a));
    vma_writer_set_progress(w, stats_in_progress, &s);
    struct worker k[4];
    pthread_t t[4];
    for (unsigned i = 0; i < 4; i++) {
        k[i] = (struct worker){.w = w, .id = id, .first = i, .step = 4, .count = 64};
        assert_int_equal(pthread_create(&t[i], NULL, write_some, &k[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(k[i].rc, VMA_OK);
    }
    alarm(0);
    assert_true(s.calls > 0);
    assert_int_equal(s.last, 64 * (uint64_t)CL);
    assert_int_equal(vma_writer_close_device(w, id), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
}

struct poller {
    vma_reader *r;
    atomic_int done;
    uint64_t seen;
};

static void *poll_counters(void *arg)
{
    struct poller *p = arg;
    while (!atomic_load_explicit(&p->done, memory_order_relaxed)) {
        uint64_t c = 0;
        vma_reader_counters(p->r, &c, NULL, NULL);
        if (c < p->seen)
            abort(); /* counters only grow */
        p->seen = c;
    }
    return NULL;
}

static void t_counters_from_another_thread(void **state)
{
    (void)state;
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, gpath("basic.vma.zst")), VMA_OK);
    struct poller p = {.r = r};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, poll_counters, &p), 0);
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_OK);
    atomic_store_explicit(&p.done, 1, memory_order_relaxed);
    pthread_join(t, NULL);
    uint64_t c = 0;
    vma_reader_counters(r, &c, NULL, NULL);
    assert_true(c > 0 && p.seen <= c);
    vma_reader_free(r);
}

struct refusal {
    vma_writer *w;
    uint32_t cluster;
    char msg[600];
};

static void *refused_write(void *arg)
{
    struct refusal *f = arg;
    for (int i = 0; i < 200; i++) {
        if (vma_writer_write_cluster(f->w, 1, f->cluster, NULL) != VMA_ERR_INVALID)
            return NULL;
        snprintf(f->msg, sizeof(f->msg), "%s", vma_last_error());
        char want[64];
        snprintf(want, sizeof(want), "cluster %u is past", f->cluster);
        if (strstr(f->msg, want) == NULL)
            return NULL; /* another thread's message */
    }
    return f;
}

static void t_last_error_per_thread(void **state)
{
    (void)state;
    unsigned id;
    vma_writer *w = writer_with(tpath("tls.vma"), CL, &id);
    struct refusal f[2] = {{.w = w, .cluster = 100}, {.w = w, .cluster = 200}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, refused_write, &f[i]), 0);
    for (int i = 0; i < 2; i++) {
        void *ok;
        pthread_join(t[i], &ok);
        assert_ptr_equal(ok, &f[i]);
    }
    assert_int_equal(vma_writer_status(w), VMA_OK);
    vma_writer_free(w);
}

/* --- commands are their own calls ------------------------------------ */

static void t_path_is_a_path(void **state)
{
    (void)state;
    /* "exec:..." given to open_path is a file name, never run */
    assert_int_equal(chdir(dir), 0);
    vma_writer *w = vma_writer_new();
    assert_int_equal(vma_writer_open_path(w, "exec:touch ran"), VMA_OK);
    vma_writer_free(w);
    assert_int_equal(access("ran", F_OK), -1);
    assert_int_equal(access("exec:touch ran", F_OK), -1); /* removed: not finished */

    /* argv: no shell, arguments passed as they are */
    char out[4300];
    snprintf(out, sizeof(out), "of=%s", tpath("cmd out;$(touch ran).vma"));
    char *argv[] = {"dd", out, "status=none", NULL};
    unsigned id;
    w = vma_writer_new();
    assert_int_equal(vma_writer_open_command(w, argv), VMA_OK);
    int rc = vma_writer_add_device(w, "drive-scsi0", CL);
    assert_true(rc > 0);
    id = (unsigned)rc;
    assert_int_equal(vma_writer_write_cluster(w, id, 0, NULL), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, id), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
    assert_int_equal(access("ran", F_OK), -1);
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, tpath("cmd out;$(touch ran).vma")), VMA_OK);
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_OK);
    vma_reader_free(r);

    /* the shell form: what the CLI's exec: uses */
    char cmd[4400];
    snprintf(cmd, sizeof(cmd), "cat > '%s'", tpath("shell.vma"));
    w = vma_writer_new();
    assert_int_equal(vma_writer_open_shell(w, cmd), VMA_OK);
    rc = vma_writer_add_device(w, "drive-scsi0", CL);
    assert_true(rc > 0);
    assert_int_equal(vma_writer_write_cluster(w, (unsigned)rc, 0, NULL), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, (unsigned)rc), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
    assert_int_equal(access(tpath("shell.vma"), F_OK), 0);
}

/* --- what the header says ---------------------------------------------- */

static int count_mask0(void *opaque, unsigned dev_id, uint32_t cluster, uint16_t mask,
                       const unsigned char *data)
{
    (void)dev_id, (void)cluster, (void)data;
    *(int *)opaque += mask == 0;
    return 0;
}

static void t_counts_agree(void **state)
{
    (void)state;
    /* a size that ends inside a block: padding past it is not counted */
    uint64_t size = 2 * (uint64_t)CL + 5120;
    unsigned id;
    vma_writer *w = writer_with(tpath("counts.vma"), size, &id);
    static unsigned char data[CL];
    memset(data, 0, sizeof(data));
    memset(data, 1, 100);               /* block 0 stored, 15 zero */
    assert_int_equal(vma_writer_write_cluster(w, id, 0, data), VMA_OK);
    assert_int_equal(vma_writer_write_cluster(w, id, 1, NULL), VMA_OK);
    assert_int_equal(vma_writer_write_cluster(w, id, 2, data), VMA_OK); /* tail */
    uint64_t wbytes = 0, wzero = 0;
    assert_int_equal(vma_writer_device_stats(w, id, &wbytes, &wzero), VMA_OK);
    assert_int_equal(vma_writer_device_stats(w, 9, NULL, NULL), VMA_ERR_NOT_FOUND);
    assert_int_equal(vma_writer_close_device(w, id), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
    assert_int_equal(wbytes, size);

    vma_reader *r = vma_reader_new();
    int mask0 = 0;
    assert_int_equal(vma_reader_open_path(r, tpath("counts.vma")), VMA_OK);
    assert_int_equal(vma_reader_read(r, count_mask0, &mask0), VMA_OK);
    uint64_t clusters, zc, zb;
    vma_reader_counters(r, &clusters, &zc, &zb);
    vma_reader_free(r);
    assert_int_equal(clusters, 3);
    assert_int_equal(mask0, 1); /* the all-zero cluster reached the callback */
    assert_int_equal(zc, CL);
    assert_int_equal(wzero, size - 2 * VMA_BLOCK_SIZE); /* two stored blocks */
    /* zero blocks as the deployed tool's -v counts them (vma.h): 15 in
     * cluster 0, and in the tail cluster the one that straddles the end,
     * whole; the 14 wholly past the end are padding, not counted */
    assert_int_equal(zb, 16 * VMA_BLOCK_SIZE);
}

static void t_messages(void **state)
{
    (void)state;
    /* shorter than a header, not VMA: "not a VMA archive" */
    int fd = open(tpath("tiny"), O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, tpath("tiny")), VMA_ERR_CORRUPT);
    assert_non_null(strstr(vma_reader_error(r), "not a VMA archive"));
    assert_int_equal(vma_reader_open_path(r, "/dev/null"), VMA_ERR_TRUNCATED);
    fd = open(tpath("vma-start"), O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_int_equal(write(fd, "VMA\0\0\0", 6), 6);
    close(fd);
    assert_int_equal(vma_reader_open_path(r, tpath("vma-start")), VMA_ERR_TRUNCATED);
    /* a directory names the path */
    assert_int_equal(vma_reader_open_path(r, dir), VMA_ERR_IO);
    assert_non_null(strstr(vma_reader_error(r), dir));
    /* open_fd: the descriptor stays the caller's */
    int in = open(gpath("basic.vma"), O_RDONLY);
    assert_true(in >= 0);
    assert_int_equal(vma_reader_open_fd(r, in), VMA_OK);
    vma_reader_free(r);
    assert_true(fcntl(in, F_GETFD) >= 0); /* not the reader's to close */
    close(in);

    /* writer: finish does not close the caller's descriptor */
    int out = open(tpath("fd.vma"), O_WRONLY | O_CREAT | O_EXCL, 0600);
    vma_writer *w = vma_writer_new();
    assert_int_equal(vma_writer_open_fd(w, out), VMA_OK);
    int id = vma_writer_add_device(w, "drive-scsi0", CL);
    assert_int_equal(vma_writer_write_cluster(w, (unsigned)id, 0, NULL), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, (unsigned)id), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
    assert_true(fcntl(out, F_GETFD) >= 0);
    close(out);
}

/* --- consumer helpers ---------------------------------------------------- */

static void t_cluster_expand(void **state)
{
    (void)state;
    static unsigned char packed[2 * VMA_BLOCK_SIZE], out[CL];
    memset(packed, 0xaa, VMA_BLOCK_SIZE);
    memset(packed + VMA_BLOCK_SIZE, 0xbb, VMA_BLOCK_SIZE);
    memset(out, 0x11, sizeof(out));
    vma_cluster_expand(0x8001, packed, out); /* blocks 0 and 15 */
    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++) {
        unsigned char want = b == 0 ? 0xaa : b == 15 ? 0xbb : 0;
        const unsigned char *p = out + (size_t)b * VMA_BLOCK_SIZE;
        assert_int_equal(p[0], want);
        assert_int_equal(p[VMA_BLOCK_SIZE - 1], want);
    }
    vma_cluster_expand(0, NULL, out);
    for (size_t i = 0; i < CL; i += 997)
        assert_int_equal(out[i], 0);
}

struct fraction {
    vma_reader *r;
    double last;
    int bad;
};

static int watch_fraction(void *opaque, uint64_t clusters, uint64_t bytes)
{
    struct fraction *f = opaque;
    double now = vma_reader_progress(f->r);
    (void)clusters, (void)bytes;
    f->bad |= now < f->last || now > 1.0;
    f->last = now;
    return 0;
}

static void t_progress_fraction(void **state)
{
    (void)state;
    vma_reader *r = vma_reader_new();
    struct fraction f = {.r = r};
    assert_true(vma_reader_progress(r) == 0.0);
    assert_int_equal(vma_reader_open_path(r, gpath("basic.vma")), VMA_OK);
    vma_reader_set_progress(r, watch_fraction, &f);
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_OK);
    assert_false(f.bad);
    assert_true(vma_reader_progress(r) == 1.0);
    vma_reader_free(r);
}

/* --- archive input from memory and from a callback ------------------------ */

static unsigned char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    assert_true(fd >= 0 && fstat(fd, &st) == 0);
    unsigned char *p = malloc((size_t)st.st_size);
    assert_non_null(p);
    assert_int_equal(read(fd, p, (size_t)st.st_size), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return p;
}

static uint64_t clusters_of(vma_reader *r)
{
    uint64_t c = 0;
    vma_reader_counters(r, &c, NULL, NULL);
    return c;
}

static void t_open_memory(void **state)
{
    (void)state;
    const char *names[] = {"basic.vma", "basic.vma.zst", "basic.vma.gz", "basic.vma.lzo"};
    for (unsigned i = 0; i < 4; i++) {
        size_t len;
        unsigned char *buf = slurp(gpath(names[i]), &len);
        vma_reader *r = vma_reader_new();
        assert_int_equal(vma_reader_open_memory(r, buf, len), VMA_OK);
        assert_int_equal(vma_reader_open_memory(r, buf, len), VMA_ERR_INVALID);
        assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_OK);
        assert_int_equal(clusters_of(r), 137);
        vma_reader_free(r);
        /* cut short: refused, nothing kept (threads included) */
        pthread_t warm;
        assert_int_equal(pthread_create(&warm, NULL, nothing, NULL), 0);
        pthread_join(warm, NULL);
        int before = threads_now();
        r = vma_reader_new();
        int rc = vma_reader_open_memory(r, buf, 100);
        assert_true(rc == VMA_ERR_TRUNCATED || rc == VMA_ERR_CORRUPT);
        assert_int_equal(threads_now(), before);
        assert_int_equal(vma_reader_status(r), VMA_OK);
        /* the same reader opens the whole buffer then, and reads it
         * without a thread of its own (decoded in this one) */
        assert_int_equal(vma_reader_open_memory(r, buf, len), VMA_OK);
        assert_true(threads_now() <= before); /* <=: the warm thread may still have
                                                 been listed in `before` */
        assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_OK);
        assert_true(threads_now() <= before);
        assert_int_equal(clusters_of(r), 137);
        vma_reader_free(r);
        free(buf);
    }
}

struct source {
    int fd;
    unsigned calls, fail_at, cancel_at;
    vma_reader *r;
};

/* Odd-sized reads, an error or a cancel on the given call. */
static ptrdiff_t read_source(void *opaque, void *buf, size_t len)
{
    struct source *s = opaque;
    if (++s->calls == s->fail_at) {
        errno = EPROTO;
        return -1;
    }
    if (s->calls == s->cancel_at)
        vma_reader_cancel(s->r);
    return read(s->fd, buf, len < 777 ? len : 777);
}

static int run_source(const char *name, unsigned fail_at, unsigned cancel_at, int *open_rc,
                      char *msg, size_t msglen)
{
    struct source s = {.fd = open(gpath(name), O_RDONLY), .fail_at = fail_at,
                       .cancel_at = cancel_at};
    assert_true(s.fd >= 0);
    vma_reader *r = s.r = vma_reader_new();
    *open_rc = vma_reader_open_callback(r, read_source, &s);
    int rc = *open_rc == VMA_OK ? vma_reader_read(r, NULL, NULL) : *open_rc;
    snprintf(msg, msglen, "%s", vma_reader_error(r));
    if (rc == VMA_OK)
        assert_int_equal(clusters_of(r), 137);
    vma_reader_free(r);
    close(s.fd);
    return rc;
}

static void t_open_callback(void **state)
{
    (void)state;
    char msg[600];
    int open_rc;
    assert_int_equal(run_source("basic.vma", 0, 0, &open_rc, msg, sizeof(msg)), VMA_OK);
    assert_int_equal(run_source("basic.vma.zst", 0, 0, &open_rc, msg, sizeof(msg)), VMA_OK);
    assert_int_equal(run_source("basic.vma.gz", 0, 0, &open_rc, msg, sizeof(msg)), VMA_OK);
    /* an error of the source: VMA_ERR_IO with its errno, at open or later */
    assert_int_equal(run_source("basic.vma", 2, 0, &open_rc, msg, sizeof(msg)), VMA_ERR_IO);
    assert_non_null(strstr(msg, strerror(EPROTO)));
    assert_int_equal(run_source("basic.vma.zst", 200, 0, &open_rc, msg, sizeof(msg)),
                     VMA_ERR_IO);
    assert_int_equal(open_rc, VMA_OK);
    assert_non_null(strstr(msg, strerror(EPROTO)));
    /* a cancel while the source runs takes effect once it returned */
    assert_int_equal(run_source("basic.vma", 100, 50, &open_rc, msg, sizeof(msg)),
                     VMA_ERR_CANCELED);
    assert_int_equal(run_source("basic.vma.zst", 0, 50, &open_rc, msg, sizeof(msg)),
                     VMA_ERR_CANCELED);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: embed_api GOLDEN_DIR\n");
        return 2;
    }
    static char abs_golden[4096];
    if (realpath(argv[1], abs_golden) == NULL)
        return 1;
    golden = abs_golden; /* a test changes directory */
    signal(SIGPIPE, SIG_IGN);
    if (mkdtemp(dir) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_reader_refused_then_usable),
        cmocka_unit_test(t_target_fd_short_file),
        cmocka_unit_test(t_reader_fatal_sticks),
        cmocka_unit_test(t_callback_stop_message),
        cmocka_unit_test(t_writer_refused_then_usable),
        cmocka_unit_test(t_writer_rounds_to_sectors),
        cmocka_unit_test(t_writer_argument_errors),
        cmocka_unit_test(t_writer_exec_no_descriptors),
        cmocka_unit_test(t_open_fd_failure_releases),
        cmocka_unit_test(t_fork),
        cmocka_unit_test(t_device_stats_from_progress),
        cmocka_unit_test(t_counters_from_another_thread),
        cmocka_unit_test(t_last_error_per_thread),
        cmocka_unit_test(t_path_is_a_path),
        cmocka_unit_test(t_counts_agree),
        cmocka_unit_test(t_messages),
        cmocka_unit_test(t_cluster_expand),
        cmocka_unit_test(t_progress_fraction),
        cmocka_unit_test(t_open_memory),
        cmocka_unit_test(t_open_callback),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    vt_rm_tree(dir);
    return rc;
}
