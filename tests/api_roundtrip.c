/*
 * Public API tests (include/vma.h only): write archives with the writer,
 * read them back with the reader and compare every byte; restore targets;
 * writer and restore error cases; threads, pipes, FIFOs and exec: outputs;
 * a sparse multi-GiB device.
 *
 * Content comes from a seeded generator (splitmix64). The base seed is
 * printed; set VMA_TEST_SEED to replay a run.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "vma.h"
#include "rmtree.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define GiB (1024ull * 1024 * 1024)
#define CL VMA_CLUSTER_SIZE
#define BL VMA_BLOCK_SIZE
#define DEV_SLOTS 256 /* dev_id slots in the header: 0..255 */

static uint64_t g_seed = 0x5eed1e55c0ffee01ull;
static char g_tmp[3072];
static const char *g_golden = "tests/golden";
static unsigned g_counter;

/* ---------------------------------------------------------------- */
/* helpers                                                           */
/* ---------------------------------------------------------------- */

struct rng {
    uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static struct rng rng_for(uint64_t salt)
{
    struct rng r = {g_seed ^ (salt * 0xd1342543de82ef95ull)};
    print_message("seed %" PRIu64 " (salt %" PRIu64 "; replay with VMA_TEST_SEED=%" PRIu64 ")\n",
                  g_seed, salt, g_seed);
    return r;
}

static void fill_random(struct rng *r, unsigned char *p, size_t n)
{
    while (n >= 8) {
        uint64_t v = rnd(r);
        memcpy(p, &v, 8);
        p += 8;
        n -= 8;
    }
    uint64_t v = rnd(r);
    memcpy(p, &v, n);
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

static const char *words[] = {"boot", "cores", "memory", "net0", "virtio", "bridge=vmbr0",
                              "scsi0", "local-lvm", "size=32G", "ostype", "l26", "\n",
                              "#qmdump#map", "efidisk0", "smbios1", "uuid=", "0123456789"};

static void fill_text(struct rng *r, unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const char *w = words[rnd(r) % (sizeof(words) / sizeof(words[0]))];
        for (size_t k = 0; w[k] && i < n; k++)
            p[i++] = (unsigned char)w[k];
        if (i < n)
            p[i++] = ' ';
    }
}

/* Device content: whole zero clusters, and blocks that are random, zero,
 * half zero, text-like, or one nonzero byte. */
static void gen_content(struct rng *r, unsigned char *p, uint64_t size)
{
    for (uint64_t off = 0; off < size; off += CL) {
        uint64_t n = size - off < CL ? size - off : CL;
        if (rnd(r) % 4 == 0) {
            memset(p + off, 0, n);
            continue;
        }
        for (uint64_t b = 0; b < n; b += BL) {
            size_t bl = (size_t)(n - b < BL ? n - b : BL);
            unsigned char *q = p + off + b;
            memset(q, 0, bl);
            switch (rnd(r) % 7) {
            case 0: fill_random(r, q, bl); break;
            case 1: break; /* zero */
            case 2: fill_random(r, q, bl / 2); break;
            case 3: fill_random(r, q + bl / 2, bl - bl / 2); break;
            case 4: fill_text(r, q, bl); break;
            case 5: q[rnd(r) % bl] = (unsigned char)(1 + rnd(r) % 255); break;
            default: fill_random(r, q, bl); break;
            }
        }
    }
}

static char *tpath(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *tpath(const char *fmt, ...)
{
    static char bufs[8][4300];
    static unsigned next;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%u-%s", g_tmp, g_counter++, name);
    return b;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    unsigned char *p = malloc((size_t)st.st_size + 1);
    assert_non_null(p);
    size_t done = 0;
    while (done < (size_t)st.st_size) {
        ssize_t n = read(fd, p + done, (size_t)st.st_size - done);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        done += (size_t)n;
    }
    close(fd);
    *len = done;
    return p;
}

static void write_all(const char *path, const void *p, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        fail_msg("create %s: %s", path, strerror(errno));
    const unsigned char *c = p;
    while (len > 0) {
        ssize_t n = write(fd, c, len);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        c += n;
        len -= (size_t)n;
    }
    assert_int_equal(close(fd), 0);
}

/* Compare a buffer with what it should be; the message names the offset. */
static void compare(const char *what, const unsigned char *got, const unsigned char *want,
                    uint64_t len)
{
    if (memcmp(got, want, (size_t)len) == 0)
        return;
    for (uint64_t i = 0; i < len; i++)
        if (got[i] != want[i])
            fail_msg("%s: first difference at byte %" PRIu64 " of %" PRIu64
                     ": 0x%02x, expected 0x%02x (seed %" PRIu64 ")",
                     what, i, len, got[i], want[i], g_seed);
}

#define WRITER_OK(w, call)                                                               \
    do {                                                                                 \
        int rc_ = (call);                                                                \
        if (rc_ < 0)                                                                     \
            fail_msg("%s: %s: %s", #call, vma_status_name(rc_), vma_writer_error(w));    \
    } while (0)

#define READER_OK(r, call)                                                               \
    do {                                                                                 \
        int rc_ = (call);                                                                \
        if (rc_ != VMA_OK)                                                               \
            fail_msg("%s: %s: %s", #call, vma_status_name(rc_), vma_reader_error(r));    \
    } while (0)

#define EXPECT_RC(want, call, errfn, h)                                                  \
    do {                                                                                 \
        int rc_ = (call);                                                                \
        if (rc_ != (want))                                                               \
            fail_msg("%s: got %s, expected %s (%s)", #call, vma_status_name(rc_),        \
                     vma_status_name(want), errfn(h));                                   \
        if ((want) != VMA_OK && errfn(h)[0] == '\0')                                     \
            fail_msg("%s: no error message", #call);                                     \
    } while (0)

/* ---------------------------------------------------------------- */
/* an archive description                                            */
/* ---------------------------------------------------------------- */

struct cfg {
    char name[1100];
    unsigned char *data;
    size_t len;
};

struct dev {
    char name[1100];
    uint64_t size;
    unsigned char *data; /* size bytes */
    unsigned id;         /* dev_id from the writer */
};

struct arch {
    unsigned char uuid[16];
    int64_t ctime;
    unsigned ncfg, ndev;
    struct cfg *cfg;
    struct dev *dev;
};

static struct arch *arch_new(unsigned ncfg, unsigned ndev, struct rng *r)
{
    struct arch *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    a->cfg = calloc(ncfg ? ncfg : 1, sizeof(struct cfg));
    a->dev = calloc(ndev ? ndev : 1, sizeof(struct dev));
    assert_non_null(a->cfg);
    assert_non_null(a->dev);
    a->ncfg = ncfg;
    a->ndev = ndev;
    fill_random(r, a->uuid, 16);
    a->ctime = (int64_t)(1600000000 + rnd(r) % 200000000);
    return a;
}

static void arch_free(struct arch *a)
{
    if (a == NULL)
        return;
    for (unsigned i = 0; i < a->ncfg; i++)
        free(a->cfg[i].data);
    for (unsigned i = 0; i < a->ndev; i++)
        free(a->dev[i].data);
    free(a->cfg);
    free(a->dev);
    free(a);
}

static void set_cfg(struct arch *a, unsigned i, const char *name, const void *data, size_t len)
{
    snprintf(a->cfg[i].name, sizeof(a->cfg[i].name), "%s", name);
    a->cfg[i].data = malloc(len ? len : 1);
    assert_non_null(a->cfg[i].data);
    if (len)
        memcpy(a->cfg[i].data, data, len);
    a->cfg[i].len = len;
}

static void set_dev(struct arch *a, unsigned i, const char *name, uint64_t size, struct rng *r)
{
    snprintf(a->dev[i].name, sizeof(a->dev[i].name), "%s", name);
    a->dev[i].size = size;
    a->dev[i].data = malloc((size_t)size);
    assert_non_null(a->dev[i].data);
    if (r != NULL)
        gen_content(r, a->dev[i].data, size);
    else
        memset(a->dev[i].data, 0, (size_t)size);
}

/* The mask a writer must produce for a cluster: blocks whose part inside
 * the device is not all zero. */
static uint16_t want_mask(const struct dev *d, uint64_t c)
{
    uint16_t m = 0;
    for (unsigned b = 0; b < 16; b++) {
        uint64_t off = c * CL + (uint64_t)b * BL;
        if (off >= d->size)
            break;
        uint64_t n = d->size - off < BL ? d->size - off : BL;
        if (!all_zero(d->data + off, (size_t)n))
            m |= (uint16_t)(1u << b);
    }
    return m;
}

/* Zero bytes of a device counted per 4 KiB block, up to the end. */
static uint64_t want_zero_bytes(const struct dev *d)
{
    uint64_t z = 0;
    for (uint64_t off = 0; off < d->size; off += BL) {
        uint64_t n = d->size - off < BL ? d->size - off : BL;
        if (all_zero(d->data + off, (size_t)n))
            z += n;
    }
    return z;
}

static uint64_t nclusters(uint64_t size) { return size / CL + (size % CL != 0); }

/* Fill a 64 KiB cluster buffer from the device; bytes past the end get
 * garbage (the writer must not store it). Returns 1 if the part inside the
 * device is all zero. */
static int make_cluster(const struct dev *d, uint64_t c, unsigned char *buf)
{
    uint64_t off = c * CL;
    uint64_t n = d->size - off < CL ? d->size - off : CL;
    memcpy(buf, d->data + off, (size_t)n);
    memset(buf + n, 0xee, (size_t)(CL - n));
    return all_zero(buf, (size_t)n);
}

struct job {
    unsigned dev;
    uint64_t cluster;
};

static struct job *make_jobs(const struct arch *a, size_t *njobs, struct rng *r)
{
    size_t n = 0;
    for (unsigned i = 0; i < a->ndev; i++)
        n += nclusters(a->dev[i].size);
    struct job *j = malloc((n ? n : 1) * sizeof(*j));
    assert_non_null(j);
    size_t k = 0;
    for (unsigned i = 0; i < a->ndev; i++)
        for (uint64_t c = 0; c < nclusters(a->dev[i].size); c++)
            j[k++] = (struct job){i, c};
    if (r != NULL)
        for (size_t i = n; i > 1; i--) {
            size_t x = (size_t)(rnd(r) % i);
            struct job t = j[i - 1];
            j[i - 1] = j[x];
            j[x] = t;
        }
    *njobs = n;
    return j;
}

struct wprog {
    uint64_t calls, bytes, zero, last_bytes;
    int non_monotonic;
};

static int wprog_cb(void *opaque, uint64_t bytes, uint64_t zero)
{
    struct wprog *p = opaque;
    if (bytes < p->last_bytes || zero > bytes)
        p->non_monotonic = 1;
    p->calls++;
    p->bytes = p->last_bytes = bytes;
    p->zero = zero;
    return 0;
}

/* Register configs and devices on an open writer. */
static void writer_setup(vma_writer *w, struct arch *a)
{
    WRITER_OK(w, vma_writer_set_uuid(w, a->uuid));
    WRITER_OK(w, vma_writer_set_ctime(w, a->ctime));
    for (unsigned i = 0; i < a->ncfg; i++)
        WRITER_OK(w, vma_writer_add_config(w, a->cfg[i].name, a->cfg[i].data, a->cfg[i].len));
    int seen[DEV_SLOTS] = {0};
    for (unsigned i = 0; i < a->ndev; i++) {
        int id = vma_writer_add_device(w, a->dev[i].name, a->dev[i].size);
        if (id < 1 || id > (int)VMA_MAX_DEVICES)
            fail_msg("add_device %s: %s: %s", a->dev[i].name, vma_status_name(id),
                     vma_writer_error(w));
        assert_int_equal(seen[id], 0);
        seen[id] = 1;
        a->dev[i].id = (unsigned)id;
        /* A disk is recorded in whole 512-byte sectors, the bytes added
         * zeros: from here on that is the device the archive holds. */
        struct dev *d = &a->dev[i];
        uint64_t rec = vma_writer_device_size(w, d->id);
        if (strcmp(d->name, VMA_VMSTATE_NAME) == 0)
            assert_true(rec == d->size);
        else
            assert_true(rec == ((d->size + 511) & ~(uint64_t)511));
        if (rec != d->size) {
            d->data = realloc(d->data, (size_t)rec);
            assert_non_null(d->data);
            memset(d->data + d->size, 0, (size_t)(rec - d->size));
            d->size = rec;
        }
    }
}

/* Write every cluster in random order (some all-zero ones as NULL), close
 * the devices in random order, check the statistics, finish. */
static void writer_fill(vma_writer *w, struct arch *a, struct rng *r)
{
    struct wprog prog = {0};
    vma_writer_set_progress(w, wprog_cb, &prog);
    size_t njobs;
    struct job *jobs = make_jobs(a, &njobs, r);
    unsigned char *buf = malloc(CL);
    assert_non_null(buf);
    for (size_t k = 0; k < njobs; k++) {
        const struct dev *d = &a->dev[jobs[k].dev];
        int zero = make_cluster(d, jobs[k].cluster, buf);
        const void *p = zero && (rnd(r) & 1) ? NULL : buf;
        int rc = vma_writer_write_cluster(w, d->id, jobs[k].cluster, p);
        if (rc != VMA_OK)
            fail_msg("write_cluster(%s, %" PRIu64 "): %s: %s (seed %" PRIu64 ")", d->name,
                     jobs[k].cluster, vma_status_name(rc), vma_writer_error(w), g_seed);
    }
    free(buf);
    free(jobs);
    unsigned *order = malloc((a->ndev ? a->ndev : 1) * sizeof(unsigned));
    assert_non_null(order);
    for (unsigned i = 0; i < a->ndev; i++)
        order[i] = i;
    for (unsigned i = a->ndev; i > 1; i--) {
        unsigned x = (unsigned)(rnd(r) % i), t = order[i - 1];
        order[i - 1] = order[x];
        order[x] = t;
    }
    uint64_t total = 0, total_zero = 0;
    for (unsigned i = 0; i < a->ndev; i++) {
        const struct dev *d = &a->dev[order[i]];
        WRITER_OK(w, vma_writer_close_device(w, d->id));
        uint64_t bytes = 0, zero = 0;
        WRITER_OK(w, vma_writer_device_stats(w, d->id, &bytes, &zero));
        assert_true(bytes == d->size);
        uint64_t wz = want_zero_bytes(d);
        if (zero != wz)
            fail_msg("device_stats(%s): zero_bytes %" PRIu64 ", expected %" PRIu64, d->name,
                     zero, wz);
        total += d->size;
        total_zero += wz;
    }
    free(order);
    assert_false(prog.non_monotonic);
    assert_true(prog.calls == (uint64_t)njobs);
    assert_true(prog.bytes == total);
    assert_true(prog.zero == total_zero);
    WRITER_OK(w, vma_writer_finish(w));
}

static void write_archive(const char *path, struct arch *a, struct rng *r)
{
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    writer_setup(w, a);
    writer_fill(w, a, r);
    vma_writer_free(w);
    assert_true(exists(path));
}

/* ---------------------------------------------------------------- */
/* reading back                                                      */
/* ---------------------------------------------------------------- */

struct rctx {
    const struct arch *a;
    int idx[DEV_SLOTS];   /* dev_id -> index in a->dev, -1 */
    unsigned char **buf;
    unsigned char **seen;
    uint64_t clusters, mask0, zero_blocks;
    int errors;
    char err[512];
};

static void rerr(struct rctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rerr(struct rctx *c, const char *fmt, ...)
{
    if (c->errors++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof(c->err), fmt, ap);
        va_end(ap);
    }
}

static int collect_cb(void *opaque, unsigned dev_id, uint32_t cn, uint16_t mask,
                      const unsigned char *data)
{
    struct rctx *c = opaque;
    c->clusters++;
    if (dev_id >= DEV_SLOTS || c->idx[dev_id] < 0) {
        rerr(c, "cluster of unknown dev_id %u", dev_id);
        return 0;
    }
    int i = c->idx[dev_id];
    const struct dev *d = &c->a->dev[i];
    if (cn >= nclusters(d->size)) {
        rerr(c, "%s: cluster %u past the end", d->name, cn);
        return 0;
    }
    if (c->seen[i][cn]++) {
        rerr(c, "%s: cluster %u twice", d->name, cn);
        return 0;
    }
    uint16_t wm = want_mask(d, cn);
    if (mask != wm)
        rerr(c, "%s: cluster %u has mask 0x%04x, expected 0x%04x", d->name, cn, mask, wm);
    if (mask == 0)
        c->mask0++;
    else
        c->zero_blocks += 16 - (unsigned)__builtin_popcount(mask);
    for (unsigned b = 0; b < 16; b++) {
        uint64_t off = (uint64_t)cn * CL + (uint64_t)b * BL;
        int stored = (mask >> b) & 1;
        if (off >= d->size) {
            if (stored) {
                rerr(c, "%s: cluster %u block %u past the end is stored", d->name, cn, b);
                data += BL;
            }
            continue;
        }
        uint64_t n = d->size - off < BL ? d->size - off : BL;
        if (stored) {
            memcpy(c->buf[i] + off, data, (size_t)n);
            if (all_zero(data, (size_t)n))
                rerr(c, "%s: cluster %u block %u is stored but zero", d->name, cn, b);
            if (!all_zero(data + n, (size_t)(BL - n)))
                rerr(c, "%s: cluster %u block %u: bytes past the end are not zero", d->name, cn,
                     b);
            data += BL;
        } else {
            memset(c->buf[i] + off, 0, (size_t)n);
        }
    }
    return 0;
}

/* Open, check the header against the description, read every cluster and
 * compare each device byte for byte. */
static void read_and_compare(const char *path, const struct arch *a)
{
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));

    unsigned char uuid[16];
    vma_reader_uuid(r, uuid);
    assert_memory_equal(uuid, a->uuid, 16);
    assert_true(vma_reader_ctime(r) == a->ctime);

    assert_int_equal(vma_reader_config_count(r), a->ncfg);
    for (unsigned i = 0; i < a->ncfg; i++) {
        const char *name;
        const void *data;
        size_t len;
        READER_OK(r, vma_reader_config(r, i, &name, &data, &len));
        const char *base = strrchr(a->cfg[i].name, '/');
        assert_string_equal(name, base ? base + 1 : a->cfg[i].name);
        assert_int_equal(len, a->cfg[i].len);
        if (len)
            assert_memory_equal(data, a->cfg[i].data, len);
    }
    assert_int_equal(vma_reader_config(r, a->ncfg, NULL, NULL, NULL), VMA_ERR_NOT_FOUND);

    struct rctx c;
    memset(&c, 0, sizeof(c));
    c.a = a;
    for (unsigned i = 0; i < DEV_SLOTS; i++)
        c.idx[i] = -1;
    unsigned ndev = 0;
    for (unsigned id = vma_reader_next_device(r, 0); id != 0; id = vma_reader_next_device(r, id)) {
        assert_true(id >= 1 && id <= VMA_MAX_DEVICES);
        int found = -1;
        for (unsigned i = 0; i < a->ndev; i++)
            if (a->dev[i].id == id)
                found = (int)i;
        if (found < 0)
            fail_msg("reader lists dev_id %u the writer did not hand out", id);
        assert_string_equal(vma_reader_device_name(r, id), a->dev[found].name);
        assert_true(vma_reader_device_size(r, id) == a->dev[found].size);
        assert_int_equal(vma_reader_device_is_vmstate(r, id), 0);
        assert_int_equal(vma_reader_find_device(r, a->dev[found].name), id);
        c.idx[id] = found;
        ndev++;
    }
    assert_int_equal(ndev, a->ndev);

    c.buf = calloc(a->ndev ? a->ndev : 1, sizeof(*c.buf));
    c.seen = calloc(a->ndev ? a->ndev : 1, sizeof(*c.seen));
    assert_non_null(c.buf);
    assert_non_null(c.seen);
    uint64_t total = 0;
    int all_64k = 1;
    for (unsigned i = 0; i < a->ndev; i++) {
        c.buf[i] = malloc((size_t)a->dev[i].size);
        assert_non_null(c.buf[i]);
        memset(c.buf[i], 0x55, (size_t)a->dev[i].size); /* every byte must be filled */
        c.seen[i] = calloc((size_t)nclusters(a->dev[i].size), 1);
        assert_non_null(c.seen[i]);
        total += nclusters(a->dev[i].size);
        if (a->dev[i].size % CL)
            all_64k = 0;
    }
    READER_OK(r, vma_reader_read(r, collect_cb, &c));
    if (c.errors)
        fail_msg("%d errors; first: %s (seed %" PRIu64 ")", c.errors, c.err, g_seed);
    assert_true(c.clusters == total);
    for (unsigned i = 0; i < a->ndev; i++) {
        for (uint64_t k = 0; k < nclusters(a->dev[i].size); k++)
            if (!c.seen[i][k])
                fail_msg("%s: cluster %" PRIu64 " never seen", a->dev[i].name, k);
        compare(a->dev[i].name, c.buf[i], a->dev[i].data, a->dev[i].size);
        free(c.buf[i]);
        free(c.seen[i]);
    }
    uint64_t clusters, zc, zb;
    vma_reader_counters(r, &clusters, &zc, &zb);
    assert_true(clusters == total);
    if (all_64k) {
        assert_true(zc == c.mask0 * CL);
        assert_true(zb == c.zero_blocks * BL);
    }
    free(c.buf);
    free(c.seen);
    vma_reader_free(r);
}

/* ---------------------------------------------------------------- */
/* round trips                                                       */
/* ---------------------------------------------------------------- */

static void random_arch_roundtrip(uint64_t salt)
{
    struct rng r = rng_for(salt);
    unsigned ndev = 1 + (unsigned)(rnd(&r) % 4);
    unsigned ncfg = (unsigned)(rnd(&r) % 4);
    struct arch *a = arch_new(ncfg, ndev, &r);
    for (unsigned i = 0; i < ncfg; i++) {
        char name[64];
        snprintf(name, sizeof(name), "%s%u.conf", i == 0 ? "qemu-server" : "extra", i);
        size_t len = (size_t)(rnd(&r) % 3000);
        unsigned char *data = malloc(len + 1);
        assert_non_null(data);
        fill_text(&r, data, len);
        set_cfg(a, i, name, data, len);
        free(data);
    }
    for (unsigned i = 0; i < ndev; i++) {
        char name[64];
        snprintf(name, sizeof(name), "drive-scsi%u", i);
        uint64_t size;
        switch (rnd(&r) % 4) {
        case 0: size = (1 + rnd(&r) % 48) * CL; break;           /* 64 KiB multiple */
        case 1: size = (1 + rnd(&r) % 700) * BL; break;          /* 4 KiB multiple */
        case 2: size = (1 + rnd(&r) % 6000) * 512; break;        /* sector multiple */
        default: size = 1 + rnd(&r) % (3 * MiB); break;          /* anything */
        }
        set_dev(a, i, name, size, &r);
    }
    char *path = tpath("random-%" PRIu64 ".vma", salt);
    write_archive(path, a, &r);
    read_and_compare(path, a);
    unlink(path);
    arch_free(a);
}

static void t_roundtrip_seed0(void **state) { (void)state; random_arch_roundtrip(0); }
static void t_roundtrip_seed1(void **state) { (void)state; random_arch_roundtrip(1); }
static void t_roundtrip_seed2(void **state) { (void)state; random_arch_roundtrip(2); }
static void t_roundtrip_seed3(void **state) { (void)state; random_arch_roundtrip(3); }
static void t_roundtrip_seed4(void **state) { (void)state; random_arch_roundtrip(4); }

static void roundtrip_sizes(const uint64_t *sizes, unsigned n, uint64_t salt)
{
    struct rng r = rng_for(salt);
    struct arch *a = arch_new(1, n, &r);
    set_cfg(a, 0, "qemu-server.conf", "memory: 512\n", 12);
    for (unsigned i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof(name), "drive-%u", i);
        set_dev(a, i, name, sizes[i], &r);
    }
    char *path = tpath("sizes-%" PRIu64 ".vma", salt);
    write_archive(path, a, &r);
    read_and_compare(path, a);
    unlink(path);
    arch_free(a);
}

static void t_odd_sizes(void **state)
{
    (void)state;
    static const uint64_t sizes[] = {MiB + 1536, 200704, 4097, 65537, 65535, 4095,
                                     512, 3 * CL + 5000, 2 * CL - 1};
    roundtrip_sizes(sizes, sizeof(sizes) / sizeof(sizes[0]), 10);
}

static void t_one_block(void **state)
{
    (void)state;
    static const uint64_t sizes[] = {4096};
    roundtrip_sizes(sizes, 1, 11);
}

static void t_one_byte(void **state)
{
    (void)state;
    struct rng r = rng_for(12);
    struct arch *a = arch_new(0, 2, &r);
    set_dev(a, 0, "one", 1, NULL);
    a->dev[0].data[0] = 0x42;
    set_dev(a, 1, "zero", 1, NULL);
    char *path = tpath("one-byte.vma");
    write_archive(path, a, &r);
    read_and_compare(path, a);
    unlink(path);
    arch_free(a);
}

/* An all-zero device: every cluster stored with mask 0, whether given as
 * NULL or as a buffer of zeros. */
static int mask_zero_cb(void *opaque, unsigned dev_id, uint32_t cn, uint16_t mask,
                        const unsigned char *data)
{
    (void)dev_id;
    (void)cn;
    (void)data;
    if (mask != 0)
        (*(int *)opaque)++;
    return 0;
}

static void t_all_zero_device(void **state)
{
    (void)state;
    struct rng r = rng_for(13);
    struct arch *a = arch_new(0, 1, &r);
    set_dev(a, 0, "drive-zero", 4 * MiB, NULL);
    char *path = tpath("zero.vma");
    write_archive(path, a, &r);
    read_and_compare(path, a);

    vma_reader *rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, path));
    int nonzero = 0;
    READER_OK(rd, vma_reader_read(rd, mask_zero_cb, &nonzero));
    assert_int_equal(nonzero, 0);
    uint64_t clusters, zc, zb;
    vma_reader_counters(rd, &clusters, &zc, &zb);
    assert_true(clusters == 64);
    assert_true(zc == 4 * MiB);
    assert_true(zb == 0);
    vma_reader_free(rd);

