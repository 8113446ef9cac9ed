/*
 * vma verify <archive> [-v]: read everything and check every rule.
 * SPDX-License-Identifier: MIT
 */
#include "cli.h"
#include "print.h"
#include "progress.h"

static int verify_option(int c, void *verbose)
{
    if (c != 'v')
        return -1;
    *(int *)verbose = 1;
    return 0;
}

int cmd_verify(int argc, char **argv)
{
    struct read_progress progress;
    int rc, verbose = 0;
    vma_reader *r = cli_archive_args(argc, argv, "hv", verify_option, &verbose, &rc);

    if (!r)
        return rc;
    rc = verbose ? print_list(r) : CLI_OK;
    if (rc == CLI_OK) {
        read_progress_start(&progress, r, verbose);
        if (vma_reader_read(r, NULL, NULL) != VMA_OK) {
            rc = cli_fail("verify failed - %s", vma_reader_error(r));
        } else if (verbose) {
            read_progress_totals(r);
            rc = cli_flush_stdout();
        }
    }
    cli_close_archive(r);
    return rc;
}
