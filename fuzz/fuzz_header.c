/* Fuzz target: the header parser on a memory buffer. SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    uint32_t hsize;
    struct vmai_header *h = malloc(sizeof(*h));
    if (h == NULL)
        return 0;
    if (vmai_header_prefix(data, size, &hsize, err, sizeof(err)) == VMA_OK) {
        /* Parse the bytes as given; a short buffer must be refused cleanly. */
        if (vmai_header_parse(data, size, h, err, sizeof(err)) == VMA_OK) {
            for (unsigned i = 0; i < h->config_count; i++)
                if (!vma_name_is_valid(h->configs[i].name))
                    abort(); /* our invariant: parsed names are safe */
            for (unsigned i = 0; i < VMA_DEV_SLOTS; i++)
                if (h->devices[i].name != NULL && !vma_name_is_valid(h->devices[i].name))
                    abort();
        }
    }
    free(h);
    return 0;
}
