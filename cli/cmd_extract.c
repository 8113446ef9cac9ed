/*
 * vma extract <archive> [-v] [-d <dev,...>] [-r <map>] [--format=<fmt>]
 * [--output-format=json] <new-target-dir>: restore configs, disks and the
 * VM state into a new directory (disks as raw files, or as qcow2, vmdk,
 * vdi or vhdx images written through qemu-nbd), or the disks into
 * existing targets named by a restore map.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "print.h"
#include "print_json.h"
#include "progress.h"
#include "progress_bar.h"
#include "restore_map.h"


struct extract {
    vma_reader *r;
    const char *dir;
    const char *drives;   /* -d list, or NULL for every disk */
    const char *map_path; /* -r, or NULL */
    const char *format;   /* --format: NULL for raw files */
    const char *ext;      /* ".raw", or "." and the format */
    struct restore_map_entry *map;
    size_t map_len;
    char **files; /* everything made in dir: removed on failure */
    size_t nfiles;
    unsigned char to_rename[CLI_DEV_SLOTS]; /* made tmp-disk-<dev><ext> */
    unsigned char skipped[CLI_DEV_SLOTS];   /* left out by -d */
    struct read_progress progress; /* lives as long as the reader */
};

/* Remember a path to remove on failure; takes ownership. */
static int add_file(struct extract *x, char *path)
{
    if (!path)
        return cli_fail("out of memory");
    x->files[x->nfiles++] = path;
    return CLI_OK;
}

/* Names become file names. The reader already refused a header with an
 * unsafe name (vma_name_is_valid(): no '/', ".", "..", control
 * characters), and calling it again here would be the same check, not a
 * second one; what is left is the file name length, which only extract
 * cares about (the library allows longer names). Disk names are checked
 * where their tmp-disk file is named (set_disk_target()). */
static int check_names(struct extract *x)
{
    unsigned i;
    const char *name;

    for (i = 0; i < vma_reader_config_count(x->r); i++) {
        if (vma_reader_config(x->r, i, &name, NULL, NULL) != VMA_OK)
            continue;
        if (strlen(name) > CLI_FILE_NAME_MAX)
            return cli_fail("config name '%.32s...' has %zu bytes, more than a file name may "
                            "have (%u); read it with 'vma config -c'",
                            name, strlen(name), CLI_FILE_NAME_MAX);
    }
    return CLI_OK;
}

