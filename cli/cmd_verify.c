/*
 * vma verify <archive> [-v]: read everything and check every rule.
 * SPDX-License-Identifier: MIT
 */
#include <unistd.h>

#include "cli.h"
#include "print.h"
#include "progress.h"

int cmd_verify(int argc, char **argv)
{
    struct read_progress progress;
    int c, rc, verbose = 0;
    vma_reader *r;

    while ((c = cli_getopt(argc, argv, "hv")) != -1) {
        if (c == 'v')
            verbose = 1;
        else
            return cli_usage(c == 'h' ? stdout : stderr);
    }
    if (optind + 1 != argc)
        return cli_usage(stderr);

    r = cli_open_archive(argv[optind]);
    if (!r)
        return CLI_FAIL;
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
    vma_reader_free(r);
    return rc;
}
