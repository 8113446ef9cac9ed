/*
 * vma backup --qmp <socket> [--qga <socket>] [-d <dev,...>] [-c [<name>=]<file>]...
 *            [--compress=...] [--fleecing-dir <dir>] [--qmp-timeout=<s>] [-v]
 *            [-p|--no-progress] [--output-format=json] <archive>|-
 * vma backup --cleanup --qmp <socket> [--qga <socket>]
 * A live backup of a running QEMU VM (the library's vma_backup), written
 * under no name until complete: an O_TMPFILE in the archive's directory
 * linked to its name at the end (a hidden temporary name where the file
 * system has no O_TMPFILE), so that no failure, nor a kill, leaves a file
 * that looks like an archive.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "pve_config.h"
#include "progress.h"
#include "progress_bar.h"

struct options {
    const char *qmp, *qga, *fleecing_dir, *compress, *devices, *archive;
    char **configs;
    size_t nconfigs;
    unsigned timeout;
    int verbose, cleanup, help;
    void *pve_conf;   /* the -c stored as qemu-server.conf, read, or NULL */
    size_t pve_len;
};

/* The archive file being written: fd, and where it lies until linked. */
struct output {
    int fd;
    char *tmp_path; /* a named temporary file, or NULL for O_TMPFILE */
};

static void on_log(void *opaque, int warning, const char *line)
{
    const struct options *o = opaque;
    if (!warning && !o->verbose)
        return;
    progress_bar_clear();
    fprintf(stderr, "%s%s\n", warning ? "vma: warning: " : "", line);
    fflush(stderr);
}

/* Whether name is one of the comma-separated list. */
static int name_in_list(const char *name, const char *list)
{
    size_t len = strlen(name);
    for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (strncmp(p, name, len) == 0 && (p[len] == ',' || p[len] == '\0'))
            return 1;
    return 0;
}

static int parse(int argc, char **argv, struct options *o)
{
    int opt;
    char *end;

    o->configs = calloc((size_t)argc, sizeof(*o->configs));
    if (!o->configs)
        return cli_fail("out of memory");
    while ((opt = cli_getopt(argc, argv, "hvpc:d:")) != -1) {
        switch (opt) {
        case 'Q': o->qmp = optarg; break;
        case 'G': o->qga = optarg; break;
        case 'D': o->fleecing_dir = optarg; break;
        case 'Z': o->compress = optarg; break;
        case 'C': o->cleanup = 1; break;
        case 'v': o->verbose = 1; break;
        case 'd': o->devices = optarg; break;
        case 'c': o->configs[o->nconfigs++] = optarg; break;
        case 'p': progress_bar_mode(PROGRESS_BAR_ON); break;
        case 'P': progress_bar_mode(PROGRESS_BAR_OFF); break;
        case 'J':
            if (cli_output_format(optarg) != 0)
                return cli_usage(stderr);
            break;
        case 'O':
            errno = 0;
            unsigned long t = strtoul(optarg, &end, 10);
            if (errno || *end || t == 0 || t > 86400)
                return cli_fail("--qmp-timeout: '%s' is not a number of seconds from 1 to "
                                "86400", optarg);
            o->timeout = (unsigned)t;
            break;
        case 'h':
            o->help = 1;
            return cli_usage(stdout);
        default:
            return cli_usage(stderr);
        }
    }
    if (!o->qmp)
        return cli_usage(stderr);
    if (o->cleanup)
        return optind == argc ? CLI_OK : cli_usage(stderr);
    if (optind + 1 != argc)
        return cli_usage(stderr);
    o->archive = argv[optind];
    if (strcmp(o->archive, "-") == 0 && cli_json()) {
        cli_fail("--output-format=json needs an archive file: standard output carries "
                 "the archive");
        return CLI_USAGE;
    }
    return CLI_OK;
}

static int backup_fail(vma_backup *b)
{
    return cli_fail("%s", vma_backup_error(b));
}