    /* the archive holds no data blocks: header + extents of 512 bytes */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size % 512 == 0);
    assert_true((uint64_t)st.st_size < 12288 + 64 * KiB);

    /* restored to a new file: all holes */
    char *out = tpath("zero.raw");
    rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, path));
    READER_OK(rd, vma_reader_target_create(rd, 1, out));
    READER_OK(rd, vma_reader_restore(rd));
    vma_reader_free(rd);
    assert_int_equal(stat(out, &st), 0);
    assert_true((uint64_t)st.st_size == 4 * MiB);
    assert_true((uint64_t)st.st_blocks * 512 <= 64 * KiB);
    size_t len;
    unsigned char *got = read_all(out, &len);
    assert_true(len == 4 * MiB);
    assert_true(all_zero(got, len));
    free(got);
    unlink(out);
    unlink(path);
    arch_free(a);
}

static uint32_t header_size_of(const char *path)
{
    size_t len;
    unsigned char *p = read_all(path, &len);
    assert_true(len >= 12288);
    uint32_t hs = (uint32_t)p[56] << 24 | (uint32_t)p[57] << 16 | (uint32_t)p[58] << 8 | p[59];
    free(p);
    return hs;
}

/* Configs only (a diskless VM): a header and one empty extent. */
static void t_no_devices(void **state)
{
    (void)state;
    struct rng r = rng_for(14);
    struct arch *a = arch_new(2, 0, &r);
    set_cfg(a, 0, "qemu-server.conf", "cores: 1\n", 9);
    set_cfg(a, 1, "qemu-server.fw", "[OPTIONS]\nenable: 1\n", 20);
    char *path = tpath("nodev.vma");
    write_archive(path, a, &r);
    read_and_compare(path, a);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    uint32_t hs = header_size_of(path);
    assert_true(hs > 12288 && hs % 512 == 0);
    assert_true((uint64_t)st.st_size == (uint64_t)hs + 512);
    unlink(path);
    arch_free(a);
}

