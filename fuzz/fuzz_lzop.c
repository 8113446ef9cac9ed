/* Fuzz target: lzop framing, raw compressed bytes through the input layer
 * and the reader (see codec.c). SPDX-License-Identifier: MIT */
#include "codec.h"
#include "fuzz.h"

static const uint8_t magic[] = {0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_codec(data, size, magic, sizeof(magic));
}
