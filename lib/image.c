/*
 * Random access to an archive's devices: one checked pass over the archive
 * (the reader's own loop and rules) records, for every cluster that holds
 * data, where its stored blocks lie; reads then pread() just those bytes.
 * A compressed archive's stored blocks go to an unlinked sparse cache file
 * during the pass. After the open the index does not change, so reads of
 * it need no lock; an index loaded from a file is checked against the
 * extent headers as reads meet it (atomic bits, one per entry), and the
 * decoded-block cache of a .vma.lzo or seekable .vma.zst has a lock of its
 * own (block_map.c).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image_internal.h"
#include "lzo_blocks.h"
#include "reader_internal.h"
#include "index_cache.h"
#include "zst_frames.h"

vma_image *vma_image_new(void)
{
    vma_image *img = calloc(1, sizeof(*img));
    if (img == NULL)
        return NULL;
    img->r = vma_reader_new();
    if (img->r == NULL || pthread_mutex_init(&img->lock, NULL) != 0) {
        vma_reader_free(img->r);
        free(img);
        return NULL;
    }
    img->archive_fd = -1;
    img->data_fd = -1;
    return img;
}

void vmai_image_index_reset(vma_image *img)
{
    vmai_ra_clear(&img->ix);
    atomic_store(&img->bad_extent, 0);
}

void vma_image_free(vma_image *img)
{
    if (img == NULL)
        return;
    vmai_image_index_reset(img);
    vmai_block_map_free(img->blocks);
    vmai_gz_map_free(img->gz);
    vma_reader_free(img->r);
    if (img->data_fd >= 0 && img->data_fd != img->archive_fd)
        close(img->data_fd);
    if (img->archive_fd >= 0)
        close(img->archive_fd);
    pthread_mutex_destroy(&img->lock);
    free(img->index_path);
    free(img->cache_dir);
    free(img->index_dir);
    free(img);
}

static int fail(vma_image *img, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The message goes to the handle and to the calling thread's
 * vma_last_error(), which no other thread's failure can change. */
static int fail(vma_image *img, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *msg = vmai_vset_last_error(fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&img->lock);
    snprintf(img->err, sizeof(img->err), "%s", msg);
    pthread_mutex_unlock(&img->lock);
    return status;
}

/* Reads fail in several threads at once: the caller gets a copy made
 * under the lock, its own until its next call here. */
const char *vma_image_error(const vma_image *img)
{
    static _Thread_local char copy[VMAI_ERRLEN];
    pthread_mutex_lock((pthread_mutex_t *)&img->lock);
    memcpy(copy, img->err, sizeof(copy));
    pthread_mutex_unlock((pthread_mutex_t *)&img->lock);
    return copy;
}

int vma_image_set_cache_dir(vma_image *img, const char *dir)
{
    char *copy = NULL;
    if (dir != NULL && (copy = strdup(dir)) == NULL)
        return fail(img, VMA_ERR_NOMEM, "out of memory");
    free(img->cache_dir);
    img->cache_dir = copy;
    return VMA_OK;
}

int vma_image_set_index_dir(vma_image *img, const char *dir, uint64_t max_bytes)
{
    char *copy = NULL;
    if (img->opened || img->archive_fd >= 0)
        return fail(img, VMA_ERR_INVALID, "the index directory is set before the open");
    if (dir != NULL && dir[0] != '\0' && (copy = strdup(dir)) == NULL)
        return fail(img, VMA_ERR_NOMEM, "out of memory");
    free(img->index_dir);
    img->index_dir = copy;
    img->index_dir_max = max_bytes;
    return VMA_OK;
}

void vma_image_set_progress(vma_image *img, vma_progress_fn fn, void *opaque)
{
    img->progress = fn;
    img->progress_opaque = opaque;
}

void vma_image_set_cache_notice(vma_image *img, vma_cache_fn fn, void *opaque)
{
    img->notice = fn;
    img->notice_opaque = opaque;
}

int vma_image_set_salvage(vma_image *img, unsigned flags, vma_salvage_fn fn, void *opaque)
{
    if (img->opened || img->archive_fd >= 0)
        return fail(img, VMA_ERR_INVALID, "salvage mode must be set before the open");
    int rc = vma_reader_set_salvage(img->r, flags, fn, opaque);
    if (rc != VMA_OK)
        return fail(img, rc, "%s", vma_reader_error(img->r));
    img->salvage = true;
    return VMA_OK;
}

void vma_image_cancel(vma_image *img) { vma_reader_cancel(img->r); }

int vma_image_index_state(const vma_image *img) { return img->index_state; }

const vma_reader *vma_image_reader(const vma_image *img) { return img->r; }

static struct vmai_ra_dev *image_dev(const vma_image *img, unsigned dev_id)
{
    if (!img->opened || vma_reader_device_name(img->r, dev_id) == NULL)
        return NULL;
    return (struct vmai_ra_dev *)&img->ix.dev[dev_id];
}

uint64_t vma_image_device_size(const vma_image *img, unsigned dev_id)
{
    const struct vmai_ra_dev *d = image_dev(img, dev_id);
    return d != NULL ? d->size : 0;
}

/* --- the index pass --- */

/* Grow by an eighth: glibc moves large blocks with mremap, so the peak
 * stays near 12 * 9/8 = 13.5 bytes per entry. */