static int writer_fail(vma_writer *w)
{
    return cli_fail("%s", vma_writer_error(w));
}

/* -c [<name>=]<file>: the stored name is the part before '=' unless it
 * holds a '/'; else the file's base name (the library keeps only that).
 * Returns the name (name_len bytes of arg) and the file in *path. */
static const char *config_name(const char *arg, const char **path, size_t *name_len)
{
    const char *eq = strchr(arg, '=');
    if (eq && memchr(arg, '/', (size_t)(eq - arg)) == NULL) {
        *path = eq + 1;
        *name_len = (size_t)(eq - arg);
        return arg;
    }
    const char *slash = strrchr(arg, '/');
    *path = arg;
    *name_len = strlen(slash ? slash + 1 : arg);
    return slash ? slash + 1 : arg;
}

/* Read the -c stored as qemu-server.conf (the last one), if any. */
static int read_pve_config(struct options *o)
{
    for (size_t i = 0; i < o->nconfigs; i++) {
        const char *path;
        size_t len;
        const char *name = config_name(o->configs[i], &path, &len);
        if (len != strlen(PVE_CONFIG_NAME) || memcmp(name, PVE_CONFIG_NAME, len) != 0)
            continue;
        free(o->pve_conf);
        o->pve_conf = NULL;
        if (cli_read_file(path, &o->pve_conf, &o->pve_len) != CLI_OK)
            return CLI_FAIL;
    }
    return CLI_OK;
}

/* Whether the backup takes the disk: named by -d; without -d, every disk
 * but those qemu-server.conf marks backup=0 (as vzdump leaves them out). */
static int takes(const struct options *o, const char *name)
{
    if (o->devices)
        return name_in_list(name, o->devices);
    return !o->pve_conf || !pve_config_backup_off(o->pve_conf, o->pve_len, name);
}

/* The names of the disks the backup takes. */
static const char **chosen_names(vma_backup *b, const struct options *o, size_t *n)
{
    unsigned count = vma_backup_device_count(b);
    const char **names = calloc(count + 1, sizeof(*names));
    *n = 0;
    for (unsigned i = 0; names && i < count; i++) {
        const char *name = vma_backup_device_name(b, i);
        if (name && takes(o, name))
            names[(*n)++] = name;
    }
    return names;
}

/* -d dev1,dev2: select each; names extract could not restore are refused
 * as create refuses them. */
static int select_devices(vma_backup *b, const struct options *o)
{
    size_t n = 0;
    const char **names = chosen_names(b, o, &n);
    if (!names)
        return cli_fail("out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (len > CLI_DEVNAME_MAX && len <= VMA_MAX_NAME_LEN) {
            int rc = cli_fail("disk name '%.32s...' has %zu bytes; at most %u fit the file "
                              "name tmp-disk-<name>.raw that extract makes (255 bytes)",
                              names[i], len, CLI_DEVNAME_MAX);
            free(names);
            return rc;
        }
    }
    free(names);
    if (!o->devices && !o->pve_conf)
        return CLI_OK; /* all */
    if (vma_backup_select(b, NULL) != VMA_OK)
        return backup_fail(b);
    for (unsigned i = 0; i < vma_backup_device_count(b); i++) {
        const char *name = vma_backup_device_name(b, i);
        if (name && takes(o, name) && vma_backup_select(b, name) != VMA_OK)
            return backup_fail(b);
        if (name && !o->devices && !takes(o, name) && o->verbose)
            fprintf(stderr, "disk %s: backup=0 in %s, left out\n", name, PVE_CONFIG_NAME);
    }
    /* A name of -d that no disk has. */
    char *list = strdup(o->devices ? o->devices : ""), *save = NULL;
    if (!list)
        return cli_fail("out of memory");
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        if (vma_backup_select(b, name) != VMA_OK) {
            free(list);
            return backup_fail(b);
        }
    }
    free(list);
    return CLI_OK;
}