/* No devices and no configs: still a header with a blob table (the
 * deployed reader refuses header_size 12288) and one empty extent. */
static void t_nothing(void **state)
{
    (void)state;
    struct rng r = rng_for(15);
    struct arch *a = arch_new(0, 0, &r);
    char *path = tpath("empty.vma");
    write_archive(path, a, &r);
    read_and_compare(path, a);
    uint32_t hs = header_size_of(path);
    assert_true(hs >= 12800 && hs % 512 == 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true((uint64_t)st.st_size == (uint64_t)hs + 512);
    unlink(path);
    arch_free(a);
}

static void t_254_devices(void **state)
{
    (void)state;
    struct rng r = rng_for(16);
    struct arch *a = arch_new(0, VMA_MAX_DEVICES, &r);
    for (unsigned i = 0; i < VMA_MAX_DEVICES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "drive-%03u", i);
        set_dev(a, i, name, BL * (1 + i % 3) + (i % 5) * 100, &r);
    }
    char *path = tpath("254.vma");
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    writer_setup(w, a);
    EXPECT_RC(VMA_ERR_LIMIT, vma_writer_add_device(w, "drive-255", 4096), vma_writer_error, w);
    writer_fill(w, a, &r);
    vma_writer_free(w);
    read_and_compare(path, a);
    unlink(path);
    arch_free(a);
}

static void t_256_configs(void **state)
{
    (void)state;
    struct rng r = rng_for(17);
    struct arch *a = arch_new(VMA_MAX_CONFIGS, 1, &r);
    for (unsigned i = 0; i < VMA_MAX_CONFIGS; i++) {
        char name[32];
        snprintf(name, sizeof(name), "c%03u.conf", i);
        size_t len = (size_t)(rnd(&r) % 200);
        unsigned char data[200];
        fill_text(&r, data, len);
        set_cfg(a, i, name, data, len);
    }
    set_dev(a, 0, "drive-scsi0", 3 * CL, &r);
    char *path = tpath("256.vma");
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    writer_setup(w, a);
    EXPECT_RC(VMA_ERR_LIMIT, vma_writer_add_config(w, "c256.conf", "x", 1), vma_writer_error, w);
    writer_fill(w, a, &r);
    vma_writer_free(w);
    read_and_compare(path, a);
    /* lookup by name */
    vma_reader *rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, path));
    const void *data;
    size_t len;
    READER_OK(rd, vma_reader_find_config(rd, "c255.conf", &data, &len));
    assert_int_equal(len, a->cfg[255].len);
    assert_int_equal(vma_reader_find_config(rd, "c256.conf", &data, &len), VMA_ERR_NOT_FOUND);
    vma_reader_free(rd);
    unlink(path);
    arch_free(a);
}

static void t_config_sizes(void **state)
{
    (void)state;
    struct rng r = rng_for(18);
    struct arch *a = arch_new(3, 1, &r);
    unsigned char *big = malloc(VMA_MAX_CONFIG_SIZE + 1);
    assert_non_null(big);
    fill_random(&r, big, VMA_MAX_CONFIG_SIZE + 1);
    set_cfg(a, 0, "big.conf", big, VMA_MAX_CONFIG_SIZE);
    set_cfg(a, 1, "empty.conf", "", 0);
    set_cfg(a, 2, "nul.bin", "a\0b\0", 4); /* binary data is kept as is */
    set_dev(a, 0, "drive-scsi0", CL, &r);
    char *path = tpath("cfgsize.vma");
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    writer_setup(w, a);
    EXPECT_RC(VMA_ERR_LIMIT, vma_writer_add_config(w, "toobig.conf", big, VMA_MAX_CONFIG_SIZE + 1),
              vma_writer_error, w);
    writer_fill(w, a, &r);
    vma_writer_free(w);
    read_and_compare(path, a);
    unlink(path);
    free(big);
    arch_free(a);
}

/* The header must fit the 512 KiB the deployed tools use: eight configs of
 * 64 KiB do not. */
static void t_header_limit(void **state)
{
    (void)state;
    struct rng r = rng_for(19);
    unsigned char *big = malloc(VMA_MAX_CONFIG_SIZE);
    assert_non_null(big);
    fill_random(&r, big, VMA_MAX_CONFIG_SIZE);
    struct arch *a = arch_new(7, 0, &r);
    for (unsigned i = 0; i < 7; i++) {
        char name[32];
        snprintf(name, sizeof(name), "big%u.conf", i);
        big[0] = (unsigned char)i;
        set_cfg(a, i, name, big, VMA_MAX_CONFIG_SIZE);
    }
    char *path = tpath("hdrlimit.vma");
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    writer_setup(w, a);
    EXPECT_RC(VMA_ERR_LIMIT, vma_writer_add_config(w, "big7.conf", big, VMA_MAX_CONFIG_SIZE),
              vma_writer_error, w);
    writer_fill(w, a, &r);
    vma_writer_free(w);
    read_and_compare(path, a);
    assert_true(header_size_of(path) <= 512 * KiB);
    unlink(path);
    free(big);
    arch_free(a);
}

/* Long names, around the 512-byte blob table steps (the deployed writer
 * makes archives its reader refuses with a 509-byte device name). */
static void t_long_names(void **state)
{
    (void)state;
    static const unsigned lens[] = {509, 510, 511, 512, 513, 1021, 1022, 1023, 1024};
    const unsigned n = sizeof(lens) / sizeof(lens[0]);
    struct rng r = rng_for(20);
    struct arch *a = arch_new(2, n, &r);
    char name[1100];
    for (unsigned i = 0; i < n; i++) {
        memset(name, 'a' + (char)i, lens[i]);
        name[lens[i]] = 0;
        set_dev(a, i, name, BL, &r);
    }
    memset(name, 'c', 1024);
    name[1024] = 0;
    set_cfg(a, 0, name, "x", 1);
    memset(name, 'd', 509);
    name[509] = 0;
    set_cfg(a, 1, name, "y", 1);
    char *path = tpath("names.vma");
    write_archive(path, a, &r);
    read_and_compare(path, a);
    unlink(path);
    arch_free(a);
}

/* A config added by path is stored under its base name. */
static void t_config_base_name(void **state)
{
    (void)state;
    struct rng r = rng_for(21);
    struct arch *a = arch_new(2, 0, &r);
    set_cfg(a, 0, "/etc/pve/qemu-server/100.conf", "cores: 4\n", 9);
    set_cfg(a, 1, "relative/dir/qemu-server.fw", "[OPTIONS]\n", 10);
    char *path = tpath("basename.vma");
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    writer_setup(w, a);
    /* same base name again */
    int rc = vma_writer_add_config(w, "/tmp/100.conf", "x", 1);
    assert_true(rc < 0);
    assert_true(vma_writer_error(w)[0] != 0);
    writer_fill(w, a, &r);
    vma_writer_free(w);
    read_and_compare(path, a); /* compares against the base names */
    vma_reader *rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, path));
    READER_OK(rd, vma_reader_find_config(rd, "100.conf", NULL, NULL));
    assert_int_equal(vma_reader_find_config(rd, "/etc/pve/qemu-server/100.conf", NULL, NULL),
                     VMA_ERR_NOT_FOUND);
    vma_reader_free(rd);
    unlink(path);
    arch_free(a);
}

/* ---------------------------------------------------------------- */
/* vmstate                                                           */
/* ---------------------------------------------------------------- */

struct vms_ctx {
    uint32_t next;
    int order_errors;
    unsigned char *buf; /* 65536 per cluster */
    uint32_t max;
    unsigned vms_id;
};

static int vms_cb(void *opaque, unsigned dev_id, uint32_t cn, uint16_t mask,
                  const unsigned char *data)
{
    struct vms_ctx *c = opaque;
    if (dev_id != c->vms_id)
        return 0;
    if (cn != c->next++ || cn >= c->max) {
        c->order_errors++;
        return 0;
    }
    for (unsigned b = 0; b < 16; b++) {
        unsigned char *dst = c->buf + (size_t)cn * CL + b * BL;
        if (mask & (1u << b)) {
            memcpy(dst, data, BL);
            data += BL;
        } else {
            memset(dst, 0, BL);
        }
    }
    return 0;
}

/* An archive with a disk and a vmstate stream of 4 clusters (the last
 * cut, one all zero and written as NULL, one with zero blocks), their
 * clusters interleaved. */
struct vms_archive {
    struct arch *a;
    unsigned char *vdata; /* the stream as written */
    uint64_t vsize;
    uint32_t vclusters;
    int vid;
    char *path;
};