static int append(struct vmai_ra_dev *d, uint32_t num, uint16_t mask, uint64_t off)
{
    if (d->count == d->cap) {
        uint64_t cap = d->cap + d->cap / 8 + 1024;
        struct vmai_ra_entry *e = realloc(d->e, (size_t)cap * sizeof(*e));
        if (e == NULL)
            return VMA_ERR_NOMEM;
        d->e = e;
        d->cap = cap;
    }
    if (d->count > 0 && d->e[d->count - 1].num > num)
        d->unsorted = true;
    d->e[d->count++] = (struct vmai_ra_entry){ num, mask, (uint16_t)(off >> 32), (uint32_t)off };
    return VMA_OK;
}

/* Write a cluster's stored blocks to the cache; all-zero blocks are left
 * as holes. */
static int cache_blocks(vma_image *img, const unsigned char *data, unsigned stored)
{
    for (unsigned b = 0; b < stored; b++) {
        const unsigned char *blk = data + (size_t)b * VMA_BLOCK_SIZE;
        if (vmai_is_zero(blk, VMA_BLOCK_SIZE))
            continue;
        if (vmai_write_full(img->data_fd, blk, VMA_BLOCK_SIZE,
                            (int64_t)(img->cache_pos + (uint64_t)b * VMA_BLOCK_SIZE), NULL,
                            false) != 0)
            return fail(img, VMA_ERR_IO, "write of the cache file in %s at byte %llu failed: %s",
                        img->cache_dir != NULL ? img->cache_dir : "the temporary directory",
                        (unsigned long long)(img->cache_pos + (uint64_t)b * VMA_BLOCK_SIZE),
                        strerror(errno));
    }
    return VMA_OK;
}

/* Record the extent at r->offset once (its first cluster comes here). */
static int add_extent(vma_image *img, uint64_t at)
{
    if (img->ix.extent_count > 0 && img->ix.extents[img->ix.extent_count - 1] == at)
        return VMA_OK;
    if (img->ix.extent_count == img->ix.extent_cap) {
        uint64_t cap = img->ix.extent_cap + img->ix.extent_cap / 8 + 256;
        uint64_t *x = realloc(img->ix.extents, (size_t)cap * sizeof(*x));
        if (x == NULL)
            return fail(img, VMA_ERR_NOMEM, "out of memory for the index (%llu extents)",
                        (unsigned long long)img->ix.extent_count);
        img->ix.extents = x;
        img->ix.extent_cap = cap;
    }
    img->ix.extents[img->ix.extent_count++] = at;
    return VMA_OK;
}

static int index_cluster(void *opaque, unsigned dev_id, uint32_t cluster_num, uint16_t mask,
                         const unsigned char *data)
{
    vma_image *img = opaque;
    vma_reader *r = img->r;
    struct vmai_ra_dev *d = &img->ix.dev[dev_id];
    /* Offsets in the archive (or its stream): the extent table goes into
     * the index file with them. */
    if (img->data_fd == img->archive_fd && (img->cb_status = add_extent(img, r->offset)) != VMA_OK)
        return 1;
    if (vma_reader_device_is_vmstate(r, dev_id)) {
        d->stream_len = (uint64_t)cluster_num + 1;
        /* The format discards a stream's bytes past the recorded size (as
         * extract does): never cached nor indexed, so that a 64 KiB vmstate
         * carrying 155 MB cannot grow the cache past what was announced. */
        if ((uint64_t)cluster_num * VMA_CLUSTER_SIZE >= vma_reader_device_size(r, dev_id))
            return 0;
    }
    if (mask == 0)
        return 0;
    unsigned stored = vmai_popcount16(mask);
    uint64_t off;
    if (img->data_fd == img->archive_fd) {
        /* The reader holds the extent that starts at r->offset in
         * extent_data; data points into it. */
        off = r->offset + VMA_EXTENT_HEADER_SIZE + (uint64_t)(data - r->extent_data);
    } else {
        off = img->cache_pos;
        if ((img->cb_status = cache_blocks(img, data, stored)) != VMA_OK)
            return 1;
        img->cache_pos += (uint64_t)stored * VMA_BLOCK_SIZE;
    }
    if (off + (uint64_t)stored * VMA_BLOCK_SIZE > VMAI_RA_MAX_OFFSET) {
        img->cb_status = fail(img, VMA_ERR_LIMIT, "archive too large for random access: data at byte %llu is "
             "past 256 TiB", (unsigned long long)off);
        return 1;
    }
    if (append(d, cluster_num, mask, off) != VMA_OK) {
        img->cb_status = fail(img, VMA_ERR_NOMEM, "out of memory for the index of device '%s' (%llu entries)",
             vma_reader_device_name(r, dev_id), (unsigned long long)d->count);
        return 1;
    }
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    uint32_t x = ((const struct vmai_ra_entry *)a)->num;
    uint32_t y = ((const struct vmai_ra_entry *)b)->num;
    return x < y ? -1 : x > y;
}

static int image_progress(void *opaque, uint64_t clusters, uint64_t bytes)
{
    vma_image *img = opaque;
    return img->progress != NULL ? img->progress(img->progress_opaque, clusters, bytes) : 0;
}

/* An unlinked file in the cache directory: O_TMPFILE where the file
 * system has it, else mkstemp() and unlink() at once. */
