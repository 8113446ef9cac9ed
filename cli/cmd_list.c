/*
 * vma list <archive>: the configs, devices and creation time.
 * SPDX-License-Identifier: MIT
 */
#include <unistd.h>

#include "cli.h"
#include "print.h"

int cmd_list(int argc, char **argv)
{
    vma_reader *r;
    int c, rc;

    c = cli_getopt(argc, argv, "h");
    if (c != -1)
        return cli_usage(c == 'h' ? stdout : stderr);
    if (optind + 1 != argc)
        return cli_usage(stderr);

    r = cli_open_archive(argv[optind]);
    if (!r)
        return CLI_FAIL;
    rc = print_list(r);
    vma_reader_free(r);
    return rc;
}
