/* The libFuzzer entry point every target defines. SPDX-License-Identifier: MIT */
#ifndef LIBVMA_FUZZ_H
#define LIBVMA_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* data in a new memfd (memfd.c); path gets its /proc/self/fd name. The
 * descriptor, for the caller to close, or -1. */
int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t path_len);

#endif
