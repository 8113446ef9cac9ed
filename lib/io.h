/*
 * The thin I/O layer: whole reads and writes on descriptors, retried on
 * EINTR and short transfers; the cancel switch that stops a read or write
 * waiting on an idle pipe; and the message buffer every handle keeps.
 * Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_IO_H
#define LIBVMA_IO_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VMAI_ERRLEN 512

/* A cancel switch: a flag, and an eventfd that turns readable when the
 * flag is set, so that a thread waiting in poll(2) wakes up. */
struct vmai_cancel {
    atomic_int fired;
    int fd;
};

/* Returns 0, or -1 with errno when no eventfd can be made. */
int vmai_cancel_open(struct vmai_cancel *c);
void vmai_cancel_close(struct vmai_cancel *c);

/* Set the switch. Async-signal-safe; any thread. */
void vmai_cancel_fire(struct vmai_cancel *c);

/* Whether the switch is set (false for NULL). */
bool vmai_cancelled(const struct vmai_cancel *c);

/* Sleep ns nanoseconds, or less when the switch is set: 0, or -1 with
 * errno ECANCELED. A set switch ends the sleep at once (its eventfd wakes
 * ppoll(2)); without an eventfd the flag is looked at every 10 ms. */
int vmai_cancel_sleep(const struct vmai_cancel *c, uint64_t ns);

/*
 * Wait for a child (the leader of its own process group) to exit, and
 * reap it into *status: 0, or -1 with errno. The wait polls a pidfd
 * together with the switch's eventfd (without pidfd_open(2), Linux < 5.3,
 * it looks every 10 ms). Once the switch is set, the group gets SIGTERM,
 * 50 ms to end and then SIGKILL; the child is reaped and the call fails
 * with ECANCELED (*status set).
 */
int vmai_child_wait(pid_t pid, int *status, const struct vmai_cancel *c);

/* Whether read(2) or write(2) on fd may wait for another process (a
 * pipe, FIFO, socket or terminal), unlike a regular file or block device. */
bool vmai_fd_may_block(int fd);

/* One read(2), retried on EINTR. With a switch c, fails with ECANCELED
 * once it is set, and when may_block (see above), first waits in poll(2)
 * for data or the switch. */
ssize_t vmai_read_some(int fd, void *buf, size_t len, const struct vmai_cancel *c,
                       bool may_block);

/* pread() exactly n bytes at off, through EINTR and short reads: VMA_OK,
 * VMA_ERR_IO (errno set) or VMA_ERR_TRUNCATED (end of file first). *got
 * (may be NULL) is what was read, also on failure. */
int vmai_pread_exact(int fd, void *buf, size_t n, uint64_t off, size_t *got);

/* The library's own descriptors (eventfd, pipes) never take 0, 1 or 2:
 * when a process runs with those closed, a later "-" (standard input)
 * must not find one of ours there. Returns fd moved to 3 or above
 * (close-on-exec), fd itself if already there or negative, or -1. */
int vmai_fd_above_std(int fd);

/* Write all len bytes (at offset, or sequentially when offset < 0).
 * Returns 0, or -1 with errno set (ENOSPC for a write that makes no
 * progress; ECANCELED as for reads). */
int vmai_write_full(int fd, const void *buf, size_t len, int64_t offset,
                    const struct vmai_cancel *c, bool may_block);

/* The library's own threads block every signal, so that the caller's
 * handlers run only in the caller's threads (a handler may then call
 * vma_reader_cancel() on a handle that its thread frees later). */
void vmai_signals_block(sigset_t *old);
void vmai_signals_restore(const sigset_t *old);

/* pthread_create() of a thread with every signal blocked. */
int vmai_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);

/* A handle is used only in the process that made it: after fork() the
 * child has a copy of its memory but none of its threads (a read waits
 * for a read-ahead thread forever) and shares its descriptors (a cancel
 * would reach the parent's eventfd). A handle records its owner when
 * made; the check is one atomic load (getpid() is a system call, 3 us in
 * these VMs: per cluster it doubled the writer's time): a pthread_atfork()
 * handler counts the forks, the library's only process-wide state. */
struct vmai_owner {
    pid_t pid;
    unsigned long forks;
};
void vmai_owner_set(struct vmai_owner *o);

/* Whether the caller runs in the process that made the handle.
 * Async-signal-safe. */
bool vmai_same_process(const struct vmai_owner *o);

/* If not: says so in err (VMAI_ERRLEN bytes, `what` names the handle)
 * and returns true. */
bool vmai_other_process(const struct vmai_owner *o, const char *what, char *err);

/* A large buffer with its pages in place from the start (MAP_POPULATE):
 * one system call instead of a page fault per 4 KiB page at first touch,
 * which in a VM costs about 6 us each (a fifth of a seekable .zst verify
 * of 270 MB). NULL when out of memory; free it with vmai_buffer_free()
 * and the same len. */
void *vmai_buffer_new(size_t len);
void vmai_buffer_free(void *buf, size_t len);

/* printf into an error buffer of VMAI_ERRLEN bytes. */
void vmai_errorf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Record msg as this thread's vma_last_error() (status.c). */
void vmai_set_last_error(const char *msg);

/* The same from a format; returns the message (this thread's, valid until
 * its next failure). */
const char *vmai_vset_last_error(const char *fmt, va_list ap);

#endif
