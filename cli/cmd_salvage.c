/*
 * vma extract --salvage [--force-header] <archive> <new-target-dir> and
 * vma verify --salvage [--force-header] [--output-format=json] <archive>:
 * get out what a damaged archive still holds (the library's salvage mode)
 * and say exactly what was lost. Output never looks like a complete
 * restore: salvaged-disk-<name>.raw, salvaged-vmstate.bin, and a report.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "print_json.h"
#include "progress.h"
#include "progress_bar.h"

#define MAX_EVENTS 10000u /* listed in the report; more are only counted */

struct event {
    int kind;
    uint64_t offset, length;
    char *message;
};

struct salvage {
    vma_reader *r;
    const char *archive;
    const char *dir; /* extract: the new directory; verify: NULL */
    int force_header;
    int keep; /* the report is written: keep the output whatever the verdict */
    int made_dir;
    struct event *events;
    size_t nevents, unlisted;
    int alloc_failed;
    char **files; /* made in dir: removed after a fatal failure */
    size_t nfiles, files_cap;
    struct read_progress progress;
};

/* vma_salvage_fn: keep the event for the report. */
static void on_event(void *opaque, int kind, uint64_t offset, uint64_t length,
                     const char *message)
{
    struct salvage *s = opaque;
    struct event *e;

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

static int add_file(struct salvage *s, char *path)
{
    if (!path)
        return cli_fail("out of memory");
    if (s->nfiles == s->files_cap) {
        size_t cap = s->files_cap ? 2 * s->files_cap : 16;
        void *p = realloc(s->files, cap * sizeof *s->files);

        if (!p) {
            free(path);
            return cli_fail("out of memory");
        }
        s->files = p;
        s->files_cap = cap;
    }
    s->files[s->nfiles++] = path;
    return CLI_OK;
}

/* A new file in dir named name; its path is remembered for cleanup. */
static FILE *new_file(struct salvage *s, const char *name)
{
    char *path = cli_path(s->dir, "", name, "");
    int fd;
    FILE *f;

    if (add_file(s, path) != CLI_OK)
        return NULL;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        cli_fail("unable to write file %s - %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    return f;
}

static int write_configs(struct salvage *s)
{
    for (unsigned i = 0; i < vma_reader_config_count(s->r); i++) {
        const char *name;
        const void *data;
        size_t len;
        FILE *f;

        if (vma_reader_config(s->r, i, &name, &data, &len) != VMA_OK)
            continue;
        if (strlen(name) > CLI_FILE_NAME_MAX)
            return cli_fail("config name '%.32s...' is longer than a file name may be",
                            name);
        f = new_file(s, name);
        if (!f)
            return CLI_FAIL;
        int bad = len && fwrite(data, len, 1, f) != 1;

        if (fclose(f) != 0 || bad) /* close it whatever happened */
            return cli_fail("unable to write config %s - %s", name, strerror(errno));
    }
    return CLI_OK;
}

static int set_targets(struct salvage *s)
{
    for (unsigned id = vma_reader_next_device(s->r, 0); id;
         id = vma_reader_next_device(s->r, id)) {
        const char *name = vma_reader_device_name(s->r, id);
        char *path;

        if (vma_reader_device_is_vmstate(s->r, id))
            path = cli_path(s->dir, "", "salvaged-vmstate.bin", "");
        else if (strlen(name) + sizeof("salvaged-disk-.raw") - 1 > CLI_FILE_NAME_MAX)
            return cli_fail("device name '%.32s...' is too long for salvaged-disk-<name>.raw",
                            name);
        else
            path = cli_path(s->dir, "salvaged-disk-", name, ".raw");
        if (add_file(s, path) != CLI_OK)
            return CLI_FAIL;
        if (vma_reader_target_create(s->r, id, path) != VMA_OK)
            return cli_fail("%s", vma_reader_error(s->r));
    }
    return CLI_OK;
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

struct totals {
    uint64_t recovered, lost, extents_skipped, bytes_skipped;
    int forced;       /* the header's MD5 was wrong */
    int stream_error; /* the compressed stream broke */
};

static void totals(const struct salvage *s, struct totals *t)
{
    memset(t, 0, sizeof *t);
    for (unsigned id = vma_reader_next_device(s->r, 0); id;
         id = vma_reader_next_device(s->r, id)) {
        t->recovered += device_bytes(s->r, id, 1);
        t->lost += device_bytes(s->r, id, 0);
    }
    for (size_t i = 0; i < s->nevents; i++) {
        const struct event *e = &s->events[i];

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
static int exit_status(const struct totals *t)
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

static void write_text(FILE *f, const struct salvage *s, const struct totals *t, int rc)
{
    fprintf(f, "salvage report for %s\n", s->archive);
    fprintf(f, "header: %s\n", t->forced ? "MD5 mismatch, taken as it is (--force-header)" : "ok");
    for (unsigned id = vma_reader_next_device(s->r, 0); id;
         id = vma_reader_next_device(s->r, id)) {
        fprintf(f, "device %u %s%s: %llu bytes, recovered %llu, lost %llu\n", id,
                vma_reader_device_name(s->r, id),
                vma_reader_device_is_vmstate(s->r, id) ? " (vmstate)" : "",
                (unsigned long long)vma_reader_device_size(s->r, id),
                (unsigned long long)device_bytes(s->r, id, 1),
                (unsigned long long)device_bytes(s->r, id, 0));
        text_ranges(f, s->r, id);
    }
    for (size_t i = 0; i < s->nevents; i++)
        fprintf(f, "event %s at archive offset %llu, %llu bytes: %s\n",
                vma_salvage_event_name(s->events[i].kind),
                (unsigned long long)s->events[i].offset,
                (unsigned long long)s->events[i].length, s->events[i].message);
    if (s->unlisted)
        fprintf(f, "%zu more events not listed\n", s->unlisted);
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

    json_begin_array(j);
    while ((n = vma_reader_cluster_run(r, id, c, &present)) != 0) {
        if (present == want) {
            cluster_bytes(r, id, c, n, &off, &len);
            json_begin_object(j);
            json_key(j, "offset");
            json_uint(j, off);
            json_key(j, "length");
            json_uint(j, len);
            json_end_object(j);
        }
        c += n;
    }
    json_end_array(j);
}

static void write_json(FILE *f, const struct salvage *s, const struct totals *t, int rc)
{
    struct json j;

    json_init(&j, f);
    json_begin_object(&j);
    json_key(&j, "archive");
    json_string(&j, s->archive);
    json_header(&j, s->r);
    json_key(&j, "header_md5");
    json_string(&j, t->forced ? "forced" : "ok");
    json_key(&j, "devices");
    json_begin_array(&j);
    for (unsigned id = vma_reader_next_device(s->r, 0); id;
         id = vma_reader_next_device(s->r, id)) {
        json_begin_object(&j);
        json_device_fields(&j, s->r, id);
        json_key(&j, "bytes_recovered");
        json_uint(&j, device_bytes(s->r, id, 1));
        json_key(&j, "bytes_lost");
        json_uint(&j, device_bytes(s->r, id, 0));
        json_key(&j, "recovered");
        json_ranges(&j, s->r, id, 1);
        json_key(&j, "lost");
        json_ranges(&j, s->r, id, 0);
        json_end_object(&j);
    }
    json_end_array(&j);
    json_key(&j, "events");
    json_begin_array(&j);
    for (size_t i = 0; i < s->nevents; i++) {
        json_begin_object(&j);
        json_key(&j, "event");
        json_string(&j, vma_salvage_event_name(s->events[i].kind));
        json_key(&j, "offset");
        json_uint(&j, s->events[i].offset);
        json_key(&j, "length");
        json_uint(&j, s->events[i].length);
        json_key(&j, "message");
        json_string(&j, s->events[i].message);
        json_end_object(&j);
    }
    json_end_array(&j);
    json_key(&j, "events_unlisted");
    json_uint(&j, s->unlisted);
    json_key(&j, "bytes_recovered");
    json_uint(&j, t->recovered);
    json_key(&j, "bytes_lost");
    json_uint(&j, t->lost);
    json_key(&j, "extents_skipped");
    json_uint(&j, t->extents_skipped);
    json_key(&j, "archive_bytes_skipped");
    json_uint(&j, t->bytes_skipped);
    json_key(&j, "verdict");
    json_string(&j, verdict(rc));
    json_key(&j, "exit");
    json_uint(&j, (uint64_t)rc);
    json_end_object(&j);
    fputc('\n', f);
}

/* The reports: files in dir (extract), or stdout (verify). */
static int report(struct salvage *s, int rc, const struct totals *t)
{
    FILE *f;

    if (!s->dir) {
        if (cli_json()) {
            write_json(stdout, s, t, rc);
            return cli_json_printed();
        }
        write_text(stdout, s, t, rc);
        return cli_flush_stdout();
    }
    f = new_file(s, "salvage-report.txt");
    if (!f)
        return CLI_FAIL;
    write_text(f, s, t, rc);
    if (fclose(f) != 0)
        return cli_fail("unable to write salvage-report.txt - %s", strerror(errno));
    f = new_file(s, "salvage-report.json");
    if (!f)
        return CLI_FAIL;
    write_json(f, s, t, rc);
    if (fclose(f) != 0)
        return cli_fail("unable to write salvage-report.json - %s", strerror(errno));
    return CLI_OK;
}

static int open_archive(struct salvage *s)
{
    s->r = vma_reader_new();
    if (!s->r)
        return cli_fail("out of memory");
    cli_cancel_on_signal(s->r, NULL);
    if (strcmp(s->archive, "-") == 0 && cli_std_was_closed(STDIN_FILENO))
        return cli_fail("standard input is closed");
    if (vma_reader_set_salvage(s->r, s->force_header ? VMA_SALVAGE_FORCE_HEADER : 0, on_event,
                               s) != VMA_OK ||
        vma_reader_open_path(s->r, s->archive) != VMA_OK) {
        const char *msg = vma_reader_error(s->r);

        if (strstr(msg, "force it to salvage"))
            return cli_fail("%s (--force-header)", msg);
        return cli_fail("%s", msg);
    }
    return CLI_OK;
}

static int salvage_run(struct salvage *s)
{
    struct totals t;
    int rc, st;

    if (open_archive(s) != CLI_OK)
        return CLI_FAIL;
    if (s->dir) {
        if (mkdir(s->dir, 0777) < 0) {
            return cli_fail("unable to create target directory %s - %s", s->dir,
                            strerror(errno));
        }
        s->made_dir = 1;
        if (write_configs(s) != CLI_OK || set_targets(s) != CLI_OK)
            return CLI_FAIL;
    }
    read_progress_start(&s->progress, s->r, 0);
    st = s->dir ? vma_reader_restore(s->r) : vma_reader_read(s->r, NULL, NULL);
    if (st != VMA_OK)
        return cli_fail("salvage failed - %s", vma_reader_error(s->r));
    if (s->alloc_failed)
        return cli_fail("out of memory for the salvage report");
    totals(s, &t);
    rc = exit_status(&t);
    if (report(s, rc, &t) != CLI_OK)
        return CLI_FAIL;
    s->keep = 1;
    if (rc == CLI_FAIL)
        return cli_fail("nothing could be recovered from %s%s%s", s->archive,
                        s->dir ? "; see " : "", s->dir ? "salvage-report.txt" : "");
    if (rc == CLI_PARTIAL)
        fprintf(stderr, "vma: partial: some data lost (%llu of %llu bytes recovered)\n",
                (unsigned long long)t.recovered, (unsigned long long)(t.recovered + t.lost));
    return rc;
}

int cli_has_salvage(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--salvage") == 0)
            return 1;
    return 0;
}

int cmd_salvage(int argc, char **argv, int extract)
{
    struct salvage s;
    int c, rc;

    memset(&s, 0, sizeof s);
    optind = 1;
    while ((c = cli_getopt(argc, argv, "hpP")) != -1) {
        if (c == 'S')
            continue;
        else if (c == 'F')
            s.force_header = 1;
        else if (c == 'p')
            progress_bar_mode(PROGRESS_BAR_ON);
        else if (c == 'P')
            progress_bar_mode(PROGRESS_BAR_OFF);
        else if (c == 'J' && !extract && cli_output_format(optarg) == 0)
            continue;
        else
            return cli_usage(c == 'h' ? stdout : stderr);
    }
    if (optind + 1 + extract != argc)
        return cli_usage(stderr);
    s.archive = argv[optind];
    s.dir = extract ? argv[optind + 1] : NULL;
    if (cli_catch_signals() < 0)
        return cli_fail("unable to set signal handlers - %s", strerror(errno));

    rc = salvage_run(&s);
    /* A failed restore removed its disks when the reader is freed. */
    cli_close_archive(s.r);
    for (size_t i = 0; i < s.nfiles; i++) {
        if (!s.keep)
            unlink(s.files[i]);
        free(s.files[i]);
    }
    if (!s.keep && s.made_dir)
        rmdir(s.dir);
    for (size_t i = 0; i < s.nevents; i++)
        free(s.events[i].message);
    free(s.events);
    free(s.files);
    return rc;
}
