/*
 * What a salvage read met and what it got out, for `extract --salvage`,
 * `verify --salvage` and `mount --salvage`: the events as they arrive,
 * totals, the exit status, and the text and JSON reports.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_SALVAGE_REPORT_H
#define VMA_CLI_SALVAGE_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "vma.h"

struct salvage_event {
    int kind;
    uint64_t offset, length;
    char *message;
};

/* The events of one salvage read (zero it before use). */
struct salvage_log {
    struct salvage_event *events;
    size_t nevents, unlisted; /* past a limit, events are only counted */
    int alloc_failed;
};

/* A vma_salvage_fn whose opaque is a struct salvage_log. */
void salvage_log_event(void *opaque, int kind, uint64_t offset, uint64_t length,
                       const char *message);
void salvage_log_free(struct salvage_log *log);

struct salvage_totals {
    uint64_t recovered, lost, extents_skipped, bytes_skipped;
    int forced;       /* the header's MD5 was wrong */
    int stream_error; /* the compressed stream broke */
};

/* Totals of a finished salvage read by r. */
void salvage_totals(const vma_reader *r, const struct salvage_log *log,
                    struct salvage_totals *t);

/* CLI_OK: nothing lost; CLI_PARTIAL: some data lost; CLI_FAIL: nothing
 * recovered though something was lost. */
int salvage_exit_status(const struct salvage_totals *t);

/* The reports of a salvage read of archive by r, whose status is rc. */
void salvage_report_text(FILE *f, const char *archive, const vma_reader *r,
                         const struct salvage_log *log, const struct salvage_totals *t, int rc);
void salvage_report_json(FILE *f, const char *archive, const vma_reader *r,
                         const struct salvage_log *log, const struct salvage_totals *t, int rc);

#endif
