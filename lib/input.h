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

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct vmai_input;

struct vmai_cancel;

/* A source of bytes other than a descriptor: returns the count read (at
 * most len), 0 at the end, or -1 with errno set. */
typedef ssize_t (*vmai_read_fn)(void *opaque, void *buf, size_t len);

/* Start reading a descriptor fd (not owned), or fn (fd -1). Sniffs the
 * first bytes to pick a codec. Once the switch cancel (may be NULL) is
 * set, reads fail with VMA_ERR_CANCELED, also one waiting for an idle
 * pipe writer. For a compressed stream fn is called from a read-ahead
 * thread (never concurrently); a cancel takes effect when a call has
 * returned, and vmai_input_free() waits for it. With resync (salvage), a
 * bad lzop block or zstd frame does not end the stream: the decoder skips
 * to the next block or frame, and a read stops short at the gap (see
 * vmai_input_gap()). Returns VMA_OK or a negative status with a message
 * in err. */
int vmai_input_open_ex(struct vmai_input **in, int fd, vmai_read_fn fn, void *opaque,
                       const struct vmai_cancel *cancel, bool resync, char *err,
                       size_t errlen);

/* After a short read with resync: true (and what was skipped in msg) if
 * the read stopped at a gap rather than at the end; reading goes on after
 * the gap. */
bool vmai_input_gap(struct vmai_input *in, char *msg, size_t msglen);

/* As vmai_input_open_ex() on len bytes at data (not copied: they must outlive the
 * input), decoded in the caller's thread: no descriptor, no threads.
 * resync as for vmai_input_open_ex(). */
int vmai_input_open_memory(struct vmai_input **in, const void *data, size_t len,
                           const struct vmai_cancel *cancel, bool resync, char *err,
                           size_t errlen);

/* Read up to len bytes; fewer only at the end of the stream. Returns the
 * count, or a negative status with a message in err (read error, corrupt
 * or truncated compressed stream). With resync, the bytes decoded before
 * an error come first, as a short read, and the error at the next read. With buf NULL the bytes are read (and
 * decoded) all the same but dropped: a plain archive's go through a small
 * buffer that stays in the CPU cache, decoded ones are never copied. */
ssize_t vmai_input_read(struct vmai_input *in, void *buf, size_t len, char *err, size_t errlen);

/* "none", "zstd", "gzip" or "lzo". */
const char *vmai_input_codec(const struct vmai_input *in);

/* Stop the read-ahead threads and free everything. NULL is a no-op. */
void vmai_input_free(struct vmai_input *in);

#endif
