/*
 * Progress and total lines: verify/extract -v on stdout, create -v on
 * stderr, in the deployed tool's wording. The callbacks also stop the
 * library's work once SIGINT or SIGTERM was caught.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_PROGRESS_H
#define VMA_CLI_PROGRESS_H

#include <stdint.h>
#include <time.h>

#include "vma.h"

struct read_progress {
    int verbose;
    uint64_t total_clusters; /* sum of floor(size / 64 KiB) over the disks */
    unsigned long long last_percent;
    time_t start;
};

/* Prepare for a read of r and register read_progress_cb on it. */
void read_progress_start(struct read_progress *p, vma_reader *r, int verbose);

/* vma_progress_fn: prints "progress ..." when the percent changes. */
int read_progress_cb(void *opaque, uint64_t clusters_read, uint64_t bytes_consumed);

/* The "total bytes read" lines after a successful read. */
void read_progress_totals(const vma_reader *r);

struct write_progress {
    int verbose;
    uint64_t total; /* sum of the recorded device sizes */
    int last_percent;
};

/* Prepare for a create of `total` bytes; prints the 0% line with -v. */
void write_progress_start(struct write_progress *p, uint64_t total, int verbose);

/* vma_write_progress_fn: prints "progress ..." when the percent changes. */
int write_progress_cb(void *opaque, uint64_t bytes_written, uint64_t zero_bytes);

#endif
