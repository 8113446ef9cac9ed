/*
 * A device source read through NBD (libnbd): qemu-nbd serves any image
 * format read-only, or an nbd:// URI names an export. The cluster
 * producer asks the server which extents read as zero (block status,
 * "base:allocation") and hands those to the writer as all-zero clusters
 * without reading them; data is read with a bounded window of requests in
 * flight, and each finished read goes to the writer at once, so clusters
 * arrive out of order. One thread: the libnbd socket and the writer's
 * cancel eventfd are waited on together in poll(2).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <libnbd.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdarg.h>
#include <unistd.h>

#include "format.h"
#include "io.h"
#include "writer_internal.h"

/* libnbd's message without its "nbd_aio_pread: " style prefix. */
static const char *nbd_msg(void)
{
    const char *m = nbd_get_error();
    const char *colon = m ? strstr(m, ": ") : NULL;
    if (m == NULL)
        return "unknown NBD error";
    return colon && strncmp(m, "nbd_", 4) == 0 ? colon + 2 : m;
}

/* ---- the source: a libnbd handle on a started qemu-nbd or an URI ---- */

struct vma_source {
    struct nbd_handle *h;
    char err[VMAI_ERRLEN];
    uint64_t size;
    uint64_t max_request;    /* the server's limit, or 0 */
    bool status;             /* the server answers "base:allocation" */
    bool used;               /* open was called */
    char log[64];            /* qemu-nbd's stderr goes to this file */
    struct vmai_cancel cancel;
};

vma_source *vma_source_new(void)
{
    vma_source *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    vmai_cancel_open(&s->cancel); /* without it, a cancel only sets the flag */
    return s;
}

static void drop_log(vma_source *s)
{
    if (s->log[0] != '\0')
        unlink(s->log);
    s->log[0] = '\0';
}

/* Close the connection; nbd_close() waits for the qemu-nbd it started,
 * which exits when its only client goes (or at once, killed). */
static void disconnect(vma_source *s, bool graceful)
{
    if (s->h == NULL)
        return;
    if (graceful && nbd_aio_is_ready(s->h))
        nbd_shutdown(s->h, 0);
    else /* read-only, nothing to lose: not waiting for reads it is doing */
        nbd_kill_subprocess(s->h, SIGKILL);
    nbd_close(s->h);
    s->h = NULL;
}

void vma_source_free(vma_source *s)
{
    if (s == NULL)
        return;
    disconnect(s, true);
    drop_log(s);
    vmai_cancel_close(&s->cancel);
    free(s);
}

const char *vma_source_error(const vma_source *s) { return s->err; }
uint64_t vma_source_size(const vma_source *s) { return s->size; }
void vma_source_cancel(vma_source *s) { vmai_cancel_fire(&s->cancel); }

static int sfail(vma_source *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int sfail(vma_source *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
    disconnect(s, false);
    drop_log(s);
    return status;
}

static bool is_nbd_uri(const char *path)
{
    static const char *const schemes[] = { "nbd://", "nbds://", "nbd+unix://",
                                           "nbds+unix://", "nbd+vsock://", "nbds+vsock://" };
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
        if (strncmp(path, schemes[i], strlen(schemes[i])) == 0)
            return true;
    return false;
}

/* The full path of an executable in $PATH, into buf; false if none. */
static bool find_program(const char *prog, char *buf, size_t len)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/bin:/bin";
    while (*path != '\0') {
        size_t n = strcspn(path, ":");
        if (n > 0 && (size_t)snprintf(buf, len, "%.*s/%s", (int)n, path, prog) < len &&
            access(buf, X_OK) == 0)
            return true;
        path += n;
        if (*path == ':')
            path++;
    }
    return false;
}

/* What qemu-nbd wrote, its lines joined, without its "qemu-nbd: " prefix. */
static void read_log(const vma_source *s, char *out, size_t len)
{
    char buf[2048];
    FILE *f = s->log[0] ? fopen(s->log, "re") : NULL;
    out[0] = '\0';
    if (f == NULL)
        return;
    while (fgets(buf, sizeof(buf), f) != NULL) {
        buf[strcspn(buf, "\n")] = '\0';
        const char *line = strncmp(buf, "qemu-nbd: ", 10) ? buf : buf + 10;
        size_t have = strlen(out);
        if (*line == '\0' || have + 2 >= len)
            continue;
        if (have > 0) { /* one line: "Failed to get lock" + "Is another process..." */
            memcpy(out + have, " ", 2);
            have++;
        }
        size_t n = strlen(line) < len - 1 - have ? strlen(line) : len - 1 - have;
        memcpy(out + have, line, n); /* cut to fit */
        out[have + n] = '\0';
    }
    fclose(f);
}

