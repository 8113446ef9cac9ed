/*
 * <archive>.vmaidx: the random-access index of an archive read in place (a
 * plain one, a .vma.lzo or a seekable .vma.zst, whose offsets are in the
 * decompressed stream), saved so that the next open skips the pass. The
 * file is input like any other: the loader checks its size against its
 * counts before allocating, every entry and extent start against the
 * archive's header and size, their order, and a SHA-256 over the whole
 * file; and it must name this archive (size, uuid, and its inode change
 * time: unlike mtime, nobody can set that back after rewriting the archive
 * in place). The checksum does not stop a forged file (anyone who reads
 * the archive can recompute it): only a file of the caller's or root's,
 * writable by nobody else, is loaded. And image.c checks each entry
 * against the extent header it lies in before serving it.
 * Layout, little-endian:
 *   0   magic "VMAIDX\r\n", u32 version (3), u32 entry size (12)
 *   16  u64 archive size, i64 ctime seconds, u32 ctime nanoseconds,
 *       u32 device count, uuid[16], u64 extent count  (64 bytes)
 *   64  per device, by dev_id: u32 dev_id, u32 0, u64 entries, u64 readable size
 *   ... per device, its entries: u32 cluster, u16 mask, u16 offset >> 32,
 *       u32 offset & 0xffffffff
 *   ... per extent, ascending: u64 offset of its header
 *   end SHA-256 of all the bytes before it
 * Version 1 had no extent table, version 2 held the mtime: such a file is
 * rebuilt, as if missing.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/types.h>
#include <sha2.h> /* libmd (its header wants sys/types.h first) */

#include "format.h"
#include "index_file.h"
#include "io.h"

#define IDX_MAGIC "VMAIDX\r\n"
#define IDX_VERSION 3u
#define IDX_HEAD 64u
#define IDX_DEV 24u
#define IDX_ENTRY 12u
#define IDX_SUM 32u
#define IDX_EXTENT 8u

static unsigned device_count(const vma_reader *r)
{
    unsigned n = 0;
    for (unsigned i = vma_reader_next_device(r, 0); i != 0; i = vma_reader_next_device(r, i))
        n++;
    return n;
}

static void encode_head(const struct vmai_ra_index *ix, const struct vmai_index_binding *bind,
                        unsigned char *h)
{
    memset(h, 0, IDX_HEAD);
    memcpy(h, IDX_MAGIC, 8);
    vmai_put_le32(h + 8, IDX_VERSION);
    vmai_put_le32(h + 12, IDX_ENTRY);
    vmai_put_le64(h + 16, (uint64_t)bind->st->st_size);
    vmai_put_le64(h + 24, (uint64_t)bind->st->st_ctim.tv_sec);
    vmai_put_le32(h + 32, (uint32_t)bind->st->st_ctim.tv_nsec);
    vmai_put_le32(h + 36, device_count(bind->r));
    vma_reader_uuid(bind->r, h + 40);
    vmai_put_le64(h + 56, ix->extent_count);
}

/* Buffered writes that also feed the checksum. */
struct out {
    int fd;
    SHA2_CTX sum;
    unsigned char buf[65536];
    size_t len;
    bool failed;
};

static void out_flush(struct out *o)
{
    if (!o->failed && o->len > 0 &&
        vmai_write_full(o->fd, o->buf, o->len, -1, NULL, false) != 0)
        o->failed = true;
    SHA256Update(&o->sum, o->buf, o->len);
    o->len = 0;
}

static void out_put(struct out *o, const unsigned char *p, size_t n)
{
    if (o->len + n > sizeof(o->buf))
        out_flush(o);
    memcpy(o->buf + o->len, p, n);
    o->len += n;
}

