/*
 * vma_reader_cancel() and vma_writer_cancel(): a reader or writer stuck on
 * an idle pipe (the other end open, nothing moving) stops with
 * VMA_ERR_CANCELED when another thread cancels it, a cancel before a call
 * makes that call fail, the failure is sticky, a cancelled writer leaves
 * no file behind, and the library's own threads block every signal (so
 * that a handler that cancels runs only in the caller's threads).
 *
 * Usage: cancel_api <golden-dir>
 * SPDX-License-Identifier: MIT
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vma.h"

static const char *golden_dir = "tests/golden";

static unsigned char *slurp(const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", golden_dir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct stat st;
    assert_int_equal(fstat(fileno(f), &st), 0);
    unsigned char *p = malloc((size_t)st.st_size);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);
    *len = (size_t)st.st_size;
    return p;
}

/* --- a thread that feeds a pipe, then keeps it open ----------------- */

struct feeder {
    pthread_t thread;
    int fd;                     /* write end, closed by feeder_stop() */
    const unsigned char *data;
    size_t len;
};

static void *feed(void *arg)
{
    struct feeder *f = arg;
    size_t done = 0;
    while (done < f->len) {
        ssize_t n = write(f->fd, f->data + done, f->len - done);
        if (n <= 0)
            break; /* EPIPE once the reader is gone */
        done += (size_t)n;
    }
    return NULL;
}

/* Start feeding len bytes of data into a new pipe; returns its read end. */
static int feeder_start(struct feeder *f, const unsigned char *data, size_t len)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    f->fd = p[1];
    f->data = data;
    f->len = len;
    /* with signals blocked, as t_threads_block_signals() counts threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    assert_int_equal(pthread_create(&f->thread, NULL, feed, f), 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return p[0];
}

/* After the read end is closed: the feeder ends (EPIPE) and is joined. */
static void feeder_stop(struct feeder *f)
{
    pthread_join(f->thread, NULL);
    close(f->fd);
}

/* --- a thread that cancels after a pause ---------------------------- */

struct canceller {
    pthread_t thread;
    vma_reader *r;
    vma_writer *w;
};

static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL); /* long enough for the call to block */
    if (c->r)
        vma_reader_cancel(c->r);
    if (c->w)
        vma_writer_cancel(c->w);
    return NULL;
}

static void canceller_start(struct canceller *c, vma_reader *r, vma_writer *w)
{
    c->r = r;
    c->w = w;
    assert_int_equal(pthread_create(&c->thread, NULL, cancel_later, c), 0);
}

/* --- reader --------------------------------------------------------- */

/* Nothing arrives: the header read waits, and the cancel ends it. */
static void t_reader_cancel_in_header(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    struct canceller c;
    canceller_start(&c, r, NULL);
    int rc = vma_reader_open_fd(r, p[0]);
    pthread_join(c.thread, NULL);
    assert_int_equal(rc, VMA_ERR_CANCELED);
    assert_non_null(strstr(vma_reader_error(r), "cancelled"));
    vma_reader_free(r);
    close(p[0]);
    close(p[1]);
}

/* The header and half the data arrive, then the writer goes idle. */
static void reader_cancel_in_data(const char *golden)
{
    size_t len;
    unsigned char *archive = slurp(golden, &len);
    struct feeder f;
    int rfd = feeder_start(&f, archive, len / 2);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_open_fd(r, rfd), VMA_OK);
    struct canceller c;
    canceller_start(&c, r, NULL);
    int rc = vma_reader_read(r, NULL, NULL);
    pthread_join(c.thread, NULL);
    if (rc != VMA_ERR_CANCELED)
        fprintf(stderr, "%s: %s\n", golden, vma_reader_error(r));
    assert_int_equal(rc, VMA_ERR_CANCELED);
    assert_non_null(strstr(vma_reader_error(r), "cancelled"));
    /* sticky */
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_ERR_CANCELED);
    vma_reader_free(r);
    close(rfd);
    feeder_stop(&f);
    free(archive);
}