/* qemu-server.conf gets vzdump's form, with the map lines qmrestore needs. */
static int add_pve_config(vma_writer *w, vma_backup *b, const struct options *o,
                          const char *data, size_t len)
{
    size_t n = 0, out_len = 0, unmapped = 0;
    const char **names = chosen_names(b, o, &n);
    const char *first = NULL;
    char *out = NULL;
    if (!names || pve_backup_config(data, len, names, n, &out, &out_len, &unmapped, &first)) {
        free(names);
        return cli_fail("out of memory");
    }
    if (unmapped) {
        progress_bar_clear();
        fprintf(stderr, "vma: warning: %s has no line for disk '%s'%s: qmrestore refuses an "
                "archive without a map line for each disk\n", PVE_CONFIG_NAME, first,
                unmapped > 1 ? " and others" : "");
    }
    int rc = vma_writer_add_config(w, PVE_CONFIG_NAME, out, out_len) == VMA_OK
                 ? CLI_OK : writer_fail(w);
    free(out);
    free(names);
    return rc;
}

/* -c [<name>=]<file>: each config; qemu-server.conf in vzdump's form. */
static int add_configs(vma_writer *w, vma_backup *b, const struct options *o)
{
    for (size_t i = 0; i < o->nconfigs; i++) {
        const char *path;
        size_t name_len;
        const char *start = config_name(o->configs[i], &path, &name_len);
        if (name_len == strlen(PVE_CONFIG_NAME) &&
            memcmp(start, PVE_CONFIG_NAME, name_len) == 0) {
            if (add_pve_config(w, b, o, o->pve_conf, o->pve_len) != CLI_OK)
                return CLI_FAIL;
            continue;
        }
        char *name = strndup(start, name_len);
        void *data = NULL;
        size_t len = 0;
        int rc = name ? cli_read_file(path, &data, &len) : cli_fail("out of memory");
        if (rc == CLI_OK && vma_writer_add_config(w, name, data, len) != VMA_OK)
            rc = writer_fail(w);
        free(data);
        free(name);
        if (rc != CLI_OK)
            return rc;
    }
    return CLI_OK;
}

/* An unnamed file in the archive's directory, or a hidden named one. */
static int open_output(struct output *out, const char *archive)
{
    char *copy = strdup(archive), *base = strdup(archive);
    if (!copy || !base) {
        free(copy);
        free(base);
        return cli_fail("out of memory");
    }
    const char *dir = dirname(copy);
    int rc = CLI_OK;
    mode_t mask = umask(0);
    umask(mask);
    if (access(archive, F_OK) == 0 || errno != ENOENT) {
        rc = cli_fail("%s: %s", archive, access(archive, F_OK) == 0 ? "already exists"
                                                                    : strerror(errno));
        goto out;
    }
    out->fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666 & ~mask);
    if (out->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        if (asprintf(&out->tmp_path, "%s/.%s.vma-backup-XXXXXX", dir, basename(base)) < 0) {
            out->tmp_path = NULL;
            rc = cli_fail("out of memory");
            goto out;
        }
        out->fd = mkostemp(out->tmp_path, O_CLOEXEC);
        if (out->fd >= 0)
            fchmod(out->fd, 0666 & ~mask);
    }
    if (out->fd < 0)
        rc = cli_fail("cannot create %s: %s", archive, strerror(errno));
out:
    free(copy);
    free(base);
    return rc;
}

/* The archive's descriptor for "-": a pipe or FIFO on stdout is opened
 * anew, non-blocking (its own open file description: the flag reaches no
 * other process), so that a cancel or the fleecing watch stops a write
 * the reader does not take; anything else is stdout itself. -1 after the
 * message. The descriptor stays open until the process exits. */
static int stdout_fd(void)
{
    struct stat st;
    if (cli_std_was_closed(STDOUT_FILENO)) {
        cli_fail("standard output is closed");
        return -1;
    }
    if (fstat(STDOUT_FILENO, &st) != 0 || !S_ISFIFO(st.st_mode))
        return STDOUT_FILENO;
    int fd = open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    return fd >= 0 ? fd : STDOUT_FILENO;
}

