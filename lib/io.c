/*
 * Whole reads and writes, retried on EINTR and short transfers, the
 * cancel switch that stops them, and the owner of a handle (fork()s).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "vma.h"

int vmai_fd_above_std(int fd)
{
    if (fd < 0 || fd > STDERR_FILENO)
        return fd;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    int saved = errno;
    close(fd);
    errno = saved;
    return high;
}

int vmai_cancel_open(struct vmai_cancel *c)
{
    atomic_init(&c->fired, 0);
    c->fd = vmai_fd_above_std(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    return c->fd < 0 ? -1 : 0;
}

void vmai_cancel_close(struct vmai_cancel *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

void vmai_cancel_fire(struct vmai_cancel *c)
{
    int saved = errno; /* a signal handler must leave errno alone */
    uint64_t one = 1;
    atomic_store(&c->fired, 1);
    if (c->fd >= 0 && write(c->fd, &one, sizeof(one)) < 0) {
        /* The counter cannot overflow with ones; nothing else can fail. */
    }
    errno = saved;
}

bool vmai_cancelled(const struct vmai_cancel *c)
{
    return c != NULL && atomic_load(&c->fired) != 0;
}

/* Wait until fd is ready for `events` or the switch (if any) fires.
 * Returns 0, or -1 with errno (ECANCELED once fired). After a signal's
 * EINTR the switch is looked at again, so a handler's cancel takes effect
 * at once. */
static int wait_ready(int fd, short events, const struct vmai_cancel *c)
{
    int cfd = c != NULL ? c->fd : -1;
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = cfd, .events = POLLIN}};
    for (;;) {
        if (vmai_cancelled(c)) {
            errno = ECANCELED;
            return -1;
        }
        int n = poll(p, cfd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno != EINTR)
            return -1;
        /* POLLERR/POLLHUP/POLLNVAL: the read or write reports it. */
        if (n > 0 && p[0].revents != 0 && !vmai_cancelled(c))
            return 0;
    }
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int vmai_cancel_sleep(const struct vmai_cancel *c, uint64_t ns)
{
    const uint64_t slice = 10000000; /* 10 ms, when there is no eventfd */
    uint64_t end = mono_ns() + ns;
    for (;;) {
        if (vmai_cancelled(c)) {
            errno = ECANCELED;
            return -1;
        }
        uint64_t now = mono_ns();
        if (now >= end)
            return 0;
        uint64_t left = end - now;
        bool polled = c != NULL && c->fd >= 0;
        if (!polled && c != NULL && left > slice)
            left = slice;
        struct timespec ts = {(time_t)(left / 1000000000u), (long)(left % 1000000000u)};
        /* EINTR: a handler may have set the switch; looked at above. */
        if (polled) {
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            ppoll(&p, 1, &ts, NULL);
        } else {
            nanosleep(&ts, NULL);
        }
    }
}

/* Whether the child has exited (left unreaped: its process group id
 * cannot be reused yet). 1 yes, 0 no, -1 error. */
static int child_exited(pid_t pid)
{
    siginfo_t si;
    si.si_pid = 0;
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
        return errno == EINTR ? 0 : -1;
    return si.si_pid == pid;
}

/* Wait up to ns (UINT64_MAX: no limit) for the child to exit or, with c,
 * for the switch. 1 exited, 0 not (time out or switch), -1 error. */