static void vms_archive_write(struct vms_archive *v)
{
    struct rng r = rng_for(22);
    const uint64_t vsize = 3 * CL + 1000; /* 4 clusters, the last cut */
    const uint32_t vclusters = 4;
    v->vsize = vsize;
    v->vclusters = vclusters;
    unsigned char *vdata = calloc(vclusters, CL);
    assert_non_null(vdata);
    gen_content(&r, vdata, vsize);
    memset(vdata + CL, 0, CL); /* cluster 1: all zero, written as NULL */
    memset(vdata + 2 * CL + 3 * BL, 0, 5 * BL); /* zero blocks inside cluster 2 */
    fill_random(&r, vdata + 2 * CL, 100);

    struct arch *a = arch_new(1, 1, &r);
    set_cfg(a, 0, "qemu-server.conf", "vmstate: yes\n", 13);
    set_dev(a, 0, "drive-scsi0", 5 * CL, &r);
    char *path = tpath("vmstate.vma");
    v->path = strdup(path);
    assert_non_null(v->path);
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    writer_setup(w, a);
    int vid = vma_writer_add_device(w, VMA_VMSTATE_NAME, vsize);
    assert_true(vid >= 1);
    /* interleave disk clusters with the vmstate stream */
    unsigned char *buf = malloc(CL);
    assert_non_null(buf);
    for (uint32_t c = 0; c < 5; c++) {
        make_cluster(&a->dev[0], 4 - c, buf);
        WRITER_OK(w, vma_writer_write_cluster(w, a->dev[0].id, 4 - c, buf));
        if (c < vclusters)
            WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)vid, c, c == 1 ? NULL : vdata + (size_t)c * CL));
    }
    free(buf);
    WRITER_OK(w, vma_writer_close_device(w, a->dev[0].id));
    WRITER_OK(w, vma_writer_close_device(w, (unsigned)vid));
    WRITER_OK(w, vma_writer_finish(w));
    vma_writer_free(w);
    v->a = a;
    v->vdata = vdata;
    v->vid = vid;
}

static void vms_archive_free(struct vms_archive *v)
{
    unlink(v->path);
    free(v->path);
    free(v->vdata);
    arch_free(v->a);
}

/* read: the disk compares, the vmstate comes in order */
static void vmstate_read(const struct vms_archive *v)
{
    struct arch *a = v->a;
    const char *path = v->path;
    const unsigned char *vdata = v->vdata;
    uint64_t vsize = v->vsize;
    uint32_t vclusters = v->vclusters;
    vma_reader *rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, path));
    unsigned rid = vma_reader_find_device(rd, VMA_VMSTATE_NAME);
    assert_int_equal(rid, (unsigned)v->vid);
    assert_int_equal(vma_reader_device_is_vmstate(rd, rid), 1);
    assert_int_equal(vma_reader_device_is_vmstate(rd, a->dev[0].id), 0);
    assert_true(vma_reader_device_size(rd, rid) == vsize);
    struct vms_ctx c = {0, 0, calloc(vclusters, CL), vclusters, rid};
    assert_non_null(c.buf);
    READER_OK(rd, vma_reader_read(rd, vms_cb, &c));
    assert_int_equal(c.order_errors, 0);
    assert_int_equal(c.next, vclusters);
    /* per-device counters: bytes inside each device, stored or zero */
    uint64_t stored, zero;
    vma_reader_device_counters(rd, a->dev[0].id, &stored, &zero);
    assert_true(stored + zero == a->dev[0].size);
    vma_reader_device_counters(rd, rid, &stored, &zero);
    assert_true(stored + zero == vsize);
    assert_true(zero >= CL + 5 * BL); /* cluster 1, the zero blocks of cluster 2 */
    vma_reader_device_counters(rd, 0, &stored, &zero);
    assert_true(stored == 0 && zero == 0);
    compare("vmstate", c.buf, vdata, vsize);
    free(c.buf);
    vma_reader_free(rd);
}

/* restore: the vmstate file has its zero blocks as zeros, cut to size */
static void vmstate_restore_files(const struct vms_archive *v)
{
    struct arch *a = v->a;
    const char *path = v->path;
    const unsigned char *vdata = v->vdata;
    uint64_t vsize = v->vsize;
    unsigned rid = (unsigned)v->vid;
    char *vout = tpath("vmstate.bin");
    char *dout = tpath("disk.raw");
    vma_reader *rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, path));
    /* an existing target is not for the vmstate stream */
    write_all(vout, "", 0);
    EXPECT_RC(VMA_ERR_INVALID, vma_reader_target_open(rd, rid, vout, 0), vma_reader_error, rd);
    vma_reader_free(rd);
    unlink(vout);
    rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, path));
    READER_OK(rd, vma_reader_target_create(rd, rid, vout));
    READER_OK(rd, vma_reader_target_create(rd, a->dev[0].id, dout));
    READER_OK(rd, vma_reader_restore(rd));
    vma_reader_free(rd);
    size_t len;
    unsigned char *got = read_all(vout, &len);
    assert_true(len == vsize);
    compare("vmstate.bin", got, vdata, vsize);
    free(got);
    got = read_all(dout, &len);
    assert_true(len == a->dev[0].size);
    compare("disk.raw", got, a->dev[0].data, len);
    free(got);
    unlink(vout);
    unlink(dout);
}

/* a caller's descriptor gets the stream sequentially, and nothing past
 * the recorded size (the format discards it): no cut needed after */
static void vmstate_restore_fd(const struct vms_archive *v)
{
    unsigned rid = (unsigned)v->vid;
    char *vout = tpath("vmstate.bin");
    size_t len;
    unsigned char *got;
    vma_reader *rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, v->path));
    int vfd = open(vout, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(vfd >= 0);
    READER_OK(rd, vma_reader_target_fd(rd, rid, vfd, 0));
    READER_OK(rd, vma_reader_target_skip(rd, v->a->dev[0].id));
    READER_OK(rd, vma_reader_restore(rd));
    vma_reader_free(rd);
    close(vfd);
    got = read_all(vout, &len);
    assert_true(len == v->vsize);
    compare("vmstate through a descriptor", got, v->vdata, v->vsize);
    free(got);
    unlink(vout);
}

static void t_vmstate(void **state)
{
    (void)state;
    struct vms_archive v;
    vms_archive_write(&v);
    vmstate_read(&v);
    vmstate_restore_files(&v);
    vmstate_restore_fd(&v);
    vms_archive_free(&v);
}

static void t_vmstate_order_refused(void **state)
{
    (void)state;
    char *path = tpath("vmorder.vma");
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    int vid = vma_writer_add_device(w, VMA_VMSTATE_NAME, 4 * CL);
    assert_true(vid >= 1);
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)vid, 0, NULL));
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_write_cluster(w, (unsigned)vid, 2, NULL),
              vma_writer_error, w);
    vma_writer_free(w);
    /* the unfinished archive was removed */
    assert_false(exists(path));

    w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    vid = vma_writer_add_device(w, VMA_VMSTATE_NAME, 4 * CL);
    assert_true(vid >= 1);
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_write_cluster(w, (unsigned)vid, 1, NULL),
              vma_writer_error, w);
    vma_writer_free(w);
    assert_false(exists(path));
}

/* ---------------------------------------------------------------- */
/* writer errors                                                     */
/* ---------------------------------------------------------------- */

static vma_writer *new_writer(const char *path)
{
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_path(w, path));
    return w;
}

static void t_writer_bad_names(void **state)
{
    (void)state;
    char *path = tpath("badnames.vma");
    vma_writer *w = new_writer(path);
    static const char *bad[] = {"",     ".",       "..",      "a/b",     "/abs",
                                "dir/", "../x",    "a\nb",    "a\rb",    "\tb",
                                "\x1b[31m", "d\x7f", "\x01",   "x\nDEV: dev_id=2"};
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        EXPECT_RC(VMA_ERR_INVALID, vma_writer_add_device(w, bad[i], CL), vma_writer_error, w);
    /* the last one's message quotes it escaped, on one line */
    assert_non_null(strstr(vma_writer_error(w), "'x\\nDEV: dev_id=2'"));
    assert_null(strchr(vma_writer_error(w), '\n'));
    /* config names: the base name must be valid */
    static const char *badcfg[] = {"", ".", "..", "dir/", "/", "a/..", "a\nb", "c\x1b", "\x7f"};
    for (unsigned i = 0; i < sizeof(badcfg) / sizeof(badcfg[0]); i++)
        EXPECT_RC(VMA_ERR_INVALID, vma_writer_add_config(w, badcfg[i], "x", 1), vma_writer_error, w);
    /* too long: refused (the header names VMA_ERR_LIMIT for a name too
     * large; vma_name_is_valid() makes it invalid too) */
    char *longname = malloc(VMA_MAX_NAME_LEN + 2);
    assert_non_null(longname);
    memset(longname, 'n', VMA_MAX_NAME_LEN + 1);
    longname[VMA_MAX_NAME_LEN + 1] = 0;
    int rc = vma_writer_add_device(w, longname, CL);
    assert_true(rc == VMA_ERR_LIMIT || rc == VMA_ERR_INVALID);
    rc = vma_writer_add_config(w, longname, "x", 1);
    assert_true(rc == VMA_ERR_LIMIT || rc == VMA_ERR_INVALID);
    free(longname);
    vma_writer_free(w);
    assert_false(exists(path));
}

static void t_writer_duplicates(void **state)
{
    (void)state;
    char *path = tpath("dups.vma");
    vma_writer *w = new_writer(path);
    int id = vma_writer_add_device(w, "drive-scsi0", CL);
    assert_true(id >= 1);
    int rc = vma_writer_add_device(w, "drive-scsi0", 2 * CL);
    assert_true(rc < 0);
    assert_true(vma_writer_error(w)[0] != 0);
    WRITER_OK(w, vma_writer_add_config(w, "qemu-server.conf", "a", 1));
    rc = vma_writer_add_config(w, "qemu-server.conf", "b", 1);
    assert_true(rc < 0);
    rc = vma_writer_add_config(w, "/other/dir/qemu-server.conf", "c", 1);
    assert_true(rc < 0);
    vma_writer_free(w);
    assert_false(exists(path));
}

static void t_writer_sizes(void **state)
{
    (void)state;
    char *path = tpath("devsizes.vma");
    vma_writer *w = new_writer(path);
    int rc = vma_writer_add_device(w, "zero", 0);
    assert_true(rc < 0);
    EXPECT_RC(VMA_ERR_LIMIT, vma_writer_add_device(w, "huge", VMA_MAX_DEVICE_SIZE + 1),
              vma_writer_error, w);
    EXPECT_RC(VMA_ERR_LIMIT, vma_writer_add_device(w, "huger", UINT64_MAX), vma_writer_error, w);
    rc = vma_writer_add_device(w, "max", VMA_MAX_DEVICE_SIZE);
    assert_true(rc >= 1);
    vma_writer_free(w);
    assert_false(exists(path));
}

static void t_writer_stream_errors(void **state)
{
    (void)state;
    unsigned char *buf = calloc(1, CL);
    assert_non_null(buf);
    buf[5] = 1;

    /* write after close */
    char *path = tpath("afterclose.vma");
    vma_writer *w = new_writer(path);
    int id = vma_writer_add_device(w, "d", CL);
    assert_true(id >= 1);
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, 0, buf));
    WRITER_OK(w, vma_writer_close_device(w, (unsigned)id));
    int rc = vma_writer_write_cluster(w, (unsigned)id, 0, buf);
    assert_int_equal(rc, VMA_ERR_INVALID);
    vma_writer_free(w);
    assert_false(exists(path));

    /* close before every cluster was written */
    path = tpath("short.vma");
    w = new_writer(path);
    id = vma_writer_add_device(w, "drive-short", 3 * CL);
    assert_true(id >= 1);
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, 0, buf));
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, 2, NULL));
    EXPECT_RC(VMA_ERR_INCOMPLETE, vma_writer_close_device(w, (unsigned)id), vma_writer_error, w);
    assert_non_null(strstr(vma_writer_error(w), "drive-short"));
    vma_writer_free(w);
    assert_false(exists(path));

    /* finish with a stream still open */
    path = tpath("open.vma");
    w = new_writer(path);
    int id1 = vma_writer_add_device(w, "drive-closed", CL);
    int id2 = vma_writer_add_device(w, "drive-open", CL);
    assert_true(id1 >= 1 && id2 >= 1);
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id1, 0, buf));
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id2, 0, NULL));
    WRITER_OK(w, vma_writer_close_device(w, (unsigned)id1));
    EXPECT_RC(VMA_ERR_INCOMPLETE, vma_writer_finish(w), vma_writer_error, w);
    assert_non_null(strstr(vma_writer_error(w), "drive-open"));
    vma_writer_free(w);
    assert_false(exists(path));

    /* finish with a device that never got a cluster */
    path = tpath("never.vma");
    w = new_writer(path);
    id = vma_writer_add_device(w, "d", CL);
    assert_true(id >= 1);
    EXPECT_RC(VMA_ERR_INCOMPLETE, vma_writer_finish(w), vma_writer_error, w);
    vma_writer_free(w);
    assert_false(exists(path));

    /* cluster past the end, duplicate cluster, unknown dev_id */
    path = tpath("range.vma");
    w = new_writer(path);
    id = vma_writer_add_device(w, "d", CL + 1); /* clusters 0 and 1 */
    assert_true(id >= 1);
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_write_cluster(w, (unsigned)id, 2, buf),
              vma_writer_error, w);
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_write_cluster(w, (unsigned)id, UINT32_MAX, buf),
              vma_writer_error, w);
    vma_writer_free(w);
    w = new_writer(path);
    id = vma_writer_add_device(w, "d", CL + 1);
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, 1, buf));
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_write_cluster(w, (unsigned)id, 1, buf),
              vma_writer_error, w);
    vma_writer_free(w);
    w = new_writer(path);
    id = vma_writer_add_device(w, "d", CL);
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_write_cluster(w, (unsigned)id + 1, 0, buf),
              vma_writer_error, w);
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_write_cluster(w, 0, 0, buf), vma_writer_error, w);
    vma_writer_free(w);
    assert_false(exists(path));
    free(buf);
}