static int open_tmp(vma_image *img, int *out)
{
    const char *dir = img->cache_dir;
    if (dir == NULL) {
        dir = getenv("TMPDIR");
        if (dir == NULL || *dir == '\0')
            dir = "/tmp";
        if (vma_image_set_cache_dir(img, dir) != VMA_OK)
            return VMA_ERR_NOMEM;
        dir = img->cache_dir;
    }
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        size_t n = strlen(dir) + sizeof("/vma-cache.XXXXXX");
        char *tmpl = malloc(n);
        if (tmpl == NULL)
            return fail(img, VMA_ERR_NOMEM, "out of memory");
        snprintf(tmpl, n, "%s/vma-cache.XXXXXX", dir);
        fd = mkostemp(tmpl, O_CLOEXEC);
        if (fd >= 0)
            unlink(tmpl);
        free(tmpl);
    }
    if (fd < 0)
        return fail(img, VMA_ERR_IO, "cannot make a cache file in %s: %s", dir, strerror(errno));
    *out = fd;
    return VMA_OK;
}

static int open_cache(vma_image *img)
{
    int rc = open_tmp(img, &img->data_fd);
    if (rc != VMA_OK)
        return rc;
    if (img->notice != NULL) {
        uint64_t total = 0;
        for (unsigned i = vma_reader_next_device(img->r, 0); i != 0;
             i = vma_reader_next_device(img->r, i))
            total += vma_reader_device_size(img->r, i);
        img->notice(img->notice_opaque, img->cache_dir, total);
    }
    return VMA_OK;
}

/* Where reads will find the stored blocks, chosen before the pass (and
 * before an index file is loaded, whose offsets depend on it): in place
 * for a plain archive, a .vma.lzo (its blocks) and a seekable .vma.zst
 * (its frames); in place through access points built after the pass for
 * a .vma.gz (*gzip); else in a cache file written by the pass (*cache). */
static int choose_data(vma_image *img, bool *cache, bool *gzip)
{
    const char *codec = vma_reader_compression(img->r);
    char err[VMAI_ERRLEN];
    int rc;
    *cache = *gzip = false;
    img->data_fd = img->archive_fd;
    if (strcmp(codec, "none") == 0)
        return VMA_OK;
    if (img->salvage) {
        /* Past a skipped lzop block or zstd frame, the reader's offsets
         * count only the bytes it decoded, so the archive's own block
         * maps no longer match them: keep what the pass read instead. */
        *cache = true;
    } else if (strcmp(codec, "lzo") == 0) {
        /* Index the lzop blocks; offsets are those of the decompressed
         * stream. */
        rc = vmai_lzo_map_scan(img->archive_fd, &img->blocks, err, sizeof(err));
        if (rc != VMA_OK)
            return fail(img, rc, "%s", err);
    } else if (strcmp(codec, "gzip") == 0) {
        *gzip = true;
    } else if (strcmp(codec, "zstd") == 0 &&
               (rc = vmai_zst_map_load(img->archive_fd, (uint64_t)img->st.st_size, &img->blocks,
                                       err, sizeof(err))) != VMA_ERR_NOT_FOUND) {
        if (rc != VMA_OK)
            return fail(img, rc, "%s", err);
    } else {
        *cache = true;
    }
    if (img->blocks != NULL && img->blocks->max_dst > VMAI_IN_PLACE_MAX_BLOCK) {
        /* Each read in flight would hold a whole block, and the block
         * cache four more: past this size, a cache file holds them. */
        vmai_block_map_free(img->blocks);
        img->blocks = NULL;
        *cache = true;
    }
    if (*cache) {
        img->data_fd = -1;
        return open_cache(img);
    }
    return VMA_OK;
}

/* A .vma.gz's access points, found before the pass: where its deflate
 * blocks leave more than VMAI_GZ_MAX_GAP between two points, every read
 * there would inflate that much, so the pass fills a cache instead
 * (*cache). A damaged stream is left to the pass to report (it says
 * where); *gz_rc and gz_err keep this pass's verdict for after it. */
static int gz_points_or_cache(vma_image *img, bool *cache, int *gz_rc, char *gz_err, size_t len)
{
    int wfd, rc;
    if ((rc = open_tmp(img, &wfd)) != VMA_OK)
        return rc;
    rc = vmai_gz_map_build(img->archive_fd, wfd, &img->r->cancel, &img->gz, gz_err, len);
    if (rc != VMA_OK) {
        close(wfd);
        if (rc != VMA_ERR_CORRUPT && rc != VMA_ERR_TRUNCATED)
            return fail(img, rc, "%s", gz_err);
        *gz_rc = rc;
        return VMA_OK;
    }
    if (img->gz->max_gap > VMAI_GZ_MAX_GAP) {
        vmai_gz_map_free(img->gz);
        img->gz = NULL;
        *cache = true;
        img->data_fd = -1;
        return open_cache(img);
    }
    return VMA_OK;
}

