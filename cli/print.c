/*
 * The list lines (see print.h).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <time.h>

#include "cli.h"
#include "print.h"

int print_list(const vma_reader *r)
{
    unsigned i, id;
    time_t t = (time_t)vma_reader_ctime(r);
    const char *text;

    for (i = 0; i < vma_reader_config_count(r); i++) {
        const char *name;
        size_t len;

        if (vma_reader_config(r, i, &name, NULL, &len) == VMA_OK)
            printf("CFG: size: %zu name: %s\n", len, name);
    }
    for (id = vma_reader_next_device(r, 0); id; id = vma_reader_next_device(r, id)) {
        unsigned long long size = vma_reader_device_size(r, id);

        if (vma_reader_device_is_vmstate(r, id))
            printf("VMSTATE: dev_id=%u memory: %llu\n", id, size);
        else
            printf("DEV: dev_id=%u size: %llu devname: %s\n", id, size,
                   vma_reader_device_name(r, id));
    }
    /* ctime() fails only for times whose year does not fit an int. */
    text = ctime(&t);
    if (text)
        printf("CTIME: %s", text);
    else
        printf("CTIME: %lld\n", (long long)t);
    return cli_flush_stdout();
}
