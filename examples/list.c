/*
 * List an archive: its uuid, time, configs and devices.
 *   list ARCHIVE
 * The smallest use of the reader: open, ask the header, free. Reading the
 * header is all it does, so it is quick even on a huge archive.
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <stdio.h>

#include <vma.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: list ARCHIVE\n");
        return 2;
    }
    vma_reader *r = vma_reader_new();
    if (r == NULL) {
        fprintf(stderr, "list: out of memory\n");
        return 1;
    }
    /* Plain or compressed (zstd, gzip, lzo): the reader finds out. */
    if (vma_reader_open_path(r, argv[1]) != VMA_OK) {
        fprintf(stderr, "list: %s\n", vma_reader_error(r));
        vma_reader_free(r);
        return 1;
    }
    unsigned char uuid[16];
    vma_reader_uuid(r, uuid);
    printf("uuid ");
    for (int i = 0; i < 16; i++)
        printf("%02x%s", uuid[i], i == 3 || i == 5 || i == 7 || i == 9 ? "-" : "");
    printf("\nctime %" PRId64 "\ncompression %s\n", vma_reader_ctime(r),
           vma_reader_compression(r));

    /* Configs: data is not NUL-terminated, print its length. */
    for (unsigned i = 0; i < vma_reader_config_count(r); i++) {
        const char *name;
        size_t len;
        vma_reader_config(r, i, &name, NULL, &len);
        printf("config %s %zu\n", name, len);
    }
    /* Devices: iterate over the dev_ids in use. */
    for (unsigned id = vma_reader_next_device(r, 0); id != 0; id = vma_reader_next_device(r, id))
        printf("device %u %s %" PRIu64 "%s\n", id, vma_reader_device_name(r, id),
               vma_reader_device_size(r, id),
               vma_reader_device_is_vmstate(r, id) ? " vmstate" : "");
    vma_reader_free(r);
    return 0;
}
