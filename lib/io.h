/*
 * The thin I/O layer: whole reads and writes on descriptors, retried on
 * EINTR and short transfers, and the message buffer every handle keeps.
 * Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_IO_H
#define LIBVMA_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VMAI_ERRLEN 512

/* Read up to len bytes; stops early only at end of file. Returns the
 * number of bytes read, or -1 with errno set. */
ssize_t vmai_read_full(int fd, void *buf, size_t len);

/* Write all len bytes (at offset, or sequentially when offset < 0).
 * Returns 0, or -1 with errno set (ENOSPC for a write that makes no
 * progress). */
int vmai_write_full(int fd, const void *buf, size_t len, int64_t offset);

/* printf into an error buffer of VMAI_ERRLEN bytes. */
void vmai_errorf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
