/*
 * A device source read through NBD (libnbd): qemu-nbd serves any image
 * format read-only, or an nbd:// URI names an export. The cluster
 * producer asks the server which extents read as zero (block status,
 * "base:allocation") and hands those to the writer as all-zero clusters
 * without reading them; data is read with a bounded window of requests in
 * flight, and each finished read goes to the writer at once, so clusters
 * arrive out of order. One thread: lib/nbd.c waits on the libnbd socket,
 * qemu-nbd's stderr and the writer's cancel eventfd together.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "io.h"
#include "nbd.h"
#include "writer_internal.h"

#ifdef VMA_HAVE_NBD /* the rest needs libnbd */

#include "libnbd_load.h"

/* libnbd's message without its "nbd_aio_pread: " style prefix. */
static const char *nbd_msg(void)
{
    const char *m = nbd_get_error();
    const char *colon = m ? strstr(m, ": ") : NULL;
    if (m == NULL)
        return "unknown NBD error";
    return colon && strncmp(m, "nbd_", 4) == 0 ? colon + 2 : m;
}

/* Why a command failed on the server. */
static const char *cmd_error(void)
{
    int e = nbd_get_errno();
    return e ? strerror(e) : nbd_msg();
}

/* ---- the source: a connection of lib/nbd.c ---- */

struct vma_source {
    struct vmai_nbd *c;
    char err[VMAI_ERRLEN];
    uint64_t size;
    uint64_t max_request;    /* the server's limit, or 0 */
    bool status;             /* the server answers "base:allocation" */
    bool used;               /* open was called */
    struct vmai_cancel cancel;
    struct vmai_owner owner; /* the process that made it */
};

vma_source *vma_source_new(void)
{
    vma_source *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    vmai_cancel_open(&s->cancel); /* without it, a cancel only sets the flag */
    vmai_owner_set(&s->owner);
    return s;
}

void vma_source_free(vma_source *s)
{
    if (s == NULL)
        return;
    /* In a child after fork(): the connection and its qemu-nbd are the
     * parent's (stopping it would end the parent's backup). Left alone. */
    if (!vmai_same_process(&s->owner) && s->c != NULL)
        return;
    vmai_nbd_close(s->c); /* stops and reaps qemu-nbd */
    vmai_cancel_close(&s->cancel);
    free(s);
}

const char *vma_source_error(const vma_source *s) { return s->err; }
uint64_t vma_source_size(const vma_source *s) { return s->size; }
void vma_source_cancel(vma_source *s)
{
    if (vmai_same_process(&s->owner)) /* the eventfd is shared with the parent */
        vmai_cancel_fire(&s->cancel);
}

/* In a child after fork(): refused, the connection untouched. */
static int sforked(vma_source *s)
{
    if (!vmai_other_process(&s->owner, "source", s->err))
        return VMA_OK;
    vmai_set_last_error(s->err);
    return VMA_ERR_INVALID;
}

