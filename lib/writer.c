/*
 * The archive writer: registers configs and devices, accepts 64 KiB
 * clusters of any device in any order (from several threads), drops
 * all-zero 4 KiB blocks, packs clusters into extents and writes the header
 * with the first one. Owns the format's rules for writing.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "childerr.h"
#include "clusterset.h"
#include "format.h"
#include "io.h"
#include "output.h"
#include "writer_internal.h"

extern char **environ;

/* The deployed writer flushes an extent once it holds 58 clusters. */
#define CLUSTERS_PER_EXTENT 58u

struct wdev {
    bool closed;
    uint64_t clusters;      /* clusters the device needs (disks) */
    uint64_t given;         /* size given to add_device: bytes past it are zeros */
    uint64_t written;       /* clusters accepted */
    uint64_t next;          /* vmstate: next cluster number */
    struct vmai_cset seen;  /* disks: clusters accepted (sparse) */
    uint64_t bytes;         /* bytes accepted, counted up to the device end */
    uint64_t zero_bytes;
};

struct vma_writer {
    pthread_mutex_t lock;
    /* Held while the progress callback runs, outside `lock` (so the
     * callback may call vma_writer_device_stats()); never taken before
     * `lock` is released. */
    pthread_mutex_t progress_lock;
    uint64_t reported_bytes;    /* the last totals given to the callback */
    char err[VMAI_ERRLEN];
    int status;             /* sticky failure */
    struct vmai_owner owner; /* the process that made it (wforked()) */

    int fd;
    bool own_fd;
    char *created_path;     /* removed unless finished */
    pid_t child;            /* exec: command, or 0 */
    char *command;          /* its text, for messages */
    struct vmai_childerr *child_err; /* its standard error */
    enum vmai_codec codec;  /* compression of the output */
    int level;
    struct vmai_output *out;
    struct vmai_cancel cancel; /* vma_writer_cancel() */
    bool sealed;            /* a cluster was accepted: no more setup */
    bool started;           /* header written */
    bool finished;

    struct vmai_header hdr; /* names and data are owned copies */
    unsigned device_count;
    uint64_t blob_bytes;    /* blob buffer bytes so far, for the header limit */
    struct wdev dev[VMA_DEV_SLOTS];
    size_t seen_mem;        /* bytes of the cluster sets */

    struct vmai_extent ext;
    unsigned ext_entries;
    unsigned char *ext_buf; /* extent header + data */
    size_t ext_len;
    uint64_t extents;
    uint64_t offset;        /* bytes written */

    uint64_t total_bytes, total_zero;
    vma_write_progress_fn progress;
    void *progress_opaque;
};

static int wfail(vma_writer *w, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int wfail(vma_writer *w, int status, const char *fmt, ...)
{
    if (w->status == VMA_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->err, sizeof(w->err), fmt, ap);
        va_end(ap);
        w->status = status;
    }
    vmai_set_last_error(w->err);
    return w->status;
}

/* The status of an ended writer, its first message as this thread's last
 * error. */
static int wended(vma_writer *w) { return wfail(w, w->status, "%s", ""); }

/* An argument error: reported, but the writer stays usable. */
static int wrefuse(vma_writer *w, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int wrefuse(vma_writer *w, int status, const char *fmt, ...)
{
    if (w->status != VMA_OK)
        return wended(w);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof(w->err), fmt, ap);
    va_end(ap);
    vmai_set_last_error(w->err);
    return status;
}

/* In a child after fork() (see vmai_other_process()): refused, before
 * any lock is taken (a thread of the parent may have held it). */
static int wforked(vma_writer *w)
{
    if (!vmai_other_process(&w->owner, "writer", w->err))
        return VMA_OK;
    vmai_set_last_error(w->err);
    return VMA_ERR_INVALID;
}

vma_writer *vma_writer_new(void)
{
    vma_writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->ext_buf = malloc(VMA_EXTENT_HEADER_SIZE + CLUSTERS_PER_EXTENT * VMA_CLUSTER_SIZE);
    if (w->ext_buf == NULL || pthread_mutex_init(&w->lock, NULL) != 0) {
        free(w->ext_buf);
        free(w);
        return NULL;
    }
    if (pthread_mutex_init(&w->progress_lock, NULL) != 0) {
        pthread_mutex_destroy(&w->lock);
        free(w->ext_buf);
        free(w);
        return NULL;
    }
    w->fd = -1;
    vmai_owner_set(&w->owner);
    vmai_cancel_open(&w->cancel); /* without it, see vma_reader_new() */
    uuid_generate(w->hdr.uuid);
    w->hdr.ctime = (int64_t)time(NULL);
    w->ext_len = VMA_EXTENT_HEADER_SIZE;
    return w;
}