static void t_writer_setup_after_start(void **state)
{
    (void)state;
    char *path = tpath("late.vma");
    vma_writer *w = new_writer(path);
    int id = vma_writer_add_device(w, "d", 2 * CL);
    assert_true(id >= 1);
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, 0, NULL));
    static const unsigned char u[16] = {1};
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_set_uuid(w, u), vma_writer_error, w);
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_set_ctime(w, 5), vma_writer_error, w);
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_add_config(w, "late.conf", "x", 1), vma_writer_error, w);
    int rc = vma_writer_add_device(w, "late", CL);
    assert_int_equal(rc, VMA_ERR_INVALID);
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_open_path(w, tpath("other.vma")), vma_writer_error, w);
    vma_writer_free(w);
    assert_false(exists(path));
}

static void t_writer_open_errors(void **state)
{
    (void)state;
    /* an existing file is never overwritten */
    char *path = tpath("exists.vma");
    write_all(path, "precious", 8);
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    EXPECT_RC(VMA_ERR_EXISTS, vma_writer_open_path(w, path), vma_writer_error, w);
    vma_writer_free(w);
    assert_int_equal(stat(path, &after), 0);
    assert_true(before.st_ino == after.st_ino);
    assert_true(after.st_size == 8);
    size_t len;
    unsigned char *p = read_all(path, &len);
    assert_memory_equal(p, "precious", 8);
    free(p);
    unlink(path);

    /* an output only once */
    path = tpath("twice.vma");
    w = new_writer(path);
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_open_path(w, tpath("twice2.vma")), vma_writer_error, w);
    vma_writer_free(w);
    assert_false(exists(path));

    /* a directory that does not exist */
    w = vma_writer_new();
    assert_non_null(w);
    EXPECT_RC(VMA_ERR_IO, vma_writer_open_path(w, tpath("nodir/x.vma")), vma_writer_error, w);
    vma_writer_free(w);

    vma_writer_free(NULL);
    w = vma_writer_new();
    assert_non_null(w);
    assert_string_equal(vma_writer_error(w), "");
    vma_writer_free(w);
}

/* A writer freed before finish removes the file it created. */
static void t_writer_free_removes(void **state)
{
    (void)state;
    char *path = tpath("partial.vma");
    vma_writer *w = new_writer(path);
    int id = vma_writer_add_device(w, "d", 200 * CL);
    assert_true(id >= 1);
    unsigned char *buf = malloc(CL);
    assert_non_null(buf);
    memset(buf, 0x11, CL);
    for (uint64_t c = 0; c < 150; c++) /* enough for extents on disk */
        WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, c, buf));
    free(buf);
    assert_true(exists(path));
    vma_writer_free(w);
    assert_false(exists(path));
}

struct cancel {
    unsigned calls, stop_at;
};

static int cancel_cb(void *opaque, uint64_t bytes, uint64_t zero)
{
    (void)bytes;
    (void)zero;
    struct cancel *c = opaque;
    return ++c->calls >= c->stop_at;
}

static void t_writer_progress_cancel(void **state)
{
    (void)state;
    char *path = tpath("cancel.vma");
    vma_writer *w = new_writer(path);
    int id = vma_writer_add_device(w, "d", 10 * CL);
    assert_true(id >= 1);
    struct cancel c = {0, 3};
    vma_writer_set_progress(w, cancel_cb, &c);
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, 0, NULL));
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, 1, NULL));
    EXPECT_RC(VMA_ERR_CALLBACK, vma_writer_write_cluster(w, (unsigned)id, 2, NULL),
              vma_writer_error, w);
    char first[512];
    snprintf(first, sizeof(first), "%s", vma_writer_error(w));
    /* stays failed */
    EXPECT_RC(VMA_ERR_CALLBACK, vma_writer_write_cluster(w, (unsigned)id, 3, NULL),
              vma_writer_error, w);
    EXPECT_RC(VMA_ERR_CALLBACK, vma_writer_finish(w), vma_writer_error, w);
    assert_string_equal(vma_writer_error(w), first);
    vma_writer_free(w);
    assert_false(exists(path));
}

/* ---------------------------------------------------------------- */
/* threads, pipes, FIFOs, exec:                                      */
/* ---------------------------------------------------------------- */

struct tjob {
    vma_writer *w;
    const struct arch *a;
    const struct job *jobs;
    size_t njobs;
    unsigned t, nthreads;
    int rc;
    char err[512];
};

static void *writer_thread(void *arg)
{
    struct tjob *j = arg;
    unsigned char *buf = malloc(CL);
    j->rc = buf ? VMA_OK : VMA_ERR_NOMEM;
    for (size_t k = j->t; buf && k < j->njobs; k += j->nthreads) {
        const struct dev *d = &j->a->dev[j->jobs[k].dev];
        int zero = make_cluster(d, j->jobs[k].cluster, buf);
        int rc = vma_writer_write_cluster(j->w, d->id, j->jobs[k].cluster,
                                          zero && (k & 2) ? NULL : buf);
        uint64_t b, z;
        if (rc == VMA_OK)
            rc = vma_writer_device_stats(j->w, d->id, &b, &z);
        if (rc != VMA_OK) {
            j->rc = rc;
            snprintf(j->err, sizeof(j->err), "%s", vma_writer_error(j->w));
            break;
        }
    }
    free(buf);
    return NULL;
}

static void t_threads(void **state)
{
    (void)state;
    struct rng r = rng_for(30);
    struct arch *a = arch_new(1, 3, &r);
    set_cfg(a, 0, "qemu-server.conf", "cores: 8\n", 9);
    set_dev(a, 0, "drive-scsi0", 6 * MiB, &r);
    set_dev(a, 1, "drive-scsi1", 3 * MiB + 4096 + 7, &r);
    set_dev(a, 2, "drive-efidisk0", 528 * KiB, &r);
    char *path = tpath("threads.vma");
    vma_writer *w = new_writer(path);
    writer_setup(w, a);
    size_t njobs;
    struct job *jobs = make_jobs(a, &njobs, &r);
    enum { NT = 4 };
    pthread_t th[NT];
    struct tjob tj[NT];
    for (unsigned t = 0; t < NT; t++) {
        tj[t] = (struct tjob){w, a, jobs, njobs, t, NT, 0, ""};
        assert_int_equal(pthread_create(&th[t], NULL, writer_thread, &tj[t]), 0);
    }
    for (unsigned t = 0; t < NT; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        if (tj[t].rc != VMA_OK)
            fail_msg("thread %u: %s: %s", t, vma_status_name(tj[t].rc), tj[t].err);
    }
    free(jobs);
    for (unsigned i = 0; i < a->ndev; i++) {
        WRITER_OK(w, vma_writer_close_device(w, a->dev[i].id));
        uint64_t b, z;
        WRITER_OK(w, vma_writer_device_stats(w, a->dev[i].id, &b, &z));
        assert_true(b == a->dev[i].size);
        assert_true(z == want_zero_bytes(&a->dev[i]));
    }
    WRITER_OK(w, vma_writer_finish(w));
    vma_writer_free(w);
    read_and_compare(path, a);
    unlink(path);
    arch_free(a);
}

/* The reader side of a stream, run in a thread. */
struct rthread {
    const struct arch *a;
    int fd;             /* >= 0: open_fd, else path */
    const char *path;
    int rc;
    char err[512];
    struct rctx c;
};

static void *reader_thread(void *arg)
{
    struct rthread *t = arg;
    vma_reader *r = vma_reader_new();
    if (r == NULL) {
        t->rc = VMA_ERR_NOMEM;
        return NULL;
    }
    t->rc = t->fd >= 0 ? vma_reader_open_fd(r, t->fd) : vma_reader_open_path(r, t->path);
    if (t->rc == VMA_OK)
        t->rc = vma_reader_read(r, collect_cb, &t->c);
    snprintf(t->err, sizeof(t->err), "%s", vma_reader_error(r));
    vma_reader_free(r);
    return NULL;
}

static void rthread_init(struct rthread *t, const struct arch *a)
{
    memset(t, 0, sizeof(*t));
    t->a = a;
    t->fd = -1;
    t->c.a = a;
    for (unsigned i = 0; i < DEV_SLOTS; i++)
        t->c.idx[i] = -1;
    t->c.buf = calloc(a->ndev, sizeof(*t->c.buf));
    t->c.seen = calloc(a->ndev, sizeof(*t->c.seen));
    assert_non_null(t->c.buf);
    assert_non_null(t->c.seen);
    for (unsigned i = 0; i < a->ndev; i++) {
        t->c.buf[i] = malloc((size_t)a->dev[i].size);
        t->c.seen[i] = calloc((size_t)nclusters(a->dev[i].size), 1);
        assert_non_null(t->c.buf[i]);
        assert_non_null(t->c.seen[i]);
        memset(t->c.buf[i], 0x55, (size_t)a->dev[i].size);
    }
}

/* dev_ids are known once the writer registered the devices */
static void rthread_ids(struct rthread *t)
{
    for (unsigned i = 0; i < t->a->ndev; i++)
        t->c.idx[t->a->dev[i].id] = (int)i;
}

static void rthread_check(struct rthread *t)
{
    if (t->rc != VMA_OK)
        fail_msg("reader: %s: %s", vma_status_name(t->rc), t->err);
    if (t->c.errors)
        fail_msg("reader: %s", t->c.err);
    for (unsigned i = 0; i < t->a->ndev; i++) {
        compare(t->a->dev[i].name, t->c.buf[i], t->a->dev[i].data, t->a->dev[i].size);
        free(t->c.buf[i]);
        free(t->c.seen[i]);
    }
    free(t->c.buf);
    free(t->c.seen);
}

static struct arch *small_arch(uint64_t salt)
{
    struct rng r = rng_for(salt);
    struct arch *a = arch_new(1, 2, &r);
    set_cfg(a, 0, "qemu-server.conf", "name: pipe\n", 11);
    set_dev(a, 0, "drive-scsi0", 5 * MiB + 512, &r);
    set_dev(a, 1, "drive-efidisk0", 528 * KiB, &r);
    return a;
}

static void t_pipe_stream(void **state)
{
    (void)state;
    struct rng r = rng_for(31);
    struct arch *a = small_arch(31);
    int p[2];
    assert_int_equal(pipe(p), 0);
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_fd(w, p[1]));
    writer_setup(w, a);
    struct rthread t;
    rthread_init(&t, a);
    rthread_ids(&t);
    t.fd = p[0];
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_thread, &t), 0);
    writer_fill(w, a, &r);
    vma_writer_free(w);
    assert_int_equal(close(p[1]), 0); /* the caller owns it: EOF for the reader */
    assert_int_equal(pthread_join(th, NULL), 0);
    close(p[0]);
    rthread_check(&t);
    arch_free(a);
}

static void t_fifo_output(void **state)
{
    (void)state;
    struct rng r = rng_for(32);
    struct arch *a = small_arch(32);
    char *fifo = tpath("out.fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    struct rthread t;
    rthread_init(&t, a);
    t.path = fifo;
    /* the reader opens the FIFO first; the writer's open then succeeds */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_thread, &t), 0);
    WRITER_OK(w, vma_writer_open_path(w, fifo));
    writer_setup(w, a);
    rthread_ids(&t); /* before the header goes out with the first extent */
    writer_fill(w, a, &r);
    vma_writer_free(w);
    assert_int_equal(pthread_join(th, NULL), 0);
    rthread_check(&t);
    /* the FIFO is still there: it was not created by the writer */
    struct stat st;
    assert_int_equal(lstat(fifo, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    unlink(fifo);
    arch_free(a);
}

/* With descriptor 0 closed, "-" is refused rather than read from whatever
 * the library opened next, and an exec: command still gets its stdin. In
 * a child process, so this one keeps its descriptors. */
static void t_closed_stdin(void **state)
{
    (void)state;
    char *out = tpath("closed-stdin.vma");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20); /* a hang fails the test */
        close(STDIN_FILENO);
        vma_reader *r = vma_reader_new();
        if (r == NULL || vma_reader_open_path(r, "-") != VMA_ERR_IO ||
            strcmp(vma_reader_error(r), "standard input is closed") != 0)
            _exit(10);
        vma_reader_free(r);
        char cmd[4400];
        snprintf(cmd, sizeof(cmd), "cat > '%s'", out);
        vma_writer *w = vma_writer_new();
        if (w == NULL || vma_writer_open_shell(w, cmd) != VMA_OK)
            _exit(11);
        int id = vma_writer_add_device(w, "drive-scsi0", CL + 1);
        if (id < 1 || vma_writer_write_cluster(w, (unsigned)id, 0, NULL) != VMA_OK ||
            vma_writer_write_cluster(w, (unsigned)id, 1, NULL) != VMA_OK ||
            vma_writer_close_device(w, (unsigned)id) != VMA_OK || vma_writer_finish(w) != VMA_OK)
            _exit(12);
        vma_writer_free(w);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, out));
    READER_OK(r, vma_reader_read(r, NULL, NULL));
    vma_reader_free(r);
    unlink(out);
}

