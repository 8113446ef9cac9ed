/*
 * The archive reader: opens the byte stream, parses and checks the header,
 * then streams the extents and enforces every rule of the format (known
 * devices, cluster range, no duplicates, vmstate order, truncation, no
 * missing cluster at the end). Memory: sparse cluster sets that grow with
 * the clusters read (at most one bit per cluster once a range is dense),
 * bounded by the bytes read, plus one extent buffer.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reader_internal.h"

vma_reader *vma_reader_new(void)
{
    vma_reader *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->fd = -1;
    vmai_owner_set(&r->owner);
    /* Without an eventfd (out of descriptors) a cancel still works, only a
     * wait on an idle pipe in another thread is not cut short. */
    vmai_cancel_open(&r->cancel);
    return r;
}

void vma_reader_free(vma_reader *r)
{
    if (r == NULL)
        return;
    /* In a child after fork(): an input's threads are not here to join,
     * and the targets' files and commands are the parent's; they are left
     * to the child's exit. Without them (a vma_image after its open, as a
     * daemonized vma mount has it) the child's copy is freed as usual. */
    bool targets = false;
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++)
        targets = targets || r->targets[i] != NULL;
    if (!vmai_same_process(&r->owner) && (r->in != NULL || targets))
        return;
    vmai_targets_free(r);
    vmai_input_free(r->in);
    vmai_salvage_free(r->salvage);
    vmai_cancel_close(&r->cancel);
    if (r->own_fd && r->fd >= 0)
        close(r->fd);
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++)
        vmai_cset_free(&r->seen[i]);
    free(r->header_buf);
    free(r->extent_head);
    for (unsigned i = 0; i < VMAI_EXTENT_RING; i++)
        free(r->extent_bufs[i]); /* extent_data is one of them */
    free(r);
}

int vmai_reader_fail(vma_reader *r, int status, const char *fmt, ...)
{
    if (r->status == VMA_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, sizeof(r->err), fmt, ap);
        va_end(ap);
        r->status = status;
    }
    vmai_set_last_error(r->err);
    return r->status;
}

int vmai_reader_refuse(vma_reader *r, int status, const char *fmt, ...)
{
    if (r->status != VMA_OK) /* already ended: keep its first message */
        return vmai_reader_fail(r, r->status, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof(r->err), fmt, ap);
    va_end(ap);
    vmai_set_last_error(r->err);
    return status;
}

int vma_reader_status(const vma_reader *r) { return r->status; }

const char *vma_reader_error(const vma_reader *r) { return r->err; }

void vma_reader_cancel(vma_reader *r)
{
    if (vmai_same_process(&r->owner)) /* the eventfd is shared with the parent */
        vmai_cancel_fire(&r->cancel);
}

int vmai_reader_forked(vma_reader *r)
{
    if (!vmai_other_process(&r->owner, "reader", r->err))
        return VMA_OK;
    vmai_set_last_error(r->err);
    return VMA_ERR_INVALID;
}

/* Read exactly len bytes of the header at offset `at`, of a header of
 * `total` bytes; a short read is truncation. */
static int read_header_part(vma_reader *r, unsigned char *buf, size_t len, size_t at,
                            size_t total)
{
    char err[VMAI_ERRLEN];
    ssize_t n = vmai_input_read(r->in, buf, len, err, sizeof(err));
    if (n < 0)
        return vmai_reader_fail(r, (int)n, "in the header at offset %zu: %s", at, err);
    if ((size_t)n < len) {
        /* Only what starts like a VMA header is a truncated one (an empty
         * file could be either: it stays "truncated"). */
        static const unsigned char magic[4] = {'V', 'M', 'A', 0};
        size_t m = (size_t)n < sizeof(magic) ? (size_t)n : sizeof(magic);
        if (at == 0 && n > 0 && memcmp(buf, magic, m) != 0)
            return vmai_reader_fail(r, VMA_ERR_CORRUPT,
                                    "not a VMA archive (%zu bytes, shorter than a header)",
                                    (size_t)n);
        return vmai_reader_fail(r, VMA_ERR_TRUNCATED,
                                "archive truncated inside the header: %zu of %zu bytes",
                                at + (size_t)n, total);
    }
    return VMA_OK;
}