int vmai_index_save(const struct vmai_ra_index *ix, const struct vmai_index_binding *bind,
                    const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path) + sizeof(".XXXXXX");
    char *tmp = malloc(n);
    struct out *o = calloc(1, sizeof(*o));
    int rc = VMA_ERR_NOMEM;
    if (tmp == NULL || o == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    snprintf(tmp, n, "%s.XXXXXX", path);
    o->fd = mkostemp(tmp, O_CLOEXEC);
    if (o->fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        rc = VMA_ERR_IO;
        goto out;
    }
    SHA256Init(&o->sum);
    unsigned char h[IDX_HEAD];
    encode_head(ix, bind, h);
    out_put(o, h, IDX_HEAD);
    const vma_reader *r = bind->r;
    for (unsigned i = vma_reader_next_device(r, 0); i != 0; i = vma_reader_next_device(r, i)) {
        unsigned char d[IDX_DEV] = { 0 };
        vmai_put_le32(d, i);
        vmai_put_le64(d + 8, ix->dev[i].count);
        vmai_put_le64(d + 16, ix->dev[i].size);
        out_put(o, d, IDX_DEV);
    }
    for (unsigned i = vma_reader_next_device(r, 0); i != 0; i = vma_reader_next_device(r, i)) {
        for (uint64_t k = 0; k < ix->dev[i].count; k++) {
            const struct vmai_ra_entry *e = &ix->dev[i].e[k];
            unsigned char b[IDX_ENTRY];
            vmai_put_le32(b, e->num);
            b[4] = (unsigned char)e->mask;
            b[5] = (unsigned char)(e->mask >> 8);
            b[6] = (unsigned char)e->off_hi;
            b[7] = (unsigned char)(e->off_hi >> 8);
            vmai_put_le32(b + 8, e->off_lo);
            out_put(o, b, IDX_ENTRY);
        }
    }
    for (uint64_t k = 0; k < ix->extent_count; k++) {
        unsigned char b[IDX_EXTENT];
        vmai_put_le64(b, ix->extents[k]);
        out_put(o, b, IDX_EXTENT);
    }
    out_flush(o);
    unsigned char sum[SHA256_DIGEST_LENGTH];
    SHA256Final(sum, &o->sum);
    if (!o->failed && vmai_write_full(o->fd, sum, IDX_SUM, -1, NULL, false) == 0 &&
        fsync(o->fd) == 0 && close(o->fd) == 0) {
        o->fd = -1;
        if (rename(tmp, path) == 0) {
            rc = VMA_OK;
            goto out;
        }
    }
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    rc = VMA_ERR_IO;
    if (o->fd >= 0)
        close(o->fd);
    o->fd = -1;
    unlink(tmp);
out:
    free(o);
    free(tmp);
    return rc;
}

/* Buffered reads that also feed the checksum. */
struct in {
    FILE *f;
    SHA2_CTX sum;
};

static bool in_get(struct in *in, unsigned char *p, size_t n)
{
    if (fread(p, 1, n, in->f) != n)
        return false;
    SHA256Update(&in->sum, p, n);
    return true;
}

static int refuse(char *err, size_t errlen, const char *path, const char *why)
{
    snprintf(err, errlen, "index %s refused: %s (remove it, or reindex)", path, why);
    return VMA_ERR_CORRUPT;
}

/* The head: magic, version, and this archive's uuid, size and ctime.
 * Returns NULL when it is accepted, else why not. */
static const char *check_head(const struct vmai_ra_index *ix,
                              const struct vmai_index_binding *bind, const unsigned char *h,
                              char *why, size_t whylen)
{
    unsigned char want[IDX_HEAD];
    if (memcmp(h, IDX_MAGIC, 8) != 0)
        return "not a vma index file (bad magic)";
    if (vmai_get_le32(h + 8) != IDX_VERSION || vmai_get_le32(h + 12) != IDX_ENTRY) {
        snprintf(why, whylen, "index version %u is not %u", vmai_get_le32(h + 8), IDX_VERSION);
        return why;
    }
    encode_head(ix, bind, want);
    if (memcmp(h + 40, want + 40, 16) != 0)
        return "it belongs to another archive (uuid differs)";
    if (vmai_get_le64(h + 16) != vmai_get_le64(want + 16)) {
        snprintf(why, whylen, "it was made for an archive of %llu bytes, this one has %llu",
                 (unsigned long long)vmai_get_le64(h + 16),
                 (unsigned long long)vmai_get_le64(want + 16));
        return why;
    }
    if (memcmp(h + 24, want + 24, 12) != 0)
        return "the archive changed after it was indexed (its ctime differs)";
    if (vmai_get_le32(h + 36) != device_count(bind->r))
        return "its device table does not match the archive header";
    /* Each extent takes at least its 512-byte header: bounds the table
     * before it is allocated. */
    if (vmai_get_le64(h + 56) > bind->data_size / VMA_EXTENT_HEADER_SIZE)
        return "it counts more extents than the archive can hold";
    return NULL;
}

/* The device table, checked against the header before any allocation:
 * ids[] in file order, counts[] and the readable sizes. */