static void t_exec_output(void **state)
{
    (void)state;
    struct rng r = rng_for(33);
    struct arch *a = small_arch(33);
    char *out = tpath("exec.vma");
    char cmd[4400];
    snprintf(cmd, sizeof(cmd), "cat > '%s'", out);
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_shell(w, cmd));
    writer_setup(w, a);
    writer_fill(w, a, &r); /* finish waits for the command */
    vma_writer_free(w);
    read_and_compare(out, a);
    unlink(out);

    /* a command that fails makes finish fail */
    snprintf(cmd, sizeof(cmd), "cat > /dev/null; exit 3");
    w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_shell(w, cmd));
    int id = vma_writer_add_device(w, "d", CL);
    assert_true(id >= 1);
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, 0, NULL));
    WRITER_OK(w, vma_writer_close_device(w, (unsigned)id));
    EXPECT_RC(VMA_ERR_IO, vma_writer_finish(w), vma_writer_error, w);
    vma_writer_free(w);

    /* a command that goes away early: EPIPE, not a signal (SIGPIPE is
     * ignored by this program, as vma.h asks of callers) */
    w = vma_writer_new();
    assert_non_null(w);
    WRITER_OK(w, vma_writer_open_shell(w, "exit 0"));
    id = vma_writer_add_device(w, "d", 64 * MiB);
    assert_true(id >= 1);
    unsigned char *buf = malloc(CL);
    assert_non_null(buf);
    memset(buf, 0x77, CL);
    int rc = VMA_OK;
    for (uint64_t c = 0; c < 1024 && rc == VMA_OK; c++)
        rc = vma_writer_write_cluster(w, (unsigned)id, c, buf);
    free(buf);
    if (rc == VMA_OK) {
        rc = vma_writer_close_device(w, (unsigned)id);
        if (rc == VMA_OK)
            rc = vma_writer_finish(w);
    }
    assert_int_equal(rc, VMA_ERR_IO);
    vma_writer_free(w);
    arch_free(a);
}

/* ---------------------------------------------------------------- */
/* restore                                                           */
/* ---------------------------------------------------------------- */

static struct arch *restore_arch(uint64_t salt, char **path)
{
    struct rng r = rng_for(salt);
    struct arch *a = arch_new(1, 3, &r);
    set_cfg(a, 0, "qemu-server.conf", "memory: 1024\n", 13);
    set_dev(a, 0, "drive-scsi0", 2 * MiB, &r);
    set_dev(a, 1, "drive-scsi1", 3 * CL + 3 * BL, &r);
    set_dev(a, 2, "drive-efidisk0", 528 * KiB, &r);
    /* make sure there are zero blocks next to data in every device */
    for (unsigned i = 0; i < 3; i++) {
        memset(a->dev[i].data, 0, BL);
        memset(a->dev[i].data + 2 * BL, 0xab, BL);
        memset(a->dev[i].data + CL, 0, CL);
    }
    *path = strdup(tpath("restore-%" PRIu64 ".vma", salt));
    assert_non_null(*path);
    write_archive(*path, a, &r);
    return a;
}

static void check_file(const char *path, const unsigned char *want, uint64_t size)
{
    size_t len;
    unsigned char *got = read_all(path, &len);
    if (len != size)
        fail_msg("%s has %zu bytes, expected %" PRIu64, path, len, size);
    compare(path, got, want, size);
    free(got);
}

static void t_restore_create(void **state)
{
    (void)state;
    char *path;
    struct arch *a = restore_arch(40, &path);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    char *out[3];
    for (unsigned i = 0; i < 3; i++) {
        out[i] = strdup(tpath("%s.raw", a->dev[i].name));
        READER_OK(r, vma_reader_target_create(r, a->dev[i].id, out[i]));
    }
    /* a device has one target */
    EXPECT_RC(VMA_ERR_INVALID, vma_reader_target_skip(r, a->dev[0].id), vma_reader_error, r);
    vma_reader_free(r);
    /* freed before restore: the created files are gone */
    for (unsigned i = 0; i < 3; i++)
        assert_false(exists(out[i]));

    r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    for (unsigned i = 0; i < 3; i++)
        READER_OK(r, vma_reader_target_create(r, a->dev[i].id, out[i]));
    READER_OK(r, vma_reader_restore(r));
    vma_reader_free(r);
    for (unsigned i = 0; i < 3; i++) {
        check_file(out[i], a->dev[i].data, a->dev[i].size);
        unlink(out[i]);
        free(out[i]);
    }
    unlink(path);
    free(path);
    arch_free(a);
}

/* Existing targets pre-filled with 0xAA: with WRITE_ZEROS the zero blocks
 * become zeros; without, they keep 0xAA. Bytes past the device stay. */
static void restore_existing(int write_zeros, int use_fd)
{
    char *path;
    struct arch *a = restore_arch(write_zeros * 2 + use_fd + 41, &path);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    const uint64_t extra = 8192 + 100;
    char *out[3];
    int fds[3] = {-1, -1, -1};
    for (unsigned i = 0; i < 3; i++) {
        out[i] = strdup(tpath("existing-%u-%u-%u.raw", write_zeros, use_fd, i));
        uint64_t len = a->dev[i].size + extra;
        unsigned char *fill = malloc((size_t)len);
        assert_non_null(fill);
        memset(fill, 0xaa, (size_t)len);
        write_all(out[i], fill, (size_t)len);
        free(fill);
        unsigned flags = write_zeros ? VMA_TARGET_WRITE_ZEROS : 0;
        if (use_fd) {
            fds[i] = open(out[i], O_WRONLY | O_CLOEXEC);
            assert_true(fds[i] >= 0);
            READER_OK(r, vma_reader_target_fd(r, a->dev[i].id, fds[i], flags));
        } else {
            READER_OK(r, vma_reader_target_open(r, a->dev[i].id, out[i], flags));
        }
    }
    READER_OK(r, vma_reader_restore(r));
    vma_reader_free(r);
    for (unsigned i = 0; i < 3; i++) {
        if (use_fd)
            assert_int_equal(close(fds[i]), 0); /* still open: the caller owns it */
        const struct dev *d = &a->dev[i];
        unsigned char *want = malloc((size_t)(d->size + extra));
        assert_non_null(want);
        memset(want, 0xaa, (size_t)(d->size + extra));
        for (uint64_t off = 0; off < d->size; off += BL) {
            uint64_t n = d->size - off < BL ? d->size - off : BL;
            if (write_zeros || !all_zero(d->data + off, (size_t)n))
                memcpy(want + off, d->data + off, (size_t)n);
        }
        check_file(out[i], want, d->size + extra);
        free(want);
        unlink(out[i]);
        free(out[i]);
    }
    unlink(path);
    free(path);
    arch_free(a);
}

static void t_restore_open_write_zeros(void **state) { (void)state; restore_existing(1, 0); }
static void t_restore_open_keep(void **state) { (void)state; restore_existing(0, 0); }
static void t_restore_fd_write_zeros(void **state) { (void)state; restore_existing(1, 1); }
static void t_restore_fd_keep(void **state) { (void)state; restore_existing(0, 1); }

static void t_restore_skip(void **state)
{
    (void)state;
    char *path;
    struct arch *a = restore_arch(45, &path);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    char *o0 = strdup(tpath("skip0.raw"));
    char *o2 = strdup(tpath("skip2.raw"));
    READER_OK(r, vma_reader_target_create(r, a->dev[0].id, o0));
    READER_OK(r, vma_reader_target_skip(r, a->dev[1].id));
    READER_OK(r, vma_reader_target_create(r, a->dev[2].id, o2));
    READER_OK(r, vma_reader_restore(r));
    vma_reader_free(r);
    check_file(o0, a->dev[0].data, a->dev[0].size);
    check_file(o2, a->dev[2].data, a->dev[2].size);
    unlink(o0);
    unlink(o2);
    free(o0);
    free(o2);

    /* every device needs a target or a skip */
    r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    o0 = strdup(tpath("skip-missing.raw"));
    READER_OK(r, vma_reader_target_create(r, a->dev[0].id, o0));
    READER_OK(r, vma_reader_target_skip(r, a->dev[2].id));
    EXPECT_RC(VMA_ERR_INVALID, vma_reader_restore(r), vma_reader_error, r);
    assert_non_null(strstr(vma_reader_error(r), a->dev[1].name));
    vma_reader_free(r);
    assert_false(exists(o0));
    free(o0);

    /* no such device */
    r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    EXPECT_RC(VMA_ERR_NOT_FOUND, vma_reader_target_skip(r, 200), vma_reader_error, r);
    vma_reader_free(r);
    unlink(path);
    free(path);
    arch_free(a);
}

static void t_restore_target_errors(void **state)
{
    (void)state;
    char *path;
    struct arch *a = restore_arch(46, &path);
    const struct dev *d = &a->dev[0];

    /* target_create never overwrites */
    char *t = strdup(tpath("exists.raw"));
    write_all(t, "keep", 4);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    EXPECT_RC(VMA_ERR_EXISTS, vma_reader_target_create(r, d->id, t), vma_reader_error, r);
    vma_reader_free(r);
    check_file(t, (const unsigned char *)"keep", 4);
    unlink(t);

    /* target_open: size from the device size to 4 MiB more */
    static const int64_t deltas[] = {-1, -(int64_t)CL, (int64_t)(4 * MiB) + 1, 0,
                                     (int64_t)(4 * MiB)};
    for (unsigned k = 0; k < sizeof(deltas) / sizeof(deltas[0]); k++) {
        int fd = open(t, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t)((int64_t)d->size + deltas[k])), 0);
        close(fd);
        r = vma_reader_new();
        assert_non_null(r);
        READER_OK(r, vma_reader_open_path(r, path));
        int rc = vma_reader_target_open(r, d->id, t, VMA_TARGET_WRITE_ZEROS);
        if (deltas[k] < 0 || deltas[k] > (int64_t)(4 * MiB)) {
            if (rc != VMA_ERR_INVALID)
                fail_msg("target of size %+" PRId64 ": %s (%s)", deltas[k], vma_status_name(rc),
                         vma_reader_error(r));
            assert_non_null(strstr(vma_reader_error(r), d->name));
        } else {
            READER_OK(r, rc);
        }
        vma_reader_free(r);
        struct stat st;
        assert_int_equal(stat(t, &st), 0); /* an existing target is never removed */
        assert_true((int64_t)st.st_size == (int64_t)d->size + deltas[k]);
    }
    unlink(t);

    /* target_open on a path that does not exist */
    r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    EXPECT_RC(VMA_ERR_IO, vma_reader_target_open(r, d->id, t, 0), vma_reader_error, r);
    vma_reader_free(r);
    assert_false(exists(t));
    free(t);
    unlink(path);
    free(path);
    arch_free(a);
}

/* A restore that fails removes the files it created; existing targets stay. */
static void t_restore_failure_cleanup(void **state)
{
    (void)state;
    char *path;
    struct arch *a = restore_arch(47, &path);
    /* cut the archive in its last extent */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 5000), 0);

    char *created = strdup(tpath("fail-created.raw"));
    char *existing = strdup(tpath("fail-existing.raw"));
    char *created2 = strdup(tpath("fail-created2.raw"));
    int fd = open(existing, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)a->dev[1].size), 0);
    close(fd);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    READER_OK(r, vma_reader_target_create(r, a->dev[0].id, created));
    READER_OK(r, vma_reader_target_open(r, a->dev[1].id, existing, 0));
    READER_OK(r, vma_reader_target_create(r, a->dev[2].id, created2));
    EXPECT_RC(VMA_ERR_TRUNCATED, vma_reader_restore(r), vma_reader_error, r);
    assert_false(exists(created));
    assert_false(exists(created2));
    assert_true(exists(existing));
    /* stays failed */
    EXPECT_RC(VMA_ERR_TRUNCATED, vma_reader_restore(r), vma_reader_error, r);
    vma_reader_free(r);
    assert_false(exists(created));
    assert_true(exists(existing));
    unlink(existing);
    free(created);
    free(created2);
    free(existing);
    unlink(path);
    free(path);
    arch_free(a);
}

