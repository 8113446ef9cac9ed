/*
 * vma config <archive> [-c <name>]: one config blob to stdout, as stored.
 * SPDX-License-Identifier: MIT
 */
#include <unistd.h>

#include "cli.h"

int cmd_config(int argc, char **argv)
{
    const char *name = "qemu-server.conf";
    const void *data;
    size_t len;
    vma_reader *r;
    int c, rc;

    while ((c = cli_getopt(argc, argv, "hc:")) != -1) {
        if (c == 'c')
            name = optarg;
        else
            return cli_usage(c == 'h' ? stdout : stderr);
    }
    if (optind + 1 != argc)
        return cli_usage(stderr);

    r = cli_open_archive(argv[optind]);
    if (!r)
        return CLI_FAIL;
    if (vma_reader_find_config(r, name, &data, &len) != VMA_OK)
        rc = cli_fail("unable to find configuration data '%s'", name);
    else if (len && fwrite(data, len, 1, stdout) != 1)
        rc = cli_fail("write error on standard output");
    else
        rc = cli_flush_stdout();
    vma_reader_free(r);
    return rc;
}
