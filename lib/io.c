/* Whole reads and writes, retried on EINTR and short transfers, and the
 * cancel switch that stops them. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

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

/* Wait until fd is ready for `events` or the switch fires. Returns 0, or
 * -1 with errno (ECANCELED once fired). After a signal's EINTR the switch
 * is looked at again, so a handler's cancel takes effect at once. */
static int wait_ready(int fd, short events, const struct vmai_cancel *c)
{
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = c->fd, .events = POLLIN}};
    for (;;) {
        if (vmai_cancelled(c)) {
            errno = ECANCELED;
            return -1;
        }
        int n = poll(p, c->fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno != EINTR)
            return -1;
        /* POLLERR/POLLHUP/POLLNVAL: the read or write reports it. */
        if (n > 0 && p[0].revents != 0 && !vmai_cancelled(c))
            return 0;
    }
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
        if (n >= 0 || errno != EINTR)
            return n;
    }
}

ssize_t vmai_read_full(int fd, void *buf, size_t len, const struct vmai_cancel *c,
                       bool may_block)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = vmai_read_some(fd, (char *)buf + done, len - done, c, may_block);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
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

void vmai_errorf(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, VMAI_ERRLEN, fmt, ap);
    va_end(ap);
}
