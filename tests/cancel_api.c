/*
 * vma_reader_cancel() and vma_writer_cancel(): a reader or writer stuck on
 * an idle pipe (the other end open, nothing moving) stops with
 * VMA_ERR_CANCELED when another thread cancels it, a cancel before a call
 * makes that call fail, the failure is sticky, a cancelled writer leaves
 * no file behind, and the library's own threads block every signal (so
 * that a handler that cancels runs only in the caller's threads).
 * Every other wait ends too: a 1 B/s throttle, a FIFO nobody opens, a
 * vmstate pipe nobody reads, an exec: command that does not read or does
 * not exit (its process group is gone after). The latency is counted, not
 * timed: no cluster, progress or write_cluster call is accepted once
 * cancel() has returned.
 *
 * Usage: cancel_api <golden-dir>
 * SPDX-License-Identifier: MIT
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rmtree.h"
#include "vma.h"

static const char *golden_dir = "tests/golden";

static unsigned char *slurp(const char *name, size_t *len)
{
    const char *path = vt_path_in(golden_dir, name);
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
    const char *path = vt_path_in(golden_dir, "basic.vma");
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

/* After a failed restore, the directory holds nothing; it is removed. */
static void restore_dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    unsigned left = 0;
    while ((e = readdir(d)) != NULL)
        left += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(left, 0);
    assert_int_equal(rmdir(dir), 0);
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
    restore_dir_empty(dir);
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

/* Write incompressible clusters until a canceller (started here) stops
 * the writer, whose output stalls: write_cluster and then finish fail
 * with VMA_ERR_CANCELED. */
static void write_until_cancelled(vma_writer *w)
{
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
    free(cluster);
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
    write_until_cancelled(w);
    vma_writer_free(w);
    close(p[0]);
    close(p[1]);
}

/* state: the compression (cmocka_unit_test_prestate) */
static void t_writer_cancel_on_full_pipe(void **state)
{
    writer_cancel_on_full_pipe(*state);
}

/* A writer on a new archive at path with one device; its id in *id. */
static vma_writer *writer_with_device(const char *path, const char *name, uint64_t size, int *id)
{
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    assert_int_equal(vma_writer_open_path(w, path), VMA_OK);
    *id = vma_writer_add_device(w, name, size);
    assert_true(*id > 0);
    return w;
}

/* Cancelled before finish: no archive is left. */
static void t_writer_cancel_removes_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/vma-cancel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *path = vt_path_in(dir, "out.vma");
    int id;
    vma_writer *w = writer_with_device(path, "drive-scsi0", VMA_CLUSTER_SIZE, &id);
    static unsigned char cluster[VMA_CLUSTER_SIZE] = {1};
    assert_int_equal(vma_writer_write_cluster(w, (unsigned)id, 0, cluster), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, (unsigned)id), VMA_OK);
    vma_writer_cancel(w);
    assert_int_equal(vma_writer_finish(w), VMA_ERR_CANCELED);
    vma_writer_free(w);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(rmdir(dir), 0);
}

/* --- counted latency: nothing starts after cancel() returned ---------- */

/* A cluster callback that cancels the reader itself on cluster `at` and
 * counts the callbacks after that: none may come. */
struct self_cancel {
    vma_reader *r;
    unsigned calls, at, after;
};

/* One callback: counted as "after" once cancel() has returned. */
static void self_cancel_step(struct self_cancel *s)
{
    if (s->calls >= s->at)
        s->after++;
    if (++s->calls == s->at)
        vma_reader_cancel(s->r);
}

static int cancel_in_callback(void *opaque, unsigned dev_id, uint32_t cluster_num,
                              uint16_t mask, const unsigned char *data)
{
    (void)dev_id, (void)cluster_num, (void)mask, (void)data;
    self_cancel_step(opaque);
    return 0;
}

/* state: the golden archive's name. The cancel comes mid-extent (the
 * first extent holds up to 59 clusters). */
