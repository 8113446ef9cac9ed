/*
 * Restore targets ("sinks"): where each device's clusters go. One switch
 * on the kind of target (restore_cluster(): disk, vmstate, skip; a disk
 * is a file, a block device or an NBD image); zero handling lives here,
 * once:
 *  - new sparse file: zero blocks stay holes;
 *  - existing file or block device: zero blocks punched/zeroed or written
 *    only when asked (map "1:"), else left alone ("0:");
 *  - vmstate: a new file (zero blocks as holes) or a caller's descriptor
 *    (zero blocks as zeros), nothing past the recorded size;
 *  - NBD image (restore_nbd.c): zero blocks sent as write-zeroes when asked;
 *  - skip: nothing is written (the reader still checks every rule).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nbd.h"
#include "reader_internal.h"
#include "restore_nbd.h"
#include "throttle.h"
#include "write_behind.h"

enum target_kind { TARGET_SKIP, TARGET_DISK, TARGET_VMSTATE };

struct vmai_target {
    enum target_kind kind;
    int fd;                 /* -1 for skip */
    int fd_buffered;        /* for unaligned writes when fd is O_DIRECT, else -1 */
    bool own_fd;
    bool write_zeros;
    unsigned zero_mode;     /* 0 punch hole, 1 zero range, 2 write zeros */
    char *created_path;     /* made by target_create: removed on failure */
    uint64_t size;
    uint64_t vmstate_len;   /* vmstate: bytes of the stream so far */
    bool write_behind;      /* keep the page cache from filling up */
    struct vmai_write_behind *wb; /* its thread, from the first write */
    bool may_block;         /* vmstate into a pipe or the like (target_fd) */
    struct vmai_throttle *throttle;
    struct vmai_nbd_target *nbd; /* an NBD target (fd is -1) */
    char *label;            /* the NBD target's path or URI, for messages */
    bool whole_clusters;    /* partly zero clusters staged whole (below) */
    unsigned char *stage;   /* the NBD request buffer being staged, or NULL */
};

/* Partly zero clusters for an image format that allocates whole 64 KiB
 * clusters anyway (qcow2, vmdk, qed) are written whole, zero blocks as
 * zeros, and neighbours together: one NBD request for a run of them
 * instead of one per run of stored blocks (four per cluster on a typical
 * disk), which made qemu-nbd the bottleneck of a qcow2 restore. They are
 * staged right in an NBD request buffer, so nothing copies them again. */
#define STAGE_SIZE (1u << 20)

/* Aligned so O_DIRECT targets can write it. */
static const unsigned char zero_block[VMA_BLOCK_SIZE] __attribute__((aligned(4096)));

static int cancelled(vma_reader *r)
{
    return vmai_reader_fail(r, VMA_ERR_CANCELED, "cancelled in the extent at offset %llu",
                            (unsigned long long)r->offset);
}

/* Wait for the device's bandwidth budget; a cancel ends the wait at once. */
static int throttle(vma_reader *r, struct vmai_target *t, uint64_t bytes)
{
    if (vmai_throttle_wait(t->throttle, bytes, r->clock, &r->cancel) == 0)
        return VMA_OK;
    return cancelled(r);
}

/* --- writes --- */

/* Write-behind (write_behind.c): a multi-GB restore holds a few windows of
 * dirty pages instead of flooding the page cache (and evicting everything
 * else on the host), and the disk starts working early instead of in one
 * big fsync at the end. The thread starts with the first write. */
static void write_behind(struct vmai_target *t, uint64_t off, uint64_t len)
{
    if (!t->write_behind)
        return;
    if (t->wb == NULL && (t->wb = vmai_write_behind_new(t->fd)) == NULL) {
        t->write_behind = false; /* no thread: the final fsync does it all */
        return;
    }
    vmai_write_behind_add(t->wb, off, len);
}