/* The input layer's view of open_callback's source. */
static ssize_t call_source(void *opaque, void *buf, size_t len)
{
    vma_reader *r = opaque;
    return (ssize_t)r->read_fn(r->read_opaque, buf, len);
}

static int open_header(vma_reader *r)
{
    char err[VMAI_ERRLEN];
    /* An input from memory is opened by vma_reader_open_memory(). */
    int rc = VMA_OK;
    if (r->in == NULL && r->read_fn != NULL)
        rc = vmai_input_open_ex(&r->in, -1, call_source, r, &r->cancel, r->salvage != NULL,
                                err, sizeof(err));
    else if (r->in == NULL)
        rc = vmai_input_open_ex(&r->in, r->fd, NULL, NULL, &r->cancel, r->salvage != NULL,
                                err, sizeof(err));
    if (rc != VMA_OK)
        return vmai_reader_fail(r, rc, "%s", err);
    unsigned char *fixed = malloc(VMA_HEADER_FIXED_SIZE);
    if (fixed == NULL)
        return vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory");
    rc = read_header_part(r, fixed, VMA_HEADER_FIXED_SIZE, 0, VMA_HEADER_FIXED_SIZE);
    uint32_t hsize = 0;
    if (rc == VMA_OK) {
        rc = vmai_header_prefix(fixed, VMA_HEADER_FIXED_SIZE, &hsize, err, sizeof(err));
        if (rc != VMA_OK)
            vmai_reader_fail(r, rc, "%s", err);
    }
    if (rc != VMA_OK) {
        free(fixed);
        return r->status;
    }
    /* hsize is bounded by VMA_MAX_HEADER_SIZE, checked above. The buffer
     * doubles as the bytes come, so a short file that declares a 32 MiB
     * header costs no more than twice what it holds. */
    unsigned char *buf = fixed;
    size_t have = VMA_HEADER_FIXED_SIZE;
    while (have < hsize) {
        size_t step = have < hsize - have ? have : hsize - have;
        unsigned char *bigger = realloc(buf, have + step);
        if (bigger == NULL) {
            free(buf);
            return vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory for a %u-byte header",
                                    hsize);
        }
        buf = bigger;
        if ((rc = read_header_part(r, buf + have, step, have, hsize)) != VMA_OK) {
            free(buf);
            return rc;
        }
        have += step;
    }
    r->header_buf = buf;
    rc = vmai_salvage_header(r, buf, hsize, err, sizeof(err));
    if (rc != VMA_OK)
        return vmai_reader_fail(r, rc, "%s", err);
    r->offset = hsize;
    r->opened = true;
    return VMA_OK;
}

/* A failed open keeps nothing (read-ahead threads, buffers, descriptor)
 * and leaves the reader unopened: another open may be tried, unless the
 * reader was cancelled. */
static int open_failed(vma_reader *r, int rc)
{
    vmai_input_free(r->in);
    r->in = NULL;
    free(r->header_buf);
    r->header_buf = NULL;
    memset(&r->hdr, 0, sizeof(r->hdr));
    if (r->own_fd)
        close(r->fd);
    r->fd = -1;
    r->own_fd = false;
    r->read_fn = NULL;
    if (r->status != VMA_ERR_CANCELED)
        r->status = VMA_OK;
    return rc;
}

static int open_checked(vma_reader *r)
{
    int rc = open_header(r);
    return rc == VMA_OK ? rc : open_failed(r, rc);
}

/* What every open checks first; `bad` (an argument's fault) says why. */
static int may_open(vma_reader *r, const char *bad)
{
    if (vmai_reader_forked(r) != VMA_OK)
        return VMA_ERR_INVALID;
    if (r->opened || r->fd >= 0 || r->read_fn != NULL || r->in != NULL)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "reader is already open");
    if (bad != NULL)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "%s", bad);
    if (r->status != VMA_OK)
        return vmai_reader_refuse(r, r->status, "%s", "");
    return VMA_OK;
}

int vma_reader_open_callback(vma_reader *r, vma_read_fn fn, void *opaque)
{
    int rc = may_open(r, fn == NULL ? "no read callback" : NULL);
    if (rc != VMA_OK)
        return rc;
    r->read_fn = fn;
    r->read_opaque = opaque;
    return open_checked(r);
}

