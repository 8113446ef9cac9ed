/*
 * Sequential reading of a seekable zstd file on several cores: the seek
 * table says where every frame is, so a few threads decode frames at once
 * and the reader gets them back in order. See zst_pool.c. Internal to
 * libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_ZST_POOL_H
#define LIBVMA_ZST_POOL_H

#include <stddef.h>
#include <sys/types.h>

struct vmai_zst_pool;
struct vmai_cancel;

/* Start decoding the regular file fd (its stream begins at byte 0) if it
 * is in the seekable format with frames of at most ZST_POOL_MAX_FRAME
 * bytes; VMA_ERR_NOT_FOUND (nothing started) when it is not, or when one
 * core would do as well. Other failures with a message in err. */
int vmai_zst_pool_start(struct vmai_zst_pool **out, int fd, const struct vmai_cancel *cancel,
                        char *err, size_t errlen);

/* The next decoded bytes, in order, at most cap (out NULL: dropped, not
 * copied): the count, 0 at the end,
 * or a negative status with a message (frame number and offset) in err. */
ssize_t vmai_zst_pool_read(struct vmai_zst_pool *p, unsigned char *out, size_t cap, char *err,
                           size_t errlen);

/* Stop the threads and free everything. NULL is a no-op. */
void vmai_zst_pool_free(struct vmai_zst_pool *p);

#endif