static void t_reader_no_callback_after_cancel(void **state)
{
    const char *path = vt_path_in(golden_dir, (const char *)*state);
    struct self_cancel s = {.r = vma_reader_new(), .at = 3};
    assert_non_null(s.r);
    assert_int_equal(vma_reader_open_path(s.r, path), VMA_OK);
    assert_int_equal(vma_reader_read(s.r, cancel_in_callback, &s), VMA_ERR_CANCELED);
    assert_int_equal(s.after, 0);
    assert_int_equal(s.calls, s.at);
    vma_reader_free(s.r);
}

/* Another thread cancels while the second callback runs, then raises a
 * flag; a cluster or progress callback that starts after the flag was
 * raised is counted. */
struct other_cancel {
    vma_reader *r;
    atomic_int calls, cancelled, after, progress;
};

/* Progress calls are counted too, and after the flag as "after". */
static int progress_after_cancel(void *opaque, uint64_t clusters_read, uint64_t bytes_consumed)
{
    (void)clusters_read, (void)bytes_consumed;
    struct other_cancel *o = opaque;
    if (atomic_load(&o->cancelled))
        atomic_fetch_add(&o->after, 1);
    atomic_fetch_add(&o->progress, 1);
    return 0;
}

static int callback_held(void *opaque, unsigned dev_id, uint32_t cluster_num, uint16_t mask,
                         const unsigned char *data)
{
    (void)dev_id, (void)cluster_num, (void)mask, (void)data;
    struct other_cancel *o = opaque;
    if (atomic_load(&o->cancelled))
        atomic_fetch_add(&o->after, 1);
    if (atomic_fetch_add(&o->calls, 1) + 1 == 2)
        while (!atomic_load(&o->cancelled)) /* held until cancel() returned */
            sched_yield();
    return 0;
}

static void *cancel_on_second_call(void *arg)
{
    struct other_cancel *o = arg;
    while (atomic_load(&o->calls) < 2)
        sched_yield();
    vma_reader_cancel(o->r);
    atomic_store(&o->cancelled, 1);
    return NULL;
}

static void t_reader_no_callback_after_other_thread_cancel(void **state)
{
    (void)state;
    const char *path = vt_path_in(golden_dir, "basic.vma.zst");
    struct other_cancel o = {.r = vma_reader_new()};
    assert_non_null(o.r);
    assert_int_equal(vma_reader_open_path(o.r, path), VMA_OK);
    pthread_t t;
    vma_reader_set_progress(o.r, progress_after_cancel, &o);
    assert_int_equal(pthread_create(&t, NULL, cancel_on_second_call, &o), 0);
    assert_int_equal(vma_reader_read(o.r, callback_held, &o), VMA_ERR_CANCELED);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&o.calls), 2);
    assert_int_equal(atomic_load(&o.after), 0);
    /* the progress of cluster 2 would come after cancel() returned */
    assert_int_equal(atomic_load(&o.progress), 1);
    vma_reader_free(o.r);
}

/* A restore whose progress callback cancels on cluster `at` and counts
 * the calls after: none (each comes after a cluster was written). */
static int progress_cancel(void *opaque, uint64_t clusters_read, uint64_t bytes_consumed)
{
    (void)clusters_read, (void)bytes_consumed;
    self_cancel_step(opaque);
    return 0;
}

/* A reader on golden basic.vma with a new file as every device's target
 * in a new directory dir (mkdtemp template). */
static vma_reader *restore_setup(char *dir)
{
    char path[4096];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/basic.vma", golden_dir);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_open_path(r, path), VMA_OK);
    for (unsigned id = vma_reader_next_device(r, 0); id; id = vma_reader_next_device(r, id)) {
        snprintf(path, sizeof(path), "%s/disk-%u.raw", dir, id);
        assert_int_equal(vma_reader_target_create(r, id, path), VMA_OK);
    }
    return r;
}

static void t_restore_no_cluster_after_cancel(void **state)
{
    (void)state;
    char dir[] = "/tmp/vma-cancel-XXXXXX";
    struct self_cancel s = {.r = restore_setup(dir), .at = 2};
    vma_reader_set_progress(s.r, progress_cancel, &s);
    assert_int_equal(vma_reader_restore(s.r), VMA_ERR_CANCELED);
    assert_int_equal(s.after, 0);
    assert_int_equal(s.calls, s.at);
    vma_reader_free(s.r);
    restore_dir_empty(dir);
}