/* An NBD target failed: cancelled, or a message naming device and target. */
static int nbd_failed(vma_reader *r, unsigned dev_id, struct vmai_target *t, const char *err)
{
    if (vmai_cancelled(&r->cancel))
        return vmai_reader_fail(r, VMA_ERR_CANCELED, "cancelled while writing device '%s'",
                                vma_reader_device_name(r, dev_id));
    return vmai_reader_fail(r, VMA_ERR_IO, "device '%s', target %s: %s",
                            vma_reader_device_name(r, dev_id), t->label, err);
}

static int target_pwrite(vma_reader *r, unsigned dev_id, struct vmai_target *t,
                         const void *buf, size_t len, uint64_t off)
{
    if (t->nbd != NULL) {
        char err[VMAI_ERRLEN];
        if (vmai_cancelled(&r->cancel))
            return cancelled(r);
        int rc = throttle(r, t, len);
        if (rc != VMA_OK)
            return rc;
        /* Stored data goes out from the extent buffer itself (the reader
         * takes turns among several, extent_reuse() below); other data
         * (the zero block) is copied. */
        const unsigned char *p = buf;
        unsigned *refs = NULL;
        if (r->extent_ring > 1 && p >= r->extent_data && p < r->extent_data + r->extent_cap)
            refs = &r->extent_refs[r->extent_slot];
        if (vmai_nbd_target_write(t->nbd, buf, len, off, refs, err) != 0)
            return nbd_failed(r, dev_id, t, err);
        return VMA_OK;
    }
    int fd = t->fd;
    /* O_DIRECT needs 4 KiB-aligned offsets and lengths; the tail of a
     * device whose size is not a multiple of 4 KiB goes the buffered way. */
    if (t->fd_buffered >= 0 && (off % VMA_BLOCK_SIZE != 0 || len % VMA_BLOCK_SIZE != 0))
        fd = t->fd_buffered;
    /* Every write (a merged one may cover an extent) looks at the cancel
     * flag first. */
    if (vmai_cancelled(&r->cancel))
        return cancelled(r);
    int rc = throttle(r, t, len);
    if (rc != VMA_OK)
        return rc;
    if (vmai_write_full(fd, buf, len, (int64_t)off, NULL, false) != 0)
        return vmai_reader_fail(r, VMA_ERR_IO,
                                "write to device '%s' at offset %llu (%zu bytes) failed: %s",
                                vma_reader_device_name(r, dev_id), (unsigned long long)off, len,
                                strerror(errno));
    write_behind(t, off, len);
    return VMA_OK;
}

/* Make [off, off+len) read as zeros on an existing target: punch a hole
 * (thin storage gets the space back), else zero the range in place, else
 * write zeros; what the target refused once is not tried again. */
static int target_zero(vma_reader *r, unsigned dev_id, struct vmai_target *t, uint64_t off,
                       uint64_t len)
{
    static const int modes[] = {FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE};
    if (vmai_cancelled(&r->cancel))
        return cancelled(r);
    if (t->nbd != NULL) {
        char err[VMAI_ERRLEN];
        int rc = throttle(r, t, len);
        if (rc != VMA_OK)
            return rc;
        if (vmai_nbd_target_zero(t->nbd, off, len, err) != 0)
            return nbd_failed(r, dev_id, t, err);
        return VMA_OK;
    }
    for (; t->zero_mode < 2; t->zero_mode++) {
        if (fallocate(t->fd, modes[t->zero_mode], (off_t)off, (off_t)len) == 0)
            return throttle(r, t, len);
    }
    while (len > 0) {
        size_t n = len < VMA_BLOCK_SIZE ? (size_t)len : VMA_BLOCK_SIZE;
        int rc = target_pwrite(r, dev_id, t, zero_block, n, off);
        if (rc != VMA_OK)
            return rc;
        off += n;
        len -= n;
    }
    return VMA_OK;
}

