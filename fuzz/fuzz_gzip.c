/* Fuzz target: gzip framing, raw compressed bytes through the input layer
 * and the reader (see codec.c). SPDX-License-Identifier: MIT */
#include "codec.h"
#include "fuzz.h"

static const uint8_t magic[] = {0x1f, 0x8b};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_codec(data, size, magic, sizeof(magic));
}
