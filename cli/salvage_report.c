/*
 * Salvage events, totals and reports (text and JSON): see salvage_report.h.
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "print_json.h"
#include "salvage_report.h"

#define MAX_EVENTS 10000u /* listed in the report; more are only counted */

void salvage_log_event(void *opaque, int kind, uint64_t offset, uint64_t length,
                       const char *message)
{
    struct salvage_log *s = opaque;
    struct salvage_event *e;

    if (s->nevents == MAX_EVENTS) {
        s->unlisted++;
        return;
    }
    if (s->nevents % 64 == 0) {
        void *p = realloc(s->events, (s->nevents + 64) * sizeof *s->events);

        if (!p) {
            s->alloc_failed = 1;
            return;
        }
        s->events = p;
    }
    e = &s->events[s->nevents];
    e->message = strdup(message);
    if (!e->message) {
        s->alloc_failed = 1;
        return;
    }
    e->kind = kind;
    e->offset = offset;
    e->length = length;
    s->nevents++;
}

void salvage_log_free(struct salvage_log *log)
{
    for (size_t i = 0; i < log->nevents; i++)
        free(log->events[i].message);
    free(log->events);
    memset(log, 0, sizeof *log);
}

/* Byte range [first, first + n) clusters of device id, within its size. */
static void cluster_bytes(const vma_reader *r, unsigned id, uint64_t first, uint64_t n,
                          uint64_t *off, uint64_t *len)
{
    uint64_t size = vma_reader_device_size(r, id);
    uint64_t end = (first + n) * VMA_CLUSTER_SIZE;

    *off = first * VMA_CLUSTER_SIZE;
    *len = (end < size ? end : size) - *off;
}

/* Recovered (want = 1) or lost (want = 0) bytes of a device. */
static uint64_t device_bytes(const vma_reader *r, unsigned id, int want)
{
    uint64_t c = 0, n, off, len, total = 0;
    int present;

    while ((n = vma_reader_cluster_run(r, id, c, &present)) != 0) {
        cluster_bytes(r, id, c, n, &off, &len);
        if (present == want)
            total += len;
        c += n;
    }
    return total;
}

void salvage_totals(const vma_reader *r, const struct salvage_log *log,
                    struct salvage_totals *t)
{
    memset(t, 0, sizeof *t);
    for (unsigned id = vma_reader_next_device(r, 0); id;
         id = vma_reader_next_device(r, id)) {
        t->recovered += device_bytes(r, id, 1);
        t->lost += device_bytes(r, id, 0);
    }
    for (size_t i = 0; i < log->nevents; i++) {
        const struct salvage_event *e = &log->events[i];

        if (e->kind == VMA_SALVAGE_HEADER_MD5)
            t->forced = 1;
        if (e->kind == VMA_SALVAGE_STREAM)
            t->stream_error = 1;
        if (e->kind == VMA_SALVAGE_BAD_EXTENT || e->kind == VMA_SALVAGE_BAD_RULES ||
            e->kind == VMA_SALVAGE_TRUNCATED) {
            t->extents_skipped++;
            t->bytes_skipped += e->length;
        }
    }
}

/* 0: nothing lost; 3: partial; 2: nothing recovered though something was
 * lost. A forced header or a broken stream is never "nothing lost": the
 * device table, or data before a zstd/gzip checksum, is unproven. */
int salvage_exit_status(const struct salvage_totals *t)
{
    if (t->lost > 0 && t->recovered == 0)
        return CLI_FAIL;
    return t->lost > 0 || t->forced || t->stream_error ? CLI_PARTIAL : CLI_OK;
}

static const char *verdict(int rc)
{
    return rc == CLI_OK ? "complete" : rc == CLI_PARTIAL ? "partial" : "nothing-recovered";
}

static void text_ranges(FILE *f, const vma_reader *r, unsigned id)
{
    uint64_t c = 0, n, off, len;
    int present;

    while ((n = vma_reader_cluster_run(r, id, c, &present)) != 0) {
        cluster_bytes(r, id, c, n, &off, &len);
        fprintf(f, "  %-9s offset %llu length %llu (clusters %llu-%llu)\n",
                present ? "recovered" : "lost", (unsigned long long)off,
                (unsigned long long)len, (unsigned long long)c, (unsigned long long)(c + n - 1));
        c += n;
    }
}

