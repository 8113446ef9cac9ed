/*
 * Salvage mode: read what a damaged archive still holds. The extent stream
 * is read through a bounded window so that after a bad extent header the
 * reader can scan forward for the next header that passes every check
 * (magic, MD5, uuid, fields, and the cluster rules), without holding more
 * than the window and one extent. Only extents whose header passed are
 * handed out; everything else is reported as an event.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader_internal.h"

#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define WINDOW_SIZE ((size_t)1 << 20) /* the resync scan's bounded window */
#else
/* fuzz/run.sh's build (see lib/input.c): a 1 MiB window is an mmap and
 * its page faults for every input under ASan; 64 KiB scans the same way,
 * across window ends more often. */
#define WINDOW_SIZE ((size_t)64 << 10)
#endif

struct vmai_salvage {
    unsigned flags;
    vma_salvage_fn fn;
    void *opaque;
    unsigned char *win;     /* WINDOW_SIZE bytes; unread: win[pos..len) */
    size_t pos, len;
    uint64_t base;          /* archive offset of win[0] */
    bool ended;             /* the input reached its end or failed */
    bool gap;               /* the window ends where the decoder skipped bytes */
    bool vmstate_gap[VMA_DEV_SLOTS];
};

static const char *const event_names[] = {
    NULL, "header-md5", "bad-extent", "bad-rules", "truncated", "stream-error", "vmstate-gap",
};

const char *vma_salvage_event_name(int event)
{
    if (event <= 0 || event >= (int)(sizeof(event_names) / sizeof(event_names[0])))
        return "unknown";
    return event_names[event];
}

int vma_reader_set_salvage(vma_reader *r, unsigned flags, vma_salvage_fn fn, void *opaque)
{
    if (r->status != VMA_OK)
        return r->status;
    if (r->opened || r->fd >= 0)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "salvage mode must be set before the open");
    if ((flags & ~VMA_SALVAGE_FORCE_HEADER) != 0)
        return vmai_reader_refuse(r, VMA_ERR_INVALID, "unknown salvage flags 0x%x", flags);
    if (r->salvage == NULL && (r->salvage = calloc(1, sizeof(*r->salvage))) == NULL)
        return vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory");
    r->salvage->flags = flags;
    r->salvage->fn = fn;
    r->salvage->opaque = opaque;
    return VMA_OK;
}

void vmai_salvage_free(struct vmai_salvage *s)
{
    if (s == NULL)
        return;
    free(s->win);
    free(s);
}