struct rprog {
    uint64_t calls, last_clusters, last_bytes;
    int bad;
    uint64_t stop_at;
};

static int rprog_cb(void *opaque, uint64_t clusters, uint64_t bytes)
{
    struct rprog *p = opaque;
    if (clusters != p->last_clusters + 1 || bytes < p->last_bytes)
        p->bad++;
    p->last_clusters = clusters;
    p->last_bytes = bytes;
    return ++p->calls == p->stop_at;
}

static int stop_cb(void *opaque, unsigned dev_id, uint32_t cn, uint16_t mask,
                   const unsigned char *data)
{
    (void)dev_id;
    (void)cn;
    (void)mask;
    (void)data;
    return ++*(int *)opaque == 3;
}

static void t_callbacks(void **state)
{
    (void)state;
    char *path;
    struct arch *a = restore_arch(48, &path);
    uint64_t total = 0;
    for (unsigned i = 0; i < a->ndev; i++)
        total += nclusters(a->dev[i].size);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);

    /* progress: once per cluster, bytes up to the archive size */
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    struct rprog p = {0};
    vma_reader_set_progress(r, rprog_cb, &p);
    READER_OK(r, vma_reader_read(r, NULL, NULL));
    assert_int_equal(p.bad, 0);
    assert_true(p.calls == total);
    assert_true(p.last_clusters == total);
    assert_true(p.last_bytes <= (uint64_t)st.st_size);
    vma_reader_free(r);

    /* a cluster callback that stops */
    r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    int n = 0;
    EXPECT_RC(VMA_ERR_CALLBACK, vma_reader_read(r, stop_cb, &n), vma_reader_error, r);
    assert_int_equal(n, 3);
    EXPECT_RC(VMA_ERR_CALLBACK, vma_reader_read(r, stop_cb, &n), vma_reader_error, r);
    assert_int_equal(n, 3);
    vma_reader_free(r);

    /* a progress callback that cancels a restore: created files removed */
    r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    char *out[3];
    for (unsigned i = 0; i < 3; i++) {
        out[i] = strdup(tpath("cancel-%u.raw", i));
        READER_OK(r, vma_reader_target_create(r, a->dev[i].id, out[i]));
    }
    struct rprog c = {0};
    c.stop_at = 10;
    vma_reader_set_progress(r, rprog_cb, &c);
    EXPECT_RC(VMA_ERR_CALLBACK, vma_reader_restore(r), vma_reader_error, r);
    assert_true(c.calls == 10);
    vma_reader_free(r);
    for (unsigned i = 0; i < 3; i++) {
        assert_false(exists(out[i]));
        free(out[i]);
    }
    unlink(path);
    free(path);
    arch_free(a);
}

static void t_restore_limit(void **state)
{
    (void)state;
    char *path;
    struct arch *a = restore_arch(49, &path);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    /* no target yet */
    int rc = vma_reader_target_limit(r, a->dev[0].id, 1, NULL);
    assert_true(rc < 0);
    vma_reader_free(r);

    r = vma_reader_new();
    assert_non_null(r);
    READER_OK(r, vma_reader_open_path(r, path));
    char *out[3];
    for (unsigned i = 0; i < 3; i++) {
        out[i] = strdup(tpath("limit-%u.raw", i));
        READER_OK(r, vma_reader_target_create(r, a->dev[i].id, out[i]));
    }
    /* generous limits: nothing here measures time */
    READER_OK(r, vma_reader_target_limit(r, a->dev[0].id, 10 * GiB, "store"));
    READER_OK(r, vma_reader_target_limit(r, a->dev[1].id, 20 * GiB, "store"));
    READER_OK(r, vma_reader_target_limit(r, a->dev[2].id, 0, NULL));
    READER_OK(r, vma_reader_restore(r));
    vma_reader_free(r);
    for (unsigned i = 0; i < 3; i++) {
        check_file(out[i], a->dev[i].data, a->dev[i].size);
        unlink(out[i]);
        free(out[i]);
    }
    unlink(path);
    free(path);
    arch_free(a);
}

static void t_reader_accessors(void **state)
{
    (void)state;
    struct rng r = rng_for(50);
    struct arch *a = arch_new(2, 2, &r);
    a->ctime = -86400; /* signed */
    set_cfg(a, 0, "qemu-server.conf", "a: b\n", 5);
    set_cfg(a, 1, "qemu-server.fw", "", 0);
    set_dev(a, 0, "drive-scsi0", CL, &r);
    set_dev(a, 1, "drive-efidisk0", 2 * CL, &r);
    char *path = tpath("accessors.vma");
    write_archive(path, a, &r);
    vma_reader *rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, path));
    assert_true(vma_reader_ctime(rd) == -86400);
    const char *name = NULL;
    const void *data = NULL;
    size_t len = 99;
    READER_OK(rd, vma_reader_config(rd, 1, &name, &data, &len));
    assert_string_equal(name, "qemu-server.fw");
    assert_int_equal(len, 0);
    READER_OK(rd, vma_reader_config(rd, 0, NULL, NULL, NULL));
    assert_int_equal(vma_reader_config(rd, 2, &name, &data, &len), VMA_ERR_NOT_FOUND);
    assert_int_equal(vma_reader_find_config(rd, "nope", &data, &len), VMA_ERR_NOT_FOUND);
    READER_OK(rd, vma_reader_find_config(rd, "qemu-server.conf", &data, &len));
    assert_int_equal(len, 5);
    assert_memory_equal(data, "a: b\n", 5);
    assert_int_equal(vma_reader_find_device(rd, "nope"), 0);
    /* unused dev_ids */
    static const unsigned unused[] = {0, 200, 254, 255, 256, 100000};
    for (unsigned i = 0; i < sizeof(unused) / sizeof(unused[0]); i++) {
        assert_null(vma_reader_device_name(rd, unused[i]));
        assert_true(vma_reader_device_size(rd, unused[i]) == 0);
        assert_int_equal(vma_reader_device_is_vmstate(rd, unused[i]), 0);
    }
    unsigned first = vma_reader_next_device(rd, 0);
    unsigned second = vma_reader_next_device(rd, first);
    assert_true(first >= 1 && second > first);
    assert_int_equal(vma_reader_next_device(rd, second), 0);
    assert_int_equal(vma_reader_next_device(rd, 255), 0);
    vma_reader_free(rd);

    /* a path that does not exist */
    rd = vma_reader_new();
    assert_non_null(rd);
    EXPECT_RC(VMA_ERR_IO, vma_reader_open_path(rd, tpath("missing.vma")), vma_reader_error, rd);
    vma_reader_free(rd);
    unlink(path);
    arch_free(a);
}

/* ---------------------------------------------------------------- */
/* big sparse device, sources                                        */
/* ---------------------------------------------------------------- */

static void t_big_sparse_device(void **state)
{
    (void)state;
    struct rng r = rng_for(60);
    const uint64_t size = 3 * GiB + 512;
    const uint64_t nc = nclusters(size); /* 49153: the last holds 512 bytes */
    const uint64_t data_clusters[] = {0, 1, 24576, 49151, nc - 1};
    enum { ND = sizeof(data_clusters) / sizeof(data_clusters[0]) };
    unsigned char *data[ND];
    for (unsigned i = 0; i < ND; i++) {
        data[i] = malloc(CL);
        assert_non_null(data[i]);
        fill_random(&r, data[i], CL);
        memset(data[i] + 5 * BL, 0, BL); /* a zero block inside */
    }
    char *path = tpath("big.vma");
    vma_writer *w = new_writer(path);
    int id = vma_writer_add_device(w, "drive-big", size);
    assert_true(id >= 1);
    /* the data clusters in reverse order, the holes as NULL */
    for (unsigned i = ND; i-- > 0;)
        WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, data_clusters[i], data[i]));
    for (uint64_t c = 0; c < nc; c++) {
        int isdata = 0;
        for (unsigned i = 0; i < ND; i++)
            isdata |= data_clusters[i] == c;
        if (!isdata)
            WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, c, NULL));
    }
    WRITER_OK(w, vma_writer_close_device(w, (unsigned)id));
    uint64_t bytes, zero;
    WRITER_OK(w, vma_writer_device_stats(w, (unsigned)id, &bytes, &zero));
    assert_true(bytes == size);
    WRITER_OK(w, vma_writer_finish(w));
    vma_writer_free(w);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true((uint64_t)st.st_size < 2 * MiB);

    char *out = tpath("big.raw");
    vma_reader *rd = vma_reader_new();
    assert_non_null(rd);
    READER_OK(rd, vma_reader_open_path(rd, path));
    assert_true(vma_reader_device_size(rd, (unsigned)id) == size);
    READER_OK(rd, vma_reader_target_create(rd, (unsigned)id, out));
    READER_OK(rd, vma_reader_restore(rd));
    uint64_t clusters, zc;
    vma_reader_counters(rd, &clusters, &zc, NULL);
    assert_true(clusters == nc);
    vma_reader_free(rd);

    assert_int_equal(stat(out, &st), 0);
    assert_true((uint64_t)st.st_size == size);
    assert_true((uint64_t)st.st_blocks * 512 < 4 * MiB); /* sparse */
    int fd = open(out, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    unsigned char *buf = malloc(CL);
    assert_non_null(buf);
    for (unsigned i = 0; i < ND; i++) {
        uint64_t off = data_clusters[i] * CL;
        size_t n = (size_t)(size - off < CL ? size - off : CL);
        assert_int_equal(pread(fd, buf, n, (off_t)off), (ssize_t)n);
        compare("big.raw data cluster", buf, data[i], n);
    }
    static const uint64_t holes[] = {2 * CL, 1 * GiB, 2 * GiB + 12345, 3 * GiB - 2 * CL};
    for (unsigned i = 0; i < sizeof(holes) / sizeof(holes[0]); i++) {
        assert_int_equal(pread(fd, buf, CL, (off_t)holes[i]), (ssize_t)CL);
        assert_true(all_zero(buf, CL));
    }
    close(fd);
    free(buf);
    for (unsigned i = 0; i < ND; i++)
        free(data[i]);
    unlink(out);
    unlink(path);
}

static void t_write_device_fd(void **state)
{
    (void)state;
    struct rng r = rng_for(61);
    const uint64_t ssize = 5 * MiB + 1000;           /* source length */
    const uint64_t dsize = (ssize + 511) / 512 * 512; /* recorded as the CLI does */
    unsigned char *content = calloc(1, (size_t)dsize);
    assert_non_null(content);
    char *src = tpath("source.raw");
    int fd = open(src, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)ssize), 0);
    struct {
        uint64_t off, len;
        int zero;
    } islands[] = {{0, 10000, 0}, {MiB + 100, 70000, 0}, {3 * MiB, 4 * BL, 1},
                   {ssize - 1000, 1000, 0}};
    for (unsigned i = 0; i < sizeof(islands) / sizeof(islands[0]); i++) {
        unsigned char *p = content + islands[i].off;
        if (!islands[i].zero)
            fill_random(&r, p, (size_t)islands[i].len);
        assert_int_equal(pwrite(fd, p, (size_t)islands[i].len, (off_t)islands[i].off),
                         (ssize_t)islands[i].len);
    }
    struct rng r2 = rng_for(62);
    struct arch *a = arch_new(0, 2, &r2);
    set_dev(a, 0, "drive-file", dsize, NULL);
    memcpy(a->dev[0].data, content, (size_t)dsize);
    set_dev(a, 1, "drive-small", 1024, NULL); /* 1000-byte source, rounded up */
    fill_random(&r2, a->dev[1].data, 1000);
    char *src2 = tpath("small.raw");
    write_all(src2, a->dev[1].data, 1000);
    int fd2 = open(src2, O_RDONLY | O_CLOEXEC);
    assert_true(fd2 >= 0);

    char *path = tpath("fromfd.vma");
    vma_writer *w = new_writer(path);
    writer_setup(w, a);
    WRITER_OK(w, vma_writer_write_device_fd(w, a->dev[0].id, fd, ssize));
    WRITER_OK(w, vma_writer_write_device_fd(w, a->dev[1].id, fd2, 1000));
    uint64_t bytes, zero;
    WRITER_OK(w, vma_writer_device_stats(w, a->dev[0].id, &bytes, &zero));
    assert_true(bytes == dsize);
    assert_true(zero == want_zero_bytes(&a->dev[0]));
    /* the streams are closed: finish works */
    WRITER_OK(w, vma_writer_finish(w));
    vma_writer_free(w);
    close(fd);
    close(fd2);
    read_and_compare(path, a);
    unlink(path);
    unlink(src);
    unlink(src2);
    free(content);
    arch_free(a);
}

