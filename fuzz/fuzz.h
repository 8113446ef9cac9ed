/* The libFuzzer entry point every target defines. SPDX-License-Identifier: MIT */
#ifndef LIBVMA_FUZZ_H
#define LIBVMA_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
