/*
 * The NBD restore target (a disk image in any format qemu-nbd serves, or
 * an NBD URI): writes go out as libnbd aio requests, many in flight in a
 * bounded window; zero runs become NBD write-zeroes. restore.c keeps the
 * rules (sizes, zero mode, throttling); this file only moves bytes.
 * Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_RESTORE_NBD_H
#define LIBVMA_RESTORE_NBD_H

#include <stddef.h>
#include <stdint.h>

#include "io.h"

struct vmai_nbd_target;

/* Connect (flags: VMA_TARGET_*; cache flags choose qemu-nbd's cache mode,
 * VMA_TARGET_WRITE_ZEROS asks for --discard=unmap). *size: the export's
 * size. Returns 0, or -1 with a message in err (VMAI_ERRLEN bytes). */
int vmai_nbd_target_open(struct vmai_nbd_target **out, const char *format, const char *path,
                         unsigned flags, const struct vmai_cancel *cancel, uint64_t *size,
                         char *err);

/* Queue a write of buf; waits while the window is full. With refs NULL it
 * sends a copy (the caller's buffer may be reused at once); else buf
 * itself, adding one to *refs per request until its reply took it back
 * (the buffer must stay until *refs is 0 again). A failure of any earlier
 * request is reported here too. Returns 0 or -1 with err. */
int vmai_nbd_target_write(struct vmai_nbd_target *t, const void *buf, size_t len,
                          uint64_t off, unsigned *refs, char *err);

/* Requests of t not answered yet (a lost connection counts as one, so
 * that a caller waits and vmai_nbd_target_wait() says why it was lost). */
unsigned vmai_nbd_target_in_flight(const struct vmai_nbd_target *t);

/* Wait for the next reply of t (which must have requests in flight); a
 * failed request shows here. Returns 0 or -1 with err. */
int vmai_nbd_target_wait(struct vmai_nbd_target *t, char *err);

/* A request buffer of cap bytes (at most the server's largest write) for
 * the caller to fill and hand to vmai_nbd_target_send(), which then needs
 * no copy; waits while the window is full. One at a time: a buffer not
 * sent is given back by vmai_nbd_target_free(). NULL after a failure, or
 * when cap is larger than the server takes, with err. */
unsigned char *vmai_nbd_target_buffer(struct vmai_nbd_target *t, size_t cap, char *err);

/* Queue the write of the first len bytes of that buffer at off. */
int vmai_nbd_target_send(struct vmai_nbd_target *t, size_t len, uint64_t off, char *err);

/* The server's largest write, in bytes. */
uint64_t vmai_nbd_target_max_write(const struct vmai_nbd_target *t);

/* Make [off, off+len) read as zeros (merged with the zero run before). */
int vmai_nbd_target_zero(struct vmai_nbd_target *t, uint64_t off, uint64_t len, char *err);

/* Wait for every request, flush once, disconnect, reap qemu-nbd. */
int vmai_nbd_target_finish(struct vmai_nbd_target *t, char *err);

/* Drop the connection (stopping and reaping qemu-nbd); NULL is a no-op. */
void vmai_nbd_target_free(struct vmai_nbd_target *t);

#endif