static int build_index(vma_image *img, bool cache, bool gzip)
{
    vma_reader *r = img->r;
    char gz_err[VMAI_ERRLEN];
    int rc, gz_rc = VMA_OK;
    if (gzip && (rc = gz_points_or_cache(img, &cache, &gz_rc, gz_err, sizeof(gz_err))) != VMA_OK)
        return rc;
    vma_reader_set_progress(r, image_progress, img);
    rc = vma_reader_read(r, index_cluster, img);
    if (rc != VMA_OK) {
        /* A failure of index_cluster itself already has its message. */
        if (img->cb_status != VMA_OK)
            rc = img->cb_status;
        else
            fail(img, rc, "%s", vma_reader_error(r));
        vmai_image_index_reset(img);
        return rc;
    }
    if (gz_rc != VMA_OK)
        return fail(img, gz_rc, "%s", gz_err);
    if (img->gz != NULL) {
        if (img->gz->size != r->offset)
            return fail(img, VMA_ERR_CORRUPT,
                        "the gzip stream holds %llu bytes but the archive is %llu bytes long",
                        (unsigned long long)img->gz->size, (unsigned long long)r->offset);
    }
    if (img->blocks != NULL && img->blocks->size != r->offset)
        return fail(img, VMA_ERR_CORRUPT,
                    "the %ss hold %llu bytes but the archive is %llu bytes long",
                    img->blocks->what, (unsigned long long)img->blocks->size,
                    (unsigned long long)r->offset);
    if (cache && ftruncate(img->data_fd, (off_t)img->cache_pos) != 0)
        return fail(img, VMA_ERR_IO, "cannot size the cache file: %s", strerror(errno));
    for (unsigned i = vma_reader_next_device(r, 0); i != 0; i = vma_reader_next_device(r, i)) {
        struct vmai_ra_dev *d = &img->ix.dev[i];
        if (d->unsorted)
            qsort(d->e, (size_t)d->count, sizeof(*d->e), cmp_entry);
        d->unsorted = false;
        if (d->count < d->cap) {
            struct vmai_ra_entry *e = realloc(d->e, (size_t)d->count * sizeof(*e));
            if (e != NULL || d->count == 0) {
                d->e = e;
                d->cap = d->count;
            }
        }
        d->size = vma_reader_device_size(r, i);
        if (vma_reader_device_is_vmstate(r, i) && d->stream_len * VMA_CLUSTER_SIZE < d->size)
            d->size = d->stream_len * VMA_CLUSTER_SIZE;
        /* A vmstate stream is read in order, so its size above already
         * ends at its first lost cluster. */
        if (img->salvage && !vma_reader_device_is_vmstate(r, i))
            d->present = &r->seen[i];
    }
    return VMA_OK;
}

/* path made absolute (a daemon changes to / after the open), taking it
 * over; as it is when the working directory is unknown. */
static char *absolute(char *path)
{
    char *cwd = path[0] != '/' ? getcwd(NULL, 0) : NULL;
    if (cwd == NULL)
        return path;
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *abs = malloc(n);
    if (abs != NULL) {
        snprintf(abs, n, "%s/%s", cwd, path);
        free(path);
        path = abs;
    }
    free(cwd);
    return path;
}
/* What an index file of this open is bound to. */
static struct vmai_index_binding binding(const vma_image *img)
{
    return (struct vmai_index_binding){
        .r = img->r,
        .st = &img->st,
        .data_size = img->blocks != NULL ? img->blocks->size : (uint64_t)img->st.st_size,
    };
}