/* How the exec: command ended, in the one line of a failure: its status
 * and the last line of its standard error (the lines before went through
 * to ours; see childerr.h). A command that succeeded has its last line let
 * through too. */
static int child_result(vma_writer *w, int st)
{
    bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    const char *last = w->child_err ? vmai_childerr_finish(w->child_err, ok) : "";
    const char *sep = last[0] ? ": " : "";
    if (ok)
        return VMA_OK;
    if (WIFSIGNALED(st))
        return wfail(w, VMA_ERR_IO, "the exec: command '%.200s' was killed by signal %d (%s)%s%s",
                     w->command, WTERMSIG(st), strsignal(WTERMSIG(st)), sep, last);
    return wfail(w, VMA_ERR_IO, "the exec: command '%.200s' exited with status %d%s%s",
                 w->command, WEXITSTATUS(st), sep, last);
}

static int wait_child(vma_writer *w)
{
    int st;
    pid_t child = w->child;
    w->child = 0;
    /* A cancel ends the wait: the command's group is terminated, reaped. */
    if (vmai_child_wait(child, &st, &w->cancel) != 0)
        return errno == ECANCELED
                   ? wfail(w, VMA_ERR_CANCELED, "cancelled while waiting for the exec: command "
                                                "(it was terminated)")
                   : wfail(w, VMA_ERR_IO, "waiting for the exec: command failed: %s",
                           strerror(errno));
    return child_result(w, st);
}

void vma_writer_free(vma_writer *w)
{
    if (w == NULL)
        return;
    /* In a child after fork(): its output, file and command are the
     * parent's, and so are the compression threads. Left alone. */
    if (!vmai_same_process(&w->owner))
        return;
    if (w->own_fd && w->fd >= 0)
        close(w->fd);
    if (w->child > 0) {
        /* Closing the pipe ends a command that reads it; one that stalls
         * would keep a cancelled writer waiting here. */
        if (!w->finished && vmai_cancelled(&w->cancel))
            kill(-w->child, SIGTERM);
        wait_child(w);
    }
    vmai_childerr_free(w->child_err);
    free(w->command);
    if (!w->finished && w->created_path != NULL)
        unlink(w->created_path);
    free(w->created_path);
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++) {
        free((char *)w->hdr.devices[i].name);
        vmai_cset_free(&w->dev[i].seen);
    }
    for (unsigned i = 0; i < w->hdr.config_count; i++) {
        free((char *)w->hdr.configs[i].name);
        free((void *)w->hdr.configs[i].data);
    }
    vmai_output_free(w->out);
    vmai_cancel_close(&w->cancel);
    free(w->ext_buf);
    pthread_mutex_destroy(&w->lock);
    pthread_mutex_destroy(&w->progress_lock);
    free(w);
}

const char *vma_writer_error(const vma_writer *w) { return w->err; }

int vma_writer_status(vma_writer *w)
{
    if (wforked(w) != VMA_OK)
        return VMA_ERR_INVALID;
    pthread_mutex_lock(&w->lock);
    int rc = w->status;
    pthread_mutex_unlock(&w->lock);
    return rc;
}

void vma_writer_cancel(vma_writer *w)
{
    if (vmai_same_process(&w->owner)) /* the eventfd is shared with the parent */
        vmai_cancel_fire(&w->cancel);
}

/* Calls that configure the archive: only before the first cluster. */
static int check_setup(vma_writer *w, const char *what)
{
    if (wforked(w) != VMA_OK)
        return VMA_ERR_INVALID;
    if (w->status != VMA_OK)
        return wended(w);
    if (w->sealed)
        return wrefuse(w, VMA_ERR_INVALID, "%s: not allowed after the first cluster", what);
    return VMA_OK;
}

int vma_writer_set_uuid(vma_writer *w, const unsigned char uuid[16])
{
    int rc = check_setup(w, "set_uuid");
    if (rc == VMA_OK && uuid == NULL)
        return wrefuse(w, VMA_ERR_INVALID, "set_uuid: no uuid");
    if (rc == VMA_OK)
        memcpy(w->hdr.uuid, uuid, 16);
    return rc;
}