/* The bytes are decoded in the caller's thread (lib/input.c's memory
 * input): no copy, no threads, for embedders and the fuzz targets alike. */
int vma_reader_open_memory(vma_reader *r, const void *buf, size_t len)
{
    int rc = may_open(r, buf == NULL && len > 0 ? "no buffer" : NULL);
    if (rc != VMA_OK)
        return rc;
    char err[VMAI_ERRLEN];
    rc = vmai_input_open_memory(&r->in, buf, len, &r->cancel, r->salvage != NULL, err,
                                sizeof(err));
    if (rc != VMA_OK)
        return open_failed(r, vmai_reader_fail(r, rc, "%s", err));
    return open_checked(r);
}

int vma_reader_open_fd(vma_reader *r, int fd)
{
    char bad[64];
    snprintf(bad, sizeof(bad), "bad file descriptor %d", fd);
    int rc = may_open(r, fd < 0 ? bad : NULL);
    if (rc != VMA_OK)
        return rc;
    r->fd = fd;
    return open_checked(r);
}

int vma_reader_open_path(vma_reader *r, const char *path)
{
    int rc = may_open(r, path == NULL ? "no archive path" : NULL);
    if (rc != VMA_OK)
        return rc;
    if (strcmp(path, "-") == 0) {
        /* Closed, descriptor 0 would be whatever is opened next. */
        if (fcntl(STDIN_FILENO, F_GETFD) < 0)
            return vmai_reader_refuse(r, VMA_ERR_IO, "standard input is closed");
        return vma_reader_open_fd(r, STDIN_FILENO);
    }
    /* O_NONBLOCK: open(2) of a FIFO would wait for a writer where a cancel
     * cannot end it; reads wait in poll(2) instead (see vmai_read_some). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return vmai_reader_refuse(r, VMA_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0 || fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return vmai_reader_refuse(r, VMA_ERR_IO, "cannot open %s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return vmai_reader_refuse(r, VMA_ERR_IO, "cannot read %s: it is a directory", path);
    }
    r->fd = fd;
    r->own_fd = true;
    return open_checked(r);
}

/* --- header accessors --- */

void vma_reader_uuid(const vma_reader *r, unsigned char uuid[16])
{
    memcpy(uuid, r->hdr.uuid, 16);
}

int64_t vma_reader_ctime(const vma_reader *r) { return r->hdr.ctime; }

unsigned vma_reader_config_count(const vma_reader *r) { return r->hdr.config_count; }

int vma_reader_config(const vma_reader *r, unsigned index, const char **name,
                      const void **data, size_t *len)
{
    if (index >= r->hdr.config_count)
        return VMA_ERR_NOT_FOUND;
    const struct vmai_config *c = &r->hdr.configs[index];
    if (name != NULL)
        *name = c->name;
    if (data != NULL)
        *data = c->data;
    if (len != NULL)
        *len = c->len;
    return VMA_OK;
}

int vma_reader_find_config(const vma_reader *r, const char *name, const void **data,
                           size_t *len)
{
    for (unsigned i = 0; i < r->hdr.config_count; i++)
        if (name != NULL && strcmp(r->hdr.configs[i].name, name) == 0)
            return vma_reader_config(r, i, NULL, data, len);
    return VMA_ERR_NOT_FOUND;
}

static const struct vmai_device *device(const vma_reader *r, unsigned dev_id)
{
    if (dev_id == 0 || dev_id >= VMA_DEV_SLOTS || r->hdr.devices[dev_id].name == NULL)
        return NULL;
    return &r->hdr.devices[dev_id];
}

unsigned vma_reader_next_device(const vma_reader *r, unsigned after)
{
    for (unsigned i = after + 1; i < VMA_DEV_SLOTS; i++)
        if (device(r, i) != NULL)
            return i;
    return 0;
}

const char *vma_reader_device_name(const vma_reader *r, unsigned dev_id)
{
    const struct vmai_device *d = device(r, dev_id);
    return d ? d->name : NULL;
}

uint64_t vma_reader_device_size(const vma_reader *r, unsigned dev_id)
{
    const struct vmai_device *d = device(r, dev_id);
    return d ? d->size : 0;
}

int vma_reader_device_is_vmstate(const vma_reader *r, unsigned dev_id)
{
    const struct vmai_device *d = device(r, dev_id);
    return d ? d->is_vmstate : 0;
}

unsigned vma_reader_find_device(const vma_reader *r, const char *name)
{
    for (unsigned i = 1; i < VMA_DEV_SLOTS; i++)
        if (name != NULL && device(r, i) != NULL && strcmp(r->hdr.devices[i].name, name) == 0)
            return i;
    return 0;
}

void vma_reader_set_progress(vma_reader *r, vma_progress_fn fn, void *opaque)
{
    r->progress = fn;
    r->progress_opaque = opaque;
}

void vma_reader_counters(const vma_reader *r, uint64_t *clusters, uint64_t *zero_cluster_bytes,
                         uint64_t *zero_block_bytes)
{
    if (clusters != NULL)
        *clusters = atomic_load_explicit(&r->clusters, memory_order_relaxed);
    if (zero_cluster_bytes != NULL)
        *zero_cluster_bytes = atomic_load_explicit(&r->zero_cluster_bytes, memory_order_relaxed);
    if (zero_block_bytes != NULL)
        *zero_block_bytes = atomic_load_explicit(&r->zero_block_bytes, memory_order_relaxed);
}

/* --- the extent stream --- */

static int alloc_stream_state(vma_reader *r)
{
    r->extent_head = malloc(VMA_EXTENT_HEADER_SIZE);
    if (r->extent_head == NULL)
        return vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory for the extent buffer");
    for (unsigned i = 1; i < VMA_DEV_SLOTS; i++) {
        const struct vmai_device *d = device(r, i);
        if (d == NULL || d->is_vmstate)
            continue;
        if (vmai_cset_init(&r->seen[i], vmai_cluster_count(d->size), &r->seen_mem) != 0)
            return vmai_reader_fail(r, VMA_ERR_NOMEM,
                                    "out of memory for the cluster map of device '%s'", d->name);
    }
    return VMA_OK;
}

/* Apply the per-cluster rules to one blockinfo entry. */
static int check_cluster(vma_reader *r, const struct vmai_blockinfo *bi, unsigned slot,
                         uint64_t extent_no, uint64_t extent_off)
{
    const struct vmai_device *d = device(r, bi->dev_id);
    if (d == NULL)
        return vmai_reader_fail(r, VMA_ERR_CORRUPT,
                                "extent %llu at offset %llu, entry %u: unknown dev_id %u",
                                (unsigned long long)extent_no, (unsigned long long)extent_off,
                                slot, bi->dev_id);
    if (d->is_vmstate) {
        if (bi->cluster_num != r->vmstate_next[bi->dev_id])
            return vmai_reader_fail(
                r, VMA_ERR_CORRUPT,
                "extent %llu at offset %llu: vmstate cluster %u out of order "
                "(expected %llu) on device '%s'",
                (unsigned long long)extent_no, (unsigned long long)extent_off, bi->cluster_num,
                (unsigned long long)r->vmstate_next[bi->dev_id], d->name);
        r->vmstate_next[bi->dev_id]++;
        return VMA_OK;
    }
    uint64_t n = bi->cluster_num;
    if (n >= vmai_cluster_count(d->size))
        return vmai_reader_fail(r, VMA_ERR_CORRUPT,
                                "extent %llu at offset %llu: cluster %llu is past the end of "
                                "device '%s' (%llu clusters)",
                                (unsigned long long)extent_no, (unsigned long long)extent_off,
                                (unsigned long long)n, d->name,
                                (unsigned long long)vmai_cluster_count(d->size));
    int added = vmai_cset_insert(&r->seen[bi->dev_id], n);
    if (added < 0)
        return vmai_reader_fail(r, VMA_ERR_NOMEM,
                                "extent %llu at offset %llu: out of memory for the cluster map "
                                "of device '%s'",
                                (unsigned long long)extent_no, (unsigned long long)extent_off,
                                d->name);
    if (added == 0)
        return vmai_reader_fail(r, VMA_ERR_CORRUPT,
                                "extent %llu at offset %llu: duplicate cluster %llu of device "
                                "'%s'",
                                (unsigned long long)extent_no, (unsigned long long)extent_off,
                                (unsigned long long)n, d->name);
    /* A real archive costs at least 8.7 bytes per cluster it names and
     * its sets end as one bit per cluster: only clusters scattered on
     * purpose outgrow the floor plus 1/64 of the bytes read. */
    uint64_t budget = VMA_READER_MAP_FLOOR + extent_off / VMA_READER_MAP_RATIO;
    if (r->seen_mem > budget)
        return vmai_reader_fail(r, VMA_ERR_LIMIT,
                                "extent %llu at offset %llu: the cluster maps need %zu KiB, "
                                "more than %llu MiB plus 1/%u of the bytes read (clusters "
                                "scattered over huge devices); device '%s', cluster %llu",
                                (unsigned long long)extent_no, (unsigned long long)extent_off,
                                r->seen_mem / 1024,
                                (unsigned long long)(VMA_READER_MAP_FLOOR >> 20),
                                VMA_READER_MAP_RATIO, d->name, (unsigned long long)n);
    return VMA_OK;
}

static int check_complete(vma_reader *r, uint64_t extents)
{
    if (extents == 0)
        return vmai_reader_fail(r, VMA_ERR_TRUNCATED,
                                "archive truncated: it ends after the header at offset %llu "
                                "without any extent",
                                (unsigned long long)r->offset);
    for (unsigned i = 1; i < VMA_DEV_SLOTS; i++) {
        const struct vmai_cset *s = &r->seen[i];
        uint64_t missing = vmai_cset_first_missing(s);
        if (missing < s->count)
            return vmai_reader_fail(r, VMA_ERR_TRUNCATED,
                                    "device '%s' is missing cluster %llu of %llu (archive "
                                    "truncated or damaged; it ends at offset %llu)",
                                    r->hdr.devices[i].name, (unsigned long long)missing,
                                    (unsigned long long)s->count, (unsigned long long)r->offset);
    }
    return VMA_OK;
}

int vmai_reader_extent_buffer(vma_reader *r, size_t len)
{
    if (r->extent_ring > 1) {
        unsigned next = (r->extent_slot + 1) % r->extent_ring;
        int rc = r->extent_reuse != NULL ? r->extent_reuse(r, next) : VMA_OK;
        if (rc != VMA_OK)
            return rc;
        r->extent_slot = next;
        r->extent_data = r->extent_bufs[next];
        r->extent_cap = r->extent_caps[next];
    }
    if (len <= r->extent_cap && r->extent_data != NULL)
        return VMA_OK;
    /* Grown with the extents (a small archive needs no 3.8 MB, and ASan
     * sees reads past the data), but in few steps: each new buffer is
     * page-faulted in again by the read(2) that fills it, which made
     * plain verify twice as slow. Small ones double; past 1 MiB it is the
     * largest extent's data at once. (Transparent huge pages for it were
     * tried: a few % faster, but each one can stall in the kernel's
     * compaction, and a process with many readers crawled.) The
     * restore's merged writes were flushed by extent_done(). */
    const size_t big = (size_t)1 << 20;
    const size_t max = VMA_MAX_EXTENT_SIZE - VMA_EXTENT_HEADER_SIZE;
    size_t cap = len > 2 * r->extent_cap ? len : 2 * r->extent_cap;
    if (cap < VMA_BLOCK_SIZE)
        cap = VMA_BLOCK_SIZE;
    if (cap > big)
        cap = len > max ? len : max;
    free(r->extent_data);
    r->extent_cap = r->extent_caps[r->extent_slot] = 0;
    if (posix_memalign((void **)&r->extent_data, 4096, cap) != 0) {
        r->extent_data = r->extent_bufs[r->extent_slot] = NULL;
        return vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory for the extent buffer");
    }
    r->extent_bufs[r->extent_slot] = r->extent_data;
    r->extent_cap = r->extent_caps[r->extent_slot] = cap;
    return VMA_OK;
}

/* Read one extent into the buffers; returns 1 at clean end of file. With
 * keep false its data is read (so that a verify reads every byte) but not
 * kept. */
static int read_extent(vma_reader *r, uint64_t extent_no, struct vmai_extent *e, bool keep)
{
    char err[VMAI_ERRLEN];
    ssize_t n = vmai_input_read(r->in, r->extent_head, VMA_EXTENT_HEADER_SIZE, err, sizeof(err));
    if (n < 0)
        return vmai_reader_fail(r, (int)n, "extent %llu at offset %llu: %s",
                                (unsigned long long)extent_no, (unsigned long long)r->offset, err);
    if (n == 0)
        return 1;
    if (n < (ssize_t)VMA_EXTENT_HEADER_SIZE)
        return vmai_reader_fail(r, VMA_ERR_TRUNCATED,
                                "archive truncated inside the header of extent %llu at offset "
                                "%llu (%zd of 512 bytes)",
                                (unsigned long long)extent_no, (unsigned long long)r->offset, n);
    int rc = vmai_extent_parse(r->extent_head, r->hdr.uuid, e, err, sizeof(err));
    if (rc != VMA_OK)
        return vmai_reader_fail(r, rc, "extent %llu at offset %llu: %s",
                                (unsigned long long)extent_no, (unsigned long long)r->offset,
                                err);
    size_t len = (size_t)e->block_count * VMA_BLOCK_SIZE;
    if (keep && (rc = vmai_reader_extent_buffer(r, len)) != VMA_OK)
        return rc;
    n = vmai_input_read(r->in, keep ? r->extent_data : NULL, len, err, sizeof(err));
    if (n < 0)
        return vmai_reader_fail(r, (int)n, "in the data of extent %llu at offset %llu: %s",
                                (unsigned long long)extent_no, (unsigned long long)r->offset, err);
    if ((size_t)n < len)
        return vmai_reader_fail(r, VMA_ERR_TRUNCATED,
                                "archive truncated inside the data of extent %llu at offset "
                                "%llu (%zd of %zu data bytes)",
                                (unsigned long long)extent_no, (unsigned long long)r->offset, n,
                                len);
    return VMA_OK;
}

/* The failure of a read cancelled while it hands out the cluster bi. */
static int cancelled_at(vma_reader *r, const struct vmai_blockinfo *bi, uint64_t extent_no)
{
    return vmai_reader_fail(r, VMA_ERR_CANCELED,
                            "cancelled at cluster %u of device %u in extent %llu (offset %llu)",
                            bi->cluster_num, bi->dev_id, (unsigned long long)extent_no,
                            (unsigned long long)r->offset);
}

/* The counters are read from other threads (vma_reader_counters()):
 * relaxed atomics, written by the reading thread only. Returns the sum. */
static uint64_t counter_add(_Atomic uint64_t *c, uint64_t n)
{
    uint64_t v = atomic_load_explicit(c, memory_order_relaxed) + n;
    atomic_store_explicit(c, v, memory_order_relaxed);
    return v;
}

uint64_t vmai_reader_count_cluster(vma_reader *r, unsigned dev_id, uint32_t cluster, uint16_t mask)
{
    uint64_t size = r->hdr.devices[dev_id].size;
    uint64_t off = (uint64_t)cluster * VMA_CLUSTER_SIZE, stored = 0, zero = 0;
    unsigned zero_blocks = 0; /* of those that begin inside the device */

    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER && off < size; b++, off += VMA_BLOCK_SIZE) {
        uint64_t len = size - off < VMA_BLOCK_SIZE ? size - off : VMA_BLOCK_SIZE;

        if (mask & (1u << b)) {
            stored += len;
        } else {
            zero += len;
            zero_blocks++;
        }
    }
    counter_add(&r->dev_stored[dev_id], stored);
    counter_add(&r->dev_zero[dev_id], zero);
    /* As the deployed tool counts for -v: an all-zero cluster whole (its
     * padding past a device end too), else each zero 4 KiB block that
     * begins inside the device. */
    if (mask == 0)
        counter_add(&r->zero_cluster_bytes, VMA_CLUSTER_SIZE);
    else
        counter_add(&r->zero_block_bytes, (uint64_t)zero_blocks * VMA_BLOCK_SIZE);
    return counter_add(&r->clusters, 1);
}