static int write_file(const char *path, const unsigned char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

    if (fd < 0)
        return -1;
    while (len > 0) {
        ssize_t n = write(fd, data, len);

        if (n < 0) {
            int err = errno;

            close(fd);
            errno = err;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return close(fd);
}

static int write_configs(struct extract *x)
{
    unsigned i;

    for (i = 0; i < vma_reader_config_count(x->r); i++) {
        const char *name;
        const void *data;
        size_t len;
        char *path;

        if (vma_reader_config(x->r, i, &name, &data, &len) != VMA_OK)
            continue;
        path = cli_path(x->dir, "", name, "");
        if (add_file(x, path) != CLI_OK)
            return CLI_FAIL;
        if (write_file(path, data, len) < 0)
            return cli_fail("unable to write file %s - %s", path, strerror(errno));
    }
    return CLI_OK;
}

/* Wait until the map has data or its writer closed it. poll(2) in 100 ms
 * steps: a signal stops the wait even when it comes just before poll(2)
 * (then EINTR). */
static int map_wait(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    while (!cli_signal) {
        int n = poll(&p, 1, 100);

        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
    errno = EINTR;
    return -1;
}

/* One map line, parsed and added to x->map. */
static int add_map_line(struct extract *x, const char *line, size_t *alloc)
{
    char *msg;

    if (x->map_len == *alloc) {
        size_t want = *alloc ? 2 * *alloc : 8;
        void *p = realloc(x->map, want * sizeof *x->map);

        if (!p)
            return cli_fail("out of memory");
        x->map = p;
        *alloc = want;
    }
    if (restore_map_parse(line, &x->map[x->map_len], &msg) < 0) {
        int rc = cli_fail("read map failed - %s", msg ? msg : "out of memory");

        free(msg);
        return rc;
    }
    x->map_len++;
    return CLI_OK;
}

/*
 * Read map lines until EOF, an empty line or "done". The map is opened
 * without blocking (open(2) of a FIFO waits for a writer, and a signal
 * could not stop it) and every read waits in map_wait() first.
 */
static int read_map(struct extract *x)
{
    int fd = open(x->map_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    char *buf = NULL;
    size_t len = 0, cap = 0, alloc = 0;
    int rc = CLI_OK, eof = 0;

    if (fd < 0)
        return cli_fail("unable to open fifo %s - %s", x->map_path, strerror(errno));
    while (rc == CLI_OK) {
        char *nl = len ? memchr(buf, '\n', len) : NULL;
        size_t n;

        if (!nl && !eof) {
            ssize_t got;

            if (len + 1 >= cap) { /* room for the data and a final NUL */
                char *p = realloc(buf, cap ? 2 * cap : 4096);

                if (!p) {
                    rc = cli_fail("out of memory");
                    break;
                }
                buf = p;
                cap = cap ? 2 * cap : 4096;
            }
            if (map_wait(fd) < 0) {
                rc = cli_fail("read map failed - %s", strerror(errno));
                break;
            }
            got = read(fd, buf + len, cap - len - 1);
            if (got > 0)
                len += (size_t)got;
            else if (got == 0)
                eof = 1;
            else if (errno != EAGAIN && errno != EINTR)
                rc = cli_fail("read map failed - %s", strerror(errno));
            continue;
        }
        n = nl ? (size_t)(nl - buf) : len;
        buf[n] = '\0';
        if (n == 0 || !strcmp(buf, "done"))
            break;
        rc = add_map_line(x, buf, &alloc);
        len -= n + (nl ? 1 : 0);
        memmove(buf, buf + n + (nl ? 1 : 0), len);
    }
    free(buf);
    close(fd);
    return rc;
}

/* The last map entry for a device wins, as in the deployed tool. */
static const struct restore_map_entry *find_map(const struct extract *x, const char *name)
{
    size_t i;

    for (i = x->map_len; i-- > 0;)
        if (!strcmp(x->map[i].devname, name))
            return &x->map[i];
    return NULL;
}

static int in_drive_list(const char *list, const char *name)
{
    size_t len = strlen(name);

    for (const char *p = list;; p++) {
        if (!strncmp(p, name, len) && (p[len] == ',' || p[len] == '\0'))
            return 1;
        p = strchr(p, ',');
        if (!p)
            return 0;
    }
}

/* The formats --format writes: what another hypervisor opens directly. */
static const char *const image_formats[] = { "raw", "qcow2", "vmdk", "vdi", "vhdx" };

/* A new empty image of `format` at path, `size` bytes, made by qemu-img
 * (its first line of error output becomes ours). */
static int create_image(const char *format, const char *path, uint64_t size)
{
    char size_arg[32], line[512] = "";
    char *argv[] = { "qemu-img", "create", "-q", "-f", (char *)format, (char *)path, size_arg,
                     NULL };
    int pipefd[2], status = 0, rc;
    pid_t pid;
    posix_spawn_file_actions_t fa;
    extern char **environ;

    snprintf(size_arg, sizeof size_arg, "%llu", (unsigned long long)size);
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return cli_fail("cannot run qemu-img - %s", strerror(errno));
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
    rc = posix_spawnp(&pid, "qemu-img", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (rc != 0) {
        close(pipefd[0]);
        return cli_fail("cannot run qemu-img to create %s - %s%s", path, strerror(rc),
                        rc == ENOENT ? " (install the Debian package qemu-utils; on Proxmox "
                                       "VE it comes with pve-qemu-kvm)"
                                     : "");
    }
    FILE *out = fdopen(pipefd[0], "r");
    if (out != NULL) {
        if (fgets(line, sizeof line, out) != NULL)
            line[strcspn(line, "\n")] = '\0';
        while (fgetc(out) != EOF)
            ;
        fclose(out);
    } else {
        close(pipefd[0]);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return cli_fail("qemu-img create -f %s %s failed - %s", format, path,
                        line[0] ? line : "no message");
    return CLI_OK;
}

/* Target of one disk: a map entry, a new tmp-disk file, or a skip. */
static int set_disk_target(struct extract *x, unsigned id)
{
    const char *name = vma_reader_device_name(x->r, id);
    const struct restore_map_entry *e;
    char *path;
    int st;

    if (x->drives && !in_drive_list(x->drives, name)) {
        st = vma_reader_target_skip(x->r, id);
        x->skipped[id] = 1;
    } else if (x->map_path) {
        e = find_map(x, name);
        if (!e)
            return cli_fail("no device name mapping for %s", name);
        if (e->skip) {
            st = vma_reader_target_skip(x->r, id);
        } else {
            /* qcow2, vmdk, rbd:, iscsi://, nbd:// ...: through NBD. */
            if (vma_path_needs_nbd(e->format, e->path))
                st = vma_reader_target_nbd(x->r, id, e->format, e->path, e->flags);
            else if (!restore_map_is_raw(e))
                return cli_fail("%s: no format= given and not a .raw file or /dev/ device "
                                "(say format=raw, or the image's format)", e->path);
            else
                st = vma_reader_target_open(x->r, id, e->path, e->flags);
            /* A group without a rate only joins it: the library keeps the
             * group's rate when given 0. */
            if (st == VMA_OK && (e->bps || e->group))
                st = vma_reader_target_limit(x->r, id, e->bps, e->group);
        }
    } else {
        if (strlen(name) > CLI_DEVNAME_MAX)
            return cli_fail("device name '%.32s...' has %zu bytes: tmp-disk-<name>.raw "
                            "would pass the 255-byte file name limit (at most %u bytes fit); "
                            "restore it with -r to a path of your choice",
                            name, strlen(name), CLI_DEVNAME_MAX);
        path = cli_path(x->dir, "tmp-disk-", name, x->ext);
        if (add_file(x, path) != CLI_OK)
            return CLI_FAIL;
        if (!cli_json()) /* JSON: the document names the files instead */
            printf("DEVINFO %s %llu\n", path,
                   (unsigned long long)vma_reader_device_size(x->r, id));
        if (x->format == NULL) {
            st = vma_reader_target_create(x->r, id, path);
        } else {
            /* A new image reads as zeros: zero blocks need no write (0:). */
            if (create_image(x->format, path, vma_reader_device_size(x->r, id)) != CLI_OK)
                return CLI_FAIL;
            st = vma_reader_target_nbd(x->r, id, x->format, path, 0);
        }
        x->to_rename[id] = 1;
    }
    return st == VMA_OK ? CLI_OK : cli_fail("%s", vma_reader_error(x->r));
}

static int set_targets(struct extract *x)
{
    unsigned id;

    for (id = vma_reader_next_device(x->r, 0); id; id = vma_reader_next_device(x->r, id)) {
        if (vma_reader_device_is_vmstate(x->r, id)) {
            char *path = cli_path(x->dir, "", "vmstate.bin", "");

            if (add_file(x, path) != CLI_OK)
                return CLI_FAIL;
            if (vma_reader_target_create(x->r, id, path) != VMA_OK)
                return cli_fail("%s", vma_reader_error(x->r));
        } else if (set_disk_target(x, id) != CLI_OK) {
            return CLI_FAIL;
        }
    }
    return cli_flush_stdout(); /* the DEVINFO lines, before the long part */
}

/* rename() that refuses to replace a file: a config may be called
 * "disk-<dev>.raw" and must not be lost silently. */
static int rename_new(const char *from, const char *to)
{
    struct stat st;

    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    /* The file system has no RENAME_NOREPLACE; the directory is ours. */
    if (lstat(to, &st) == 0) {
        errno = EEXIST;
        return -1;
    }
    return rename(from, to);
}

/* Give the disks their final names once the whole archive checked out. */
static int rename_disks(struct extract *x)
{
    for (unsigned id = 1; id < CLI_DEV_SLOTS; id++) {
        const char *name = vma_reader_device_name(x->r, id);
        char *tmp, *final;
        int err;

        if (!x->to_rename[id])
            continue;
        tmp = cli_path(x->dir, "tmp-disk-", name, x->ext);
        final = cli_path(x->dir, "disk-", name, x->ext);
        if (!tmp || add_file(x, final) != CLI_OK) {
            free(tmp);
            return cli_fail("out of memory");
        }
        err = rename_new(tmp, final) < 0 ? cli_fail("rename %s to %s failed - %s", tmp,
                                                 final, strerror(errno)) : CLI_OK;
        free(tmp);
        if (err != CLI_OK)
            return err;
    }
    return CLI_OK;
}

/* --output-format=json after a successful extract: the header, each
 * device's file (null when -d left it out) and statistics, the verdict. */
static int print_json(const struct extract *x)
{
    struct json j;
    unsigned id;

    jw_init(&j, stdout);
    jw_begin_object(&j);
    jw_key(&j, "directory");
    jw_string(&j, x->dir);
    json_header(&j, x->r);
    jw_key(&j, "devices");
    jw_begin_array(&j);
    for (id = vma_reader_next_device(x->r, 0); id; id = vma_reader_next_device(x->r, id)) {
        jw_begin_object(&j);
        json_device_fields(&j, x->r, id);
        jw_key(&j, "file");
        if (x->skipped[id]) {
            jw_null(&j);
        } else if (vma_reader_device_is_vmstate(x->r, id)) {
            jw_string(&j, "vmstate.bin");
        } else {
            char *file = cli_path("", "disk-", vma_reader_device_name(x->r, id), x->ext);

            if (!file)
                return cli_fail("out of memory");
            jw_string(&j, file + 1); /* without the leading "/" */
            free(file);
        }
        json_device_stats(&j, x->r, id);
        jw_end_object(&j);
    }
    jw_end_array(&j);
    json_read_totals(&j, x->r);
    jw_end_object(&j);
    return cli_json_printed();
}

/* --format=<fmt>: one of image_formats; raw is the default. Not with -r,
 * whose map lines name each target's format. */
static int set_format(struct extract *x)
{
    static char ext[16];
    size_t i, n = sizeof image_formats / sizeof image_formats[0];

    if (x->map_path)
        return cli_fail("--format cannot be used with -r (the restore map's format= says "
                        "each target's format)");
    for (i = 0; i < n && strcmp(x->format, image_formats[i]) != 0; i++)
        ;
    if (i == n)
        return cli_fail("unknown --format '%s' (raw, qcow2, vmdk, vdi or vhdx)", x->format);
    snprintf(ext, sizeof ext, ".%s", x->format);
    x->ext = ext;
    if (i == 0)
        x->format = NULL; /* raw: sparse files, as without --format */
    return CLI_OK;
}

/* Everything after the directory exists; any failure is cleaned up by
 * the caller. */
static int extract_run(struct extract *x, int verbose)
{
    unsigned id, ndev = 0;

    for (id = vma_reader_next_device(x->r, 0); id; id = vma_reader_next_device(x->r, id))
        ndev++;
    /* configs, tmp and final disk names, vmstate.bin */
    x->files = calloc(vma_reader_config_count(x->r) + 2 * ndev + 1, sizeof *x->files);
    if (!x->files)
        return cli_fail("out of memory");

    if (check_names(x) != CLI_OK || write_configs(x) != CLI_OK)
        return CLI_FAIL;
    if (x->map_path && (print_list(x->r) != CLI_OK || read_map(x) != CLI_OK))
        return CLI_FAIL;
    if (set_targets(x) != CLI_OK)
        return CLI_FAIL;

    /* Always watch progress: the callback is what stops on a signal. */
    read_progress_start(&x->progress, x->r, verbose && !cli_json());
    if (vma_reader_restore(x->r) != VMA_OK)
        return cli_fail("restore failed - %s", vma_reader_error(x->r));
    if (verbose && !cli_json()) {
        read_progress_totals(x->r);
        if (cli_flush_stdout() != CLI_OK)
            return CLI_FAIL;
    }
    if (rename_disks(x) != CLI_OK)
        return CLI_FAIL;
    /* Printed last: a failure before it removes the files, and the
     * document is then the error object only. */
    return cli_json() ? print_json(x) : CLI_OK;
}

int cmd_extract(int argc, char **argv)
{
    struct extract x;
    int c, rc, verbose = 0;
    size_t i;

    if (cli_has_salvage(argc, argv))
        return cmd_salvage(argc, argv, 1);
    memset(&x, 0, sizeof x);
    while ((c = cli_getopt(argc, argv, "hvpd:r:")) != -1) {
        switch (c) {
        case 'v':
            verbose = 1;
            break;
        case 'p':
            progress_bar_mode(PROGRESS_BAR_ON);
            break;
        case 'P':
            progress_bar_mode(PROGRESS_BAR_OFF);
            break;
        case 'd':
            x.drives = optarg;
            break;
        case 'r':
            x.map_path = optarg;
            break;
        case 'f':
            x.format = optarg;
            break;
        case 'J':
            if (cli_output_format(optarg) < 0)
                return cli_usage(stderr);
            break;
        default:
            return cli_usage(c == 'h' ? stdout : stderr);
        }
    }
    if (optind + 2 != argc)
        return cli_usage(stderr);
    /* -r is Proxmox's handshake: the device lines on stdout, then the map.
     * A JSON document cannot share stdout with it. */
    if (x.map_path && cli_json()) {
        cli_fail("--output-format=json cannot be used with -r (the restore map "
                 "handshake is text on stdout)");
        return CLI_USAGE;
    }
    if (x.format != NULL && set_format(&x) != CLI_OK)
        return CLI_USAGE;
    if (x.ext == NULL)
        x.ext = ".raw";
    x.dir = argv[optind + 1];

    if (cli_catch_signals() < 0)
        return cli_fail("unable to set signal handlers - %s", strerror(errno));
    x.r = cli_open_archive(argv[optind]);
    if (!x.r)
        return CLI_FAIL;
    if (mkdir(x.dir, 0777) < 0) {
        rc = cli_fail("unable to create target directory %s - %s", x.dir, strerror(errno));
        cli_close_archive(x.r);
        return rc;
    }

    rc = extract_run(&x, verbose);
    /* Freeing the reader first removes the files it created after a failed
     * restore; then ours go, and the directory if nothing else is in it. */
    cli_close_archive(x.r);
    for (i = 0; i < x.nfiles; i++) {
        if (rc != CLI_OK)
            unlink(x.files[i]);
        free(x.files[i]);
    }
    if (rc != CLI_OK)
        rmdir(x.dir);
    for (i = 0; i < x.map_len; i++)
        restore_map_entry_free(&x.map[i]);
    free(x.map);
    free(x.files);
    return rc;
}