/* A restore limited to 1 byte/s would take 97 days for basic.vma's 8 MiB
 * disk: a cancel from another thread ends it in the throttle's wait (that
 * the restore returns at all shows it), and no cluster follows. */
struct throttled {
    vma_reader *r;
    atomic_int calls, cancelled, after;
};

static int progress_count(void *opaque, uint64_t clusters_read, uint64_t bytes_consumed)
{
    (void)clusters_read, (void)bytes_consumed;
    struct throttled *t = opaque;
    if (atomic_load(&t->cancelled))
        atomic_fetch_add(&t->after, 1);
    atomic_fetch_add(&t->calls, 1);
    return 0;
}

static void *cancel_throttled(void *arg)
{
    struct throttled *t = arg;
    while (atomic_load(&t->calls) < 1)
        sched_yield();
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL); /* the restore sleeps in the throttle by now */
    vma_reader_cancel(t->r);
    atomic_store(&t->cancelled, 1);
    return NULL;
}

/* state: the throttling group, or NULL for private limits */
static void t_restore_throttled_cancel(void **state)
{
    const char *group = *state;
    char dir[] = "/tmp/vma-cancel-XXXXXX";
    struct throttled t = {.r = restore_setup(dir)};
    for (unsigned id = vma_reader_next_device(t.r, 0); id; id = vma_reader_next_device(t.r, id))
        assert_int_equal(vma_reader_target_limit(t.r, id, 1, group), VMA_OK);
    vma_reader_set_progress(t.r, progress_count, &t);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_throttled, &t), 0);
    int rc = vma_reader_restore(t.r);
    pthread_join(th, NULL);
    assert_int_equal(rc, VMA_ERR_CANCELED);
    assert_non_null(strstr(vma_reader_error(t.r), "cancelled"));
    assert_int_equal(atomic_load(&t.after), 0);
    vma_reader_free(t.r);
    restore_dir_empty(dir);
}

/* Writers: two threads write clusters while a third cancels, then raises
 * a flag; a write_cluster that started after the flag and was accepted is
 * counted. */
struct racing_writers {
    vma_writer *w;
    unsigned dev_id;
    atomic_int accepted, cancelled, after;
};

struct writer_thread {
    pthread_t thread;
    struct racing_writers *rw;
    uint64_t first;
    int rc;
};

static void *write_clusters(void *arg)
{
    struct writer_thread *wt = arg;
    struct racing_writers *rw = wt->rw;
    wt->rc = VMA_OK;
    /* zero clusters (NULL data): fast, and the format is the same */
    for (uint64_t n = wt->first; wt->rc == VMA_OK; n += 2) {
        int late = atomic_load(&rw->cancelled);
        wt->rc = vma_writer_write_cluster(rw->w, rw->dev_id, n, NULL);
        if (wt->rc == VMA_OK)
            atomic_fetch_add(late ? &rw->after : &rw->accepted, 1);
    }
    return NULL;
}

static void t_writer_no_cluster_after_cancel(void **state)
{
    (void)state;
    struct racing_writers rw = {.w = vma_writer_new()};
    assert_non_null(rw.w);
    int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(null_fd >= 0);
    assert_int_equal(vma_writer_open_fd(rw.w, null_fd), VMA_OK);
    int id = vma_writer_add_device(rw.w, "drive-scsi0", (uint64_t)1 << 40);
    assert_true(id > 0);
    rw.dev_id = (unsigned)id;
    struct writer_thread wt[2] = {{.rw = &rw, .first = 0}, {.rw = &rw, .first = 1}};
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&wt[i].thread, NULL, write_clusters, &wt[i]), 0);
    while (atomic_load(&rw.accepted) < 1000)
        sched_yield();
    vma_writer_cancel(rw.w);
    atomic_store(&rw.cancelled, 1);
    for (unsigned i = 0; i < 2; i++) {
        pthread_join(wt[i].thread, NULL);
        assert_int_equal(wt[i].rc, VMA_ERR_CANCELED);
    }
    assert_int_equal(atomic_load(&rw.after), 0);
    assert_int_equal(vma_writer_finish(rw.w), VMA_ERR_CANCELED);
    vma_writer_free(rw.w);
    close(null_fd);
}

