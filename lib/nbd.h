/*
 * NBD connections to disk images in any format QEMU reads: a QEMU image or
 * protocol path is served by a private `qemu-nbd` started with socket
 * activation; an nbd:// or nbd+unix:// URI is connected to directly. Used
 * by restore targets and create sources alike. Internal to libvma.
 *
 * Every wait (qemu-nbd's start, NBD replies, qemu-nbd's exit) polls the
 * caller's cancel switch too, and qemu-nbd's stderr is read into the
 * connection, never passed through: its error is folded into our one-line
 * messages. The child is always reaped and the socket directory removed;
 * if the process dies the child gets SIGKILL (PR_SET_PDEATHSIG), and the
 * directory was removed before the child started.
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_NBD_H
#define LIBVMA_NBD_H

#include <stdarg.h>
#include <stdint.h>

#include "io.h"

struct nbd_handle;
struct vmai_nbd;

/* Flags of vmai_nbd_open(); the cache flags only matter for qemu-nbd. */
#define VMAI_NBD_READONLY 1u /* --read-only: a source */
#define VMAI_NBD_DIRECT 2u   /* bypass the host page cache: --cache=none, --aio=native */
#define VMAI_NBD_SYNC 4u     /* --cache=writethrough (with DIRECT: directsync) */
#define VMAI_NBD_DISCARD 8u  /* --discard=unmap: zero writes may free space */
#define VMAI_NBD_BLOCK_STATUS 16u /* ask for "base:allocation" (a source's holes) */

/*
 * Connect to (format, path), one that vma_path_needs_nbd() accepts.
 * For qemu-nbd (found in PATH): a private unix socket in a new mkdtemp
 * directory, connected to and removed before the child starts (forked from
 * a thread of ours, see struct forker in nbd.c), the child in its own
 * process group with stdin /dev/null and stdout/stderr into a pipe we
 * read. Waits for the NBD handshake, or for
 * the switch `cancel` (may be NULL; the caller checks it after a failure).
 * On failure returns -1 with a one-line message in err (VMAI_ERRLEN bytes)
 * and nothing is left running or on disk.
 */
int vmai_nbd_open(struct vmai_nbd **out, const char *format, const char *path,
                  unsigned flags, const struct vmai_cancel *cancel, char *err);

/* Watch another cancel switch from now on (a source opened on its own
 * switch is then read under its writer's). */
void vmai_nbd_set_cancel(struct vmai_nbd *c, const struct vmai_cancel *cancel);

/* The libnbd handle, for aio calls; owned by the connection. */
struct nbd_handle *vmai_nbd_handle(struct vmai_nbd *c);

/* Size of the export in bytes (nbd_get_size at connect time). */
uint64_t vmai_nbd_size(const struct vmai_nbd *c);

/* What the connection is to ("qemu-nbd" or "NBD server"), for messages. */
const char *vmai_nbd_server(const struct vmai_nbd *c);

/*
 * Wait until libnbd made progress: one poll(2) on the NBD socket, the
 * cancel switch and qemu-nbd's stderr, then nbd_aio_notify_*. Returns 0,
 * or -1 with err set (cancelled, connection lost: with qemu-nbd's own last
 * error line or how it died).
 */
int vmai_nbd_poll(struct vmai_nbd *c, char *err);

/* As vmai_nbd_poll() without waiting: handle the replies already there. */
int vmai_nbd_progress(struct vmai_nbd *c, char *err);

/* Poll until at most max commands are in flight. 0 or -1 as above. */
int vmai_nbd_drain(struct vmai_nbd *c, unsigned max, char *err);

/* Poll until the command `cookie` completed; -1 with err (and the
 * command's errno in *cmd_errno when it failed on the server). */
int vmai_nbd_wait_cookie(struct vmai_nbd *c, int64_t cookie, char *err, int *cmd_errno);

/*
 * Describe why the last libnbd call failed, in err: "<what>: <reason>"
 * where the reason is qemu-nbd's own error if it died (how it died
 * otherwise), "cancelled", or libnbd's message. Returns -1.
 */
int vmai_nbd_fail(struct vmai_nbd *c, char *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Clean end: wait for every command, disconnect, and wait for qemu-nbd to
 * exit (it exits when its client leaves); a non-zero exit is an error.
 * Returns 0 or -1 with err. Call vmai_nbd_close() afterwards in any case.
 */
int vmai_nbd_finish(struct vmai_nbd *c, char *err);

/* Drop the connection and free it. A qemu-nbd still running gets SIGTERM
 * (SIGKILL after 5 s) and is reaped; the socket directory is removed.
 * NULL is a no-op. */
void vmai_nbd_close(struct vmai_nbd *c);

#endif