int vma_writer_set_ctime(vma_writer *w, int64_t ctime)
{
    int rc = check_setup(w, "set_ctime");
    if (rc == VMA_OK)
        w->hdr.ctime = ctime;
    return rc;
}

/* --- output --- */

static int check_output(vma_writer *w)
{
    int rc = check_setup(w, "open");
    if (rc == VMA_OK && w->fd >= 0)
        return wrefuse(w, VMA_ERR_INVALID, "the writer already has an output");
    return rc;
}

int vma_writer_open_fd(vma_writer *w, int fd)
{
    int rc = check_output(w);
    if (rc != VMA_OK)
        return rc;
    int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    if (fl < 0)
        return wrefuse(w, VMA_ERR_INVALID, "bad file descriptor %d", fd);
    if ((fl & O_ACCMODE) == O_RDONLY)
        return wrefuse(w, VMA_ERR_INVALID, "descriptor %d is not open for writing", fd);
    w->fd = fd;
    return VMA_OK;
}

/* A command that cannot be started is refused: nothing of this try is
 * kept, another output may follow. */
static int exec_refused(vma_writer *w, const char *what, const char *command, int err)
{
    vmai_childerr_free(w->child_err);
    w->child_err = NULL;
    free(w->command);
    w->command = NULL;
    return wrefuse(w, VMA_ERR_IO, "cannot %s exec:%s: %s", what, command, strerror(err));
}

/* Run argv (file found as execvp does) with the archive on its stdin;
 * `command` names it in messages. */
static int open_exec(vma_writer *w, const char *file, char *const argv[], const char *command)
{
    int pipefd[2], errfd;
    if ((w->command = strdup(command)) == NULL)
        return wfail(w, VMA_ERR_NOMEM, "out of memory");
    if (vmai_childerr_start(&w->child_err, &errfd) != 0)
        return exec_refused(w, "read the standard error of", command, errno);
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return exec_refused(w, "make a pipe for", command, errno);
    /* With descriptor 0 closed the read end could be 0, and a dup2 onto
     * itself would leave it close-on-exec: the command without stdin. */
    pipefd[0] = vmai_fd_above_std(pipefd[0]);
    pipefd[1] = vmai_fd_above_std(pipefd[1]);
    if (pipefd[0] < 0 || pipefd[1] < 0) {
        int e = errno;
        if (pipefd[0] >= 0)
            close(pipefd[0]);
        if (pipefd[1] >= 0)
            close(pipefd[1]);
        return exec_refused(w, "make a pipe for", command, e);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, errfd, STDERR_FILENO);
    /* Its own process group, so that a cancel can stop all the command's
     * processes (sh may fork them rather than exec). */
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    pid_t pid;
    int err = posix_spawnp(&pid, file, &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[0]);
    vmai_childerr_spawned(w->child_err);
    if (err != 0) {
        close(pipefd[1]);
        return exec_refused(w, "run", command, err);
    }
    /* Our end only: writes then wait in poll(2), where a cancel ends them. */
    int fl = fcntl(pipefd[1], F_GETFL);
    if (fl >= 0)
        fcntl(pipefd[1], F_SETFL, fl | O_NONBLOCK);
    w->child = pid;
    w->fd = pipefd[1];
    w->own_fd = true;
    return VMA_OK;
}

int vma_writer_open_command(vma_writer *w, char *const argv[])
{
    int rc = check_output(w);
    if (rc != VMA_OK)
        return rc;
    if (argv == NULL || argv[0] == NULL || argv[0][0] == '\0')
        return wrefuse(w, VMA_ERR_INVALID, "open_command: no command");
    return open_exec(w, argv[0], argv, argv[0]);
}

int vma_writer_open_shell(vma_writer *w, const char *command)
{
    int rc = check_output(w);
    if (rc != VMA_OK)
        return rc;
    if (command == NULL)
        return wrefuse(w, VMA_ERR_INVALID, "open_shell: no command");
    char *argv[] = {"sh", "-c", (char *)command, NULL};
    return open_exec(w, "/bin/sh", argv, command);
}

/* open(2) of a FIFO for writing waits for a reader, and a cancel could not
 * end that wait: try without blocking every 10 ms until a reader is there
 * (ENXIO until then). The descriptor stays O_NONBLOCK: writes wait in
 * poll(2), where a cancel ends them. */