/* --- the wait for an exec: command ----------------------------------- */

/* Whether the process group pgid is gone within 20 s. */
static bool group_gone(pid_t pgid)
{
    for (unsigned i = 0; i < 200; i++) {
        /* orphans of the group are ours to reap (main() makes this process
         * their subreaper): a zombie would still count */
        while (waitpid(-pgid, NULL, WNOHANG) > 0)
            ;
        if (kill(-pgid, 0) != 0 && errno == ESRCH)
            return true;
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return false;
}

/* Wait until path exists (60 s at most: a broken build fails later). */
static void wait_for_file(const char *path)
{
    for (unsigned i = 0; i < 1200 && access(path, F_OK) != 0; i++) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

/* The pid the exec: command wrote into dir/pid (its process group). */
static pid_t read_pid(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/pid", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int pid = 0;
    assert_int_equal(fscanf(f, "%d", &pid), 1);
    fclose(f);
    assert_true(pid > 1);
    return (pid_t)pid;
}

struct exec_cancel {
    vma_writer *w;
    char marker[4200];
};

/* Cancel once the command has read the whole archive and lingers. */
static void *cancel_when_lingering(void *arg)
{
    struct exec_cancel *e = arg;
    wait_for_file(e->marker);
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL); /* finish waits for the command by now */
    vma_writer_cancel(e->w);
    return NULL;
}

/* A command that reads the archive to its end but does not exit: finish
 * waits for it; the cancel ends the wait and the command's whole process
 * group (the shell and its sleep) is gone, also when it ignores SIGTERM.
 * state: a prefix for the command ("" or "trap '' TERM; "). */
static void t_writer_cancel_exec_wait(void **state)
{
    const char *prefix = *state;
    char dir[] = "/tmp/vma-cancel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct exec_cancel e = {.w = vma_writer_new()};
    assert_non_null(e.w);
    snprintf(e.marker, sizeof(e.marker), "%s/lingering", dir);
    char cmd[9000];
    snprintf(cmd, sizeof(cmd),
             "%secho $$ >%s/pid; cat >/dev/null; : >%s; sleep 600", prefix, dir, e.marker);
    assert_int_equal(vma_writer_open_shell(e.w, cmd), VMA_OK);
    int id = vma_writer_add_device(e.w, "drive-scsi0", VMA_CLUSTER_SIZE);
    assert_true(id > 0);
    static unsigned char cluster[VMA_CLUSTER_SIZE] = {1};
    assert_int_equal(vma_writer_write_cluster(e.w, (unsigned)id, 0, cluster), VMA_OK);
    assert_int_equal(vma_writer_close_device(e.w, (unsigned)id), VMA_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_when_lingering, &e), 0);
    int rc = vma_writer_finish(e.w);
    pthread_join(t, NULL);
    assert_int_equal(rc, VMA_ERR_CANCELED);
    assert_non_null(strstr(vma_writer_error(e.w), "exec: command"));
    assert_true(group_gone(read_pid(dir)));
    vma_writer_free(e.w);
    vt_rm_tree(dir);
}

/* A command that never reads (our pipe to it stays full): a cancel from
 * another thread ends the write, and freeing the writer ends the command
 * (a write(2) blocked in the kernel could not be woken: our end of the
 * pipe is O_NONBLOCK, the wait is in poll(2)). */
static void t_writer_cancel_exec_stalled(void **state)
{
    (void)state;
    char dir[] = "/tmp/vma-cancel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "echo $$ >%s/pid; exec sleep 600", dir);
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    assert_int_equal(vma_writer_open_shell(w, cmd), VMA_OK);
    snprintf(cmd, sizeof(cmd), "%s/pid", dir);
    wait_for_file(cmd); /* the command runs */
    write_until_cancelled(w);
    vma_writer_free(w);
    assert_true(group_gone(read_pid(dir)));
    vt_rm_tree(dir);
}

