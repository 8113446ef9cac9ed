/*
 * Progress lines (see progress.h).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "cli.h"
#include "progress.h"
#include "progress_bar.h"

void read_progress_start(struct read_progress *p, vma_reader *r, int verbose)
{
    unsigned id;
    uint64_t all_clusters = 0; /* for the bar: every device, vmstate too */

    p->verbose = verbose;
    p->total_clusters = 0;
    /* The deployed tool's formula: whole clusters of the disks only. */
    for (id = vma_reader_next_device(r, 0); id; id = vma_reader_next_device(r, id))
        if (!vma_reader_device_is_vmstate(r, id))
            p->total_clusters += vma_reader_device_size(r, id) / VMA_CLUSTER_SIZE;
    for (id = vma_reader_next_device(r, 0); id; id = vma_reader_next_device(r, id))
        all_clusters += (vma_reader_device_size(r, id) + VMA_CLUSTER_SIZE - 1) / VMA_CLUSTER_SIZE;
    progress_bar_start(all_clusters * VMA_CLUSTER_SIZE);
    p->last_percent = 0; /* so "progress 0%" is never printed */
    p->start = time(NULL);
    vma_reader_set_progress(r, read_progress_cb, p);
}

int read_progress_cb(void *opaque, uint64_t clusters_read, uint64_t bytes_consumed)
{
    struct read_progress *p = opaque;
    unsigned long long percent;

    (void)bytes_consumed;
    if (cli_signal)
        return 1;
    progress_bar_update(clusters_read * VMA_CLUSTER_SIZE);
    /* No line when every disk is under 64 KiB (the deployed tool divides
     * by zero there). */
    if (!p->verbose || p->total_clusters == 0)
        return 0;
    percent = clusters_read * 100 / p->total_clusters;
    if (percent != p->last_percent) {
        progress_bar_clear(); /* stdout may be the same terminal */
        printf("progress %llu%% (read %llu bytes, duration %lld sec)\n", percent,
               (unsigned long long)(clusters_read * VMA_CLUSTER_SIZE),
               (long long)(time(NULL) - p->start));
        fflush(stdout);
        p->last_percent = percent;
    }
    return 0;
}

void read_progress_totals(const vma_reader *r)
{
    uint64_t clusters, zero_clusters, zero_blocks, n, sparse;

    progress_bar_end();
    vma_reader_counters(r, &clusters, &zero_clusters, &zero_blocks);
    if (clusters == 0) {
        printf("vma archive contains no image data\n");
        return;
    }
    /* The deployed tool's sums: zero blocks of partly stored clusters are
     * sparse bytes too, and the reduction is theirs over what is left. */
    n = clusters * VMA_CLUSTER_SIZE;
    sparse = zero_clusters + zero_blocks;
    printf("total bytes read %llu, sparse bytes %llu (%.3g%%)\n",
           (unsigned long long)n, (unsigned long long)sparse,
           100.0 * (double)sparse / (double)n);
    if (n - sparse != 0)
        printf("space reduction due to 4K zero blocks %.3g%%\n",
               100.0 * (double)zero_blocks / (double)(n - sparse));
}

void write_progress_start(struct write_progress *p, uint64_t total, int verbose)
{
    p->verbose = verbose;
    p->total = total;
    p->last_percent = -1;
    progress_bar_start(total);
    write_progress_cb(p, 0, 0); /* the deployed tool's first line is 0% */
}

int write_progress_cb(void *opaque, uint64_t bytes_written, uint64_t zero_bytes)
{
    struct write_progress *p = opaque;
    int percent;

    if (cli_signal)
        return 1;
    progress_bar_update(bytes_written);
    if (!p->verbose || p->total == 0)
        return 0;
    percent = (int)(bytes_written * 100 / p->total);
    if (percent != p->last_percent) {
        progress_bar_clear();
        fprintf(stderr, "progress %d%% %llu/%llu %llu\n", percent,
                (unsigned long long)bytes_written, (unsigned long long)p->total,
                (unsigned long long)zero_bytes);
        fflush(stderr);
        p->last_percent = percent;
    }
    return 0;
}