void vma_reader_device_counters(const vma_reader *r, unsigned dev_id, uint64_t *stored_bytes,
                                uint64_t *zero_bytes)
{
    uint64_t s = 0, z = 0;

    if (dev_id > 0 && dev_id < VMA_DEV_SLOTS) {
        s = atomic_load_explicit(&r->dev_stored[dev_id], memory_order_relaxed);
        z = atomic_load_explicit(&r->dev_zero[dev_id], memory_order_relaxed);
    }
    if (stored_bytes != NULL)
        *stored_bytes = s;
    if (zero_bytes != NULL)
        *zero_bytes = z;
}

int vmai_reader_run(vma_reader *r, vma_cluster_fn fn, void *opaque)
{
    if (vmai_reader_forked(r) != VMA_OK)
        return VMA_ERR_INVALID;
    if (r->status != VMA_OK)
        return r->status;
    if (!r->opened)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "reader is not open");
    if (r->consumed)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "the archive was already read");
    r->consumed = true;
    int rc = alloc_stream_state(r);
    if (rc != VMA_OK)
        return rc;
    if (r->salvage != NULL)
        return vmai_salvage_run(r, fn, opaque);

    /* No consumer of the data (a plain verify): it is read, not kept. */
    bool keep = fn != NULL || r->extent_done != NULL;
    struct vmai_extent e;
    for (uint64_t extent_no = 0;; extent_no++) {
        if (vmai_cancelled(&r->cancel))
            return vmai_reader_fail(r, VMA_ERR_CANCELED, "cancelled at extent %llu (offset %llu)",
                                    (unsigned long long)extent_no,
                                    (unsigned long long)r->offset);
        rc = read_extent(r, extent_no, &e, keep);
        if (rc == 1)
            return check_complete(r, extent_no);
        if (rc != VMA_OK)
            return rc;
        const unsigned char *data = keep ? r->extent_data : NULL;
        size_t data_off = 0; /* of the cluster in the extent's data */
        for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
            const struct vmai_blockinfo *bi = &e.info[i];
            if (bi->dev_id == 0)
                continue;
            /* Before each cluster: no callback starts after a cancel returned. */
            if (vmai_cancelled(&r->cancel))
                return cancelled_at(r, bi, extent_no);
            rc = check_cluster(r, bi, i, extent_no, r->offset);
            if (rc != VMA_OK)
                return rc;
            unsigned stored = vmai_popcount16(bi->mask);
            uint64_t clusters = vmai_reader_count_cluster(r, bi->dev_id, bi->cluster_num, bi->mask);
            if (fn != NULL && fn(opaque, bi->dev_id, bi->cluster_num, bi->mask, data) != 0)
                return vmai_reader_fail(r, VMA_ERR_CALLBACK,
                                        "stopped by the cluster callback at cluster %u of "
                                        "device '%s' in extent %llu at offset %llu",
                                        bi->cluster_num, r->hdr.devices[bi->dev_id].name,
                                        (unsigned long long)extent_no,
                                        (unsigned long long)r->offset);
            data_off += (size_t)stored * VMA_BLOCK_SIZE;
            if (data != NULL)
                data += (size_t)stored * VMA_BLOCK_SIZE;
            if (r->progress != NULL && vmai_cancelled(&r->cancel))
                return cancelled_at(r, bi, extent_no);
            if (r->progress != NULL &&
                r->progress(r->progress_opaque, clusters,
                            r->offset + VMA_EXTENT_HEADER_SIZE + data_off) != 0)
                return vmai_reader_fail(r, VMA_ERR_CALLBACK,
                                        "stopped by the progress callback at extent %llu "
                                        "(offset %llu)",
                                        (unsigned long long)extent_no,
                                        (unsigned long long)r->offset);
        }
        if (r->extent_done != NULL && (rc = r->extent_done(r)) != VMA_OK)
            return rc;
        r->offset += VMA_EXTENT_HEADER_SIZE + (uint64_t)e.block_count * VMA_BLOCK_SIZE;
    }
}

const char *vma_reader_compression(const vma_reader *r)
{
    return r->in != NULL ? vmai_input_codec(r->in) : r->codec != NULL ? r->codec : "none";
}

void vmai_reader_end_input(vma_reader *r)
{
    if (r->in == NULL)
        return;
    r->codec = vmai_input_codec(r->in); /* a static string */
    vmai_input_free(r->in);
    r->in = NULL;
}

int vma_reader_read(vma_reader *r, vma_cluster_fn fn, void *opaque)
{
    return vmai_reader_run(r, fn, opaque);
}