/* Write the merged run of stored blocks, if any. */
static int flush_pending(vma_reader *r)
{
    struct vmai_pending_write *p = &r->pending;
    if (p->dev_id == 0)
        return VMA_OK;
    unsigned dev_id = p->dev_id;
    struct vmai_target *t = r->targets[dev_id];
    p->dev_id = 0;
    if (t->stage == NULL || p->data != t->stage)
        return target_pwrite(r, dev_id, t, p->data, p->len, p->off);
    t->stage = NULL; /* handed over, whatever happens */
    char err[VMAI_ERRLEN];
    if (vmai_cancelled(&r->cancel))
        return cancelled(r);
    int rc = throttle(r, t, p->len);
    if (rc != VMA_OK)
        return rc;
    if (vmai_nbd_target_send(t->nbd, p->len, p->off, err) != 0)
        return nbd_failed(r, dev_id, t, err);
    return VMA_OK;
}

/* Large I/O: stored blocks that follow each other both in the extent and on
 * the device (a sequential backup's full clusters) go out as one write of
 * up to an extent's size instead of one per cluster. */
static int queue_write(vma_reader *r, unsigned dev_id, const unsigned char *data, size_t len,
                       uint64_t off)
{
    struct vmai_pending_write *p = &r->pending;
    if (p->dev_id == dev_id && p->off + p->len == off && p->data + p->len == data) {
        p->len += len;
        return VMA_OK;
    }
    int rc = flush_pending(r);
    *p = (struct vmai_pending_write){dev_id, off, data, len};
    return rc;
}

static int extent_done(vma_reader *r) { return flush_pending(r); }

/* The reader is about to read into extent buffer `slot`: wait until the
 * NBD requests sending from it were answered. */
static int extent_reuse(vma_reader *r, unsigned slot)
{
    while (r->extent_refs[slot] > 0) {
        bool waited = false;
        for (unsigned i = 1; i < VMA_DEV_SLOTS && r->extent_refs[slot] > 0; i++) {
            struct vmai_target *t = r->targets[i];
            if (t == NULL || t->nbd == NULL || vmai_nbd_target_in_flight(t->nbd) == 0)
                continue;
            char err[VMAI_ERRLEN];
            if (vmai_nbd_target_wait(t->nbd, err) != 0)
                return nbd_failed(r, i, t, err);
            waited = true;
        }
        if (!waited) /* our own bookkeeping is wrong: never read over data in flight */
            return vmai_reader_fail(r, VMA_ERR_IO,
                                    "extent buffer %u still has %u requests, none in flight",
                                    slot, r->extent_refs[slot]);
    }
    return VMA_OK;
}

/* A partly zero cluster at base, expanded into the target's stage: after
 * the pending write when that is the stage's and ends at base, else as a
 * new pending write. */
static int stage_cluster(vma_reader *r, unsigned dev_id, struct vmai_target *t, uint64_t base,
                         uint16_t mask, const unsigned char *data)
{
    struct vmai_pending_write *p = &r->pending;
    unsigned char *dst;
    if (t->stage != NULL && p->dev_id == dev_id && p->data == t->stage &&
        p->off + p->len == base && p->len + VMA_CLUSTER_SIZE <= STAGE_SIZE) {
        dst = t->stage + p->len;
        p->len += VMA_CLUSTER_SIZE;
    } else {
        int rc = flush_pending(r);
        if (rc != VMA_OK)
            return rc;
        char err[VMAI_ERRLEN];
        if ((t->stage = vmai_nbd_target_buffer(t->nbd, STAGE_SIZE, err)) == NULL)
            return nbd_failed(r, dev_id, t, err);
        dst = t->stage;
        *p = (struct vmai_pending_write){dev_id, base, t->stage, VMA_CLUSTER_SIZE};
    }
    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++, dst += VMA_BLOCK_SIZE) {
        if (mask & (1u << b)) {
            memcpy(dst, data, VMA_BLOCK_SIZE);
            data += VMA_BLOCK_SIZE;
        } else {
            memset(dst, 0, VMA_BLOCK_SIZE);
        }
    }
    return VMA_OK;
}

/* A disk cluster: runs of stored blocks are written with one pwrite each,
 * runs of zero blocks zeroed when asked; nothing past the device end. */