static const char *read_devices(struct vmai_ra_index *ix, const struct vmai_index_binding *bind,
                                struct in *in, unsigned *ids, uint64_t *counts,
                                uint64_t *total, char *why, size_t whylen)
{
    const vma_reader *r = bind->r;
    unsigned i = 0;
    *total = 0;
    for (unsigned id = vma_reader_next_device(r, 0); id != 0;
         id = vma_reader_next_device(r, id), i++) {
        unsigned char d[IDX_DEV];
        if (!in_get(in, d, IDX_DEV))
            return "it is truncated in its device table";
        uint64_t size = vma_reader_device_size(r, id), rsize = vmai_get_le64(d + 16);
        bool vmstate = vma_reader_device_is_vmstate(r, id);
        uint64_t limit = (size + VMA_CLUSTER_SIZE - 1) / VMA_CLUSTER_SIZE;
        if (vmai_get_le32(d) != id || vmai_get_le32(d + 4) != 0 || vmai_get_le64(d + 8) > limit ||
            (vmstate ? rsize > size : rsize != size)) {
            snprintf(why, whylen, "its entry for device '%s' does not match the header",
                     vma_reader_device_name(r, id));
            return why;
        }
        ids[i] = id;
        counts[id] = vmai_get_le64(d + 8);
        ix->dev[id].size = rsize;
        *total += counts[id];
    }
    return NULL;
}

/* A device's count entries: in order, inside the device and the data the
 * archive holds. VMA_OK, VMA_ERR_NOMEM (err set) or VMA_ERR_CORRUPT (why set). */
static int read_entries(struct vmai_ra_index *ix, const struct vmai_index_binding *bind,
                        struct in *in, unsigned id, uint64_t count,
                        char *err, size_t errlen, char *why, size_t whylen)
{
    struct vmai_ra_dev *dv = &ix->dev[id];
    uint64_t asize = bind->data_size;
    if (count > 0 && (dv->e = malloc((size_t)count * sizeof(*dv->e))) == NULL) {
        snprintf(err, errlen, "out of memory for the index (%llu entries)",
                 (unsigned long long)count);
        return VMA_ERR_NOMEM;
    }
    dv->cap = count;
    uint64_t clusters = (dv->size + VMA_CLUSTER_SIZE - 1) / VMA_CLUSTER_SIZE;
    for (uint64_t k = 0; k < count; k++) {
        unsigned char b[IDX_ENTRY];
        if (!in_get(in, b, IDX_ENTRY)) {
            snprintf(why, whylen, "it is truncated in its entries");
            return VMA_ERR_CORRUPT;
        }
        struct vmai_ra_entry e = { vmai_get_le32(b), (uint16_t)(b[4] | b[5] << 8),
                                   (uint16_t)(b[6] | b[7] << 8), vmai_get_le32(b + 8) };
        uint64_t off = vmai_ra_off(&e);
        uint64_t end = off + (uint64_t)vmai_popcount16(e.mask) * VMA_BLOCK_SIZE;
        if (e.num >= clusters || e.mask == 0 || (k > 0 && e.num <= dv->e[k - 1].num) ||
            off < VMA_HEADER_FIXED_SIZE + VMA_EXTENT_HEADER_SIZE || end > asize) {
            snprintf(why, whylen, "entry %llu of device '%s' is out of order or out of bounds",
                     (unsigned long long)k, vma_reader_device_name(bind->r, id));
            return VMA_ERR_CORRUPT;
        }
        dv->e[k] = e;
        dv->count = k + 1;
    }
    if (count > 0 &&
        (dv->checked = calloc((size_t)((count + 63) / 64), sizeof(uint64_t))) == NULL) {
        snprintf(err, errlen, "out of memory for the index (%llu entries)",
                 (unsigned long long)count);
        return VMA_ERR_NOMEM;
    }
    return VMA_OK;
}

/* The extent table: ascending header offsets inside the archive's data.
 * VMA_OK, VMA_ERR_NOMEM (err set) or VMA_ERR_CORRUPT (why set). */
static int read_extents(struct vmai_ra_index *ix, const struct vmai_index_binding *bind,
                        struct in *in, uint64_t count, char *err,
                        size_t errlen, char *why, size_t whylen)
{
    uint64_t asize = bind->data_size;
    if (count > 0 && (ix->extents = malloc((size_t)count * sizeof(uint64_t))) == NULL) {
        snprintf(err, errlen, "out of memory for the index (%llu extents)",
                 (unsigned long long)count);
        return VMA_ERR_NOMEM;
    }
    ix->extent_cap = count;
    for (uint64_t k = 0; k < count; k++) {
        unsigned char b[IDX_EXTENT];
        if (!in_get(in, b, IDX_EXTENT)) {
            snprintf(why, whylen, "it is truncated in its extent table");
            return VMA_ERR_CORRUPT;
        }
        uint64_t at = vmai_get_le64(b);
        if (at < VMA_HEADER_FIXED_SIZE || at + VMA_EXTENT_HEADER_SIZE > asize ||
            (k > 0 && at <= ix->extents[k - 1])) {
            snprintf(why, whylen, "extent %llu is out of order or out of bounds",
                     (unsigned long long)k);
            return VMA_ERR_CORRUPT;
        }
        ix->extents[k] = at;
        ix->extent_count = k + 1;
    }
    return VMA_OK;
}