static int child_wait_until(pid_t pid, int pidfd, const struct vmai_cancel *c, uint64_t ns)
{
    const uint64_t slice = 10000000; /* 10 ms, when there is no pidfd */
    uint64_t end = ns == UINT64_MAX ? UINT64_MAX : mono_ns() + ns;
    for (;;) {
        int rc = child_exited(pid);
        if (rc != 0)
            return rc;
        if (vmai_cancelled(c))
            return 0;
        uint64_t now = mono_ns();
        if (now >= end)
            return 0;
        uint64_t left = end - now;
        struct pollfd p[2];
        nfds_t n = 0;
        if (pidfd >= 0)
            p[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        if (c != NULL && c->fd >= 0)
            p[n++] = (struct pollfd){.fd = c->fd, .events = POLLIN};
        bool slicing = pidfd < 0 || (c != NULL && c->fd < 0);
        if (slicing && left > slice)
            left = slice;
        struct timespec ts = {(time_t)(left / 1000000000u), (long)(left % 1000000000u)};
        /* EINTR: a handler may have set the switch; looked at above. */
        ppoll(p, n, end == UINT64_MAX && !slicing ? NULL : &ts, NULL);
    }
}

int vmai_child_wait(pid_t pid, int *status, const struct vmai_cancel *c)
{
#ifdef SYS_pidfd_open
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#else
    int pidfd = -1;
#endif
    int rc = child_wait_until(pid, pidfd, c, UINT64_MAX);
    bool cancelled = rc == 0;
    if (cancelled) {
        kill(-pid, SIGTERM);
        child_wait_until(pid, pidfd, NULL, 50000000);
        kill(-pid, SIGKILL); /* what is left of the group; the leader is not reaped yet */
    }
    if (pidfd >= 0)
        close(pidfd);
    if (rc < 0)
        return -1;
    while (waitpid(pid, status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (cancelled) {
        errno = ECANCELED;
        return -1;
    }
    return 0;
}

bool vmai_fd_may_block(int fd)
{
    struct stat st;
    return fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

/* Before a read or write: with a switch, fail once it is set, and on a
 * descriptor that may block, wait in poll(2) for it or the switch. */
static int ready(int fd, short events, const struct vmai_cancel *c, bool may_block)
{
    if (c == NULL)
        return 0;
    if (may_block)
        return wait_ready(fd, events, c);
    if (vmai_cancelled(c)) {
        errno = ECANCELED;
        return -1;
    }
    return 0;
}

ssize_t vmai_read_some(int fd, void *buf, size_t len, const struct vmai_cancel *c,
                       bool may_block)
{
    for (;;) {
        if (ready(fd, POLLIN, c, may_block) < 0)
            return -1;
        ssize_t n = read(fd, buf, len);
        if (n >= 0 || (errno != EINTR && errno != EAGAIN))
            return n;
        /* A descriptor with O_NONBLOCK: wait here, not in read(2). */
        if (errno == EAGAIN && wait_ready(fd, POLLIN, c) < 0)
            return -1;
    }
}

int vmai_pread_exact(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
    size_t done = 0;
    int rc = VMA_OK;
    while (done < n) {
        ssize_t k = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = k < 0 ? VMA_ERR_IO : VMA_ERR_TRUNCATED;
            break;
        }
        done += (size_t)k;
    }
    if (got != NULL)
        *got = done;
    return rc;
}

int vmai_write_full(int fd, const void *buf, size_t len, int64_t offset,
                    const struct vmai_cancel *c, bool may_block)
{
    size_t done = 0;
    while (done < len) {
        if (ready(fd, POLLOUT, c, may_block) < 0)
            return -1;
        ssize_t n;
        if (offset >= 0)
            n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(offset + (int64_t)done));
        else
            n = write(fd, (const char *)buf + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* O_NONBLOCK (our own pipe and FIFO ends have it, so that a
             * write(2) never blocks where a cancel cannot end it) */
            if (errno == EAGAIN && wait_ready(fd, POLLOUT, c) == 0)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = ENOSPC;
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

void vmai_signals_block(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, old);
}

void vmai_signals_restore(const sigset_t *old) { pthread_sigmask(SIG_SETMASK, old, NULL); }

int vmai_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    sigset_t old;
    vmai_signals_block(&old); /* the new thread inherits the full mask */
    int rc = pthread_create(thread, NULL, fn, arg);
    vmai_signals_restore(&old);
    return rc;
}

static _Atomic unsigned long forks; /* fork()s into this process */
static pthread_once_t fork_counting = PTHREAD_ONCE_INIT;

static void count_fork(void) { atomic_fetch_add_explicit(&forks, 1, memory_order_relaxed); }

static void count_forks(void) { pthread_atfork(NULL, NULL, count_fork); }

void vmai_owner_set(struct vmai_owner *o)
{
    pthread_once(&fork_counting, count_forks);
    o->pid = getpid();
    o->forks = atomic_load_explicit(&forks, memory_order_relaxed);
}

bool vmai_same_process(const struct vmai_owner *o)
{
    return atomic_load_explicit(&forks, memory_order_relaxed) == o->forks;
}

bool vmai_other_process(const struct vmai_owner *o, const char *what, char *err)
{
    if (vmai_same_process(o))
        return false;
    vmai_errorf(err, "%s made in process %d used in process %d after fork(): a handle "
                "works only in the process that made it (its threads are not in this one)",
                what, (int)o->pid, (int)getpid());
    return true;
}

void vmai_errorf(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, VMAI_ERRLEN, fmt, ap);
    va_end(ap);
}

void *vmai_buffer_new(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void vmai_buffer_free(void *buf, size_t len)
{
    if (buf != NULL)
        munmap(buf, len);
}