/* state: the golden archive's name (cmocka_unit_test_prestate) */
static void t_reader_cancel_in_data(void **state)
{
    reader_cancel_in_data(*state);
}

/* A cancel before the call: open and read of a whole file fail at once. */
static void t_reader_cancel_before(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof(path), "%s/basic.vma", golden_dir);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_open_path(r, path), VMA_OK);
    vma_reader_cancel(r);
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_ERR_CANCELED);
    vma_reader_free(r);

    r = vma_reader_new();
    assert_non_null(r);
    vma_reader_cancel(r);
    assert_int_equal(vma_reader_open_path(r, path), VMA_ERR_CANCELED);
    vma_reader_free(r);
}

/* A restore that is cancelled removes the files it made. */
static void t_reader_cancel_restore(void **state)
{
    (void)state;
    size_t len;
    unsigned char *archive = slurp("basic.vma", &len);
    struct feeder f;
    int rfd = feeder_start(&f, archive, len / 2);
    char dir[] = "/tmp/vma-cancel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_open_fd(r, rfd), VMA_OK);
    char path[4096];
    for (unsigned id = vma_reader_next_device(r, 0); id; id = vma_reader_next_device(r, id)) {
        snprintf(path, sizeof(path), "%s/disk-%u.raw", dir, id);
        assert_int_equal(vma_reader_target_create(r, id, path), VMA_OK);
    }
    struct canceller c;
    canceller_start(&c, r, NULL);
    int rc = vma_reader_restore(r);
    pthread_join(c.thread, NULL);
    assert_int_equal(rc, VMA_ERR_CANCELED);
    vma_reader_free(r);
    close(rfd);
    feeder_stop(&f);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    unsigned left = 0;
    while ((e = readdir(d)) != NULL)
        left += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(left, 0);
    rmdir(dir);
    free(archive);
}

/* --- writer --------------------------------------------------------- */

/* Fill a pipe to the brim, so that the next write waits for a reader. */
static void fill_pipe(int fd)
{
    static unsigned char junk[4096];
    int flags = fcntl(fd, F_GETFL);
    assert_int_equal(fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0);
    while (write(fd, junk, sizeof(junk)) > 0)
        ;
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(fcntl(fd, F_SETFL, flags), 0);
}

static void writer_cancel_on_full_pipe(const char *compression)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fill_pipe(p[1]);
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    assert_int_equal(vma_writer_set_compression(w, compression), VMA_OK);
    assert_int_equal(vma_writer_open_fd(w, p[1]), VMA_OK);
    int id = vma_writer_add_device(w, "drive-scsi0", 256u << 20);
    assert_true(id > 0);
    unsigned char *cluster = malloc(VMA_CLUSTER_SIZE);
    assert_non_null(cluster);
    uint64_t x = 88172645463325252ull; /* xorshift: incompressible data */
    struct canceller c;
    canceller_start(&c, NULL, w);
    int rc = VMA_OK;
    uint32_t n;
    for (n = 0; n < 4096 && rc == VMA_OK; n++) {
        for (size_t i = 0; i < VMA_CLUSTER_SIZE; i += 8) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            memcpy(cluster + i, &x, 8);
        }
        rc = vma_writer_write_cluster(w, (unsigned)id, n, cluster);
    }
    pthread_join(c.thread, NULL);
    assert_int_equal(rc, VMA_ERR_CANCELED);
    assert_true(n < 4096);
    assert_non_null(strstr(vma_writer_error(w), "cancelled"));
    assert_int_equal(vma_writer_finish(w), VMA_ERR_CANCELED);
    vma_writer_free(w);
    free(cluster);
    close(p[0]);
    close(p[1]);
}

/* state: the compression (cmocka_unit_test_prestate) */
static void t_writer_cancel_on_full_pipe(void **state)
{
    writer_cancel_on_full_pipe(*state);
}