static int open_fifo(vma_writer *w, const char *path)
{
    for (;;) {
        int fd = open(path, O_WRONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0)
            return fd;
        if (errno != ENXIO && errno != EINTR)
            return -1;
        if (vmai_cancel_sleep(&w->cancel, 10000000) != 0)
            return -1;
    }
}

int vma_writer_open_path(vma_writer *w, const char *path)
{
    int rc = check_output(w);
    if (rc != VMA_OK)
        return rc;
    if (path == NULL || path[0] == '\0')
        return wrefuse(w, VMA_ERR_INVALID, "no output path");
    struct stat st;
    int fd;
    if (stat(path, &st) == 0) {
        if (!S_ISFIFO(st.st_mode))
            return wrefuse(w, VMA_ERR_EXISTS, "%s already exists (never overwritten)", path);
        fd = open_fifo(w, path);
        if (fd < 0 && errno == ECANCELED)
            return wfail(w, VMA_ERR_CANCELED, "cancelled while waiting for a reader of %s",
                         path);
    } else {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0 && (w->created_path = strdup(path)) == NULL) {
            close(fd);
            unlink(path);
            return wfail(w, VMA_ERR_NOMEM, "out of memory");
        }
    }
    if (fd < 0)
        return wrefuse(w, errno == EEXIST ? VMA_ERR_EXISTS : VMA_ERR_IO, "cannot create %s: %s",
                       path, strerror(errno));
    w->fd = fd;
    w->own_fd = true;
    return VMA_OK;
}

/* --- configs and devices --- */

/* Keep the header within what the deployed reader and writer handle. */
static int reserve_blob(vma_writer *w, uint64_t bytes, const char *what)
{
    uint64_t table = (1 + w->blob_bytes + bytes + 511) / 512 * 512;
    if (VMA_HEADER_FIXED_SIZE + table > VMA_WRITER_MAX_HEADER_SIZE)
        return wrefuse(w, VMA_ERR_LIMIT,
                       "%s does not fit: the header would exceed %u bytes", what,
                       VMA_WRITER_MAX_HEADER_SIZE);
    w->blob_bytes += bytes;
    return VMA_OK;
}

int vma_writer_add_config(vma_writer *w, const char *name, const void *data, size_t len)
{
    int rc = check_setup(w, "add_config");
    if (rc != VMA_OK)
        return rc;
    if (name == NULL || (data == NULL && len > 0))
        return wrefuse(w, VMA_ERR_INVALID, "add_config: missing name or data");
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    char q[280];
    if (!vma_name_is_valid(base))
        return wrefuse(w, VMA_ERR_INVALID,
                       "config name '%s' is empty, '.', '..', has control characters or is "
                       "too long",
                       vmai_escape(q, sizeof(q), base, 64));
    if (len > VMA_MAX_CONFIG_SIZE)
        return wrefuse(w, VMA_ERR_LIMIT, "config '%s' has %zu bytes; at most %u are allowed",
                       base, len, VMA_MAX_CONFIG_SIZE);
    if (w->hdr.config_count >= VMA_MAX_CONFIGS)
        return wrefuse(w, VMA_ERR_LIMIT, "too many configs (at most %u)", VMA_MAX_CONFIGS);
    for (unsigned i = 0; i < w->hdr.config_count; i++)
        if (strcmp(w->hdr.configs[i].name, base) == 0)
            return wrefuse(w, VMA_ERR_INVALID, "duplicate config name '%s'", base);
    size_t namelen = strlen(base);
    rc = reserve_blob(w, 2 + namelen + 1 + 2 + len, "config");
    if (rc != VMA_OK)
        return rc;
    char *n = strdup(base);
    unsigned char *d = malloc(len ? len : 1);
    if (n == NULL || d == NULL) {
        free(n);
        free(d);
        return wfail(w, VMA_ERR_NOMEM, "out of memory");
    }
    if (len > 0)
        memcpy(d, data, len);
    struct vmai_config *c = &w->hdr.configs[w->hdr.config_count++];
    c->name = n;
    c->data = d;
    c->len = len;
    return VMA_OK;
}

