/*
 * The output byte layer: plain or compressed (zstd, gzip, lzop) bytes to a
 * descriptor. Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_OUTPUT_H
#define LIBVMA_OUTPUT_H

#include <stddef.h>

#include "codec.h"

/* Parse "zstd", "zstd:19", "gzip:9", "lzo", "none". VMA_ERR_INVALID for
 * an unknown codec or a level out of range. */
int vmai_codec_parse(const char *spec, enum vmai_codec *codec, int *level);

struct vmai_output;
struct vmai_cancel;

/* Start writing to fd (not owned). The lzop header goes out at once. *out
 * is set even on failure, for vmai_output_free(). Once the switch cancel
 * (may be NULL) is set, writes fail with VMA_ERR_CANCELED, also one
 * waiting for an idle pipe reader. */
int vmai_output_open(struct vmai_output **out, int fd, const struct vmai_cancel *cancel,
                     enum vmai_codec codec, int level,
                     char *err, size_t errlen);

/* Write len bytes (compressed as they go). */
int vmai_output_write(struct vmai_output *o, const void *buf, size_t len, char *err,
                      size_t errlen);

/* End the compressed stream and write what is buffered. */
int vmai_output_finish(struct vmai_output *o, char *err, size_t errlen);

/* NULL is a no-op. */
void vmai_output_free(struct vmai_output *o);

#endif