/* --- FIFOs whose other end never opens, a vmstate pipe that stalls ---- */

/* open of a FIFO whose other end nobody opens: the cancel ends the wait.
 * state: "reader" or "writer". */
static void t_cancel_in_fifo_open(void **state)
{
    bool writer = strcmp(*state, "writer") == 0;
    char dir[] = "/tmp/vma-cancel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *path = vt_path_in(dir, "x.fifo");
    assert_int_equal(mkfifo(path, 0600), 0);
    vma_reader *r = writer ? NULL : vma_reader_new();
    vma_writer *w = writer ? vma_writer_new() : NULL;
    assert_true(r != NULL || w != NULL);
    struct canceller c;
    canceller_start(&c, r, w);
    int rc = writer ? vma_writer_open_path(w, path) : vma_reader_open_path(r, path);
    pthread_join(c.thread, NULL);
    assert_int_equal(rc, VMA_ERR_CANCELED);
    assert_non_null(strstr(writer ? vma_writer_error(w) : vma_reader_error(r), "cancelled"));
    vma_reader_free(r);
    vma_writer_free(w);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISFIFO(st.st_mode)); /* the FIFO is left alone */
    vt_rm_tree(dir);
}

/* The vmstate restored into a pipe (target_fd) that nobody reads: the
 * write waits, and the cancel ends it. */
static void t_restore_cancel_vmstate_pipe(void **state)
{
    (void)state;
    char dir[] = "/tmp/vma-cancel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *path = vt_path_in(dir, "vmstate.vma");
    int id;
    vma_writer *w = writer_with_device(path, VMA_VMSTATE_NAME, 16 * VMA_CLUSTER_SIZE, &id);
    static unsigned char cluster[VMA_CLUSTER_SIZE];
    memset(cluster, 0x77, sizeof(cluster));
    for (uint64_t n = 0; n < 16; n++)
        assert_int_equal(vma_writer_write_cluster(w, (unsigned)id, n, cluster), VMA_OK);
    assert_int_equal(vma_writer_close_device(w, (unsigned)id), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);

    int p[2];
    assert_int_equal(pipe(p), 0);
    fill_pipe(p[1]);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_open_path(r, path), VMA_OK);
    assert_int_equal(vma_reader_target_fd(r, (unsigned)id, p[1], 0), VMA_OK);
    struct canceller c;
    canceller_start(&c, r, NULL);
    int rc = vma_reader_restore(r);
    pthread_join(c.thread, NULL);
    assert_int_equal(rc, VMA_ERR_CANCELED);
    vma_reader_free(r);
    close(p[0]);
    close(p[1]);
    vt_rm_tree(dir);
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
    prctl(PR_SET_CHILD_SUBREAPER, 1); /* see group_gone() */
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
        cmocka_unit_test_prestate(t_reader_no_callback_after_cancel, "basic.vma"),
        cmocka_unit_test_prestate(t_reader_no_callback_after_cancel, "basic.vma.zst"),
        cmocka_unit_test(t_reader_no_callback_after_other_thread_cancel),
        cmocka_unit_test(t_restore_no_cluster_after_cancel),
        cmocka_unit_test_prestate(t_restore_throttled_cancel, NULL),
        cmocka_unit_test_prestate(t_restore_throttled_cancel, "g"),
        cmocka_unit_test(t_writer_no_cluster_after_cancel),
        cmocka_unit_test_prestate(t_writer_cancel_exec_wait, ""),
        cmocka_unit_test_prestate(t_writer_cancel_exec_wait, "trap '' TERM; "),
        cmocka_unit_test(t_writer_cancel_exec_stalled),
        cmocka_unit_test_prestate(t_cancel_in_fifo_open, "reader"),
        cmocka_unit_test_prestate(t_cancel_in_fifo_open, "writer"),
        cmocka_unit_test(t_restore_cancel_vmstate_pipe),
        cmocka_unit_test(t_threads_block_signals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
