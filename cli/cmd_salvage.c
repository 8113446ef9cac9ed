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
#include "progress.h"
#include "progress_bar.h"
#include "salvage_report.h"

struct salvage {
    vma_reader *r;
    const char *archive;
    const char *dir; /* extract: the new directory; verify: NULL */
    int force_header;
    int keep; /* the report is written: keep the output whatever the verdict */
    int made_dir;
    struct salvage_log log;
    char **files; /* made in dir: removed after a fatal failure */
    size_t nfiles, files_cap;
    struct read_progress progress;
};

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

/* The reports: files in dir (extract), or stdout (verify). */
static int report(struct salvage *s, int rc, const struct salvage_totals *t)
{
    FILE *f;

    if (!s->dir) {
        if (cli_json()) {
            salvage_report_json(stdout, s->archive, s->r, &s->log, t, rc);
            return cli_json_printed();
        }
        salvage_report_text(stdout, s->archive, s->r, &s->log, t, rc);
        return cli_flush_stdout();
    }
    f = new_file(s, "salvage-report.txt");
    if (!f)
        return CLI_FAIL;
    salvage_report_text(f, s->archive, s->r, &s->log, t, rc);
    if (fclose(f) != 0)
        return cli_fail("unable to write salvage-report.txt - %s", strerror(errno));
    f = new_file(s, "salvage-report.json");
    if (!f)
        return CLI_FAIL;
    salvage_report_json(f, s->archive, s->r, &s->log, t, rc);
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
    int rc = vma_reader_set_salvage(s->r, s->force_header ? VMA_SALVAGE_FORCE_HEADER : 0,
                                    salvage_log_event, &s->log);
    if (rc == VMA_OK)
        rc = vma_reader_open_path(s->r, s->archive);
    if (rc != VMA_OK)
        return cli_fail("%s%s", vma_reader_error(s->r),
                        rc == VMA_ERR_HEADER_MD5 ? " (--force-header)" : "");
    return CLI_OK;
}

static int salvage_run(struct salvage *s)
{
    struct salvage_totals t;
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
    if (s->log.alloc_failed)
        return cli_fail("out of memory for the salvage report");
    salvage_totals(s->r, &s->log, &t);
    rc = salvage_exit_status(&t);
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
        else if (c == 'f' && extract) {
            cli_fail("--format cannot be used with --salvage: it writes raw files, with "
                     "holes where data was lost (convert them with qemu-img convert)");
            return CLI_USAGE;
        } else
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
    salvage_log_free(&s.log);
    free(s.files);
    return rc;
}
