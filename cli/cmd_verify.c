/*
 * vma verify <archive> [-v] [--output-format=json]: read everything and
 * check every rule.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>

#include "cli.h"
#include "json.h"
#include "print.h"
#include "print_json.h"
#include "progress.h"
#include "progress_bar.h"

struct verify {
    int verbose;
    const vma_reader *r;
};

static int verify_option(int c, void *ctx)
{
    struct verify *v = ctx;

    if (c == 'v')
        v->verbose = 1;
    else if (c == 'p')
        progress_bar_mode(PROGRESS_BAR_ON);
    else if (c == 'P')
        progress_bar_mode(PROGRESS_BAR_OFF);
    else if (c == 'J')
        return cli_output_format(optarg);
    else
        return -1;
    return 0;
}

static int print_json(const struct verify *v)
{
    struct json j;
    unsigned id;

    jw_init(&j, stdout);
    jw_begin_object(&j);
    json_header(&j, v->r);
    jw_key(&j, "devices");
    jw_begin_array(&j);
    for (id = vma_reader_next_device(v->r, 0); id; id = vma_reader_next_device(v->r, id)) {
        jw_begin_object(&j);
        json_device_fields(&j, v->r, id);
        json_device_stats(&j, v->r, id);
        jw_end_object(&j);
    }
    jw_end_array(&j);
    json_read_totals(&j, v->r);
    jw_end_object(&j);
    return cli_json_printed();
}

int cmd_verify(int argc, char **argv)
{
    struct verify v = {0};
    struct read_progress progress;
    int rc, json;
    vma_reader *r;

    if (cli_has_salvage(argc, argv))
        return cmd_salvage(argc, argv, 0);
    r = cli_archive_args(argc, argv, "hvp", verify_option, &v, &rc);
    if (!r)
        return rc;
    v.r = r;
    json = cli_json();
    /* In JSON mode stdout carries the document only: no -v lines. */
    rc = v.verbose && !json ? print_list(r) : CLI_OK;
    if (rc == CLI_OK) {
        read_progress_start(&progress, r, v.verbose && !json);
        if (vma_reader_read(r, NULL, NULL) != VMA_OK) {
            rc = cli_fail("verify failed - %s", vma_reader_error(r));
        } else if (json) {
            rc = print_json(&v);
        } else if (v.verbose) {
            read_progress_totals(r);
            rc = cli_flush_stdout();
        }
    }
    cli_close_archive(r);
    return rc;
}