/* Run libnbd's state machine until the handshake is done, the connection
 * died, or the source is cancelled. */
static int wait_connected(vma_source *s)
{
    while (nbd_aio_is_connecting(s->h) || nbd_aio_is_negotiating(s->h) ||
           nbd_aio_is_created(s->h)) {
        if (vmai_cancelled(&s->cancel)) {
            errno = ECANCELED;
            return -1;
        }
        unsigned dir = nbd_aio_get_direction(s->h);
        struct pollfd pfd[2] = {
            { .fd = nbd_aio_get_fd(s->h),
              .events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                                ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)) },
            { .fd = s->cancel.fd, .events = POLLIN },
        };
        if (pfd[0].fd < 0)
            return -1;
        int n = poll(pfd, s->cancel.fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno != EINTR)
            return -1;
        if (n <= 0)
            continue;
        int r = 0;
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
            r = nbd_aio_notify_read(s->h);
        else if (pfd[0].revents & POLLOUT)
            r = nbd_aio_notify_write(s->h);
        if (r < 0)
            return -1;
    }
    return nbd_aio_is_ready(s->h) ? 0 : -1;
}

int vma_source_open(vma_source *s, const char *format, const char *path)
{
    char prog[4096];
    if (s->used)
        return sfail(s, VMA_ERR_INVALID, "the source was already opened");
    s->used = true;
    if (format == NULL || path == NULL || *format == '\0' || strchr(format, ',') != NULL)
        return sfail(s, VMA_ERR_INVALID, "%s: bad format '%s'", path ? path : "(null)",
                     format ? format : "(null)");
    bool uri = is_nbd_uri(path);
    if (uri && strcmp(format, "raw") != 0)
        return sfail(s, VMA_ERR_INVALID, "%s: an NBD export is read as raw, not %s", path,
                     format);
    if (!uri && !find_program("qemu-nbd", prog, sizeof(prog)))
        return sfail(s, VMA_ERR_NOT_FOUND, "%s: qemu-nbd not found, needed to read %s "
                     "images (install the Debian package qemu-utils)", path, format);
    if (vmai_cancelled(&s->cancel))
        return sfail(s, VMA_ERR_CANCELED, "%s: cancelled", path);
    s->h = nbd_create();
    if (s->h == NULL)
        return sfail(s, VMA_ERR_NOMEM, "%s: %s", path, nbd_msg());
    /* Which extents read as zero, so that they are never read. */
    if (nbd_add_meta_context(s->h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0)
        return sfail(s, VMA_ERR_IO, "%s: %s", path, nbd_msg());
    int rc;
    if (uri) {
        rc = nbd_aio_connect_uri(s->h, path);
    } else {
        /* qemu-nbd's complaints go to a file, so that the caller gets
         * them as one message and its stderr stays its own. The shell
         * execs, so qemu-nbd keeps the pid socket activation names. */
        const char *tmp = getenv("TMPDIR");
        int fd;
        snprintf(s->log, sizeof(s->log), "%s/vma-nbd-XXXXXX",
                 tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
        if ((fd = mkstemp(s->log)) < 0) {
            s->log[0] = '\0';
            return sfail(s, VMA_ERR_IO, "%s: cannot make a temporary file: %s", path,
                         strerror(errno));
        }
        close(fd);
        char fmtarg[128];
        snprintf(fmtarg, sizeof(fmtarg), "--format=%s", format);
        char *argv[] = { "/bin/sh", "-c", "exec 2>\"$0\" && exec \"$@\"", s->log, prog,
                         "--read-only", fmtarg, "--", (char *)path, NULL };
        rc = nbd_aio_connect_systemd_socket_activation(s->h, argv);
    }
    if (rc < 0 || wait_connected(s) < 0) {
        char why[VMAI_ERRLEN / 2];
        if (vmai_cancelled(&s->cancel))
            return sfail(s, VMA_ERR_CANCELED, "%s: cancelled", path);
        snprintf(why, sizeof(why), "%s", nbd_msg());
        disconnect(s, false); /* reaps qemu-nbd: its log is complete */
        read_log(s, why, sizeof(why));
        return sfail(s, VMA_ERR_IO, "%s: cannot open as %s: %s", path, format,
                     why[0] ? why : "qemu-nbd failed");
    }
    int64_t size = nbd_get_size(s->h);
    if (size < 0)
        return sfail(s, VMA_ERR_IO, "%s: %s", path, nbd_msg());
    s->size = (uint64_t)size;
    s->status = nbd_can_meta_context(s->h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    int64_t max = nbd_get_block_size(s->h, LIBNBD_SIZE_MAXIMUM);
    s->max_request = max > 0 ? (uint64_t)max : 0;
    drop_log(s);
    return VMA_OK;
}

/* ---- the cluster producer ---- */

#define WINDOW 64                        /* reads in flight */
#define REQUEST_MAX (256u * 1024)        /* bytes per read: 4 clusters */
#define STATUS_MAX ((uint64_t)1 << 30)   /* bytes per block status request */
#define STATUS_AHEAD ((uint64_t)1 << 28) /* ask again when less is known ahead */

struct slot {
    unsigned char *buf; /* REQUEST_MAX bytes, allocated on first use */
    uint64_t off;       /* cluster-aligned */
    size_t len;         /* bytes asked for (ends at most at the source end) */
    int64_t cookie;     /* 0: free */
};

/* What block status told so far: extents from `start` up to `known`,
 * contiguous, each data or zero. */
struct extent {
    uint64_t end;
    bool zero;
};

struct producer {
    vma_writer *w;
    unsigned dev_id;
    const char *name;
    vma_source *s;
    const struct vmai_cancel *cancel;
    struct slot slot[WINDOW];
    unsigned busy;
    struct extent *ext;      /* ext[head..count) cover [ext_start, known) */
    size_t head, count, cap;
    uint64_t ext_start, known;
    int64_t status_cookie;   /* 0: no block status in flight */
    bool status_failed;      /* the callback ran out of memory */
    uint64_t next;           /* next cluster to classify */
    uint64_t max_request;    /* bytes per read */
    uint64_t clusters;       /* of the source */
};

static int pfail(struct producer *p, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int pfail(struct producer *p, int status, const char *fmt, ...)
{
    char msg[VMAI_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return vmai_writer_fail(p->w, status, msg);
}

static int on_extents(void *opaque, const char *context, uint64_t offset, uint32_t *entries,
                      size_t n, int *error)
{
    struct producer *p = opaque;
    (void)error;
    if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || offset != p->known)
        return 0;
    uint64_t size = vma_source_size(p->s);
    for (size_t i = 0; i + 1 < n && p->known < size; i += 2) {
        if (entries[i] == 0)
            break;
        uint64_t end = p->known + entries[i];
        bool zero = (entries[i + 1] & LIBNBD_STATE_ZERO) != 0;
        if (end > size)
            end = size;
        if (p->count > p->head && p->ext[p->count - 1].zero == zero) {
            p->ext[p->count - 1].end = end; /* merge with the last one */
        } else {
            if (p->count == p->cap) {
                size_t cap = p->cap ? 2 * p->cap : 256;
                struct extent *e = realloc(p->ext, cap * sizeof(*e));
                if (e == NULL) {
                    p->status_failed = true;
                    return -1;
                }
                p->ext = e;
                p->cap = cap;
            }
            p->ext[p->count++] = (struct extent){ .end = end, .zero = zero };
        }
        p->known = end;
    }
    return 0;
}

/* Forget extents that end before `off`; compact the array now and then. */
static void drop_extents(struct producer *p, uint64_t off)
{
    while (p->head < p->count && p->ext[p->head].end <= off) {
        p->ext_start = p->ext[p->head].end;
        p->head++;
    }
    if (p->head > 0 && p->head * 2 >= p->count) {
        memmove(p->ext, p->ext + p->head, (p->count - p->head) * sizeof(*p->ext));
        p->count -= p->head;
        p->head = 0;
    }
}

/* Whether [a, b) lies in zero extents; b <= p->known. */
static bool range_is_zero(const struct producer *p, uint64_t a, uint64_t b)
{
    for (size_t i = p->head; i < p->count; i++) {
        const struct extent *e = &p->ext[i];
        if (e->end <= a)
            continue;
        if (!e->zero)
            return false;
        if (e->end >= b)
            return true;
    }
    return false;
}

static int ask_status(struct producer *p)
{
    uint64_t size = vma_source_size(p->s);
    if (p->status_cookie != 0 || p->known >= size ||
        p->known - p->next * VMA_CLUSTER_SIZE >= STATUS_AHEAD)
        return VMA_OK;
    uint64_t count = size - p->known < STATUS_MAX ? size - p->known : STATUS_MAX;
    p->status_cookie = nbd_aio_block_status(p->s->h, count, p->known,
                                            (nbd_extent_callback){ .callback = on_extents,
                                                                   .user_data = p },
                                            NBD_NULL_COMPLETION, 0);
    if (p->status_cookie < 0)
        return pfail(p, VMA_ERR_IO, "block status of device '%s' at offset %llu: %s", p->name,
                     (unsigned long long)p->known, nbd_msg());
    return VMA_OK;
}

/* Hand a finished read to the writer, cluster by cluster. */
static int deliver(struct producer *p, struct slot *sl)
{
    size_t padded = (sl->len + VMA_CLUSTER_SIZE - 1) / VMA_CLUSTER_SIZE * VMA_CLUSTER_SIZE;
    memset(sl->buf + sl->len, 0, padded - sl->len); /* the source's last cluster */
    uint64_t first = sl->off / VMA_CLUSTER_SIZE;
    for (size_t i = 0; i < padded / VMA_CLUSTER_SIZE; i++) {
        int rc = vma_writer_write_cluster(p->w, p->dev_id, first + i,
                                          sl->buf + i * VMA_CLUSTER_SIZE);
        if (rc != VMA_OK)
            return rc;
    }
    sl->cookie = 0;
    p->busy--;
    return VMA_OK;
}

/* Retire finished commands. */
static int retire(struct producer *p)
{
    struct nbd_handle *h = p->s->h;
    for (unsigned i = 0; i < WINDOW; i++) {
        struct slot *sl = &p->slot[i];
        if (sl->cookie == 0)
            continue;
        int r = nbd_aio_command_completed(h, (uint64_t)sl->cookie);
        if (r < 0)
            return pfail(p, VMA_ERR_IO, "read error on the source of device '%s' at offset "
                         "%llu: %s", p->name, (unsigned long long)sl->off, nbd_msg());
        if (r == 1 && deliver(p, sl) != VMA_OK)
            return VMA_ERR_IO; /* the writer keeps its own status */
    }
    if (p->status_cookie != 0) {
        int r = nbd_aio_command_completed(h, (uint64_t)p->status_cookie);
        if (r < 0 || p->status_failed)
            return pfail(p, p->status_failed ? VMA_ERR_NOMEM : VMA_ERR_IO,
                         "block status of device '%s' at offset %llu: %s", p->name,
                         (unsigned long long)p->known,
                         p->status_failed ? "out of memory" : nbd_msg());
        if (r == 1) {
            p->status_cookie = 0;
            if (p->known == p->ext_start + 0 && p->count == p->head && p->known < vma_source_size(p->s))
                return pfail(p, VMA_ERR_IO, "block status of device '%s' at offset %llu "
                             "returned no extent", p->name, (unsigned long long)p->known);
        }
    }
    return VMA_OK;
}

/* Classify clusters from p->next on while the extents are known, write
 * zero ones, and start reads of data runs while a slot is free. */
static int issue(struct producer *p)
{
    uint64_t size = vma_source_size(p->s);
    struct nbd_handle *h = p->s->h;
    while (p->next < p->clusters) {
        uint64_t a = p->next * VMA_CLUSTER_SIZE;
        uint64_t b = a + VMA_CLUSTER_SIZE < size ? a + VMA_CLUSTER_SIZE : size;
        if (b > p->known)
            return VMA_OK; /* wait for block status */
        drop_extents(p, a);
        if (range_is_zero(p, a, b)) {
            int rc = vma_writer_write_cluster(p->w, p->dev_id, p->next, NULL);
            if (rc != VMA_OK)
                return rc;
            p->next++;
            continue;
        }
        if (p->busy == WINDOW)
            return VMA_OK;
        /* A run of data clusters, as long as one request. */
        uint64_t end = b;
        while (end < p->known && end - a < p->max_request) {
            uint64_t nb = end + VMA_CLUSTER_SIZE < size ? end + VMA_CLUSTER_SIZE : size;
            if (nb > p->known || range_is_zero(p, end, nb))
                break;
            end = nb;
        }
        struct slot *sl = NULL;
        for (unsigned i = 0; i < WINDOW && sl == NULL; i++)
            if (p->slot[i].cookie == 0)
                sl = &p->slot[i];
        if (sl->buf == NULL && (sl->buf = malloc(REQUEST_MAX)) == NULL)
            return pfail(p, VMA_ERR_NOMEM, "out of memory");
        sl->off = a;
        sl->len = (size_t)(end - a);
        sl->cookie = nbd_aio_pread(h, sl->buf, sl->len, a, NBD_NULL_COMPLETION, 0);
        if (sl->cookie < 0) {
            sl->cookie = 0;
            return pfail(p, VMA_ERR_IO, "read error on the source of device '%s' at offset "
                         "%llu: %s", p->name, (unsigned long long)a, nbd_msg());
        }
        p->busy++;
        p->next = (end + VMA_CLUSTER_SIZE - 1) / VMA_CLUSTER_SIZE;
    }
    return VMA_OK;
}

int vma_writer_write_device_source(vma_writer *w, unsigned dev_id, vma_source *s)
{
    const char *name = NULL;
    uint64_t size = vmai_writer_device_size(w, dev_id, &name);
    if (size == 0)
        return vma_writer_write_cluster(w, dev_id, 0, NULL); /* reports the bad dev_id */
    struct producer p = { .w = w, .dev_id = dev_id, .name = name, .s = s,
                          .cancel = vmai_writer_cancel_switch(w) };
    struct nbd_handle *h = s ? s->h : NULL;
    if (h == NULL)
        return pfail(&p, VMA_ERR_INVALID, "source of device '%s' is not open", name);
    uint64_t source_size = vma_source_size(s);
    if (source_size > size)
        return pfail(&p, VMA_ERR_INVALID, "source of device '%s' has %llu bytes, more than "
                     "its size %llu", name, (unsigned long long)source_size,
                     (unsigned long long)size);
    p.clusters = vmai_cluster_count(source_size);
    p.max_request = REQUEST_MAX;
    if (s->max_request >= VMA_CLUSTER_SIZE && s->max_request < REQUEST_MAX)
        p.max_request = s->max_request / VMA_CLUSTER_SIZE * VMA_CLUSTER_SIZE;
    if (!s->status)
        p.known = source_size; /* no block status: all data */
    p.ext_start = 0;
    if (!s->status && p.known > 0) {
        p.ext = malloc(sizeof(*p.ext));
        if (p.ext == NULL)
            return pfail(&p, VMA_ERR_NOMEM, "out of memory");
        p.ext[0] = (struct extent){ .end = source_size, .zero = false };
        p.count = p.cap = 1;
    }

    int rc = VMA_OK;
    for (;;) {
        if (vmai_cancelled(p.cancel)) {
            rc = pfail(&p, VMA_ERR_CANCELED, "cancelled while reading device '%s'", name);
            break;
        }
        if ((rc = retire(&p)) != VMA_OK || (rc = ask_status(&p)) != VMA_OK ||
            (rc = issue(&p)) != VMA_OK)
            break;
        if (p.next >= p.clusters && p.busy == 0)
            break;
        if (nbd_aio_in_flight(h) == 0 && p.status_cookie == 0) {
            /* Nothing to wait for, yet not done: cannot happen unless the
             * server stopped answering block status with progress. */
            if (p.known < source_size)
                continue;
            rc = pfail(&p, VMA_ERR_IO, "source of device '%s' stalled at offset %llu", name,
                       (unsigned long long)(p.next * VMA_CLUSTER_SIZE));
            break;
        }
        unsigned dir = nbd_aio_get_direction(h);
        struct pollfd pfd[2] = {
            { .fd = nbd_aio_get_fd(h),
              .events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                                ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)) },
            { .fd = p.cancel->fd, .events = POLLIN },
        };
        if (pfd[0].fd < 0) {
            rc = pfail(&p, VMA_ERR_IO, "connection for device '%s' lost: %s", name, nbd_msg());
            break;
        }
        int n = poll(pfd, p.cancel->fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno != EINTR) {
            rc = pfail(&p, VMA_ERR_IO, "poll: %s", strerror(errno));
            break;
        }
        if (n <= 0)
            continue;
        int r = 0;
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
            r = nbd_aio_notify_read(h);
        else if (pfd[0].revents & POLLOUT)
            r = nbd_aio_notify_write(h);
        if (r < 0) {
            rc = pfail(&p, VMA_ERR_IO, "connection for device '%s' failed: %s", name, nbd_msg());
            break;
        }
    }
    /* Past the source's end (a device rounded up): zeros. */
    for (uint64_t n = p.clusters; rc == VMA_OK && n < vmai_cluster_count(size); n++)
        rc = vma_writer_write_cluster(w, dev_id, n, NULL);
    if (rc == VMA_OK)
        rc = vma_writer_close_device(w, dev_id);
    else
        disconnect(s, false); /* reads in flight must not land in freed buffers */
    for (unsigned i = 0; i < WINDOW; i++)
        free(p.slot[i].buf);
    free(p.ext);
    return rc;
}