static int sfail(vma_source *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int sfail(vma_source *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
    vmai_set_last_error(s->err);
    vmai_nbd_close(s->c);
    s->c = NULL;
    return status;
}

int vma_source_open(vma_source *s, const char *format, const char *path)
{
    char why[VMAI_ERRLEN];
    if (sforked(s) != VMA_OK)
        return VMA_ERR_INVALID;
    if (s->used)
        return sfail(s, VMA_ERR_INVALID, "the source was already opened");
    s->used = true;
    if (format == NULL || path == NULL || *format == '\0')
        return sfail(s, VMA_ERR_INVALID, "%s: no format given", path ? path : "(null)");
    if (!vma_path_needs_nbd(format, path))
        return sfail(s, VMA_ERR_INVALID, "%s: a raw file or block device, read directly "
                     "(vma_writer_write_device_fd), not through NBD", path);
    if (vmai_nbd_open(&s->c, format, path, VMAI_NBD_READONLY | VMAI_NBD_BLOCK_STATUS,
                      &s->cancel, why) != 0) {
        if (vmai_cancelled(&s->cancel))
            return sfail(s, VMA_ERR_CANCELED, "%s: cancelled", path);
        return sfail(s, strstr(why, "not found in PATH") ? VMA_ERR_NOT_FOUND : VMA_ERR_IO,
                     "%s: cannot open as %s: %s", path, format, why);
    }
    struct nbd_handle *h = vmai_nbd_handle(s->c);
    s->size = vmai_nbd_size(s->c);
    s->status = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    s->max_request = max > 0 ? (uint64_t)max : 0;
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

/* What block status told so far: contiguous extents up to `known`, each
 * data or zero (adjacent ones of a kind merged). */
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
    struct extent *ext;      /* ext[head..count) cover up to `known` */
    size_t head, count, cap;
    uint64_t known;
    int64_t status_cookie;   /* 0: no block status in flight */
    uint64_t status_from;    /* where it starts */
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
    while (p->head < p->count && p->ext[p->head].end <= off)
        p->head++;
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
    p->status_from = p->known;
    p->status_cookie = nbd_aio_block_status(vmai_nbd_handle(p->s->c), count, p->known,
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
    struct nbd_handle *h = vmai_nbd_handle(p->s->c);
    for (unsigned i = 0; i < WINDOW; i++) {
        struct slot *sl = &p->slot[i];
        if (sl->cookie == 0)
            continue;
        int r = nbd_aio_command_completed(h, (uint64_t)sl->cookie);
        if (r < 0)
            return pfail(p, VMA_ERR_IO, "read error on the source of device '%s' at offset "
                         "%llu: %s", p->name, (unsigned long long)sl->off, cmd_error());
        if (r == 1 && deliver(p, sl) != VMA_OK)
            return VMA_ERR_IO; /* the writer keeps its own status */
    }
    if (p->status_cookie != 0) {
        int r = nbd_aio_command_completed(h, (uint64_t)p->status_cookie);
        if (r < 0 || p->status_failed)
            return pfail(p, p->status_failed ? VMA_ERR_NOMEM : VMA_ERR_IO,
                         "block status of device '%s' at offset %llu: %s", p->name,
                         (unsigned long long)p->known,
                         p->status_failed ? "out of memory" : cmd_error());
        if (r == 1) {
            p->status_cookie = 0;
            if (p->known == p->status_from) /* else we would ask forever */
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
    struct nbd_handle *h = vmai_nbd_handle(p->s->c);
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
    uint64_t size = 0;
    int rc = vmai_writer_whole_device(w, dev_id, &name, &size);
    if (rc != VMA_OK)
        return rc;
    struct producer p = { .w = w, .dev_id = dev_id, .name = name, .s = s,
                          .cancel = vmai_writer_cancel_switch(w) };
    char why[VMAI_ERRLEN];
    /* Argument errors are refusals: nothing read or written, the writer
     * (and the source) usable. */
    if (s == NULL || s->c == NULL) {
        snprintf(why, sizeof(why), "source of device '%s' is not open", name);
        return vmai_writer_refuse(w, VMA_ERR_INVALID, why);
    }
    if (vmai_other_process(&s->owner, "source", why))
        return vmai_writer_refuse(w, VMA_ERR_INVALID, why);
    struct nbd_handle *h = vmai_nbd_handle(s->c);
    uint64_t source_size = vma_source_size(s);
    if (source_size > size) {
        snprintf(why, sizeof(why), "source of device '%s' has %llu bytes, more than its size "
                 "%llu", name, (unsigned long long)source_size, (unsigned long long)size);
        return vmai_writer_refuse(w, VMA_ERR_INVALID, why);
    }
    p.clusters = vmai_cluster_count(source_size);
    p.max_request = REQUEST_MAX;
    if (s->max_request >= VMA_CLUSTER_SIZE && s->max_request < REQUEST_MAX)
        p.max_request = s->max_request / VMA_CLUSTER_SIZE * VMA_CLUSTER_SIZE;
    if (!s->status)
        p.known = source_size; /* no block status: all data */
    if (!s->status && p.known > 0) {
        p.ext = malloc(sizeof(*p.ext));
        if (p.ext == NULL)
            return pfail(&p, VMA_ERR_NOMEM, "out of memory");
        p.ext[0] = (struct extent){ .end = source_size, .zero = false };
        p.count = p.cap = 1;
    }

    vmai_nbd_set_cancel(s->c, p.cancel); /* vma_writer_cancel() stops every wait */
    for (;;) {
        if (vmai_cancelled(p.cancel)) {
            rc = pfail(&p, VMA_ERR_CANCELED, "cancelled while reading device '%s'", name);
            break;
        }
        if ((rc = retire(&p)) != VMA_OK || (rc = issue(&p)) != VMA_OK ||
            (rc = ask_status(&p)) != VMA_OK)
            break;
        if (p.next >= p.clusters && p.busy == 0)
            break;
        if (nbd_aio_in_flight(h) <= 0) {
            if (p.busy > 0 || p.status_cookie != 0)
                continue; /* completed, retired above */
            rc = pfail(&p, VMA_ERR_IO, "source of device '%s' stalled at offset %llu", name,
                       (unsigned long long)(p.next * VMA_CLUSTER_SIZE));
            break;
        }
        if (vmai_nbd_poll(s->c, why) != 0) {
            rc = pfail(&p, vmai_cancelled(p.cancel) ? VMA_ERR_CANCELED : VMA_ERR_IO,
                       "reading device '%s' at offset %llu: %s", name,
                       (unsigned long long)(p.next * VMA_CLUSTER_SIZE), why);
            break;
        }
    }
    /* Past the source's end (a device rounded up): zeros. */
    for (uint64_t n = p.clusters; rc == VMA_OK && n < vmai_cluster_count(size); n++)
        rc = vma_writer_write_cluster(w, dev_id, n, NULL);
    /* A clean end checks qemu-nbd's exit; after a failure it is stopped,
     * so that no read in flight lands in the freed buffers. */
    if (rc == VMA_OK && vmai_nbd_finish(s->c, why) != 0)
        rc = pfail(&p, vmai_cancelled(p.cancel) ? VMA_ERR_CANCELED : VMA_ERR_IO,
                   "source of device '%s': %s", name, why);
    vmai_nbd_close(s->c);
    s->c = NULL;
    if (rc == VMA_OK)
        rc = vma_writer_close_device(w, dev_id);
    for (unsigned i = 0; i < WINDOW; i++)
        free(p.slot[i].buf);
    free(p.ext);
    return rc;
}

#else /* built without libnbd: the calls exist and say why they fail */

struct vma_source {
    char err[VMAI_ERRLEN];
};

vma_source *vma_source_new(void) { return calloc(1, sizeof(vma_source)); }
void vma_source_free(vma_source *s) { free(s); }
const char *vma_source_error(const vma_source *s) { return s->err; }
uint64_t vma_source_size(const vma_source *s) { (void)s; return 0; }
void vma_source_cancel(vma_source *s) { (void)s; }

int vma_source_open(vma_source *s, const char *format, const char *path)
{
    snprintf(s->err, sizeof(s->err), "%s: cannot read %s images: libvma was built without "
             "NBD support (libnbd)", path ? path : "(null)", format ? format : "raw");
    vmai_set_last_error(s->err);
    return VMA_ERR_INVALID;
}

int vma_writer_write_device_source(vma_writer *w, unsigned dev_id, vma_source *s)
{
    (void)dev_id;
    (void)s;
    return vmai_writer_refuse(w, VMA_ERR_INVALID, "built without NBD support (libnbd)");
}

#endif