static void event(vma_reader *r, int ev, uint64_t offset, uint64_t length, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void event(vma_reader *r, int ev, uint64_t offset, uint64_t length, const char *fmt, ...)
{
    if (r->salvage->fn == NULL)
        return;
    char msg[VMAI_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    r->salvage->fn(r->salvage->opaque, ev, offset, length, msg);
}

int vmai_salvage_header(vma_reader *r, const unsigned char *buf, size_t len, char *err,
                        size_t errlen)
{
    int rc = vmai_header_parse(buf, len, &r->hdr, err, errlen);
    if (rc == VMA_OK || r->salvage == NULL)
        return rc;
    /* Only an MD5 mismatch may be forced: the rest must be consistent. */
    char err2[VMAI_ERRLEN];
    if (vmai_header_parse_unverified(buf, len, &r->hdr, err2, sizeof(err2)) != VMA_OK) {
        memset(&r->hdr, 0, sizeof(r->hdr));
        return rc;
    }
    if (!(r->salvage->flags & VMA_SALVAGE_FORCE_HEADER)) {
        memset(&r->hdr, 0, sizeof(r->hdr));
        size_t n = strlen(err);
        snprintf(err + n, errlen - n,
                 "; the rest of the header is consistent: force it to salvage with its "
                 "device table as it is");
        return VMA_ERR_HEADER_MD5; /* the caller decides on this, not on the text */
    }
    event(r, VMA_SALVAGE_HEADER_MD5, 0, len,
          "%s: device table and configs taken as they are (forced)", err);
    return VMA_OK;
}

/* The input failed at offset: nothing more can be read. zstd and gzip
 * check a frame or member at its end, after handing out its bytes; lzop
 * checks each block first. */
static void stream_failed(vma_reader *r, uint64_t offset, const char *err)
{
    const char *codec = vmai_input_codec(r->in);
    bool late = strcmp(codec, "zstd") == 0 || strcmp(codec, "gzip") == 0;
    r->salvage->ended = true;
    event(r, VMA_SALVAGE_STREAM, offset, 0, "the stream ends here: %s%s", err,
          late ? "; bytes handed out before it from the same compressed frame or member "
                 "are unproven (its checksum comes at its end)"
               : "");
}

/* Read up to len bytes of the stream at archive offset `at` into dst.
 * The input hands out what it decoded before an error as a short read
 * and the error at the next read, so a short read is followed by another:
 * it ends the stream cleanly (0) or says why it broke. Returns the bytes
 * read, fewer at the end (s->ended) or at a gap (*gap, when it stops the
 * read), or a fatal status (cancel). */
static ssize_t input_read(vma_reader *r, unsigned char *dst, size_t len, uint64_t at, bool *gap)
{
    struct vmai_salvage *s = r->salvage;
    char err[VMAI_ERRLEN];
    size_t got = 0;
    *gap = false;
    while (got < len) {
        ssize_t n = vmai_input_read(r->in, dst + got, len - got, err, sizeof(err));
        if (n == VMA_ERR_CANCELED || vmai_cancelled(&r->cancel))
            return vmai_reader_fail(r, VMA_ERR_CANCELED, "cancelled at offset %llu",
                                    (unsigned long long)(at + got));
        if (n < 0) {
            stream_failed(r, at + got, err);
            break;
        }
        if (n == 0) {
            s->ended = true;
            break;
        }
        got += (size_t)n;
        if (got < len && vmai_input_gap(r->in, err, sizeof(err))) {
            *gap = true;
            event(r, VMA_SALVAGE_STREAM, at + got, 0, "%s; reading goes on after it", err);
            break;
        }
    }
    return (ssize_t)got;
}

/* Have at least `need` unread bytes in the window, unless the input ends.
 * Returns the unread count, or a fatal status (cancel). */
static ssize_t fill(vma_reader *r, size_t need)
{
    struct vmai_salvage *s = r->salvage;
    if (s->len - s->pos >= need || s->ended)
        return (ssize_t)(s->len - s->pos);
    if (s->gap) { /* what is left before the gap can never be completed */
        s->pos = s->len;
        s->gap = false;
    }
    if (s->pos > 0) {
        memmove(s->win, s->win + s->pos, s->len - s->pos);
        s->base += s->pos;
        s->len -= s->pos;
        s->pos = 0;
    }
    ssize_t n = input_read(r, s->win + s->len, WINDOW_SIZE - s->len, s->base + s->len, &s->gap);
    if (n < 0)
        return n;
    s->len += (size_t)n;
    return (ssize_t)(s->len - s->pos);
}

/* Read len bytes of extent data: what the window holds, then straight
 * from the input. Returns the bytes read (short at the end, or at a gap:
 * *gap set) or a fatal status. */
static ssize_t read_data(vma_reader *r, unsigned char *dst, size_t len, bool *gap)
{
    struct vmai_salvage *s = r->salvage;
    size_t have = s->len - s->pos < len ? s->len - s->pos : len;
    memcpy(dst, s->win + s->pos, have);
    s->pos += have;
    *gap = false;
    if (have == len || s->ended)
        return (ssize_t)have;
    if (s->gap) {
        s->gap = false;
        *gap = true;
        return (ssize_t)have;
    }
    /* Bytes read directly continue the stream: the window starts after them. */
    s->base += s->len;
    s->pos = s->len = 0;
    ssize_t n = input_read(r, dst + have, len - have, s->base, gap);
    if (n < 0)
        return n;
    s->base += (uint64_t)n;
    return (ssize_t)(have + (size_t)n);
}

static uint64_t win_offset(const vma_reader *r) { return r->salvage->base + r->salvage->pos; }

/* The cluster rules for a whole extent, before any of it is handed out:
 * known devices, clusters in range, not read before (nor twice in the
 * extent), vmstate not going back. VMA_OK or VMA_ERR_CORRUPT with a
 * message. */
static int extent_rules(const vma_reader *r, const struct vmai_extent *e, char *err,
                        size_t errlen)
{
    for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
        const struct vmai_blockinfo *bi = &e->info[i];
        if (bi->dev_id == 0)
            continue;
        const struct vmai_device *d = &r->hdr.devices[bi->dev_id];
        if (d->name == NULL) {
            snprintf(err, errlen, "entry %u: unknown dev_id %u", i, bi->dev_id);
            return VMA_ERR_CORRUPT;
        }
        if (d->is_vmstate) {
            if (bi->cluster_num < r->vmstate_next[bi->dev_id]) {
                snprintf(err, errlen, "entry %u: vmstate cluster %u of '%s' was read before", i,
                         bi->cluster_num, d->name);
                return VMA_ERR_CORRUPT;
            }
        } else if (bi->cluster_num >= vmai_cluster_count(d->size)) {
            snprintf(err, errlen, "entry %u: cluster %u is past the end of device '%s'", i,
                     bi->cluster_num, d->name);
            return VMA_ERR_CORRUPT;
        } else if (vmai_cset_contains(&r->seen[bi->dev_id], bi->cluster_num)) {
            snprintf(err, errlen, "entry %u: cluster %u of device '%s' was read before", i,
                     bi->cluster_num, d->name);
            return VMA_ERR_CORRUPT;
        }
        for (unsigned j = 0; j < i; j++)
            if (e->info[j].dev_id == bi->dev_id && e->info[j].cluster_num == bi->cluster_num) {
                snprintf(err, errlen, "entries %u and %u: cluster %u of device '%s' twice", j, i,
                         bi->cluster_num, d->name);
                return VMA_ERR_CORRUPT;
            }
    }
    return VMA_OK;
}

/* Check the 512 bytes at the window position as an extent header. */
static int check_header(vma_reader *r, struct vmai_extent *e, int *why, char *err, size_t errlen)
{
    struct vmai_salvage *s = r->salvage;
    int rc = vmai_extent_parse(s->win + s->pos, r->hdr.uuid, e, err, errlen);
    *why = VMA_SALVAGE_BAD_EXTENT;
    if (rc == VMA_OK) {
        rc = extent_rules(r, e, err, errlen);
        *why = VMA_SALVAGE_BAD_RULES;
    }
    return rc;
}

/* After a bad extent header at the window position: scan forward for the
 * next header that passes. Returns 1 with the window at it, 0 at the end
 * of the input (everything skipped), or a fatal status. */
static int resync(vma_reader *r, struct vmai_extent *e)
{
    struct vmai_salvage *s = r->salvage;
    static const unsigned char magic[4] = {'V', 'M', 'A', 'E'};
    char err[VMAI_ERRLEN];
    int why;
    s->pos++;
    for (;;) {
        ssize_t have = fill(r, VMA_EXTENT_HEADER_SIZE);
        if (have < 0)
            return (int)have;
        if ((size_t)have < VMA_EXTENT_HEADER_SIZE && s->ended) {
            s->pos = s->len; /* too short to hold an extent */
            return 0;
        }
        const unsigned char *p = memmem(s->win + s->pos, s->len - s->pos, magic, sizeof(magic));
        if (p == NULL) {
            /* Keep the last 3 bytes: the magic may straddle the refill. */
            size_t keep = sizeof(magic) - 1;
            s->pos = s->len - s->pos > keep ? s->len - keep : s->pos;
            if (s->ended) {
                s->pos = s->len;
                return 0;
            }
            if ((have = fill(r, s->len - s->pos + 1)) < 0)
                return (int)have;
            continue;
        }
        s->pos = (size_t)(p - s->win);
        if ((have = fill(r, VMA_EXTENT_HEADER_SIZE)) < 0)
            return (int)have;
        if ((size_t)have < VMA_EXTENT_HEADER_SIZE) {
            s->pos = s->len;
            return 0;
        }
        if (check_header(r, e, &why, err, sizeof(err)) == VMA_OK)
            return 1;
        s->pos++;
    }
}

/* Hand out the clusters of a checked extent; deliver what the rules let
 * through (a vmstate stream stops at its first gap). */
static int deliver(vma_reader *r, const struct vmai_extent *e, uint64_t extent_no,
                   vma_cluster_fn fn, void *opaque)
{
    const unsigned char *data = r->extent_data;
    for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
        const struct vmai_blockinfo *bi = &e->info[i];
        if (bi->dev_id == 0)
            continue;
        const struct vmai_device *d = &r->hdr.devices[bi->dev_id];
        const unsigned char *cdata = data;
        unsigned stored = vmai_popcount16(bi->mask);
        data += (size_t)stored * VMA_BLOCK_SIZE;
        if (vmai_cancelled(&r->cancel))
            return vmai_reader_fail(r, VMA_ERR_CANCELED,
                                    "cancelled at cluster %u of device %u in extent %llu "
                                    "(offset %llu)",
                                    bi->cluster_num, bi->dev_id, (unsigned long long)extent_no,
                                    (unsigned long long)r->offset);
        if (d->is_vmstate) {
            if (r->salvage->vmstate_gap[bi->dev_id])
                continue;
            if (bi->cluster_num != r->vmstate_next[bi->dev_id]) {
                r->salvage->vmstate_gap[bi->dev_id] = true;
                event(r, VMA_SALVAGE_VMSTATE_GAP, r->offset, 0,
                      "vmstate '%s' misses cluster %llu (next found: %u): the rest of its "
                      "stream is dropped",
                      d->name, (unsigned long long)r->vmstate_next[bi->dev_id],
                      bi->cluster_num);
                continue;
            }
            r->vmstate_next[bi->dev_id]++;
        } else {
            if (vmai_cset_insert(&r->seen[bi->dev_id], bi->cluster_num) < 0)
                return vmai_reader_fail(r, VMA_ERR_NOMEM,
                                        "extent %llu at offset %llu: out of memory for the "
                                        "cluster map of device '%s'",
                                        (unsigned long long)extent_no,
                                        (unsigned long long)r->offset, d->name);
            uint64_t budget = VMA_READER_MAP_FLOOR + r->offset / VMA_READER_MAP_RATIO;
            if (r->seen_mem > budget)
                return vmai_reader_fail(r, VMA_ERR_LIMIT,
                                        "extent %llu at offset %llu: the cluster maps need "
                                        "%zu KiB, more than the reader's budget",
                                        (unsigned long long)extent_no,
                                        (unsigned long long)r->offset, r->seen_mem / 1024);
        }
        vmai_reader_count_cluster(r, bi->dev_id, bi->cluster_num, bi->mask);
        if (fn != NULL && fn(opaque, bi->dev_id, bi->cluster_num, bi->mask, cdata) != 0)
            return vmai_reader_fail(r, VMA_ERR_CALLBACK,
                                    "stopped at cluster %u of device '%s' in extent %llu at "
                                    "offset %llu",
                                    bi->cluster_num, d->name, (unsigned long long)extent_no,
                                    (unsigned long long)r->offset);
        if (r->progress != NULL &&
            r->progress(r->progress_opaque, r->clusters,
                        r->offset + VMA_EXTENT_HEADER_SIZE +
                            (uint64_t)(data - r->extent_data)) != 0)
            return vmai_reader_fail(r, VMA_ERR_CALLBACK, "cancelled at extent %llu (offset %llu)",
                                    (unsigned long long)extent_no,
                                    (unsigned long long)r->offset);
    }
    return VMA_OK;
}