static int disk_cluster(vma_reader *r, unsigned dev_id, struct vmai_target *t,
                        uint32_t cluster_num, uint16_t mask, const unsigned char *data)
{
    uint64_t base = (uint64_t)cluster_num * VMA_CLUSTER_SIZE;
    if (t->whole_clusters && mask != 0 && mask != 0xffff && base + VMA_CLUSTER_SIZE <= t->size)
        return stage_cluster(r, dev_id, t, base, mask, data);
    unsigned b = 0;
    while (b < VMA_BLOCKS_PER_CLUSTER) {
        bool stored = mask & (1u << b);
        unsigned e = b;
        while (e < VMA_BLOCKS_PER_CLUSTER && ((mask & (1u << e)) != 0) == stored)
            e++;
        uint64_t off = base + (uint64_t)b * VMA_BLOCK_SIZE;
        if (off >= t->size)
            break;
        uint64_t len = (uint64_t)(e - b) * VMA_BLOCK_SIZE;
        if (len > t->size - off)
            len = t->size - off;
        int rc = VMA_OK;
        if (stored)
            rc = queue_write(r, dev_id, data, (size_t)len, off);
        else if (t->write_zeros)
            rc = target_zero(r, dev_id, t, off, len);
        if (rc != VMA_OK)
            return rc;
        if (stored)
            data += (size_t)(e - b) * VMA_BLOCK_SIZE;
        b = e;
    }
    return VMA_OK;
}

/* A vmstate cluster: its 16 blocks continue the stream. Bytes past the
 * recorded size are discarded unwritten (the format says the size field
 * cuts the stream, and an archive may carry any number of clusters past
 * it), so disk use never exceeds the size. In a new file zero blocks stay
 * holes (the file is sized at the end); a caller's descriptor, maybe a
 * pipe, gets them as zeros. */
static int vmstate_cluster(vma_reader *r, unsigned dev_id, struct vmai_target *t, uint16_t mask,
                           const unsigned char *data)
{
    bool holes = t->created_path != NULL;
    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++) {
        const unsigned char *src = zero_block;
        if (mask & (1u << b)) {
            src = data;
            data += VMA_BLOCK_SIZE;
        }
        uint64_t pos = t->vmstate_len;
        t->vmstate_len += VMA_BLOCK_SIZE;
        if (pos >= t->size || (holes && src == zero_block))
            continue;
        size_t len = t->size - pos < VMA_BLOCK_SIZE ? (size_t)(t->size - pos) : VMA_BLOCK_SIZE;
        /* A caller's descriptor may be a pipe: a cancel ends its wait. */
        if (vmai_write_full(t->fd, src, len, holes ? (int64_t)pos : -1, &r->cancel,
                            t->may_block) != 0)
            return vmai_reader_fail(r, errno == ECANCELED ? VMA_ERR_CANCELED : VMA_ERR_IO,
                                    "write of vmstate '%s' at byte %llu failed: %s",
                                    vma_reader_device_name(r, dev_id), (unsigned long long)pos,
                                    strerror(errno));
    }
    return VMA_OK;
}

static int restore_cluster(void *opaque, unsigned dev_id, uint32_t cluster_num, uint16_t mask,
                           const unsigned char *data)
{
    vma_reader *r = opaque;
    struct vmai_target *t = r->targets[dev_id];
    switch (t->kind) {
    case TARGET_DISK:
        return disk_cluster(r, dev_id, t, cluster_num, mask, data) != VMA_OK;
    case TARGET_VMSTATE:
        return vmstate_cluster(r, dev_id, t, mask, data) != VMA_OK;
    case TARGET_SKIP:
        break;
    }
    return 0;
}

/* --- setting targets --- */

#define TARGET_FLAGS (VMA_TARGET_WRITE_ZEROS | VMA_TARGET_DIRECT | VMA_TARGET_SYNC)

/* Free dev_id's target (removing a file it created unless the restore
 * succeeded); also undoes a setup that failed half way. */
static void target_drop(vma_reader *r, unsigned dev_id)
{
    struct vmai_target *t = r->targets[dev_id];
    vmai_write_behind_free(t->wb); /* before its fd goes */
    if (t->own_fd && t->fd >= 0)
        close(t->fd);
    if (t->fd_buffered >= 0)
        close(t->fd_buffered);
    vmai_nbd_target_free(t->nbd); /* stops and reaps qemu-nbd */
    free(t->label); /* a stage not sent goes with the NBD target */
    if (t->created_path != NULL && !r->restored)
        unlink(t->created_path);
    free(t->created_path);
    free(t);
    r->targets[dev_id] = NULL;
}