int vma_writer_add_device(vma_writer *w, const char *name, uint64_t size)
{
    int rc = check_setup(w, "add_device");
    if (rc != VMA_OK)
        return rc;
    char q[280];
    if (!vma_name_is_valid(name))
        return wrefuse(w, VMA_ERR_INVALID,
                       "device name '%s' is empty, contains '/' or control characters, is "
                       "'.' or '..', or is too long",
                       vmai_escape(q, sizeof(q), name ? name : "", 64));
    bool vmstate = strcmp(name, VMA_VMSTATE_NAME) == 0;
    if (size == 0 || (!vmstate && size > VMA_MAX_DEVICE_SIZE))
        return wrefuse(w, VMA_ERR_LIMIT,
                       "device '%s' size %llu is out of range (1 to %llu bytes: 2^32 "
                       "clusters of 64 KiB)",
                       name, (unsigned long long)size, (unsigned long long)VMA_MAX_DEVICE_SIZE);
    if (w->device_count >= VMA_MAX_DEVICES)
        return wrefuse(w, VMA_ERR_LIMIT, "too many devices (at most %u)", VMA_MAX_DEVICES);
    for (unsigned i = 1; i <= w->device_count; i++)
        if (strcmp(w->hdr.devices[i].name, name) == 0)
            return wrefuse(w, VMA_ERR_INVALID, "duplicate device name '%s'", name);
    rc = reserve_blob(w, 2 + strlen(name) + 1, "device name");
    if (rc != VMA_OK)
        return rc;
    /* Proxmox's reader works in 512-byte sectors: a disk's last partial
     * sector breaks it, so disks are recorded in whole sectors, as vma
     * create and QEMU record them (zero padded). The vmstate size is a
     * stream length, not sectors. */
    uint64_t given = size;
    if (!vmstate)
        size = (size + 511) & ~(uint64_t)511;
    unsigned id = w->device_count + 1;
    struct wdev *d = &w->dev[id];
    char *n = strdup(name);
    if (n == NULL)
        return wfail(w, VMA_ERR_NOMEM, "out of memory");
    if (!vmstate) {
        d->clusters = vmai_cluster_count(size);
        if (vmai_cset_init(&d->seen, d->clusters, &w->seen_mem) != 0) {
            free(n);
            return wfail(w, VMA_ERR_NOMEM, "out of memory for the cluster map of '%s'", name);
        }
    }
    d->given = given;
    w->hdr.devices[id].name = n;
    w->hdr.devices[id].size = size;
    w->hdr.devices[id].is_vmstate = vmstate;
    w->device_count = id;
    return (int)id;
}

/* --- extents --- */

/* A write into an exec: command failed (a broken pipe: it stopped
 * reading): what the command says and how it ended is the news, so wait
 * for it; one that exited with status 0 still did not take the archive. */
static void output_failed_child(vma_writer *w, int rc)
{
    if (w->child <= 0 || rc != VMA_ERR_IO)
        return;
    if (w->own_fd && w->fd >= 0) {
        close(w->fd); /* a command still reading sees the end */
        w->fd = -1;
    }
    if (wait_child(w) == VMA_OK)
        wfail(w, VMA_ERR_IO,
              "the exec: command '%.200s' exited with status 0 before reading the whole "
              "archive (its input was closed at archive offset %llu)",
              w->command, (unsigned long long)w->offset);
}

static int write_out(vma_writer *w, const void *buf, size_t len)
{
    char err[VMAI_ERRLEN];
    int rc = VMA_OK;
    if (w->out == NULL)
        rc = vmai_output_open(&w->out, w->fd, &w->cancel, w->codec, w->level, err,
                              sizeof(err));
    if (rc == VMA_OK)
        rc = vmai_output_write(w->out, buf, len, err, sizeof(err));
    if (rc != VMA_OK) {
        output_failed_child(w, rc);
        return wfail(w, rc, "writing the archive at offset %llu: %s",
                     (unsigned long long)w->offset, err);
    }
    w->offset += len;
    return VMA_OK;
}

int vma_writer_set_compression(vma_writer *w, const char *spec)
{
    int rc = check_setup(w, "set_compression");
    if (rc != VMA_OK)
        return rc;
    if (w->out != NULL)
        return wrefuse(w, VMA_ERR_INVALID, "set_compression: output already started");
    if (spec == NULL || vmai_codec_parse(spec, &w->codec, &w->level) != VMA_OK)
        return wrefuse(w, VMA_ERR_INVALID,
                       "unknown compression '%s' (zstd[:1-%d], gzip[:1-9], lzo or none)",
                       spec ? spec : "", VMAI_ZSTD_LEVEL_MAX);
    return VMA_OK;
}

