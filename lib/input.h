/*
 * The input byte layer: a descriptor, optionally decompressed (zstd, gzip,
 * lzop, recognized by their magic bytes); a compressed stream is read
 * and decompressed ahead by two threads, each filling a small ring of
 * chunks, so that reading, decompressing and the reader's checks and writes
 * overlap. Or a buffer in memory, decoded in the caller's thread (the fuzz
 * targets). Knows nothing of VMA. Internal to libvma.
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_INPUT_H
#define LIBVMA_INPUT_H

#include <stddef.h>
#include <sys/types.h>

struct vmai_input;

struct vmai_cancel;

/* Start reading fd (not owned). Sniffs the first bytes to pick a codec.
 * Once the switch cancel (may be NULL) is set, reads fail with
 * VMA_ERR_CANCELED, also one waiting for an idle pipe writer. Returns
 * VMA_OK or a negative status with a message in err. */
int vmai_input_open(struct vmai_input **in, int fd, const struct vmai_cancel *cancel,
                    char *err, size_t errlen);

/* The same on len bytes at data (not copied: they must outlive the
 * input), decoded in the caller's thread: no descriptor, no threads. */
int vmai_input_open_memory(struct vmai_input **in, const void *data, size_t len,
                           const struct vmai_cancel *cancel, char *err, size_t errlen);

/* Read up to len bytes; fewer only at the end of the stream. Returns the
 * count, or a negative status with a message in err (read error, corrupt
 * or truncated compressed stream). */
ssize_t vmai_input_read(struct vmai_input *in, void *buf, size_t len, char *err, size_t errlen);

/* "none", "zstd", "gzip" or "lzo". */
const char *vmai_input_codec(const struct vmai_input *in);

/* Stop the read-ahead threads and free everything. NULL is a no-op. */
void vmai_input_free(struct vmai_input *in);

#endif