static int target_check(vma_reader *r, unsigned dev_id)
{
    if (vmai_reader_forked(r) != VMA_OK)
        return VMA_ERR_INVALID;
    if (r->status != VMA_OK)
        return r->status;
    if (!r->opened)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "reader is not open");
    if (r->consumed)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "targets must be set before reading");
    if (vma_reader_device_name(r, dev_id) == NULL)
        return vmai_reader_refuse(r, VMA_ERR_NOT_FOUND, "no device with dev_id %u", dev_id);
    if (r->targets[dev_id] != NULL)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "device '%s' already has a target",
                                vma_reader_device_name(r, dev_id));
    return VMA_OK;
}

static struct vmai_target *target_new(vma_reader *r, unsigned dev_id, enum target_kind kind)
{
    struct vmai_target *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    t->kind = kind;
    t->fd = -1;
    t->fd_buffered = -1;
    t->size = vma_reader_device_size(r, dev_id);
    r->targets[dev_id] = t;
    return t;
}

int vma_reader_target_create(vma_reader *r, unsigned dev_id, const char *path)
{
    int rc = target_check(r, dev_id);
    if (rc != VMA_OK)
        return rc;
    const char *name = vma_reader_device_name(r, dev_id);
    bool vmstate = vma_reader_device_is_vmstate(r, dev_id);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return vmai_reader_refuse(r, errno == EEXIST ? VMA_ERR_EXISTS : VMA_ERR_IO,
                                  "cannot create %s for device '%s': %s", path, name,
                                  strerror(errno));
    struct vmai_target *t = target_new(r, dev_id, vmstate ? TARGET_VMSTATE : TARGET_DISK);
    char *copy = strdup(path);
    if (t == NULL || copy == NULL) {
        free(copy);
        close(fd);
        unlink(path);
        return vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory");
    }
    t->fd = fd;
    t->own_fd = true;
    t->created_path = copy;
    t->write_behind = !vmstate;
    /* A new file reads as zeros everywhere: holes, no zero writes. */
    if (!vmstate && ftruncate(fd, (off_t)t->size) != 0) {
        int e = errno;
        target_drop(r, dev_id);
        return vmai_reader_refuse(r, VMA_ERR_IO, "cannot size %s to %llu bytes: %s", path,
                                  (unsigned long long)vma_reader_device_size(r, dev_id),
                                  strerror(e));
    }
    return VMA_OK;
}

/* Length of an open file or block device. */
static int target_length(int fd, uint64_t *len)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    if (S_ISBLK(st.st_mode))
        return ioctl(fd, BLKGETSIZE64, len);
    *len = (uint64_t)st.st_size;
    return 0;
}

#define TARGET_SLACK (4u * 1024 * 1024) /* a target may be this much larger */

/* What every target checks first: the device may get a target and the
 * flags are known. Refusals leave the reader usable. */
static int target_flags_check(vma_reader *r, unsigned dev_id, unsigned flags)
{
    int rc = target_check(r, dev_id);
    if (rc != VMA_OK)
        return rc;
    if (flags & ~TARGET_FLAGS)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "unknown target flags 0x%x",
                                  flags & ~TARGET_FLAGS);
    return VMA_OK;
}

/* ... and a disk target: it is not the vmstate stream. */
static int disk_target_check(vma_reader *r, unsigned dev_id, unsigned flags)
{
    int rc = target_flags_check(r, dev_id, flags);
    if (rc != VMA_OK)
        return rc;
    if (vma_reader_device_is_vmstate(r, dev_id))
        return vmai_reader_refuse(r, VMA_ERR_INVALID,
                                  "the vmstate device '%s' needs a new file (target_create)",
                                  vma_reader_device_name(r, dev_id));
    return VMA_OK;
}