/* Cancelled before finish: no archive is left. */
static void t_writer_cancel_removes_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/vma-cancel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[4096];
    snprintf(path, sizeof(path), "%s/out.vma", dir);
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    assert_int_equal(vma_writer_open_path(w, path), VMA_OK);
    int id = vma_writer_add_device(w, "drive-scsi0", VMA_CLUSTER_SIZE);
    assert_true(id > 0);
    static unsigned char cluster[VMA_CLUSTER_SIZE] = {1};
    assert_int_equal(vma_writer_write_cluster(w, (unsigned)id, 0, cluster), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, (unsigned)id), VMA_OK);
    vma_writer_cancel(w);
    assert_int_equal(vma_writer_finish(w), VMA_ERR_CANCELED);
    vma_writer_free(w);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(rmdir(dir), 0);
}

/* --- the library's threads block signals ---------------------------- */

/* Every thread of this process but the caller's has SIGINT and SIGTERM
 * blocked; returns how many threads there are besides the caller's. */
static unsigned other_threads_block_signals(void)
{
    pid_t self = (pid_t)syscall(SYS_gettid);
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    struct dirent *e;
    unsigned others = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == self)
            continue;
        char path[300], line[256];
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue; /* the thread ended */
        unsigned long long blocked = 0;
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "SigBlk: %llx", &blocked) == 1)
                break;
        fclose(f);
        assert_true(blocked & (1ull << (SIGINT - 1)));
        assert_true(blocked & (1ull << (SIGTERM - 1)));
        others++;
    }
    closedir(d);
    return others;
}

static void t_threads_block_signals(void **state)
{
    (void)state;
    /* A pipe that stays open keeps the reader's threads alive. */
    size_t len;
    unsigned char *archive = slurp("basic.vma.zst", &len);
    struct feeder f;
    int rfd = feeder_start(&f, archive, len / 2);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_open_fd(r, rfd), VMA_OK);
    assert_true(other_threads_block_signals() >= 2); /* reader and decoder */
    vma_reader_free(r);
    close(rfd);
    feeder_stop(&f);
    free(archive);

    int p[2];
    assert_int_equal(pipe(p), 0);
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    assert_int_equal(vma_writer_set_compression(w, "zstd"), VMA_OK);
    assert_int_equal(vma_writer_open_fd(w, p[1]), VMA_OK);
    int id = vma_writer_add_device(w, "drive-scsi0", VMA_CLUSTER_SIZE);
    assert_true(id > 0);
    static unsigned char cluster[VMA_CLUSTER_SIZE] = {1};
    assert_int_equal(vma_writer_write_cluster(w, (unsigned)id, 0, cluster), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, (unsigned)id), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK); /* the output starts here */
    if (sysconf(_SC_NPROCESSORS_ONLN) > 1)
        assert_true(other_threads_block_signals() >= 1); /* zstd's workers */
    vma_writer_free(w);
    close(p[0]);
    close(p[1]);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        golden_dir = argv[1];
    signal(SIGPIPE, SIG_IGN); /* feeders meet EPIPE when a reader stops */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_reader_cancel_in_header),
        cmocka_unit_test_prestate(t_reader_cancel_in_data, "basic.vma"),
        cmocka_unit_test_prestate(t_reader_cancel_in_data, "basic.vma.zst"),
        cmocka_unit_test_prestate(t_reader_cancel_in_data, "basic.vma.gz"),
        cmocka_unit_test_prestate(t_reader_cancel_in_data, "basic.vma.lzo"),
        cmocka_unit_test(t_reader_cancel_before),
        cmocka_unit_test(t_reader_cancel_restore),
        cmocka_unit_test_prestate(t_writer_cancel_on_full_pipe, "none"),
        cmocka_unit_test_prestate(t_writer_cancel_on_full_pipe, "zstd"),
        cmocka_unit_test(t_writer_cancel_removes_file),
        cmocka_unit_test(t_threads_block_signals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
