/* The codec fuzz targets' shared body. SPDX-License-Identifier: MIT */
#ifndef LIBVMA_FUZZ_CODEC_H
#define LIBVMA_FUZZ_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* Feed data, with magic put in front unless it starts with it, to the
 * input layer alone (small odd reads to the end) and to the reader. */
int fuzz_codec(const uint8_t *data, size_t size, const uint8_t *magic, size_t magic_len);

#endif