/* Give the complete archive its name; never over an existing file. */
static int link_output(struct output *out, const char *archive)
{
    if (fsync(out->fd) != 0)
        return cli_fail("%s: %s", archive, strerror(errno));
    if (out->tmp_path) {
        if (link(out->tmp_path, archive) != 0)
            return cli_fail("cannot create %s: %s", archive, strerror(errno));
        unlink(out->tmp_path);
        free(out->tmp_path);
        out->tmp_path = NULL;
        return CLI_OK;
    }
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", out->fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, archive, AT_SYMLINK_FOLLOW) != 0)
        return cli_fail("cannot create %s: %s", archive, strerror(errno));
    return CLI_OK;
}

static void close_output(struct output *out)
{
    if (out->fd >= 0)
        close(out->fd);
    if (out->tmp_path)
        unlink(out->tmp_path); /* not linked: a failure */
    free(out->tmp_path);
    out->fd = -1;
    out->tmp_path = NULL;
}

static void print_summary(vma_backup *b, vma_writer *w, const struct options *o,
                          double seconds)
{
    unsigned n = vma_backup_device_count(b), v = vma_backup_qemu_version(b);
    double freeze = vma_backup_freeze_seconds(b);
    if (!cli_json()) {
        for (unsigned i = 0; o->verbose && i < n; i++) {
            unsigned id = vma_backup_device_id(b, i);
            uint64_t bytes, zeros, size = vma_writer_device_size(w, id);
            if (id == 0 || vma_writer_device_stats(w, id, &bytes, &zeros) != VMA_OK)
                continue;
            fprintf(stderr, "image %s: size=%llu zeros=%llu saved=%llu\n",
                    vma_backup_device_name(b, i), (unsigned long long)size,
                    (unsigned long long)zeros, (unsigned long long)(size - zeros));
        }
        if (o->verbose)
            fprintf(stderr, "backup of %s done in %.1f s\n", o->archive, seconds);
        return;
    }
    struct json j;
    char version[32];
    snprintf(version, sizeof(version), "%u.%u.%u", v / 10000, v / 100 % 100, v % 100);
    jw_init(&j, stdout);
    jw_begin_object(&j);
    jw_key(&j, "archive");
    jw_string(&j, o->archive);
    jw_key(&j, "qemu_version");
    jw_string(&j, version);
    jw_key(&j, "compression");
    jw_string(&j, o->compress ? o->compress : "none");
    jw_key(&j, "freeze_seconds");
    if (freeze >= 0)
        jw_double(&j, freeze);
    else
        jw_null(&j);
    jw_key(&j, "seconds");
    jw_double(&j, seconds);
    jw_key(&j, "devices");
    jw_begin_array(&j);
    for (unsigned i = 0; i < n; i++) {
        uint64_t bytes = 0, zeros = 0;
        unsigned id = vma_backup_device_id(b, i);
        if (id == 0 || vma_writer_device_stats(w, id, &bytes, &zeros) != VMA_OK)
            continue;
        jw_begin_object(&j);
        jw_key(&j, "id");
        jw_uint(&j, id);
        jw_key(&j, "name");
        jw_string(&j, vma_backup_device_name(b, i));
        jw_key(&j, "node");
        jw_string(&j, vma_backup_device_node(b, i));
        jw_key(&j, "size");
        jw_uint(&j, vma_writer_device_size(w, id));
        jw_key(&j, "bytes_written");
        jw_uint(&j, bytes);
        jw_key(&j, "zero_bytes");
        jw_uint(&j, zeros);
        jw_end_object(&j);
    }
    jw_end_array(&j);
    jw_key(&j, "verdict");
    jw_string(&j, "ok");
    jw_end_object(&j);
}

