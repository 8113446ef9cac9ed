/*
 * vma create <archive> [-v] [-c <file>]... [-d format=<fmt>:<name>=<path>]...
 * vma create <archive> [-v] [-c <file>]... <name>=<path>|<path>...
 * Write a new archive from config files and disks: raw files and block
 * devices directly, images of other formats and QEMU protocol paths
 * through NBD (the library's vma_source).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "create_identity.h"
#include "progress.h"
#include "progress_bar.h"

struct source {
    char *name;        /* device name */
    char *format;      /* format= of -d, or NULL (positional: raw bytes) */
    const char *path;  /* points into argv */
    int fd;            /* a raw source, or -1 */
    vma_source *img;   /* a source read through NBD, or NULL */
    uint64_t size;     /* bytes in the source */
    uint64_t recorded; /* size the writer recorded: rounded up to 512 */
    unsigned dev_id;
};

struct create {
    vma_writer *w;
    struct source *src;
    size_t nsrc;
    struct write_progress progress; /* lives as long as the writer */
};

/* "[format=<fmt>:][<name>=]<path>"; a device without a name is disk<index>. */
static int parse_device(const char *arg, int need_format, size_t index, struct source *s)
{
    const char *spec = arg, *format = NULL, *eq;
    size_t format_len = 0;

    if (!strncmp(spec, "format=", 7)) {
        format = spec + 7;
        spec = strchr(format, ':');
        if (!spec)
            return cli_fail("option 'format' not terminated ('%s')", arg);
        format_len = (size_t)(spec++ - format);
    } else if (need_format) {
        return cli_fail("No format specified for device: '%s'", arg);
    }
    eq = strchr(spec, '=');
    if (eq) {
        s->name = strndup(spec, (size_t)(eq - spec));
        s->path = eq + 1;
    } else {
        s->path = spec;
        if (asprintf(&s->name, "disk%zu", index) < 0)
            s->name = NULL;
    }
    if (format && !(s->format = strndup(format, format_len)))
        s->name = NULL;
    if (!s->name)
        return cli_fail("out of memory");
    if (format && !*s->format)
        return cli_fail("empty format for device: '%s'", arg);
    return CLI_OK;
}

/* Through NBD: any format but raw, QEMU protocol paths, NBD URIs. */
static int open_image(struct source *s)
{
    s->img = vma_source_new();
    if (!s->img)
        return cli_fail("out of memory");
    cli_cancel_source_on_signal(s->img); /* qemu-nbd may be slow to open rbd: */
    int st = vma_source_open(s->img, s->format ? s->format : "raw", s->path);
    cli_cancel_source_on_signal(NULL);
    if (st != VMA_OK)
        return cli_fail("%s", vma_source_error(s->img));
    s->size = vma_source_size(s->img);
    if (s->size == 0)
        return cli_fail("%s: empty device", s->path);
    return CLI_OK;
}

static int open_source(struct source *s)
{
    struct stat st;
    const char *guess;

    if (s->format && vma_path_needs_nbd(s->format, s->path))
        return open_image(s);
    /* O_NONBLOCK: a FIFO would block open() until a writer came, before
     * the check below could refuse it. */
    s->fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (s->fd < 0 || fstat(s->fd, &st) < 0 ||
        fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) & ~O_NONBLOCK) < 0)
        return cli_fail("%s: %s", s->path, strerror(errno));
    /* Without format=, an image file would be backed up as its bytes. */
    if (!s->format && (guess = vma_detect_image_format(s->fd)))
        return cli_fail("%s looks like a %s image, not a raw disk: back it up with "
                        "'-d format=%s:%s=%s' (or 'format=raw' for its bytes as they are)",
                        s->path, guess, guess, s->name, s->path);
    if (S_ISREG(st.st_mode)) {
        s->size = (uint64_t)st.st_size;
    } else if (S_ISBLK(st.st_mode)) {
        if (ioctl(s->fd, BLKGETSIZE64, &s->size) < 0)
            return cli_fail("%s: unable to get size - %s", s->path, strerror(errno));
    } else {
        return cli_fail("%s: not a regular file or block device", s->path);
    }
    if (s->size == 0)
        return cli_fail("%s: empty device", s->path);
    return CLI_OK;
}

static int writer_fail(const struct create *c)
{
    return cli_fail("%s", vma_writer_error(c->w));
}

/* Register configs and devices; nothing is written yet, so a bad input
 * leaves no file behind. */
static int add_inputs(struct create *c, char **config_paths, size_t nconfig_paths,
                      char **dev_args, int need_format)
{
    size_t i;

    for (i = 0; i < nconfig_paths; i++) {
        void *data = NULL;
        size_t len = 0;
        int st;

        if (cli_read_file(config_paths[i], &data, &len) != CLI_OK)
            return CLI_FAIL;
        st = vma_writer_add_config(c->w, config_paths[i], data, len); /* copies */
        free(data);
        if (st != VMA_OK)
            return writer_fail(c);
    }
    for (i = 0; i < c->nsrc; i++) {
        struct source *s = &c->src[i];
        int id;

        if (parse_device(dev_args[i], need_format, i, s) != CLI_OK)
            return CLI_FAIL;
        /* What create accepts, extract must restore. */
        if (strlen(s->name) > CLI_DEVNAME_MAX)
            return cli_fail("device name '%.32s...' has %zu bytes; at most %u fit the file "
                            "name tmp-disk-<name>.raw that extract makes (255 bytes)",
                            s->name, strlen(s->name), CLI_DEVNAME_MAX);
        if (open_source(s) != CLI_OK)
            return CLI_FAIL;
        id = vma_writer_add_device(c->w, s->name, s->size);
        if (id < 0)
            return writer_fail(c);
        s->dev_id = (unsigned)id;
        s->recorded = vma_writer_device_size(c->w, s->dev_id);
    }
    return CLI_OK;
}