static int flush_extent(vma_writer *w)
{
    if (w->fd < 0)
        return wfail(w, VMA_ERR_INVALID, "the writer has no output (open_path or open_fd)");
    if (!w->started) {
        unsigned char *head;
        size_t len;
        char err[VMAI_ERRLEN];
        int rc = vmai_header_encode(&w->hdr, &head, &len, err, sizeof(err));
        if (rc != VMA_OK)
            return wfail(w, rc, "%s", err);
        w->started = true;
        rc = write_out(w, head, len);
        free(head);
        if (rc != VMA_OK)
            return rc;
    }
    vmai_extent_encode(w->ext_buf, w->hdr.uuid, &w->ext);
    int rc = write_out(w, w->ext_buf, w->ext_len);
    memset(&w->ext, 0, sizeof(w->ext));
    w->ext_entries = 0;
    w->ext_len = VMA_EXTENT_HEADER_SIZE;
    w->extents++;
    return rc;
}

/* Mask of the blocks to store: not all zero, and starting before `limit`
 * bytes (the part of the cluster inside the device). */
static uint16_t cluster_mask(const unsigned char *data, uint64_t limit)
{
    uint16_t mask = 0;
    if (data == NULL)
        return 0;
    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++) {
        uint64_t start = (uint64_t)b * VMA_BLOCK_SIZE;
        if (start >= limit)
            break;
        uint64_t len = limit - start < VMA_BLOCK_SIZE ? limit - start : VMA_BLOCK_SIZE;
        if (!vmai_is_zero(data + start, (size_t)len))
            mask |= (uint16_t)(1u << b);
    }
    return mask;
}

/* Bytes of the cluster at `start` that lie before `end`. */
static uint64_t in_cluster(uint64_t end, uint64_t start)
{
    return start >= end ? 0 : (end - start < VMA_CLUSTER_SIZE ? end - start : VMA_CLUSTER_SIZE);
}

/* Under the lock: the device may be written now. */
static int check_device(vma_writer *w, unsigned dev_id)
{
    if (w->status != VMA_OK)
        return wended(w);
    if (w->finished)
        return wrefuse(w, VMA_ERR_INVALID, "the archive is already finished");
    if (w->fd < 0)
        return wrefuse(w, VMA_ERR_INVALID, "the writer has no output (open_path or open_fd)");
    if (dev_id == 0 || dev_id > w->device_count)
        return wrefuse(w, VMA_ERR_INVALID, "write to unknown dev_id %u", dev_id);
    struct vmai_device *hd = &w->hdr.devices[dev_id];
    struct wdev *d = &w->dev[dev_id];
    if (d->closed)
        return wrefuse(w, VMA_ERR_INVALID, "write to device '%s' after it was closed", hd->name);
    return VMA_OK;
}

/* Under the lock: check the cluster against the device's rules. */
static int check_cluster(vma_writer *w, unsigned dev_id, uint64_t n)
{
    int rc = check_device(w, dev_id);
    if (rc != VMA_OK)
        return rc;
    struct vmai_device *hd = &w->hdr.devices[dev_id];
    struct wdev *d = &w->dev[dev_id];
    if (hd->is_vmstate) {
        if (n != d->next)
            return wrefuse(w, VMA_ERR_INVALID,
                           "vmstate cluster %llu written out of order (expected %llu)",
                           (unsigned long long)n, (unsigned long long)d->next);
        if (n > UINT32_MAX)
            return wrefuse(w, VMA_ERR_LIMIT, "vmstate stream exceeds 2^32 clusters");
        return VMA_OK;
    }
    if (n >= d->clusters)
        return wrefuse(w, VMA_ERR_INVALID,
                       "cluster %llu is past the end of device '%s' (%llu clusters)",
                       (unsigned long long)n, hd->name, (unsigned long long)d->clusters);
    if (vmai_cset_contains(&d->seen, n))
        return wrefuse(w, VMA_ERR_INVALID, "cluster %llu of device '%s' was already written",
                       (unsigned long long)n, hd->name);
    return VMA_OK;
}