static int cleanup(vma_backup *b, const struct options *o)
{
    unsigned removed = 0;
    if (vma_backup_cleanup(b, o->qmp, &removed) != VMA_OK)
        return backup_fail(b);
    if (cli_json()) {
        struct json j;
        jw_init(&j, stdout);
        jw_begin_object(&j);
        jw_key(&j, "removed");
        jw_uint(&j, removed);
        jw_end_object(&j);
        return cli_json_printed();
    }
    printf("removed %u object(s) of earlier backups from QEMU\n", removed);
    return cli_flush_stdout();
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(vma_backup *b, const struct options *o, vma_writer **wp, struct output *out)
{
    struct write_progress progress;
    double t0 = mono();
    vma_writer *w = *wp = vma_writer_new();
    if (!w)
        return cli_fail("out of memory");
    cli_cancel_on_signal(NULL, w);
    /* A bad --compress is refused before QEMU is asked anything. */
    if (o->compress && vma_writer_set_compression(w, o->compress) != VMA_OK)
        return writer_fail(w);
    if (vma_backup_open(b, o->qmp) != VMA_OK)
        return backup_fail(b);
    if (select_devices(b, o) != CLI_OK || add_configs(w, b, o) != CLI_OK)
        return CLI_FAIL;
    if (strcmp(o->archive, "-") == 0) {
        int fd = stdout_fd();
        if (fd < 0 || vma_writer_open_fd(w, fd) != VMA_OK)
            return fd < 0 ? CLI_FAIL : writer_fail(w);
    } else if (open_output(out, o->archive) != CLI_OK ||
               vma_writer_open_fd(w, out->fd) != VMA_OK) {
        return out->fd < 0 ? CLI_FAIL : writer_fail(w);
    }
    /* The bar and -v lines count the selected disks (all without -d). */
    uint64_t total = 0;
    for (unsigned i = 0; i < vma_backup_device_count(b); i++) {
        const char *name = vma_backup_device_name(b, i);
        if (name && takes(o, name))
            total += (vma_backup_device_size(b, i) + 511) & ~511ull;
    }
    vma_writer_set_progress(w, write_progress_cb, &progress);
    write_progress_start(&progress, total, o->verbose);
    if (vma_backup_run(b, w) != VMA_OK)
        return backup_fail(b);
    if (vma_writer_finish(w) != VMA_OK)
        return writer_fail(w);
    if (out->fd >= 0 && link_output(out, o->archive) != CLI_OK)
        return CLI_FAIL;
    progress_bar_end();
    print_summary(b, w, o, mono() - t0);
    return cli_json() ? cli_json_printed() : CLI_OK;
}

int cmd_backup(int argc, char **argv)
{
    struct options o = { .timeout = 0 };
    struct output out = { .fd = -1 };
    vma_writer *w = NULL;
    vma_backup *b = NULL;
    int rc = parse(argc, argv, &o);

    if (rc != CLI_OK || o.help)
        goto done;
    if (cli_catch_signals() < 0) {
        rc = cli_fail("unable to set signal handlers - %s", strerror(errno));
        goto done;
    }
    b = vma_backup_new();
    if (!b) {
        rc = cli_fail("out of memory");
        goto done;
    }
    cli_cancel_backup_on_signal(b);
    vma_backup_set_log(b, on_log, &o);
    if ((o.timeout && vma_backup_set_timeout(b, o.timeout) != VMA_OK) ||
        (o.qga && vma_backup_set_qga(b, o.qga) != VMA_OK) ||
        (o.fleecing_dir && vma_backup_set_fleecing_dir(b, o.fleecing_dir) != VMA_OK))
        rc = backup_fail(b);
    else if (o.cleanup)
        rc = cleanup(b, &o);
    else if ((rc = read_pve_config(&o)) == CLI_OK)
        rc = run(b, &o, &w, &out);
done:
    if (rc != CLI_OK && w)
        vma_writer_cancel(w);
    cli_cancel_on_signal(NULL, NULL);
    cli_cancel_backup_on_signal(NULL);
    vma_writer_free(w);
    close_output(&out);
    vma_backup_free(b);
    free(o.configs);
    free(o.pve_conf);
    return rc;
}