/* The opened file: a regular one, and ours to trust. Planted beside an
 * archive in a directory others can write to, its checksum and binding
 * prove nothing (anyone who reads the archive can make them): only a file
 * of the caller's or root's that nobody else may write is loaded. Returns
 * NULL when it is taken, else why not. */
static const char *file_refused(int fd, struct stat *st, char *why, size_t whylen)
{
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode))
        return "not a regular file";
    if (st->st_uid != geteuid() && st->st_uid != 0) {
        snprintf(why, whylen, "it belongs to uid %u, neither you nor root",
                 (unsigned)st->st_uid);
        return why;
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH))
        return "others may write to it";
    return NULL;
}

int vmai_index_load(struct vmai_ra_index *ix, const struct vmai_index_binding *bind,
                    const char *path, dev_t *dev, ino_t *ino, char *err, size_t errlen)
{
    /* Without blocking: a FIFO planted under the index's name would hang
     * open() until someone writes to it; only a regular file is taken. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return VMA_ERR_NOT_FOUND;
        snprintf(err, errlen, "cannot open index %s: %s", path, strerror(errno));
        return VMA_ERR_IO;
    }
    struct stat st;
    struct in in = { .f = fdopen(fd, "rb") };
    char why[VMAI_ERRLEN];
    const char *bad = NULL;
    int rc = VMA_ERR_NOMEM;
    snprintf(err, errlen, "out of memory");
    if (in.f == NULL)
        goto out;
    SHA256Init(&in.sum);
    unsigned char h[IDX_HEAD];
    uint64_t total, counts[VMA_DEV_SLOTS] = { 0 };
    unsigned ids[VMA_DEV_SLOTS];
    bad = file_refused(fd, &st, why, sizeof(why));
    if (bad == NULL && !in_get(&in, h, IDX_HEAD))
        bad = "not a vma index file (bad magic)";
    else if (bad == NULL && memcmp(h, IDX_MAGIC, 8) == 0 && vmai_get_le32(h + 8) < IDX_VERSION) {
        rc = VMA_ERR_NOT_FOUND; /* an older layout: rebuilt and saved anew */
        goto out;
    } else if (bad == NULL && (bad = check_head(ix, bind, h, why, sizeof(why))) == NULL &&
             (bad = read_devices(ix, bind, &in, ids, counts, &total, why, sizeof(why))) == NULL) {
        unsigned ndev = vmai_get_le32(h + 36);
        uint64_t next = vmai_get_le64(h + 56);
        if ((uint64_t)st.st_size != IDX_HEAD + (uint64_t)ndev * IDX_DEV + total * IDX_ENTRY +
                                        next * IDX_EXTENT + IDX_SUM)
            bad = "its size does not match its entry counts";
        for (unsigned i = 0; i < ndev && bad == NULL; i++) {
            rc = read_entries(ix, bind, &in, ids[i], counts[ids[i]], err, errlen, why, sizeof(why));
            if (rc == VMA_ERR_NOMEM)
                goto out;
            if (rc != VMA_OK)
                bad = why;
        }
        if (bad == NULL) {
            rc = read_extents(ix, bind, &in, next, err, errlen, why, sizeof(why));
            if (rc == VMA_ERR_NOMEM)
                goto out;
            if (rc != VMA_OK)
                bad = why;
        }
    }
    if (bad == NULL) {
        unsigned char sum[SHA256_DIGEST_LENGTH], stored[IDX_SUM];
        SHA256Final(sum, &in.sum);
        if (fread(stored, 1, IDX_SUM, in.f) != IDX_SUM || memcmp(sum, stored, IDX_SUM) != 0)
            bad = "its checksum does not match (damaged)";
    }
    rc = bad != NULL ? refuse(err, errlen, path, bad) : VMA_OK;
    if (rc == VMA_OK) {
        *dev = st.st_dev;
        *ino = st.st_ino;
    }
out:
    if (in.f != NULL)
        fclose(in.f);
    else
        close(fd);
    return rc;
}