int vma_reader_target_open(vma_reader *r, unsigned dev_id, const char *path, unsigned flags)
{
    int rc = disk_target_check(r, dev_id, flags);
    if (rc != VMA_OK)
        return rc;
    const char *name = vma_reader_device_name(r, dev_id);
    int oflags = O_WRONLY | O_CLOEXEC;
    if (flags & VMA_TARGET_SYNC)
        oflags |= O_DSYNC;
    int fd = open(path, oflags | ((flags & VMA_TARGET_DIRECT) ? O_DIRECT : 0));
    if (fd < 0)
        return vmai_reader_refuse(r, VMA_ERR_IO, "cannot open target %s of device '%s': %s",
                                  path, name, strerror(errno));
    uint64_t len = 0;
    uint64_t size = vma_reader_device_size(r, dev_id);
    if (target_length(fd, &len) != 0) {
        int e = errno;
        close(fd);
        return vmai_reader_refuse(r, VMA_ERR_IO, "cannot get the size of %s: %s", path,
                                  strerror(e));
    }
    if (len < size || len - size > TARGET_SLACK) {
        close(fd);
        return vmai_reader_refuse(r, VMA_ERR_INVALID,
                                  "target %s of device '%s' has %llu bytes; it needs %llu to "
                                  "%llu",
                                  path, name, (unsigned long long)len, (unsigned long long)size,
                                (unsigned long long)(size + TARGET_SLACK));
    }
    struct vmai_target *t = target_new(r, dev_id, TARGET_DISK);
    if (t == NULL) {
        close(fd);
        return r->status;
    }
    t->fd = fd;
    t->own_fd = true;
    t->write_zeros = (flags & VMA_TARGET_WRITE_ZEROS) != 0;
    t->write_behind = !(flags & VMA_TARGET_DIRECT); /* O_DIRECT bypasses the cache anyway */
    if (flags & VMA_TARGET_DIRECT) {
        t->fd_buffered = open(path, oflags);
        if (t->fd_buffered < 0) {
            int e = errno;
            target_drop(r, dev_id);
            return vmai_reader_refuse(r, VMA_ERR_IO, "cannot open target %s: %s", path,
                                      strerror(e));
        }
    }
    return VMA_OK;
}

int vma_reader_target_nbd(vma_reader *r, unsigned dev_id, const char *format,
                          const char *path, unsigned flags)
{
    int rc = disk_target_check(r, dev_id, flags);
    if (rc != VMA_OK)
        return rc;
    const char *name = vma_reader_device_name(r, dev_id);
    if (path == NULL)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "no target path for device '%s'", name);
    if (!vma_path_needs_nbd(format, path))
        return vmai_reader_refuse(r, VMA_ERR_INVALID,
                                  "target %s of device '%s' is a raw file: use target_open",
                                  path, name);
    struct vmai_target *t = target_new(r, dev_id, TARGET_DISK);
    if (t == NULL)
        return r->status;
    if ((t->label = strdup(path)) == NULL)
        return vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory");
    t->write_zeros = (flags & VMA_TARGET_WRITE_ZEROS) != 0;
    char err[VMAI_ERRLEN];
    uint64_t len = 0;
    if (vmai_nbd_target_open(&t->nbd, format, path, flags, &r->cancel, &len, err) != 0) {
        if (vmai_cancelled(&r->cancel))
            return vmai_reader_fail(r, VMA_ERR_CANCELED, "cancelled while opening %s", path);
        target_drop(r, dev_id); /* refused: the device has no target again */
        return vmai_reader_refuse(r, VMA_ERR_IO, "cannot open target %s of device '%s': %s",
                                  path, name, err);
    }
    t->whole_clusters = format != NULL &&
                        (strcmp(format, "qcow2") == 0 || strcmp(format, "vmdk") == 0 ||
                         strcmp(format, "qed") == 0) &&
                        vmai_nbd_target_max_write(t->nbd) >= STAGE_SIZE;
    if (len < t->size || len - t->size > TARGET_SLACK) {
        uint64_t size = t->size;
        target_drop(r, dev_id);
        return vmai_reader_refuse(r, VMA_ERR_INVALID,
                                  "target %s of device '%s' has %llu bytes; it needs %llu to "
                                  "%llu",
                                  path, name, (unsigned long long)len, (unsigned long long)size,
                                  (unsigned long long)(size + TARGET_SLACK));
    }
    return VMA_OK;
}