void salvage_report_text(FILE *f, const char *archive, const vma_reader *r,
                         const struct salvage_log *log, const struct salvage_totals *t, int rc)
{
    fprintf(f, "salvage report for %s\n", archive);
    fprintf(f, "header: %s\n", t->forced ? "MD5 mismatch, taken as it is (--force-header)" : "ok");
    for (unsigned id = vma_reader_next_device(r, 0); id;
         id = vma_reader_next_device(r, id)) {
        fprintf(f, "device %u %s%s: %llu bytes, recovered %llu, lost %llu\n", id,
                vma_reader_device_name(r, id),
                vma_reader_device_is_vmstate(r, id) ? " (vmstate)" : "",
                (unsigned long long)vma_reader_device_size(r, id),
                (unsigned long long)device_bytes(r, id, 1),
                (unsigned long long)device_bytes(r, id, 0));
        text_ranges(f, r, id);
    }
    for (size_t i = 0; i < log->nevents; i++)
        fprintf(f, "event %s at archive offset %llu, %llu bytes: %s\n",
                vma_salvage_event_name(log->events[i].kind),
                (unsigned long long)log->events[i].offset,
                (unsigned long long)log->events[i].length, log->events[i].message);
    if (log->unlisted)
        fprintf(f, "%zu more events not listed\n", log->unlisted);
    fprintf(f, "total: recovered %llu bytes, lost %llu bytes, %llu damaged or cut "
               "extents skipped (%llu archive bytes)\n",
            (unsigned long long)t->recovered, (unsigned long long)t->lost,
            (unsigned long long)t->extents_skipped, (unsigned long long)t->bytes_skipped);
    fprintf(f, "verdict: %s\n",
            rc == CLI_OK      ? "complete: nothing lost"
            : rc == CLI_PARTIAL ? "partial: some data lost"
                                : "nothing could be recovered");
}

static void json_ranges(struct json *j, const vma_reader *r, unsigned id, int want)
{
    uint64_t c = 0, n, off, len;
    int present;

    jw_begin_array(j);
    while ((n = vma_reader_cluster_run(r, id, c, &present)) != 0) {
        if (present == want) {
            cluster_bytes(r, id, c, n, &off, &len);
            jw_begin_object(j);
            jw_key(j, "offset");
            jw_uint(j, off);
            jw_key(j, "length");
            jw_uint(j, len);
            jw_end_object(j);
        }
        c += n;
    }
    jw_end_array(j);
}

void salvage_report_json(FILE *f, const char *archive, const vma_reader *r,
                         const struct salvage_log *log, const struct salvage_totals *t, int rc)
{
    struct json j;

    jw_init(&j, f);
    jw_begin_object(&j);
    jw_key(&j, "archive");
    jw_string(&j, archive);
    json_header(&j, r);
    jw_key(&j, "header_md5");
    jw_string(&j, t->forced ? "forced" : "ok");
    jw_key(&j, "devices");
    jw_begin_array(&j);
    for (unsigned id = vma_reader_next_device(r, 0); id;
         id = vma_reader_next_device(r, id)) {
        jw_begin_object(&j);
        json_device_fields(&j, r, id);
        jw_key(&j, "bytes_recovered");
        jw_uint(&j, device_bytes(r, id, 1));
        jw_key(&j, "bytes_lost");
        jw_uint(&j, device_bytes(r, id, 0));
        jw_key(&j, "recovered");
        json_ranges(&j, r, id, 1);
        jw_key(&j, "lost");
        json_ranges(&j, r, id, 0);
        jw_end_object(&j);
    }
    jw_end_array(&j);
    jw_key(&j, "events");
    jw_begin_array(&j);
    for (size_t i = 0; i < log->nevents; i++) {
        jw_begin_object(&j);
        jw_key(&j, "event");
        jw_string(&j, vma_salvage_event_name(log->events[i].kind));
        jw_key(&j, "offset");
        jw_uint(&j, log->events[i].offset);
        jw_key(&j, "length");
        jw_uint(&j, log->events[i].length);
        jw_key(&j, "message");
        jw_string(&j, log->events[i].message);
        jw_end_object(&j);
    }
    jw_end_array(&j);
    jw_key(&j, "events_unlisted");
    jw_uint(&j, log->unlisted);
    jw_key(&j, "bytes_recovered");
    jw_uint(&j, t->recovered);
    jw_key(&j, "bytes_lost");
    jw_uint(&j, t->lost);
    jw_key(&j, "extents_skipped");
    jw_uint(&j, t->extents_skipped);
    jw_key(&j, "archive_bytes_skipped");
    jw_uint(&j, t->bytes_skipped);
    jw_key(&j, "verdict");
    jw_string(&j, verdict(rc));
    jw_key(&j, "exit");
    jw_uint(&j, (uint64_t)rc);
    jw_end_object(&j);
    fputc('\n', f);
}

