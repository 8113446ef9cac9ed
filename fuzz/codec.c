/*
 * The body of the codec targets (zstd, gzip, lzop): raw compressed bytes
 * through the input layer, then through the reader, both from memory.
 * The target's magic is put in front when missing, so that every input
 * reaches its decoder rather than the plain path. SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "input.h"
#include "reader_internal.h"

#define DECODED_MAX (1u << 20) /* a bomb is decoded this far, no further */
#define READ_SIZE 4093u         /* odd, so reads end inside blocks and frames */

static int count_cluster(void *opaque, unsigned dev_id, uint32_t cluster_num, uint16_t mask,
                         const unsigned char *data)
{
    (void)dev_id;
    (void)cluster_num;
    if (mask != 0) /* a stored block first: touch it */
        *(unsigned *)opaque += data[0];
    return 0;
}

static void input_alone(const uint8_t *data, size_t size)
{
    static unsigned char buf[READ_SIZE];
    char err[VMAI_ERRLEN];
    struct vmai_input *in;
    if (vmai_input_open_memory(&in, data, size, NULL, false, err, sizeof(err)) == VMA_OK) {
        size_t total = 0;
        ssize_t n;
        while (total < DECODED_MAX && (n = vmai_input_read(in, buf, sizeof(buf), err,
                                                           sizeof(err))) > 0) {
            if ((size_t)n > sizeof(buf))
                abort();
            total += (size_t)n;
        }
        /* After the end or an error the input stays there. */
        if (total < DECODED_MAX && vmai_input_read(in, buf, sizeof(buf), err, sizeof(err)) > 0)
            abort();
    }
    vmai_input_free(in);
}

int fuzz_codec(const uint8_t *data, size_t size, const uint8_t *magic, size_t magic_len)
{
    uint8_t *copy = NULL;
    if (size < magic_len || memcmp(data, magic, magic_len) != 0) {
        if ((copy = malloc(size + magic_len)) == NULL)
            return 0;
        memcpy(copy, magic, magic_len);
        if (size > 0)
            memcpy(copy + magic_len, data, size);
        data = copy;
        size += magic_len;
    }
    input_alone(data, size);
    vma_reader *r = vma_reader_new();
    unsigned sum = 0;
    if (r != NULL && vma_reader_open_memory(r, data, size) == VMA_OK)
        (void)vma_reader_read(r, count_cluster, &sum);
    vma_reader_free(r);
    free(copy);
    return 0;
}