int vmai_salvage_run(vma_reader *r, vma_cluster_fn fn, void *opaque)
{
    struct vmai_salvage *s = r->salvage;
    s->win = malloc(WINDOW_SIZE);
    if (s->win == NULL)
        return vmai_reader_fail(r, VMA_ERR_NOMEM, "out of memory for the salvage window");
    s->base = r->offset;
    struct vmai_extent e;
    char err[VMAI_ERRLEN];
    for (uint64_t extent_no = 0;; extent_no++) {
        if (vmai_cancelled(&r->cancel))
            return vmai_reader_fail(r, VMA_ERR_CANCELED, "cancelled at extent %llu (offset %llu)",
                                    (unsigned long long)extent_no,
                                    (unsigned long long)win_offset(r));
        ssize_t have = fill(r, VMA_EXTENT_HEADER_SIZE);
        if (have < 0)
            return (int)have;
        r->offset = win_offset(r);
        if (have == 0)
            return VMA_OK;
        if ((size_t)have < VMA_EXTENT_HEADER_SIZE) {
            event(r, VMA_SALVAGE_TRUNCATED, r->offset, (uint64_t)have,
                  "the archive ends inside the header of extent %llu (%zd of 512 bytes)",
                  (unsigned long long)extent_no, have);
            return VMA_OK;
        }
        int why;
        if (check_header(r, &e, &why, err, sizeof(err)) != VMA_OK) {
            uint64_t bad = r->offset;
            int rc = resync(r, &e);
            if (rc < 0)
                return rc;
            r->offset = win_offset(r);
            event(r, why, bad, r->offset - bad, "extent %llu: %s; %llu bytes skipped%s",
                  (unsigned long long)extent_no, err, (unsigned long long)(r->offset - bad),
                  rc == 1 ? " up to the next good extent header" : " up to the end");
            if (rc == 0)
                return VMA_OK;
        }
        memcpy(r->extent_head, s->win + s->pos, VMA_EXTENT_HEADER_SIZE);
        s->pos += VMA_EXTENT_HEADER_SIZE;
        size_t len = (size_t)e.block_count * VMA_BLOCK_SIZE;
        int rc = vmai_reader_extent_buffer(r, len);
        if (rc != VMA_OK)
            return rc;
        bool gap;
        have = read_data(r, r->extent_data, len, &gap);
        if (have < 0)
            return (int)have;
        if (gap) {
            event(r, VMA_SALVAGE_TRUNCATED, r->offset, VMA_EXTENT_HEADER_SIZE + (uint64_t)have,
                  "the data of extent %llu runs into bytes the decoder skipped (%zd of %zu "
                  "bytes before them): it is lost",
                  (unsigned long long)extent_no, have, len);
            continue;
        }
        if ((size_t)have < len) {
            event(r, VMA_SALVAGE_TRUNCATED, r->offset, VMA_EXTENT_HEADER_SIZE + (uint64_t)have,
                  "the archive ends inside the data of extent %llu (%zd of %zu bytes): it is "
                  "lost",
                  (unsigned long long)extent_no, have, len);
            return VMA_OK;
        }
        rc = deliver(r, &e, extent_no, fn, opaque);
        if (rc != VMA_OK)
            return rc;
        if (r->extent_done != NULL && (rc = r->extent_done(r)) != VMA_OK)
            return rc;
    }
}

uint64_t vma_reader_cluster_run(const vma_reader *r, unsigned dev_id, uint64_t first,
                                int *present)
{
    if (dev_id == 0 || dev_id >= VMA_DEV_SLOTS || r->hdr.devices[dev_id].name == NULL)
        return 0;
    const struct vmai_device *d = &r->hdr.devices[dev_id];
    uint64_t count = vmai_cluster_count(d->size);
    if (first >= count)
        return 0;
    if (d->is_vmstate) {
        uint64_t next = r->vmstate_next[dev_id] < count ? r->vmstate_next[dev_id] : count;
        if (present != NULL)
            *present = first < next;
        return first < next ? next - first : count - first;
    }
    const struct vmai_cset *s = &r->seen[dev_id];
    if (s->count != count) { /* not read yet */
        if (present != NULL)
            *present = 0;
        return count - first;
    }
    /* By the set's runs, not cluster by cluster: a report walks every
     * device this way, and a 256 TiB one has 2^32 clusters. */
    int p = vmai_cset_contains(s, first);
    if (present != NULL)
        *present = p;
    return vmai_cset_next(s, first, !p) - first;
}
