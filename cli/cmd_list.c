/*
 * vma list <archive>: the configs, devices and creation time.
 * SPDX-License-Identifier: MIT
 */
#include "cli.h"
#include "print.h"

int cmd_list(int argc, char **argv)
{
    int rc;
    vma_reader *r = cli_archive_args(argc, argv, "h", NULL, NULL, &rc);

    if (!r)
        return rc;
    rc = print_list(r);
    cli_close_archive(r);
    return rc;
}