/* A caller's descriptor as a disk target holds the whole device: a regular
 * file shorter than the device is extended (zero blocks are left alone or
 * punched, never written past its end, so the restore would not), never
 * shrunk; a block device shorter than the device is refused. */
static int fd_disk_size(vma_reader *r, unsigned dev_id, int fd)
{
    const char *name = vma_reader_device_name(r, dev_id);
    uint64_t size = vma_reader_device_size(r, dev_id), len = 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || target_length(fd, &len) != 0)
        return vmai_reader_refuse(r, VMA_ERR_IO, "cannot get the size of descriptor %d for "
                                  "device '%s': %s", fd, name, strerror(errno));
    if (len >= size || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
        return VMA_OK;
    if (S_ISBLK(st.st_mode))
        return vmai_reader_refuse(r, VMA_ERR_INVALID,
                                  "descriptor %d for device '%s' is a block device of %llu "
                                  "bytes; it needs %llu",
                                  fd, name, (unsigned long long)len, (unsigned long long)size);
    if (ftruncate(fd, (off_t)size) != 0)
        return vmai_reader_refuse(r, VMA_ERR_IO,
                                  "descriptor %d for device '%s' has %llu bytes and cannot be "
                                  "extended to %llu: %s",
                                  fd, name, (unsigned long long)len, (unsigned long long)size,
                                  strerror(errno));
    return VMA_OK;
}

int vma_reader_target_fd(vma_reader *r, unsigned dev_id, int fd, unsigned flags)
{
    int rc = target_flags_check(r, dev_id, flags);
    if (rc != VMA_OK)
        return rc;
    if (flags & VMA_TARGET_DIRECT)
        return vmai_reader_refuse(r, VMA_ERR_INVALID,
                                  "VMA_TARGET_DIRECT needs a path (target_open); open the "
                                  "descriptor with O_DIRECT instead");
    int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    if (fl < 0)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "bad file descriptor %d for device '%s'",
                                  fd, vma_reader_device_name(r, dev_id));
    if ((fl & O_ACCMODE) == O_RDONLY)
        return vmai_reader_refuse(r, VMA_ERR_INVALID,
                                  "descriptor %d for device '%s' is not open for writing", fd,
                                  vma_reader_device_name(r, dev_id));
    if (flags & VMA_TARGET_SYNC)
        return vmai_reader_refuse(r, VMA_ERR_INVALID,
                                  "VMA_TARGET_SYNC needs a path (target_open); open the "
                                  "descriptor with O_DSYNC instead");
    bool vmstate = vma_reader_device_is_vmstate(r, dev_id);
    if (!vmstate && (rc = fd_disk_size(r, dev_id, fd)) != VMA_OK)
        return rc;
    struct vmai_target *t = target_new(r, dev_id, vmstate ? TARGET_VMSTATE : TARGET_DISK);
    if (t == NULL)
        return r->status;
    t->fd = fd;
    t->write_zeros = (flags & VMA_TARGET_WRITE_ZEROS) != 0;
    t->may_block = vmstate && vmai_fd_may_block(fd);
    return VMA_OK;
}

int vma_reader_target_skip(vma_reader *r, unsigned dev_id)
{
    int rc = target_check(r, dev_id);
    if (rc != VMA_OK)
        return rc;
    return target_new(r, dev_id, TARGET_SKIP) != NULL ? VMA_OK : r->status;
}

int vma_reader_target_limit(vma_reader *r, unsigned dev_id, uint64_t bytes_per_second,
                            const char *group)
{
    if (vmai_reader_forked(r) != VMA_OK)
        return VMA_ERR_INVALID;
    if (r->status != VMA_OK)
        return r->status;
    struct vmai_target *t = dev_id < VMA_DEV_SLOTS ? r->targets[dev_id] : NULL;
    if (t == NULL)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "device %u has no target to limit",
                                  dev_id);
    struct vmai_throttle *g = vmai_throttle_get(&r->throttles, group, bytes_per_second);
    if (g == NULL)
        return vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory");
    t->throttle = g;
    return VMA_OK;
}