static int write_archive(struct create *c, const char *archive, const char *compress,
                         int verbose)
{
    uint64_t total = 0;
    size_t i;

    for (i = 0; i < c->nsrc; i++)
        total += c->src[i].recorded;
    /* Always set: the callback is also what stops on a signal. */
    vma_writer_set_progress(c->w, write_progress_cb, &c->progress);
    if (compress && vma_writer_set_compression(c->w, compress) != VMA_OK)
        return writer_fail(c);
    /* exec:<command> is the CLI's spelling; the library opens paths as paths. */
    if ((strncmp(archive, "exec:", 5) == 0 ? vma_writer_open_shell(c->w, archive + 5)
                                           : vma_writer_open_path(c->w, archive)) != VMA_OK)
        return writer_fail(c);
    write_progress_start(&c->progress, total, verbose);
    for (i = 0; i < c->nsrc; i++) {
        struct source *s = &c->src[i];

        int st = s->img ? vma_writer_write_device_source(c->w, s->dev_id, s->img)
                        : vma_writer_write_device_fd(c->w, s->dev_id, s->fd, s->size);

        if (st != VMA_OK)
            return writer_fail(c);
        if (s->fd >= 0)
            close(s->fd);
        s->fd = -1;
        vma_source_free(s->img); /* stops its qemu-nbd now */
        s->img = NULL;
    }
    if (vma_writer_finish(c->w) != VMA_OK)
        return writer_fail(c);

    for (i = 0; verbose && i < c->nsrc; i++) {
        uint64_t bytes, zeros;

        if (vma_writer_device_stats(c->w, c->src[i].dev_id, &bytes, &zeros) != VMA_OK)
            return writer_fail(c);
        fprintf(stderr, "image %s: size=%llu zeros=%llu saved=%llu\n", c->src[i].name,
                (unsigned long long)c->src[i].recorded, (unsigned long long)zeros,
                (unsigned long long)(c->src[i].recorded - zeros));
    }
    return CLI_OK;
}

int cmd_create(int argc, char **argv)
{
    struct create c;
    char **config_paths, **dev_args;
    size_t nconfig_paths = 0, i;
    int opt, rc = CLI_FAIL, verbose = 0, need_format = 1;
    const char *archive, *compress = NULL, *uuid = NULL, *ctime = NULL;

    memset(&c, 0, sizeof c);
    /* No option or argument occurs more often than argc. */
    config_paths = calloc((size_t)argc, sizeof *config_paths);
    dev_args = calloc((size_t)argc, sizeof *dev_args);
    c.src = calloc((size_t)argc, sizeof *c.src);
    if (!config_paths || !dev_args || !c.src) {
        rc = cli_fail("out of memory");
        goto out;
    }
    for (i = 0; i < (size_t)argc; i++)
        c.src[i].fd = -1;
    while ((opt = cli_getopt(argc, argv, "hvpc:d:")) != -1) {
        if (opt == 'Z') {
            compress = optarg;
        } else if (opt == 'U') {
            uuid = optarg;
        } else if (opt == 'T') {
            ctime = optarg;
        } else if (opt == 'p' || opt == 'P') {
            progress_bar_mode(opt == 'p' ? PROGRESS_BAR_ON : PROGRESS_BAR_OFF);
        } else if (opt == 'v') {
            verbose = 1;
        } else if (opt == 'c') {
            config_paths[nconfig_paths++] = optarg;
        } else if (opt == 'd') {
            dev_args[c.nsrc++] = optarg;
        } else {
            rc = cli_usage(opt == 'h' ? stdout : stderr);
            goto out;
        }
    }
    if (optind >= argc) {
        rc = cli_usage(stderr);
        goto out;
    }
    archive = argv[optind++];
    if (c.nsrc && optind < argc) {
        rc = cli_fail("Unexpected extra argument - specify all devices via '-d'");
        goto out;
    }
    if (!c.nsrc) {
        need_format = 0; /* the older positional form */
        while (optind < argc)
            dev_args[c.nsrc++] = argv[optind++];
    }

    if (cli_catch_signals() < 0) {
        rc = cli_fail("unable to set signal handlers - %s", strerror(errno));
        goto out;
    }
    c.w = vma_writer_new();
    cli_cancel_on_signal(NULL, c.w);
    if (!c.w)
        rc = cli_fail("out of memory");
    else if (create_identity(c.w, uuid, ctime) != CLI_OK)
        rc = CLI_FAIL;
    else if (add_inputs(&c, config_paths, nconfig_paths, dev_args, need_format) == CLI_OK)
        rc = write_archive(&c, archive, compress, verbose);

out:
    /* A failed archive is never finished: cancelled, freeing the writer
     * terminates an exec: command at once instead of waiting for it. */
    if (rc != CLI_OK && c.w)
        vma_writer_cancel(c.w);
    cli_cancel_on_signal(NULL, NULL);
    vma_writer_free(c.w); /* removes a partial archive */
    for (i = 0; c.src && i < c.nsrc; i++) {
        if (c.src[i].fd >= 0)
            close(c.src[i].fd);
        vma_source_free(c.src[i].img);
        free(c.src[i].name);
        free(c.src[i].format);
    }
    free(c.src);
    free(config_paths);
    free(dev_args);
    return rc;
}