/* A source shorter than the length given fails with VMA_ERR_IO, whether it
 * ends inside a cluster or on a cluster boundary. */
static void source_short(uint64_t file_len, uint64_t source_size)
{
    struct rng r = rng_for(63);
    unsigned char *p = malloc((size_t)file_len);
    assert_non_null(p);
    fill_random(&r, p, (size_t)file_len);
    char *src = tpath("short-%" PRIu64 ".raw", file_len);
    write_all(src, p, (size_t)file_len);
    free(p);
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    char *path = tpath("short-%" PRIu64 ".vma", file_len);
    vma_writer *w = new_writer(path);
    int id = vma_writer_add_device(w, "d", source_size);
    assert_true(id >= 1);
    int rc = vma_writer_write_device_fd(w, (unsigned)id, fd, source_size);
    if (rc != VMA_ERR_IO)
        fail_msg("source of %" PRIu64 " bytes read as %" PRIu64 ": %s (%s)", file_len,
                 source_size, vma_status_name(rc), vma_writer_error(w));
    vma_writer_free(w);
    close(fd);
    assert_false(exists(path));
    unlink(src);
}

static void t_write_device_fd_short_mid(void **state) { (void)state; source_short(100000, 200000); }
static void t_write_device_fd_short_cluster(void **state) { (void)state; source_short(2 * CL, 4 * CL); }

/* ---------------------------------------------------------------- */
/* compressed archives                                               */
/* ---------------------------------------------------------------- */

struct digest {
    uint64_t h, clusters;
};

static void fnv(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= c[i];
        *h *= 0x100000001b3ull;
    }
}

static int digest_cb(void *opaque, unsigned dev_id, uint32_t cn, uint16_t mask,
                     const unsigned char *data)
{
    struct digest *d = opaque;
    d->clusters++;
    fnv(&d->h, &dev_id, sizeof(dev_id));
    fnv(&d->h, &cn, sizeof(cn));
    fnv(&d->h, &mask, sizeof(mask));
    fnv(&d->h, data, (size_t)__builtin_popcount(mask) * BL);
    return 0;
}

/* Read an archive by path or through a pipe fed by a child; return the
 * codec the reader saw and a digest of every cluster. */
static void read_digest(const char *path, int via_pipe, const char *codec, struct digest *d,
                        int want_read)
{
    d->h = 0xcbf29ce484222325ull;
    d->clusters = 0;
    vma_reader *r = NULL;
    pid_t pid = -1;
    int pfd[2] = {-1, -1};
    if (via_pipe) {
        assert_int_equal(pipe(pfd), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            signal(SIGPIPE, SIG_DFL);
            int fd = open(path, O_RDONLY);
            char buf[65536];
            ssize_t n;
            while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
                if (write(pfd[1], buf, (size_t)n) != n)
                    _exit(1);
            _exit(0);
        }
        close(pfd[1]);
        r = vma_reader_new();
        assert_non_null(r);
        READER_OK(r, vma_reader_open_fd(r, pfd[0]));
    } else {
        r = vma_reader_new();
        assert_non_null(r);
        READER_OK(r, vma_reader_open_path(r, path));
    }
    assert_non_null(vma_reader_compression(r));
    assert_string_equal(vma_reader_compression(r), codec);
    int rc = vma_reader_read(r, digest_cb, d);
    if (rc != want_read)
        fail_msg("%s: read gave %s, expected %s: %s", path, vma_status_name(rc),
                 vma_status_name(want_read), vma_reader_error(r));
    vma_reader_free(r);
    if (via_pipe) {
        close(pfd[0]);
        int st;
        waitpid(pid, &st, 0);
    }
}

static void t_golden_compressed(void **state)
{
    (void)state;
    char path[4096];
    struct digest plain, d;
    snprintf(path, sizeof(path), "%s/basic.vma", g_golden);
    read_digest(path, 0, "none", &plain, VMA_OK);
    assert_true(plain.clusters == 137);
    static const char *ext[][2] = {{"zst", "zstd"}, {"gz", "gzip"}, {"lzo", "lzo"}};
    for (unsigned i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/basic.vma.%s", g_golden, ext[i][0]);
        for (int via_pipe = 0; via_pipe < 2; via_pipe++) {
            read_digest(path, via_pipe, ext[i][1], &d, VMA_OK);
            assert_true(d.clusters == plain.clusters);
            if (d.h != plain.h)
                fail_msg("%s (%s): clusters differ from basic.vma", path,
                         via_pipe ? "pipe" : "path");
        }
    }
}

/* A compressed archive cut in half ends early: its header (the first 13312
 * bytes) is complete, so open succeeds and the read fails as truncated. */
static void t_truncated_compressed(void **state)
{
    (void)state;
    static const char *ext[][2] = {{"zst", "zstd"}, {"gz", "gzip"}, {"lzo", "lzo"}};
    char errors[2048] = "";
    for (unsigned i = 0; i < 3; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/basic.vma.%s", g_golden, ext[i][0]);
        size_t len;
        unsigned char *p = read_all(path, &len);
        char *cut = tpath("half.vma.%s", ext[i][0]);
        write_all(cut, p, len / 2);
        free(p);
        vma_reader *r = vma_reader_new();
        assert_non_null(r);
        int orc = vma_reader_open_path(r, cut);
        int rrc = orc == VMA_OK ? vma_reader_read(r, NULL, NULL) : orc;
        if (orc != VMA_OK || rrc != VMA_ERR_TRUNCATED) {
            size_t n = strlen(errors);
            snprintf(errors + n, sizeof(errors) - n, "[basic.vma.%s cut to %zu bytes: open %s, read %s: %s] ",
                     ext[i][0], len / 2, vma_status_name(orc), vma_status_name(rrc),
                     vma_reader_error(r));
        }
        vma_reader_free(r);
        unlink(cut);
    }
    if (errors[0])
        fail_msg("%s", errors);
}

static void t_writer_compression(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *codec;
        unsigned char magic[4];
        size_t magic_len;
    } specs[] = {
        {"zstd", "zstd", {0x28, 0xb5, 0x2f, 0xfd}, 4},
        {"zstd:1", "zstd", {0x28, 0xb5, 0x2f, 0xfd}, 4},
        {"zstd:22", "zstd", {0x28, 0xb5, 0x2f, 0xfd}, 4},
        {"gzip", "gzip", {0x1f, 0x8b}, 2},
        {"gzip:1", "gzip", {0x1f, 0x8b}, 2},
        {"gzip:9", "gzip", {0x1f, 0x8b}, 2},
        {"lzo", "lzo", {0x89, 'L', 'Z', 'O'}, 4},
        {"none", "none", {'V', 'M', 'A', 0}, 4},
    };
    for (unsigned k = 0; k < sizeof(specs) / sizeof(specs[0]); k++) {
        struct rng r = rng_for(70 + k);
        struct arch *a = arch_new(1, 2, &r);
        set_cfg(a, 0, "qemu-server.conf", "compressed: yes\n", 16);
        set_dev(a, 0, "drive-scsi0", (k == 2 ? 1 : 3) * MiB + 4096, &r);
        set_dev(a, 1, "drive-efidisk0", 528 * KiB, &r);
        char *path = tpath("compressed-%u.vma", k);
        vma_writer *w = vma_writer_new();
        assert_non_null(w);
        if (k % 2)
            WRITER_OK(w, vma_writer_set_compression(w, specs[k].spec));
        WRITER_OK(w, vma_writer_open_path(w, path));
        if (k % 2 == 0)
            WRITER_OK(w, vma_writer_set_compression(w, specs[k].spec));
        writer_setup(w, a);
        writer_fill(w, a, &r);
        vma_writer_free(w);
        size_t len;
        unsigned char *p = read_all(path, &len);
        assert_true(len >= specs[k].magic_len);
        assert_memory_equal(p, specs[k].magic, specs[k].magic_len);
        free(p);
        struct digest d;
        read_digest(path, k % 2, specs[k].codec, &d, VMA_OK);
        read_and_compare(path, a);
        unlink(path);
        arch_free(a);
    }

    /* bad specs, and too late */
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    static const char *bad[] = {"", "bzip2", "zstd:0", "zstd:23", "zstd:", "zstd:x",
                                "gzip:0", "gzip:10", "xz", "ZSTD"};
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        EXPECT_RC(VMA_ERR_INVALID, vma_writer_set_compression(w, bad[i]), vma_writer_error, w);
    char *path = tpath("late-compression.vma");
    WRITER_OK(w, vma_writer_open_path(w, path));
    int id = vma_writer_add_device(w, "d", 2 * CL);
    assert_true(id >= 1);
    WRITER_OK(w, vma_writer_write_cluster(w, (unsigned)id, 0, NULL));
    EXPECT_RC(VMA_ERR_INVALID, vma_writer_set_compression(w, "gzip"), vma_writer_error, w);
    vma_writer_free(w);
    assert_false(exists(path));
}

/* ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc > 1)
        g_golden = argv[1];
    const char *s = getenv("VMA_TEST_SEED");
    if (s != NULL && *s)
        g_seed = strtoull(s, NULL, 0);
    printf("api_roundtrip: seed %" PRIu64 " (set VMA_TEST_SEED to replay)\n", g_seed);
    fflush(stdout);
    signal(SIGPIPE, SIG_IGN);
    if (vt_mkdtemp(g_tmp, sizeof(g_tmp), "vma-api") == NULL) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_roundtrip_seed0),
        cmocka_unit_test(t_roundtrip_seed1),
        cmocka_unit_test(t_roundtrip_seed2),
        cmocka_unit_test(t_roundtrip_seed3),
        cmocka_unit_test(t_roundtrip_seed4),
        cmocka_unit_test(t_odd_sizes),
        cmocka_unit_test(t_one_block),
        cmocka_unit_test(t_one_byte),
        cmocka_unit_test(t_all_zero_device),
        cmocka_unit_test(t_no_devices),
        cmocka_unit_test(t_nothing),
        cmocka_unit_test(t_254_devices),
        cmocka_unit_test(t_256_configs),
        cmocka_unit_test(t_config_sizes),
        cmocka_unit_test(t_header_limit),
        cmocka_unit_test(t_long_names),
        cmocka_unit_test(t_config_base_name),
        cmocka_unit_test(t_vmstate),
        cmocka_unit_test(t_vmstate_order_refused),
        cmocka_unit_test(t_writer_bad_names),
        cmocka_unit_test(t_writer_duplicates),
        cmocka_unit_test(t_writer_sizes),
        cmocka_unit_test(t_writer_stream_errors),
        cmocka_unit_test(t_writer_setup_after_start),
        cmocka_unit_test(t_writer_open_errors),
        cmocka_unit_test(t_writer_free_removes),
        cmocka_unit_test(t_writer_progress_cancel),
        cmocka_unit_test(t_threads),
        cmocka_unit_test(t_pipe_stream),
        cmocka_unit_test(t_fifo_output),
        cmocka_unit_test(t_exec_output),
        cmocka_unit_test(t_closed_stdin),
        cmocka_unit_test(t_restore_create),
        cmocka_unit_test(t_restore_open_write_zeros),
        cmocka_unit_test(t_restore_open_keep),
        cmocka_unit_test(t_restore_fd_write_zeros),
        cmocka_unit_test(t_restore_fd_keep),
        cmocka_unit_test(t_restore_skip),
        cmocka_unit_test(t_restore_target_errors),
        cmocka_unit_test(t_restore_failure_cleanup),
        cmocka_unit_test(t_callbacks),
        cmocka_unit_test(t_restore_limit),
        cmocka_unit_test(t_reader_accessors),
        cmocka_unit_test(t_big_sparse_device),
        cmocka_unit_test(t_write_device_fd),
        cmocka_unit_test(t_write_device_fd_short_mid),
        cmocka_unit_test(t_write_device_fd_short_cluster),
        cmocka_unit_test(t_golden_compressed),
        cmocka_unit_test(t_truncated_compressed),
        cmocka_unit_test(t_writer_compression),
    };
    int rc = cmocka_run_group_tests_name("api_roundtrip", tests, NULL, NULL);
    vt_rm_tree(g_tmp);
    return rc;
}