int vma_writer_write_cluster(vma_writer *w, unsigned dev_id, uint32_t cluster_num,
                             const void *data)
{
    if (wforked(w) != VMA_OK)
        return VMA_ERR_INVALID;
    /* Zero detection runs outside the lock: it is the per-cluster work
     * that parallel callers can share. Device sizes are fixed by now. */
    uint64_t limit = VMA_CLUSTER_SIZE, keep = VMA_CLUSTER_SIZE; /* bytes in the device, given */
    if (dev_id > 0 && dev_id < VMA_DEV_SLOTS && !w->hdr.devices[dev_id].is_vmstate) {
        uint64_t start = (uint64_t)cluster_num * VMA_CLUSTER_SIZE;
        limit = in_cluster(w->hdr.devices[dev_id].size, start);
        keep = in_cluster(w->dev[dev_id].given, start);
    }
    uint16_t mask = cluster_mask(data, keep);

    pthread_mutex_lock(&w->lock);
    int rc = check_cluster(w, dev_id, cluster_num);
    if (rc != VMA_OK)
        goto out;
    if (vmai_cancelled(&w->cancel)) {
        rc = wfail(w, VMA_ERR_CANCELED, "cancelled at cluster %llu of device '%s'",
                   (unsigned long long)cluster_num, w->hdr.devices[dev_id].name);
        goto out;
    }
    struct wdev *d = &w->dev[dev_id];
    if (!w->hdr.devices[dev_id].is_vmstate && vmai_cset_insert(&d->seen, cluster_num) < 0) {
        rc = wfail(w, VMA_ERR_NOMEM, "out of memory for the cluster map of '%s'",
                   w->hdr.devices[dev_id].name);
        goto out;
    }
    w->sealed = true;
    if (w->ext_entries == CLUSTERS_PER_EXTENT && (rc = flush_extent(w)) != VMA_OK)
        goto out;

    struct vmai_blockinfo *bi = &w->ext.info[w->ext_entries++];
    bi->mask = mask;
    bi->dev_id = (uint8_t)dev_id;
    bi->cluster_num = (uint32_t)cluster_num;
    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++) {
        if (!(mask & (1u << b)))
            continue;
        uint64_t start = (uint64_t)b * VMA_BLOCK_SIZE;
        unsigned char *dst = w->ext_buf + w->ext_len;
        memcpy(dst, (const unsigned char *)data + start, VMA_BLOCK_SIZE);
        if (keep - start < VMA_BLOCK_SIZE) /* straddles the end: zero padding */
            memset(dst + (keep - start), 0, VMA_BLOCK_SIZE - (size_t)(keep - start));
        w->ext_len += VMA_BLOCK_SIZE;
    }

    /* Zero bytes inside the device: a stored tail block counts only up to the end. */
    uint64_t stored = (uint64_t)vmai_popcount16(mask) * VMA_BLOCK_SIZE;
    if (limit % VMA_BLOCK_SIZE != 0 && (mask & (1u << (limit / VMA_BLOCK_SIZE))))
        stored -= VMA_BLOCK_SIZE - limit % VMA_BLOCK_SIZE;
    uint64_t zeros = limit - stored;
    d->written++;
    d->bytes += limit;
    d->zero_bytes += zeros;
    w->total_bytes += limit;
    w->total_zero += zeros;
    if (w->hdr.devices[dev_id].is_vmstate)
        d->next++;
    vma_write_progress_fn progress = w->progress;
    uint64_t total = w->total_bytes, total_zero = w->total_zero;
    pthread_mutex_unlock(&w->lock);
    /* Outside the lock: the callback may call device_stats. Totals only
     * grow; a snapshot older than one already reported is skipped. */
    if (progress == NULL)
        return VMA_OK;
    pthread_mutex_lock(&w->progress_lock);
    int stop = 0;
    if (total > w->reported_bytes) {
        w->reported_bytes = total;
        stop = progress(w->progress_opaque, total, total_zero);
    }
    pthread_mutex_unlock(&w->progress_lock);
    if (stop == 0)
        return VMA_OK;
    pthread_mutex_lock(&w->lock);
    rc = wfail(w, VMA_ERR_CALLBACK,
               "stopped by the progress callback at cluster %lu of device '%s'",
               (unsigned long)cluster_num, w->hdr.devices[dev_id].name);
