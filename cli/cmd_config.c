/*
 * vma config <archive> [-c <name>]: one config blob to stdout, as stored.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>

#include "cli.h"

static int config_option(int c, void *name)
{
    if (c != 'c')
        return -1;
    *(const char **)name = optarg;
    return 0;
}

int cmd_config(int argc, char **argv)
{
    const char *name = "qemu-server.conf";
    const void *data;
    size_t len;
    int rc;
    vma_reader *r = cli_archive_args(argc, argv, "hc:", config_option, &name, &rc);

    if (!r)
        return rc;
    if (vma_reader_find_config(r, name, &data, &len) != VMA_OK)
        rc = cli_fail("unable to find configuration data '%s'", name);
    else if (len && fwrite(data, len, 1, stdout) != 1)
        rc = cli_fail("write error on standard output");
    else
        rc = cli_flush_stdout();
    cli_close_archive(r);
    return rc;
}
