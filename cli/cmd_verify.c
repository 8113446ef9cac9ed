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

#define DEV_SLOTS 256

/* Per-device statistics for the JSON document: bytes of the device stored
 * in the archive and bytes left out as zero blocks. */
struct dev_stats {
    uint64_t stored, zero;
};

struct verify {
    int verbose;
    const vma_reader *r;
    struct dev_stats dev[DEV_SLOTS];
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

/* vma_cluster_fn: count each block's bytes inside the device. */
static int count_cluster(void *opaque, unsigned dev_id, uint32_t cluster, uint16_t mask,
                         const unsigned char *data)
{
    struct verify *v = opaque;
    uint64_t size = vma_reader_device_size(v->r, dev_id);
    uint64_t off = (uint64_t)cluster * VMA_CLUSTER_SIZE;

    (void)data;
    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER && off < size; b++, off += VMA_BLOCK_SIZE) {
        uint64_t len = size - off < VMA_BLOCK_SIZE ? size - off : VMA_BLOCK_SIZE;

        if (mask & (1u << b))
            v->dev[dev_id].stored += len;
        else
            v->dev[dev_id].zero += len;
    }
    return 0;
}

static int print_json(const struct verify *v)
{
    uint64_t clusters, zero_clusters, zero_blocks;
    struct json j;
    unsigned id;

    json_init(&j, stdout);
    json_begin_object(&j);
    json_header(&j, v->r);
    json_key(&j, "devices");
    json_begin_array(&j);
    for (id = vma_reader_next_device(v->r, 0); id; id = vma_reader_next_device(v->r, id)) {
        const struct dev_stats *d = &v->dev[id];
        uint64_t all = d->stored + d->zero;

        json_begin_object(&j);
        json_device_fields(&j, v->r, id);
        json_key(&j, "bytes_stored");
        json_uint(&j, d->stored);
        json_key(&j, "zero_bytes");
        json_uint(&j, d->zero);
        json_key(&j, "sparse_ratio");
        json_double(&j, all ? (double)d->zero / (double)all : 0.0);
        json_end_object(&j);
    }
    json_end_array(&j);
    vma_reader_counters(v->r, &clusters, &zero_clusters, &zero_blocks);
    json_key(&j, "clusters_read");
    json_uint(&j, clusters);
    json_key(&j, "zero_cluster_bytes");
    json_uint(&j, zero_clusters);
    json_key(&j, "zero_block_bytes");
    json_uint(&j, zero_blocks);
    json_key(&j, "verdict");
    json_string(&j, "ok");
    json_end_object(&j);
    return cli_json_printed();
}

int cmd_verify(int argc, char **argv)
{
    static struct verify v; /* 4 KiB of counters: not on the stack */
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
        if (vma_reader_read(r, json ? count_cluster : NULL, &v) != VMA_OK) {
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