out:
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int vma_writer_close_device(vma_writer *w, unsigned dev_id)
{
    if (wforked(w) != VMA_OK)
        return VMA_ERR_INVALID;
    pthread_mutex_lock(&w->lock);
    int rc = w->status;
    if (rc != VMA_OK) {
        wended(w);
        goto out;
    }
    if (dev_id == 0 || dev_id > w->device_count) {
        rc = wrefuse(w, VMA_ERR_INVALID, "close of unknown dev_id %u", dev_id);
        goto out;
    }
    struct wdev *d = &w->dev[dev_id];
    const char *name = w->hdr.devices[dev_id].name;
    if (d->closed) {
        rc = wrefuse(w, VMA_ERR_INVALID, "device '%s' is already closed", name);
    } else if (!w->hdr.devices[dev_id].is_vmstate && d->written != d->clusters) {
        rc = wfail(w, VMA_ERR_INCOMPLETE, "device '%s' closed after %llu of its %llu clusters",
                   name, (unsigned long long)d->written, (unsigned long long)d->clusters);
    } else {
        d->closed = true;
    }
out:
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int vma_writer_finish(vma_writer *w)
{
    if (wforked(w) != VMA_OK)
        return VMA_ERR_INVALID;
    if (w->status != VMA_OK)
        return wended(w);
    if (w->finished)
        return wrefuse(w, VMA_ERR_INVALID, "the archive is already finished");
    if (vmai_cancelled(&w->cancel))
        return wfail(w, VMA_ERR_CANCELED, "cancelled before the archive was finished");
    if (w->fd < 0)
        return wrefuse(w, VMA_ERR_INVALID, "the writer has no output (open_path or open_fd)");
    /* Refused, not fatal: the caller may still close the device. */
    for (unsigned i = 1; i <= w->device_count; i++)
        if (!w->dev[i].closed)
            return wrefuse(w, VMA_ERR_INCOMPLETE, "device '%s' is still open at finish",
                           w->hdr.devices[i].name);
    w->sealed = true;
    /* The last extent goes out even when empty if there was none yet. */
    if ((w->ext_entries > 0 || w->extents == 0) && flush_extent(w) != VMA_OK)
        return w->status;
    char err[VMAI_ERRLEN];
    int rc = vmai_output_finish(w->out, err, sizeof(err));
    if (rc != VMA_OK) {
        output_failed_child(w, rc);
        return wfail(w, rc, "finishing the archive: %s", err);
    }
    if (w->own_fd) {
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) != 0)
            return wfail(w, VMA_ERR_IO, "closing the archive failed: %s", strerror(errno));
    }
    if (w->child > 0 && wait_child(w) != VMA_OK)
        return w->status;
    w->finished = true;
    return VMA_OK;
}

int vma_writer_device_stats(vma_writer *w, unsigned dev_id, uint64_t *bytes_written,
                            uint64_t *zero_bytes)
{
    if (wforked(w) != VMA_OK)
        return VMA_ERR_INVALID;
    pthread_mutex_lock(&w->lock);
    int rc = VMA_OK;
    if (dev_id == 0 || dev_id > w->device_count) {
        rc = wrefuse(w, VMA_ERR_NOT_FOUND, "device_stats: no device with dev_id %u", dev_id);
    } else {
        if (bytes_written != NULL)
            *bytes_written = w->dev[dev_id].bytes;
        if (zero_bytes != NULL)
            *zero_bytes = w->dev[dev_id].zero_bytes;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

void vma_writer_set_progress(vma_writer *w, vma_write_progress_fn fn, void *opaque)
{
    w->progress = fn;
    w->progress_opaque = opaque;
}

uint64_t vma_writer_device_size(const vma_writer *w, unsigned dev_id)
{
    return dev_id == 0 || dev_id > w->device_count ? 0 : w->hdr.devices[dev_id].size;
}

int vmai_writer_whole_device(vma_writer *w, unsigned dev_id, const char **name,
                             uint64_t *size)
{
    if (wforked(w) != VMA_OK)
        return VMA_ERR_INVALID;
    pthread_mutex_lock(&w->lock);
    int rc = check_device(w, dev_id);
    if (rc == VMA_OK && w->dev[dev_id].written > 0)
        rc = wrefuse(w, VMA_ERR_INVALID, "device '%s' already has clusters written",
                     w->hdr.devices[dev_id].name);
    if (rc == VMA_OK) {
        *name = w->hdr.devices[dev_id].name;
        *size = w->hdr.devices[dev_id].size;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int vmai_writer_refuse(vma_writer *w, int status, const char *msg)
{
    if (wforked(w) != VMA_OK)
        return VMA_ERR_INVALID;
    pthread_mutex_lock(&w->lock);
    int rc = wrefuse(w, status, "%s", msg);
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int vmai_writer_fail(vma_writer *w, int status, const char *msg)
{
    if (wforked(w) != VMA_OK)
        return VMA_ERR_INVALID;
    pthread_mutex_lock(&w->lock);
    int rc = wfail(w, status, "%s", msg);
    pthread_mutex_unlock(&w->lock);
    return rc;
}

const struct vmai_cancel *vmai_writer_cancel_switch(const vma_writer *w)
{
    return &w->cancel;
}
