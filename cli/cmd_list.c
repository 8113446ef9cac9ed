/*
 * vma list <archive> [--output-format=json]: the configs, devices and
 * creation time.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>

#include "cli.h"
#include "json.h"
#include "print.h"
#include "print_json.h"

static int list_option(int c, void *ctx)
{
    (void)ctx;
    return c == 'J' ? cli_output_format(optarg) : -1;
}

int cmd_list(int argc, char **argv)
{
    int rc;
    vma_reader *r = cli_archive_args(argc, argv, "h", list_option, NULL, &rc);

    if (!r)
        return rc;
    rc = cli_json() ? print_list_json(r) : print_list(r);
    cli_close_archive(r);
    return rc;
}