/* --- the restore run --- */

static int targets_finish(vma_reader *r)
{
    for (unsigned i = 1; i < VMA_DEV_SLOTS; i++) {
        struct vmai_target *t = r->targets[i];
        if (t != NULL && t->nbd != NULL) {
            char err[VMAI_ERRLEN];
            int rc = vmai_nbd_target_finish(t->nbd, err);
            vmai_nbd_target_free(t->nbd);
            t->nbd = NULL;
            if (rc != 0)
                return nbd_failed(r, i, t, err);
            continue;
        }
        if (t == NULL || t->fd < 0)
            continue;
        const char *name = vma_reader_device_name(r, i);
        if (t->kind == TARGET_VMSTATE) {
            /* 64 KiB per cluster up to the recorded size; nothing past it
             * was written, trailing zero blocks of a new file become a hole. */
            uint64_t len = t->vmstate_len < t->size ? t->vmstate_len : t->size;
            if (t->created_path != NULL && ftruncate(t->fd, (off_t)len) != 0)
                return vmai_reader_fail(r, VMA_ERR_IO, "cannot size vmstate '%s' to %llu bytes: %s",
                                        name, (unsigned long long)len, strerror(errno));
        }
        vmai_write_behind_free(t->wb); /* the fsync writes what it left */
        t->wb = NULL;
        if (fsync(t->fd) != 0 && errno != EINVAL && errno != EROFS)
            return vmai_reader_fail(r, VMA_ERR_IO, "flushing device '%s' failed: %s", name,
                                    strerror(errno));
        if (t->write_behind) /* all on disk now: leave no restored pages cached */
            posix_fadvise(t->fd, 0, 0, POSIX_FADV_DONTNEED);
        if (t->own_fd) {
            int fd = t->fd;
            t->fd = -1;
            if (close(fd) != 0)
                return vmai_reader_fail(r, VMA_ERR_IO, "closing the target of device '%s' "
                                        "failed: %s", name, strerror(errno));
        }
    }
    return VMA_OK;
}

int vma_reader_restore(vma_reader *r)
{
    if (vmai_reader_forked(r) != VMA_OK)
        return VMA_ERR_INVALID;
    if (r->status != VMA_OK)
        return vmai_reader_refuse(r, r->status, "%s", ""); /* ended: its first message */
    if (!r->opened)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "reader is not open");
    for (unsigned i = vma_reader_next_device(r, 0); i != 0; i = vma_reader_next_device(r, i))
        if (r->targets[i] == NULL)
            return vmai_reader_refuse(r, VMA_ERR_INVALID, "device '%s' has no restore target",
                                      vma_reader_device_name(r, i));
    r->extent_done = extent_done;
    for (unsigned i = 1; i < VMA_DEV_SLOTS; i++) {
        if (r->targets[i] != NULL && r->targets[i]->nbd != NULL) {
            r->extent_ring = VMAI_EXTENT_RING;
            r->extent_reuse = extent_reuse;
            break;
        }
    }
    int rc = vmai_reader_run(r, restore_cluster, r);
    if (rc == VMA_OK)
        rc = targets_finish(r);
    if (rc != VMA_OK) {
        vmai_targets_free(r); /* removes the files we created */
        return rc;
    }
    r->restored = true;
    return VMA_OK;
}

void vmai_targets_free(vma_reader *r)
{
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++)
        if (r->targets[i] != NULL)
            target_drop(r, i);
    vmai_throttle_free_all(&r->throttles);
}

const struct vmai_throttle *vmai_target_throttle(const vma_reader *r, unsigned dev_id)
{
    return dev_id < VMA_DEV_SLOTS && r->targets[dev_id] != NULL ? r->targets[dev_id]->throttle
                                                                 : NULL;
}