int vma_image_open(vma_image *img, const char *path, unsigned flags)
{
    if (img->opened || img->archive_fd >= 0)
        return fail(img, VMA_ERR_INVALID, "image is already open");
    if (path == NULL || strcmp(path, "-") == 0)
        return fail(img, VMA_ERR_INVALID, "random access needs an archive file, not a stream");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(img, VMA_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    img->archive_fd = fd;
    if (fstat(fd, &img->st) != 0)
        return fail(img, VMA_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    if (!S_ISREG(img->st.st_mode))
        return fail(img, VMA_ERR_INVALID, "%s is not a regular file", path);
    int rc = vma_reader_open_fd(img->r, fd);
    if (rc != VMA_OK)
        return fail(img, rc, "%s", vma_reader_error(img->r));
    bool cache, gzip;
    rc = choose_data(img, &cache, &gzip);
    if (rc != VMA_OK)
        return rc;
    /* An index file holds offsets into the archive (or its decompressed
     * stream, read in place by blocks); a cache is gone with the process,
     * and a .vma.gz would need its access points too. A salvage index
     * covers a damaged archive: never saved for (or replaced by) a normal
     * open. */
    bool use_file = !cache && !gzip && !(flags & VMA_IMAGE_NO_INDEX_FILE) && !img->salvage;

    char *idx = NULL;
    if (use_file && img->index_dir != NULL) {
        if ((idx = vmai_index_cache_path(img->index_dir, img->r, &img->st)) == NULL)
            return fail(img, VMA_ERR_NOMEM, "out of memory");
    } else if (use_file) {
        size_t n = strlen(path) + sizeof(".vmaidx");
        if ((idx = malloc(n)) == NULL)
            return fail(img, VMA_ERR_NOMEM, "out of memory");
        snprintf(idx, n, "%s.vmaidx", path);
    }
    char err[VMAI_ERRLEN];
    if (use_file && !(flags & VMA_IMAGE_REINDEX)) {
        struct vmai_index_binding b = binding(img);
        rc = vmai_index_load(&img->ix, &b, idx, &img->index_dev, &img->index_ino, err,
                             sizeof(err));
        if (rc == VMA_OK) {
            vmai_reader_end_input(img->r);
            if (img->index_dir != NULL)
                vmai_index_cache_touch(idx); /* recently used: evicted last */
            img->index_state = VMA_IMAGE_INDEX_LOADED;
            img->index_path = absolute(idx);
            img->opened = true;
            return VMA_OK;
        }
        vmai_image_index_reset(img);
        /* A refused index of our own cache directory is rebuilt and
         * replaced: nobody put it there by hand. */
        if (rc != VMA_ERR_NOT_FOUND && img->index_dir == NULL) {
            free(idx);
            return fail(img, rc, "%s", err);
        }
    }
    rc = build_index(img, cache, gzip);
    if (rc != VMA_OK) {
        free(idx);
        return rc;
    }
    /* The pass is over: its threads are joined now, so that a process
     * that forks after the open (nbdkit, a daemonizing mount) holds none
     * of their state. */
    vmai_reader_end_input(img->r);
    img->index_state = VMA_IMAGE_INDEX_BUILT;
    /* A directory we may not write to only costs the next open a pass. */
    struct vmai_index_binding b = binding(img);
    if (use_file && vmai_index_save(&img->ix, &b, idx, err, sizeof(err)) == VMA_OK) {
        img->index_state = VMA_IMAGE_INDEX_SAVED;
        if (img->index_dir != NULL && img->index_dir_max > 0)
            vmai_index_cache_evict(img->index_dir, img->index_dir_max, idx);
    }
    free(idx);
    img->opened = true;
    return VMA_OK;
}

/* --- reads --- */

/* First entry with num >= cluster. */
static uint64_t lower_bound(const struct vmai_ra_dev *d, uint64_t cluster)
{
    uint64_t lo = 0, hi = d->count;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (d->e[mid].num < cluster)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Entry of cluster num of d, or d->count. */
static uint64_t find_entry(const struct vmai_ra_dev *d, uint64_t num)
{
    uint64_t i = lower_bound(d, num);
    return i < d->count && d->e[i].num == num ? i : d->count;
}

/* A run of file bytes to pread into a run of the caller's buffer: adjacent
 * stored blocks become one pread. */
struct run {
    uint64_t file_off;
    unsigned char *buf;
    size_t len;
};

/* len bytes at off of the data: the data file, or the decompressed
 * stream through the block map or the access points. */
static int read_data(vma_image *img, unsigned char *buf, size_t len, uint64_t off, char *err,
                     size_t errlen)
{
    if (img->blocks != NULL)
        return vmai_block_map_read(img->blocks, img->archive_fd, buf, len, off, err, errlen);
    if (img->gz != NULL)
        return vmai_gz_map_read(img->gz, img->archive_fd, buf, len, off, err, errlen);
    const char *file = img->data_fd == img->archive_fd ? "archive" : "cache";
    size_t done;
    int rc = vmai_pread_exact(img->data_fd, buf, len, off, &done);
    if (rc == VMA_ERR_IO)
        snprintf(err, errlen, "failed at %s byte %llu: %s", file,
                 (unsigned long long)(off + done), strerror(errno));
    else if (rc != VMA_OK)
        snprintf(err, errlen, "the %s ends at byte %llu, before the indexed data "
                 "(changed since it was indexed?)", file, (unsigned long long)(off + done));
    return rc;
}

/* A run of a read of dev_id from offset `at`. */
static int run_flush(vma_image *img, unsigned dev_id, uint64_t at, struct run *run)
{
    char err[VMAI_ERRLEN];
    int rc = read_data(img, run->buf, run->len, run->file_off, err, sizeof(err));
    run->len = 0;
    if (rc != VMA_OK)
        return fail(img, rc, "read of device '%s' at byte %llu: %s",
                    vma_reader_device_name(img->r, dev_id), (unsigned long long)at, err);
    return VMA_OK;
}

/* --- entries of a loaded index, checked against the archive --- */

/* An index file is input: anyone who reads the archive can write one that
 * passes its checksum and names this archive, and an archive rewritten in
 * place with its mtime put back keeps its old index. So before an entry
 * loaded from a file serves data, the extent header it lies in must be
 * valid and name its device and cluster, with its mask, at exactly its
 * offset. One check of a header marks every entry it names. */

static bool entry_checked(const struct vmai_ra_dev *d, uint64_t i)
{
    return d->checked == NULL ||
           (atomic_load_explicit(&d->checked[i / 64], memory_order_relaxed) >> (i % 64) & 1u);
}

/* The index was found stale or forged at the extent at `at`: every later
 * read fails, and the file is removed (if it is still the one loaded) so
 * that the next open builds a new one. */
static int index_refuted(vma_image *img, unsigned dev_id, uint64_t offset, uint32_t cluster,
                         uint64_t off, uint64_t k, uint64_t at, const char *why)
{
    uint64_t none = 0;
    if (atomic_compare_exchange_strong(&img->bad_extent, &none, at) && img->index_path != NULL) {
        struct stat st;
        if (stat(img->index_path, &st) == 0 && st.st_dev == img->index_dev &&
            st.st_ino == img->index_ino)
            unlink(img->index_path);
    }
    return fail(img, VMA_ERR_CORRUPT,
                "read of device '%s' at byte %llu: index %s is stale or forged: its entry of "
                "cluster %u (data at archive byte %llu) disagrees with extent %llu at archive "
                "byte %llu: %s; reopen to rebuild it",
                vma_reader_device_name(img->r, dev_id), (unsigned long long)offset,
                img->index_path != NULL ? img->index_path : "file", cluster,
                (unsigned long long)off, (unsigned long long)k, (unsigned long long)at, why);
}

/* Entry i of d, met by a read of dev_id from offset. */
static int check_entry(vma_image *img, unsigned dev_id, const struct vmai_ra_dev *d, uint64_t i,
                       uint64_t offset)
{
    if (entry_checked(d, i))
        return VMA_OK;
    const struct vmai_ra_entry *x = &d->e[i];
    uint64_t off = vmai_ra_off(x);
    /* The last extent whose header ends at or before the data. */
    uint64_t lo = 0, hi = img->ix.extent_count;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (img->ix.extents[mid] + VMA_EXTENT_HEADER_SIZE <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return index_refuted(img, dev_id, offset, x->num, off, 0, VMA_HEADER_FIXED_SIZE,
                             "no extent starts before it");
    uint64_t k = lo - 1, at = img->ix.extents[k];
    unsigned char head[VMA_EXTENT_HEADER_SIZE], uuid[16];
    char err[VMAI_ERRLEN];
    struct vmai_extent e;
    int rc = read_data(img, head, sizeof(head), at, err, sizeof(err));
    if (rc != VMA_OK) /* the archive cannot be read there: not proof of a bad index */
        return fail(img, rc, "read of device '%s' at byte %llu: header of extent %llu at "
                    "archive byte %llu: %s", vma_reader_device_name(img->r, dev_id),
                    (unsigned long long)offset, (unsigned long long)k, (unsigned long long)at,
                    err);
    vma_reader_uuid(img->r, uuid);
    if (vmai_extent_parse(head, uuid, &e, err, sizeof(err)) != VMA_OK)
        return index_refuted(img, dev_id, offset, x->num, off, k, at, err);
    uint64_t pos = at + VMA_EXTENT_HEADER_SIZE;
    for (unsigned b = 0; b < VMA_BLOCKINFO_PER_EXTENT; b++) {
        const struct vmai_blockinfo *bi = &e.info[b];
        if (bi->dev_id == 0 || bi->mask == 0)
            continue;
        const struct vmai_ra_dev *o = &img->ix.dev[bi->dev_id];
        uint64_t j = o->checked != NULL ? find_entry(o, bi->cluster_num) : o->count;
        if (j < o->count && o->e[j].mask == bi->mask && vmai_ra_off(&o->e[j]) == pos)
            atomic_fetch_or_explicit(&o->checked[j / 64], (uint64_t)1 << (j % 64),
                                     memory_order_relaxed);
        pos += (uint64_t)vmai_popcount16(bi->mask) * VMA_BLOCK_SIZE;
    }
    if (entry_checked(d, i))
        return VMA_OK;
    return index_refuted(img, dev_id, offset, x->num, off, k, at,
                         "the header does not name it there with its mask");
}

/* Every read fails once the index was refuted. */
static int index_intact(vma_image *img, unsigned dev_id, uint64_t offset)
{
    uint64_t at = atomic_load(&img->bad_extent);
    if (at == 0)
        return VMA_OK;
    return fail(img, VMA_ERR_CORRUPT,
                "read of device '%s' at byte %llu: index %s was found stale or forged at the "
                "extent at archive byte %llu; reopen to rebuild it",
                vma_reader_device_name(img->r, dev_id), (unsigned long long)offset,
                img->index_path != NULL ? img->index_path : "file", (unsigned long long)at);
}

/* Called for each piece of a read, in order: n bytes at out (NULL when
 * only locating), stored at file_off of the data file, or zeros when
 * file_off is NO_DATA. */
#define NO_DATA UINT64_MAX
typedef int (*piece_fn)(void *ctx, unsigned char *out, size_t n, uint64_t file_off);

/* Status of walk() when it meets a lost cluster (salvage mode); the
 * cluster's number goes to *lost. Not a VMA_ERR_*: a failed check of an
 * entry returns VMA_ERR_CORRUPT with its message set. */
#define LOST 1

/* The failure of a read from offset that met lost cluster c. */
static int lost_cluster(vma_image *img, unsigned dev_id, uint64_t offset, uint64_t c)
{
    uint64_t at = c * VMA_CLUSTER_SIZE > offset ? c * VMA_CLUSTER_SIZE : offset;
    return fail(img, VMA_ERR_CORRUPT,
                "read of device '%s' at byte %llu: cluster %llu is lost (damaged or missing "
                "in the archive)",
                vma_reader_device_name(img->r, dev_id), (unsigned long long)at,
                (unsigned long long)c);
}

static int walk(vma_image *img, unsigned dev_id, uint64_t offset, size_t len,
                unsigned char *out, piece_fn fn, void *ctx, uint64_t *lost)
{
    const struct vmai_ra_dev *d = &img->ix.dev[dev_id];
    uint64_t pos = offset, end = offset + len;
    uint64_t i = lower_bound(d, pos / VMA_CLUSTER_SIZE);
    int rc = VMA_OK;
    while (pos < end && rc == VMA_OK) {
        uint64_t c = pos / VMA_CLUSTER_SIZE;
        while (i < d->count && d->e[i].num < c)
            i++;
        uint64_t cend = (c + 1) * VMA_CLUSTER_SIZE < end ? (c + 1) * VMA_CLUSTER_SIZE : end;
        if (i == d->count || d->e[i].num != c) {
            if (d->present != NULL && !vmai_cset_contains(d->present, c)) {
                *lost = c;
                return LOST;
            }
            rc = fn(ctx, out, (size_t)(cend - pos), NO_DATA);
            if (out != NULL)
                out += cend - pos;
            pos = cend;
            continue;
        }
        if ((rc = check_entry(img, dev_id, d, i, offset)) != VMA_OK)
            return rc;
        uint16_t mask = d->e[i].mask;
        uint64_t base = vmai_ra_off(&d->e[i]);
        while (pos < cend && rc == VMA_OK) {
            unsigned b = (unsigned)((pos % VMA_CLUSTER_SIZE) / VMA_BLOCK_SIZE);
            uint64_t bend = c * VMA_CLUSTER_SIZE + (uint64_t)(b + 1) * VMA_BLOCK_SIZE;
            size_t n = (size_t)((bend < cend ? bend : cend) - pos);
            uint64_t fo = NO_DATA;
            if (mask & (1u << b)) {
                unsigned rank = vmai_popcount16((uint16_t)(mask & ((1u << b) - 1)));
                fo = base + (uint64_t)rank * VMA_BLOCK_SIZE + pos % VMA_BLOCK_SIZE;
            }
            rc = fn(ctx, out, n, fo);
            if (out != NULL)
                out += n;
            pos += n;
        }
    }
    return rc;
}

/* Pass 1: the range of the data file a read needs. */
struct span {
    uint64_t lo, hi;
    unsigned runs;              /* preads the pieces alone would take */
    uint64_t run_end;
    const unsigned char *out_end;
};

static int span_piece(void *ctx, unsigned char *out, size_t n, uint64_t fo)
{
    struct span *s = ctx;
    if (fo != NO_DATA) {
        if (fo < s->lo)
            s->lo = fo;
        if (fo + n > s->hi)
            s->hi = fo + n;
        s->runs += fo != s->run_end || out != s->out_end;
        s->run_end = fo + n;
        s->out_end = out + n;
    }
    return VMA_OK;
}

/* Pass 2 after one read of the whole span into a bounce buffer. */
struct bounce {
    const unsigned char *data;
    uint64_t lo;
};

static int bounce_piece(void *ctx, unsigned char *out, size_t n, uint64_t fo)
{
    struct bounce *b = ctx;
    if (fo == NO_DATA)
        memset(out, 0, n);
    else
        memcpy(out, b->data + (fo - b->lo), n);
    return VMA_OK;
}

/* Pass 2 without a bounce buffer: adjacent pieces become one read. */
struct direct {
    vma_image *img;
    unsigned dev_id;
    uint64_t at;                /* the read's offset */
    struct run run;
};

static int direct_piece(void *ctx, unsigned char *out, size_t n, uint64_t fo)
{
    struct direct *x = ctx;
    if (fo == NO_DATA) {
        memset(out, 0, n);
        return VMA_OK;
    }
    struct run *run = &x->run;
    if (run->len > 0 && run->file_off + run->len == fo && run->buf + run->len == out) {
        run->len += n;
        return VMA_OK;
    }
    int rc = run->len > 0 ? run_flush(x->img, x->dev_id, x->at, run) : VMA_OK;
    *run = (struct run){ fo, out, n };
    return rc;
}

/* A read whose stored pieces lie within this much of the data file (and
 * at most twice its length plus 1 MiB) reads that range once: one pread,
 * or one decode per compressed block, instead of one per piece. */
#define BOUNCE_MAX (32u << 20)

int64_t vma_image_pread(vma_image *img, unsigned dev_id, void *buf, size_t len,
                        uint64_t offset)
{
    const struct vmai_ra_dev *d = image_dev(img, dev_id);
    if (d == NULL)
        return fail(img, VMA_ERR_NOT_FOUND, "no device %u in the image", dev_id);
    if (offset >= d->size)
        return 0;
    if (len > d->size - offset)
        len = (size_t)(d->size - offset);
    if (len > INT64_MAX)
        len = INT64_MAX;
    int rc = index_intact(img, dev_id, offset);
    if (rc != VMA_OK)
        return rc;
    struct span sp = { NO_DATA, 0, 0, NO_DATA, NULL };
    uint64_t lost;
    rc = walk(img, dev_id, offset, len, buf, span_piece, &sp, &lost);
    if (rc == LOST)
        return lost_cluster(img, dev_id, offset, lost);
    if (rc != VMA_OK)
        return rc;
    uint64_t width = sp.hi > sp.lo ? sp.hi - sp.lo : 0;
    unsigned char *tmp = NULL;
    /* In a plain archive a few preads cost less than the extra copy. */
    bool in_place = img->blocks == NULL && img->gz == NULL;
    if (width > 0 && width <= BOUNCE_MAX && width <= 2 * (uint64_t)len + (1u << 20) &&
        (!in_place || sp.runs > 8) &&
        (tmp = malloc((size_t)width)) != NULL) {
        struct run run = { sp.lo, tmp, (size_t)width };
        rc = run_flush(img, dev_id, offset, &run);
        struct bounce b = { tmp, sp.lo };
        if (rc == VMA_OK)
            rc = walk(img, dev_id, offset, len, buf, bounce_piece, &b, &lost);
        free(tmp);
        if (rc == VMA_OK)
            return (int64_t)len;
        /* The span also covers bytes the read does not need (other
         * devices, extent headers): a damaged block there must not fail
         * it, so read the pieces alone. */
    }
    {
        struct direct x = { img, dev_id, offset, { 0, NULL, 0 } };
        rc = walk(img, dev_id, offset, len, buf, direct_piece, &x, &lost);
        if (rc == VMA_OK && x.run.len > 0)
            rc = run_flush(img, dev_id, offset, &x.run);
    }
    return rc != VMA_OK ? rc : (int64_t)len;
}

int vma_image_next_data(const vma_image *img, unsigned dev_id, uint64_t offset,
                        uint64_t *data_off, uint64_t *data_len)
{
    const struct vmai_ra_dev *d = image_dev(img, dev_id);
    if (d == NULL) /* the handle is const to the caller, its message is not */
        return fail((vma_image *)img, VMA_ERR_NOT_FOUND, "no device %u in the image", dev_id);
    *data_off = d->size;
    *data_len = 0;
    if (offset >= d->size)
        return VMA_OK;
    uint64_t i = lower_bound(d, offset / VMA_CLUSTER_SIZE);
    uint64_t start = 0, stop = 0;
    bool found = false;
    for (; i < d->count; i++) {
        uint64_t cs = (uint64_t)d->e[i].num * VMA_CLUSTER_SIZE;
        unsigned b0 = offset > cs ? (unsigned)((offset - cs) / VMA_BLOCK_SIZE) : 0;
        unsigned mask = d->e[i].mask;
        if (!found) {
            unsigned rest = b0 < 16 ? mask >> b0 << b0 : 0;
            if (rest == 0)
                continue;
            unsigned b = (unsigned)__builtin_ctz(rest);
            start = cs + (uint64_t)b * VMA_BLOCK_SIZE;
            if (start < offset)
                start = offset;
            found = true;
            /* Stored blocks from b on, up to the first zero block. */
            unsigned run = (unsigned)__builtin_ctz(~(mask >> b) | 0x10000u >> b);
            stop = cs + (uint64_t)(b + run) * VMA_BLOCK_SIZE;
            if (b + run < 16)
                break;
        } else {
            if (cs != stop || !(mask & 1u))
                break;
            unsigned run = (unsigned)__builtin_ctz(~mask | 0x10000u);
            stop = cs + (uint64_t)run * VMA_BLOCK_SIZE;
            if (run < 16)
                break;
        }
    }
    if (!found || start >= d->size)
        found = false;
    if (d->present != NULL) {
        /* Lost clusters read as errors, not zeros: they are data to a
         * reader that skips holes, so it meets the error. */
        uint64_t lc = vmai_cset_next(d->present, offset / VMA_CLUSTER_SIZE, 0);
        uint64_t lstart = lc * VMA_CLUSTER_SIZE > offset ? lc * VMA_CLUSTER_SIZE : offset;
        if (lc < d->present->count && lstart < d->size && (!found || lstart < start)) {
            found = true;
            start = lstart;
            stop = vmai_cset_next(d->present, lc, 1) * VMA_CLUSTER_SIZE;
        }
    }
    if (!found)
        return VMA_OK;
    if (stop > d->size)
        stop = d->size;
    *data_off = start;
    *data_len = stop - start;
    return VMA_OK;
}

/* --- locating pieces for a caller that moves the bytes itself --- */

int vma_image_data_fd(const vma_image *img)
{
    if (!img->opened || img->blocks != NULL || img->gz != NULL)
        return -1;
    return img->data_fd;
}

/* Adjacent pieces of the same kind become one call of the caller's fn. */
struct locate {
    vma_image_piece_fn fn;
    void *opaque;
    uint64_t off, len; /* pending piece; off NO_DATA for zeros */
    int stopped;
};

static int locate_flush(struct locate *l)
{
    if (l->len > 0 && l->fn(l->opaque, l->len, l->off) != 0)
        l->stopped = 1;
    l->len = 0;
    return l->stopped ? VMA_ERR_CALLBACK : VMA_OK;
}

static int locate_piece(void *ctx, unsigned char *out, size_t n, uint64_t fo)
{
    struct locate *l = ctx;
    (void)out;
    bool joins = l->len > 0 && (fo == NO_DATA ? l->off == NO_DATA
                                              : l->off != NO_DATA && l->off + l->len == fo);
    if (joins) {
        l->len += n;
        return VMA_OK;
    }
    int rc = locate_flush(l);
    l->off = fo;
    l->len = n;
    return rc;
}

int vma_image_locate(vma_image *img, unsigned dev_id, uint64_t offset, size_t len,
                     vma_image_piece_fn fn, void *opaque)
{
    const struct vmai_ra_dev *d = image_dev(img, dev_id);
    if (d == NULL)
        return fail(img, VMA_ERR_NOT_FOUND, "no device %u in the image", dev_id);
    if (vma_image_data_fd(img) < 0)
        return fail(img, VMA_ERR_INVALID, "the data of this archive is read through "
                                          "decompression: use vma_image_pread()");
    if (offset >= d->size)
        return VMA_OK;
    if (len > d->size - offset)
        len = (size_t)(d->size - offset);
    int rc = index_intact(img, dev_id, offset);
    if (rc != VMA_OK)
        return rc;
    struct locate l = { fn, opaque, 0, 0, 0 };
    uint64_t lost;
    rc = walk(img, dev_id, offset, len, NULL, locate_piece, &l, &lost);
    if (rc == LOST)
        return lost_cluster(img, dev_id, offset, lost);
    if (rc == VMA_OK)
        rc = locate_flush(&l);
    if (rc == VMA_ERR_CALLBACK)
        return fail(img, rc, "the piece callback asked to stop");
    return rc;
}
