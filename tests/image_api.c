/*
 * Random access (vma_image_*): every byte and random ranges of every device
 * of every golden archive and of archives written here (odd sizes,
 * interleaved devices, vmstate, every codec) equal what the sequential
 * reader hands out; data/hole ranges equal the stored blocks; reads from
 * four threads at once; the saved index is loaded again and refused when
 * stale, foreign, truncated or damaged; a forged index (sealed as anyone
 * who reads the archive can) and one left by an archive rewritten in place
 * never serve other bytes; failed reads set each thread's vma_last_error().
 * Usage: image_api <golden dir>. SPDX-License-Identifier: MIT
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include <sys/types.h>
#include <sha2.h> /* libmd (its header wants sys/types.h first) */

#include "rmtree.h"
#include "vma.h"

static int failures;
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
            failures++;                                                         \
        }                                                                       \
    } while (0)

/* What the sequential reader says: each device's bytes and stored blocks. */
struct ref {
    unsigned char *data[256];
    unsigned char *stored[256]; /* one byte per 4 KiB block */
    uint64_t len[256];          /* buffer bytes (whole clusters) */
    uint64_t size[256];         /* readable size */
};

/* Grow a device's buffers to `need` bytes (whole clusters), zero-filled. */
static void ref_grow(struct ref *rf, unsigned dev, uint64_t need)
{
    if (need <= rf->len[dev])
        return;
    rf->data[dev] = realloc(rf->data[dev], need);
    rf->stored[dev] = realloc(rf->stored[dev], need / VMA_BLOCK_SIZE);
    memset(rf->data[dev] + rf->len[dev], 0, need - rf->len[dev]);
    memset(rf->stored[dev] + rf->len[dev] / VMA_BLOCK_SIZE, 0,
           (need - rf->len[dev]) / VMA_BLOCK_SIZE);
    rf->len[dev] = need;
}

static int ref_cluster(void *opaque, unsigned dev, uint32_t num, uint16_t mask,
                       const unsigned char *data)
{
    struct ref *rf = opaque;
    ref_grow(rf, dev, ((uint64_t)num + 1) * VMA_CLUSTER_SIZE);
    for (unsigned b = 0; b < 16; b++) {
        if (!(mask & (1u << b)))
            continue;
        uint64_t at = (uint64_t)num * VMA_CLUSTER_SIZE + b * VMA_BLOCK_SIZE;
        memcpy(rf->data[dev] + at, data, VMA_BLOCK_SIZE);
        rf->stored[dev][at / VMA_BLOCK_SIZE] = 1;
        data += VMA_BLOCK_SIZE;
    }
    return 0;
}

static void ref_load(struct ref *rf, const char *path)
{
    memset(rf, 0, sizeof(*rf));
    vma_reader *r = vma_reader_new();
    int rc = vma_reader_open_path(r, path);
    if (rc == VMA_OK)
        rc = vma_reader_read(r, ref_cluster, rf);
    CHECK(rc == VMA_OK, "%s: %s", path, vma_reader_error(r));
    for (unsigned d = vma_reader_next_device(r, 0); d; d = vma_reader_next_device(r, d)) {
        uint64_t size = vma_reader_device_size(r, d);
        if (vma_reader_device_is_vmstate(r, d) && rf->len[d] < size)
            size = rf->len[d];
        rf->size[d] = size;
        /* A disk whose last clusters are all-zero. */
        ref_grow(rf, d, (size + VMA_CLUSTER_SIZE - 1) / VMA_CLUSTER_SIZE * VMA_CLUSTER_SIZE);
    }
    vma_reader_free(r);
}

static void ref_free(struct ref *rf)
{
    for (unsigned d = 0; d < 256; d++) {
        free(rf->data[d]);
        free(rf->stored[d]);
    }
}

struct rnd_job {
    vma_image *img;
    const struct ref *rf;
    unsigned seed;
    int bad;
};

/* vma_image_locate's pieces, read back from the data file into buf. */
struct assemble {
    int fd;
    unsigned char *buf;
    size_t pos;
    int bad;
    uint64_t last_off; /* merged: no two zero pieces in a row */
};

static int assemble_piece(void *opaque, uint64_t len, uint64_t file_off)
{
    struct assemble *a = opaque;
    if (len == 0 || (file_off == VMA_IMAGE_ZEROS && a->last_off == VMA_IMAGE_ZEROS))
        a->bad++;
    a->last_off = file_off;
    if (file_off == VMA_IMAGE_ZEROS)
        memset(a->buf + a->pos, 0, len);
    else if (pread(a->fd, a->buf + a->pos, len, (off_t)file_off) != (ssize_t)len)
        a->bad++;
    a->pos += len;
    return 0;
}

/* The pieces vma_image_locate() gives for a read equal what it reads; an
 * image read through decompression has no data file and refuses. */
static int locate_matches(vma_image *img, unsigned d, uint64_t off, size_t len,
                          const unsigned char *want, size_t want_len)
{
    int fd = vma_image_data_fd(img);
    unsigned char *buf = malloc(len + 1);
    struct assemble a = { fd, buf, 0, 0, 0 };
    int rc = vma_image_locate(img, d, off, len, assemble_piece, &a);
    int ok = fd < 0 ? rc == VMA_ERR_INVALID
                    : rc == VMA_OK && a.bad == 0 && a.pos == want_len &&
                          memcmp(buf, want, want_len) == 0;
    free(buf);
    return ok;
}

/* 500 reads of random devices, offsets and lengths (some across the end). */
static void *random_reads(void *arg)
{
    struct rnd_job *j = arg;
    const vma_reader *r = vma_image_reader(j->img);
    unsigned char *buf = malloc(300000);
    for (int k = 0; k < 500; k++) {
        unsigned devs[256], n = 0;
        for (unsigned d = vma_reader_next_device(r, 0); d; d = vma_reader_next_device(r, d))
            devs[n++] = d;
        if (n == 0)
            break;
        unsigned d = devs[rand_r(&j->seed) % n];
        uint64_t size = j->rf->size[d];
        uint64_t off = size ? ((uint64_t)rand_r(&j->seed) * 7919u) % (size + 5000) : 0;
        size_t len = (size_t)(rand_r(&j->seed) % 300000);
        int64_t got = vma_image_pread(j->img, d, buf, len, off);
        int64_t want = off >= size ? 0 : (int64_t)(len < size - off ? len : size - off);
        if (got != want || (want > 0 && memcmp(buf, j->rf->data[d] + off, (size_t)want) != 0))
            j->bad++;
        else if (!locate_matches(j->img, d, off, len, buf, (size_t)want))
            j->bad++;
    }
    free(buf);
    return NULL;
}

/* Compare everything the image says with the reference. */
static void compare(vma_image *img, const struct ref *rf, const char *what)
{
    const vma_reader *r = vma_image_reader(img);
    for (unsigned d = vma_reader_next_device(r, 0); d; d = vma_reader_next_device(r, d)) {
        uint64_t size = vma_image_device_size(img, d);
        CHECK(size == rf->size[d], "%s dev %u: size %llu, want %llu", what, d,
              (unsigned long long)size, (unsigned long long)rf->size[d]);
        unsigned char *buf = malloc(size + 1);
        int64_t got = vma_image_pread(img, d, buf, size + 1, 0);
        CHECK(got == (int64_t)size && memcmp(buf, rf->data[d], size) == 0,
              "%s dev %u: whole read differs (%lld): %s", what, d, (long long)got,
              vma_image_error(img));
        CHECK(vma_image_pread(img, d, buf, 10, size) == 0, "%s: read at the end", what);
        free(buf);
        /* Data ranges: walk them and compare with the stored blocks. */
        uint64_t pos = 0, ranges = 0;
        for (;;) {
            uint64_t off, len;
            CHECK(vma_image_next_data(img, d, pos, &off, &len) == VMA_OK, "%s next_data", what);
            for (uint64_t b = pos / VMA_BLOCK_SIZE; b * VMA_BLOCK_SIZE < off; b++)
                if (pos < off && rf->stored[d][b] && (b + 1) * VMA_BLOCK_SIZE > pos) {
                    CHECK(0, "%s dev %u: block %llu is data but skipped", what, d,
                          (unsigned long long)b);
                    break;
                }
            if (len == 0) {
                CHECK(off == size, "%s dev %u: end of data at %llu", what, d,
                      (unsigned long long)off);
                break;
            }
            for (uint64_t b = off / VMA_BLOCK_SIZE; b * VMA_BLOCK_SIZE < off + len; b++)
                if (!rf->stored[d][b]) {
                    CHECK(0, "%s dev %u: block %llu is a hole but reported as data", what, d,
                          (unsigned long long)b);
                    break;
                }
            CHECK(off + len == size || !rf->stored[d][(off + len) / VMA_BLOCK_SIZE],
                  "%s dev %u: data range at %llu stops early", what, d,
                  (unsigned long long)off);
            pos = off + len;
            ranges++;
        }
        /* From an odd offset inside the device. */
        uint64_t off, len;
        if (size > 5000) {
            vma_image_next_data(img, d, 4999, &off, &len);
            CHECK(off >= 4999, "%s: next_data went backwards", what);
        }
    }
    struct rnd_job jobs[4];
    pthread_t th[4];
    for (unsigned t = 0; t < 4; t++) {
        jobs[t] = (struct rnd_job){ img, rf, 1234 + t, 0 };
        pthread_create(&th[t], NULL, random_reads, &jobs[t]);
    }
    for (unsigned t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        CHECK(jobs[t].bad == 0, "%s: %d random reads differ in thread %u", what, jobs[t].bad, t);
    }
}

static vma_image *open_image(const char *path, unsigned flags, int *rc)
{
    vma_image *img = vma_image_new();
    vma_image_set_cache_dir(img, getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    *rc = vma_image_open(img, path, flags);
    return img;
}

static void check_archive(const char *path, unsigned flags)
{
    struct ref rf;
    ref_load(&rf, path);
    int rc;
    vma_image *img = open_image(path, flags, &rc);
    CHECK(rc == VMA_OK, "open %s: %s", path, vma_image_error(img));
    if (rc == VMA_OK)
        compare(img, &rf, path);
    vma_image_free(img);
    ref_free(&rf);
}

/* An archive of odd-sized disks written in a shuffled, interleaved order,
 * with zero blocks, all-zero clusters and a vmstate stream. */
static void write_archive(const char *path, const char *codec, unsigned seed)
{
    static const uint64_t sizes[] = { 1048576 + 4097, 3 * 65536 + 100, 5000, 20 * 65536 };
    vma_writer *w = vma_writer_new();
    int rc = vma_writer_open_path(w, path);
    if (rc == VMA_OK && codec != NULL)
        rc = vma_writer_set_compression(w, codec);
    if (rc == VMA_OK)
        rc = vma_writer_add_config(w, "qemu-server.conf", "memory: 512\n", 12);
    int ids[5];
    char name[32];
    for (unsigned i = 0; i < 4 && rc == VMA_OK; i++) {
        snprintf(name, sizeof(name), "drive-scsi%u", i);
        ids[i] = vma_writer_add_device(w, name, sizes[i]);
        rc = ids[i] > 0 ? VMA_OK : ids[i];
    }
    ids[4] = vma_writer_add_device(w, "vmstate", 200000);
    CHECK(rc == VMA_OK && ids[4] > 0, "writer setup: %s", vma_writer_error(w));
    /* Every (device, cluster) pair in a shuffled order. */
    unsigned pairs[64][2], n = 0;
    for (unsigned i = 0; i < 4; i++)
        for (uint64_t c = 0; c * VMA_CLUSTER_SIZE < sizes[i]; c++)
            pairs[n][0] = i, pairs[n][1] = (unsigned)c, n++;
    for (unsigned k = n; k > 1; k--) {
        unsigned j = (unsigned)rand_r(&seed) % k, t0 = pairs[k - 1][0], t1 = pairs[k - 1][1];
        pairs[k - 1][0] = pairs[j][0], pairs[k - 1][1] = pairs[j][1];
        pairs[j][0] = t0, pairs[j][1] = t1;
    }
    unsigned char *buf = malloc(VMA_CLUSTER_SIZE);
    unsigned vm = 0;
    for (unsigned k = 0; k < n && rc == VMA_OK; k++) {
        unsigned kind = (unsigned)rand_r(&seed) % 4;
        for (unsigned b = 0; b < 16; b++) {
            bool zero = kind == 0 || (kind == 1 && rand_r(&seed) % 2);
            for (unsigned x = 0; x < VMA_BLOCK_SIZE; x++)
                buf[b * VMA_BLOCK_SIZE + x] = zero ? 0 : (unsigned char)rand_r(&seed);
        }
        rc = vma_writer_write_cluster(w, (unsigned)ids[pairs[k][0]], pairs[k][1],
                                      kind == 0 && k % 2 ? NULL : buf);
        if (rc == VMA_OK && k % 7 == 0 && vm < 4) { /* vmstate interleaved */
            rc = vma_writer_write_cluster(w, (unsigned)ids[4], vm, vm == 2 ? NULL : buf);
            vm++;
        }
    }
    while (rc == VMA_OK && vm < 4)
        rc = vma_writer_write_cluster(w, (unsigned)ids[4], vm++, buf);
    for (unsigned i = 0; i < 5 && rc == VMA_OK; i++)
        rc = vma_writer_close_device(w, (unsigned)ids[i]);
    if (rc == VMA_OK)
        rc = vma_writer_finish(w);
    CHECK(rc == VMA_OK, "write %s: %s", path, vma_writer_error(w));
    free(buf);
    vma_writer_free(w);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[65536];
    size_t n;
    while (in && out && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

/* Open must fail with VMA_ERR_CORRUPT and a message containing `why`. */
static void expect_refused(const char *path, const char *why, const char *what)
{
    int rc;
    vma_image *img = open_image(path, 0, &rc);
    CHECK(rc == VMA_ERR_CORRUPT && strstr(vma_image_error(img), why) != NULL &&
              strstr(vma_image_error(img), ".vmaidx refused") != NULL,
          "%s: open gave %d '%s', want refusal with '%s'", what, rc, vma_image_error(img), why);
    vma_image_free(img);
}

/* Failed reads from four threads at once, while they also read the
 * handle's message: each thread's vma_last_error() names its own read. */
struct fail_job {
    vma_image *img;
    unsigned dev;
    const uint64_t *offs;
    unsigned n, seed;
    int bad;
    pthread_barrier_t *start; /* all at once, so that their calls overlap */
};

static void *failing_reads(void *arg)
{
    struct fail_job *j = arg;
    unsigned char buf[VMA_BLOCK_SIZE];
    char want[64];
    pthread_barrier_wait(j->start);
    for (unsigned k = 0; k < 300; k++) {
        uint64_t off = j->offs[(k * 7 + j->seed) % j->n];
        snprintf(want, sizeof(want), "at byte %llu:", (unsigned long long)off);
        if (vma_image_pread(j->img, j->dev, buf, sizeof(buf), off) >= 0 ||
            strstr(vma_last_error(), want) == NULL ||
            strncmp(vma_image_error(j->img), "read of device", 14) != 0)
            j->bad++;
    }
    return NULL;
}

static void failing_threads(vma_image *img, unsigned dev)
{
    uint64_t offs[64];
    unsigned n = 0;
    unsigned char buf[VMA_BLOCK_SIZE];
    uint64_t size = vma_image_device_size(img, dev);
    for (uint64_t off = 0; off < size && n < 64; off += VMA_BLOCK_SIZE)
        if (vma_image_pread(img, dev, buf, sizeof(buf), off) < 0)
            offs[n++] = off;
    CHECK(n > 4, "failing reads: only %u blocks fail", n);
    if (n == 0)
        return;
    struct fail_job jobs[4];
    pthread_t th[4];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 4);
    for (unsigned t = 0; t < 4; t++) {
        jobs[t] = (struct fail_job){ img, dev, offs, n, t * 5, 0, &start };
        pthread_create(&th[t], NULL, failing_reads, &jobs[t]);
    }
    for (unsigned t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        CHECK(jobs[t].bad == 0, "failing reads: %d of thread %u without their own message",
              jobs[t].bad, t);
    }
    pthread_barrier_destroy(&start);
}

static void index_files(const char *dir)
{
    char a[4096], b[4096], ia[4200], ib[4200], tmp[4300];
    snprintf(a, sizeof(a), "%s/a.vma", dir);
    snprintf(b, sizeof(b), "%s/b.vma", dir);
    snprintf(ia, sizeof(ia), "%s.vmaidx", a);
    snprintf(ib, sizeof(ib), "%s.vmaidx", b);
    write_archive(a, NULL, 7);
    write_archive(b, NULL, 7); /* same layout, another uuid */
    struct ref rf;
    ref_load(&rf, a);
    int rc;
    vma_image *img = open_image(a, 0, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_SAVED,
          "first open: %d %d %s", rc, vma_image_index_state(img), vma_image_error(img));
    vma_image_free(img);
    img = open_image(a, 0, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_LOADED,
          "second open: %d %d %s", rc, vma_image_index_state(img), vma_image_error(img));
    if (rc == VMA_OK)
        compare(img, &rf, "loaded index");
    vma_image_free(img);
    img = open_image(b, 0, &rc);
    vma_image_free(img);

    /* Foreign: b's index next to a. */
    snprintf(tmp, sizeof(tmp), "%s.keep", ia);
    rename(ia, tmp);
    copy_file(ib, ia);
    expect_refused(a, "another archive", "swapped index");
    rename(tmp, ia);

    /* Damaged: a flipped byte in the entries, a cut file, garbage. */
    copy_file(ia, tmp);
    struct stat st;
    stat(ia, &st);
    int fd = open(ia, O_RDWR);
    unsigned char c;
    pread(fd, &c, 1, st.st_size - 40);
    c ^= 0x10;
    pwrite(fd, &c, 1, st.st_size - 40);
    close(fd);
    expect_refused(a, "checksum", "flipped index byte");
    copy_file(tmp, ia);
    truncate(ia, st.st_size - 13);
    expect_refused(a, "size does not match", "truncated index");
    FILE *f = fopen(ia, "wb");
    fputs("not an index at all, but long enough to be read as one .......................", f);
    fclose(f);
    expect_refused(a, "bad magic", "garbage index");
    copy_file(tmp, ia);
    img = open_image(a, 0, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_LOADED,
          "restored index: %s", vma_image_error(img));
    vma_image_free(img);

    /* Planted, valid in every byte: a file others may write, or another
     * user's (root only can make one here), is not trusted. */
    chmod(ia, 0664);
    expect_refused(a, "others may write to it", "group-writable index");
    chmod(ia, 0644);
    if (geteuid() == 0) {
        CHECK(chown(ia, 65534, 65534) == 0, "chown %s: %s", ia, strerror(errno));
        expect_refused(a, "it belongs to uid 65534, neither you nor root", "another user's index");
        CHECK(chown(ia, 0, 0) == 0, "chown %s back: %s", ia, strerror(errno));
    }
    img = open_image(a, 0, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_LOADED,
          "index trusted again: %s", vma_image_error(img));
    vma_image_free(img);

    /* Stale: the archive was touched after indexing. */
    struct timespec ts[2] = { { 0, UTIME_OMIT }, { 1000000000, 0 } };
    utimensat(AT_FDCWD, a, ts, 0);
    expect_refused(a, "ctime differs", "touched archive");
    img = open_image(a, VMA_IMAGE_REINDEX, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_SAVED,
          "reindex: %s", vma_image_error(img));
    vma_image_free(img);
    img = open_image(a, 0, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_LOADED,
          "after reindex: %s", vma_image_error(img));

    /* The archive cut short after the open: reads of the lost data fail
     * (VMA_ERR_TRUNCATED), reads of the rest and of holes still work. */
    stat(a, &st);
    truncate(a, st.st_size / 2);
    const vma_reader *r = vma_image_reader(img);
    unsigned d = vma_reader_find_device(r, "drive-scsi3");
    unsigned char *buf = malloc(20 * 65536);
    int64_t got = vma_image_pread(img, d, buf, 20 * 65536, 0);
    CHECK(got == VMA_ERR_TRUNCATED && strstr(vma_image_error(img), "drive-scsi3"),
          "read after truncation: %lld %s", (long long)got, vma_image_error(img));
    CHECK(strstr(vma_last_error(), "drive-scsi3") && strstr(vma_last_error(), "at byte 0:"),
          "read after truncation: vma_last_error() is '%s'", vma_last_error());
    free(buf);
    failing_threads(img, d);
    vma_image_free(img);
    expect_refused(a, "bytes, this one has", "truncated archive");
    ref_free(&rf);

    /* Neither a stream nor an index file for NO_INDEX_FILE. */
    unlink(ib);
    img = open_image(b, VMA_IMAGE_NO_INDEX_FILE, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_BUILT &&
              access(ib, F_OK) != 0,
          "no index file: %s", vma_image_error(img));
    vma_image_free(img);
    img = open_image("-", 0, &rc);
    CHECK(rc == VMA_ERR_INVALID, "stdin refused: %d", rc);
    vma_image_free(img);
}

/* After a first open of an archive written here, the second one loads its
 * index file when the archive is read in place by offsets (plain, .vma.lzo,
 * our seekable .vma.zst), and reads the same; a .vma.gz has none (its
 * access points are built by each open). */
static void reopen_with_index(const char *path, const char *codec)
{
    char idx[4200];
    snprintf(idx, sizeof(idx), "%s.vmaidx", path);
    int saved = codec == NULL || strcmp(codec, "gzip") != 0;
    CHECK((access(idx, F_OK) == 0) == saved, "%s: index file %s", path,
          saved ? "missing" : "written");
    struct ref rf;
    ref_load(&rf, path);
    int rc;
    vma_image *img = open_image(path, 0, &rc);
    int want = saved ? VMA_IMAGE_INDEX_LOADED : VMA_IMAGE_INDEX_BUILT;
    CHECK(rc == VMA_OK && vma_image_index_state(img) == want, "%s reopened: %d, state %d: %s",
          path, rc, vma_image_index_state(img), vma_image_error(img));
    if (rc == VMA_OK)
        compare(img, &rf, "reopened with its index");
    vma_image_free(img);
    ref_free(&rf);
}

/* A damaged extent fails the open with the reader's message. */
static void damaged(const char *golden, const char *dir)
{
    char src[4200], dst[4096];
    snprintf(src, sizeof(src), "%s/basic.vma", golden);
    snprintf(dst, sizeof(dst), "%s/damaged.vma", dir);
    copy_file(src, dst);
    int fd = open(dst, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    /* The first extent header's block_count, right after the header. */
    vma_reader *r = vma_reader_new();
    vma_reader_open_path(r, src);
    vma_reader_free(r);
    unsigned char c = 0;
    off_t at = 0;
    /* Find the first extent magic "VMAE". */
    unsigned char *all = malloc((size_t)st.st_size);
    pread(fd, all, (size_t)st.st_size, 0);
    for (off_t i = 12288; i + 4 < st.st_size; i++)
        if (memcmp(all + i, "VMAE", 4) == 0) {
            at = i + 50;
            break;
        }
    free(all);
    pread(fd, &c, 1, at);
    c ^= 1;
    pwrite(fd, &c, 1, at);
    close(fd);
    int rc;
    vma_image *img = open_image(dst, 0, &rc);
    CHECK(rc == VMA_ERR_CORRUPT && strstr(vma_image_error(img), "extent 0"),
          "damaged extent: %d %s", rc, vma_image_error(img));
    vma_image_free(img);
    snprintf(src, sizeof(src), "%s.vmaidx", dst);
    CHECK(access(src, F_OK) != 0, "an index was written for a damaged archive");
}

/* Flip the bits of mask in the byte in the middle of a file. */
static void flip_middle(const char *path, unsigned char mask)
{
    struct stat st;
    stat(path, &st);
    int fd = open(path, O_RDWR);
    unsigned char c = 0;
    pread(fd, &c, 1, st.st_size / 2);
    c ^= mask;
    pwrite(fd, &c, 1, st.st_size / 2);
    close(fd);
}

/* Read every 4 KiB block of every device on its own: count the reads that
 * failed (as VMA_ERR_CORRUPT naming `what`), that returned the right bytes,
 * and the wrong outcomes (other bytes, another status, a hole that failed). */
/* Reads of 200000 bytes: each one either returns the right bytes or fails
 * because one of its own 4 KiB blocks fails alone (a damaged block that
 * only lies between its pieces, in another device's data, must not fail
 * it). Returns the number of reads that broke this. */
static unsigned wide_reads_exact(vma_image *img, const struct ref *rf)
{
    const vma_reader *r = vma_image_reader(img);
    unsigned char *buf = malloc(200000), blk[VMA_BLOCK_SIZE];
    unsigned bad = 0;
    for (unsigned d = vma_reader_next_device(r, 0); d; d = vma_reader_next_device(r, d))
        for (uint64_t off = 0; off < rf->size[d]; off += 200000) {
            int64_t n = vma_image_pread(img, d, buf, 200000, off);
            if (n >= 0) {
                bad += memcmp(buf, rf->data[d] + off, (size_t)n) != 0;
                continue;
            }
            int own = 0;
            for (uint64_t b = off / VMA_BLOCK_SIZE * VMA_BLOCK_SIZE;
                 b < off + 200000 && b < rf->size[d]; b += VMA_BLOCK_SIZE)
                own |= vma_image_pread(img, d, blk, VMA_BLOCK_SIZE, b) < 0;
            bad += !own;
        }
    free(buf);
    return bad;
}

static void count_block_reads(vma_image *img, const struct ref *rf, const char *what,
                              uint64_t *failed, uint64_t *good, uint64_t *wrong)
{
    const vma_reader *r = vma_image_reader(img);
    unsigned char buf[VMA_BLOCK_SIZE];
    *failed = *good = *wrong = 0;
    for (unsigned d = vma_reader_next_device(r, 0); d; d = vma_reader_next_device(r, d))
        for (uint64_t b = 0; b * VMA_BLOCK_SIZE < rf->size[d]; b++) {
            int64_t n = vma_image_pread(img, d, buf, VMA_BLOCK_SIZE, b * VMA_BLOCK_SIZE);
            if (n < 0) {
                (*failed)++;
                *wrong += n != VMA_ERR_CORRUPT || !rf->stored[d][b] ||
                          !strstr(vma_image_error(img), what);
            } else if (memcmp(buf, rf->data[d] + b * VMA_BLOCK_SIZE, (size_t)n) != 0) {
                (*wrong)++;
            } else {
                (*good)++;
            }
        }
}

/* A .vma.lzo damaged after the open: reads that need the damaged lzop
 * block fail with VMA_ERR_CORRUPT, every other read returns the right
 * bytes, holes still read as zeros, and no read returns wrong bytes. */
static void damaged_lzo(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/damaged.vma.lzo", dir);
    write_archive(path, "lzo", 99);
    struct ref rf;
    ref_load(&rf, path);
    int rc;
    vma_image *img = open_image(path, 0, &rc);
    CHECK(rc == VMA_OK, "open lzo: %s", vma_image_error(img));
    flip_middle(path, 0xff);
    uint64_t failed, good, wrong;
    count_block_reads(img, &rf, "lzop block", &failed, &good, &wrong);
    CHECK(wide_reads_exact(img, &rf) == 0, "damaged lzo: a wide read failed for another's block");
    /* One lzop block holds 256 KiB of the archive: 64 stored blocks, plus
     * one at each end that straddles its border (extent headers shift them). */
    CHECK(failed > 0 && failed <= 66 && wrong == 0 && good > 100,
          "damaged lzo: %llu failed, %llu good, %llu wrong (%s)", (unsigned long long)failed,
          (unsigned long long)good, (unsigned long long)wrong, vma_image_error(img));
    vma_image_free(img);
    ref_free(&rf);
    img = open_image(path, 0, &rc);
    CHECK(rc == VMA_ERR_CORRUPT, "damaged lzo: open gave %d %s", rc, vma_image_error(img));
    vma_image_free(img);
}

static void put_le32(FILE *f, uint32_t v)
{
    unsigned char b[4] = { (unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 24) };
    fwrite(b, 1, 4, f);
}

/* The plain archive `from` in zstd's seekable format: frames of `frame`
 * bytes (each with its checksum), then the seek table's skippable frame.
 * `bad` != 0 writes a footer whose frame count is off by one. */
static void write_seekable(const char *from, const char *to, size_t frame, int bad)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    unsigned char *buf = malloc(frame), *z = malloc(ZSTD_compressBound(frame));
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    uint32_t sizes[4096][2], n = 0;
    size_t got;
    while ((got = fread(buf, 1, frame, in)) > 0 && n < 4096) {
        size_t zl = ZSTD_compress2(cc, z, ZSTD_compressBound(frame), buf, got);
        fwrite(z, 1, zl, out);
        sizes[n][0] = (uint32_t)zl;
        sizes[n][1] = (uint32_t)got;
        n++;
    }
    put_le32(out, 0x184D2A5Eu);
    put_le32(out, n * 8 + 9);
    for (uint32_t i = 0; i < n; i++) {
        put_le32(out, sizes[i][0]);
        put_le32(out, sizes[i][1]);
    }
    put_le32(out, n + (bad ? 1 : 0));
    fputc(0, out);
    put_le32(out, 0x8F92EAB1u);
    fclose(in);
    fclose(out);
    ZSTD_freeCCtx(cc);
    free(buf);
    free(z);
}

/* Seekable zstd: read in place by frames, equal to the plain archive;
 * a bad seek table is refused; a frame damaged after the open fails the
 * reads that need it and only those. */
static void seekable_zstd(const char *dir)
{
    char plain[4096], zst[4200];
    snprintf(plain, sizeof(plain), "%s/s.vma", dir);
    snprintf(zst, sizeof(zst), "%s/s.vma.zst", dir);
    write_archive(plain, NULL, 555);
    write_seekable(plain, zst, 256 * 1024, 0);
    check_archive(zst, 0);
    struct ref rf;
    ref_load(&rf, zst);
    int rc;
    vma_image *img = open_image(zst, 0, &rc);
    CHECK(rc == VMA_OK && strcmp(vma_reader_compression(vma_image_reader(img)), "zstd") == 0,
          "seekable zstd: %s", vma_image_error(img));
    flip_middle(zst, 0x40);
    uint64_t failed, good, wrong;
    count_block_reads(img, &rf, "zstd frame", &failed, &good, &wrong);
    CHECK(wide_reads_exact(img, &rf) == 0, "damaged zstd: a wide read failed for another's frame");
    CHECK(failed > 0 && failed <= 66 && wrong == 0 && good > 100,
          "damaged zstd frame: %llu failed, %llu good, %llu wrong (%s)",
          (unsigned long long)failed, (unsigned long long)good, (unsigned long long)wrong,
          vma_image_error(img));
    vma_image_free(img);
    ref_free(&rf);
    write_seekable(plain, zst, 256 * 1024, 1);
    img = open_image(zst, 0, &rc);
    CHECK(rc == VMA_ERR_CORRUPT && strstr(vma_image_error(img), "seek table"),
          "bad seek table: %d %s", rc, vma_image_error(img));
    vma_image_free(img);
}

static void count_notice(void *opaque, const char *dir, uint64_t max_bytes)
{
    (void)dir;
    (void)max_bytes;
    ++*(int *)opaque;
}

/* Open path with cache_dir, count its cache notices (want: how many),
 * and compare everything it reads with the reference. */
static void open_counting_notices(const char *path, const char *cache_dir, unsigned flags,
                                  int want)
{
    struct ref rf;
    ref_load(&rf, path);
    int notices = 0;
    vma_image *img = vma_image_new();
    vma_image_set_cache_dir(img, cache_dir);
    vma_image_set_cache_notice(img, count_notice, &notices);
    int rc = vma_image_open(img, path, flags);
    CHECK(rc == VMA_OK && notices == want, "%s: rc %d, %d cache notices, want %d (%s)", path, rc,
          notices, want, vma_image_error(img));
    if (rc == VMA_OK)
        compare(img, &rf, path);
    vma_image_free(img);
    ref_free(&rf);
}

/* What vma_writer writes with "zstd" is seekable: opened in place, with no
 * cache notice, though the cache directory does not exist. */
static void created_zstd_in_place(const char *dir)
{
    char path[4096], nodir[4200];
    snprintf(path, sizeof(path), "%s/created.vma.zst", dir);
    snprintf(nodir, sizeof(nodir), "%s/no-such-dir", dir);
    write_archive(path, "zstd", 777);
    open_counting_notices(path, nodir, 0, 0);
}

/* Open path with its index in dir (bound max_bytes); the index state. */
static int open_in_index_dir(const char *path, const char *dir, uint64_t max_bytes)
{
    vma_image *img = vma_image_new();
    int rc = vma_image_set_index_dir(img, dir, max_bytes);
    if (rc == VMA_OK)
        rc = vma_image_open(img, path, 0);
    int state = rc == VMA_OK ? vma_image_index_state(img) : -1;
    CHECK(rc == VMA_OK, "index dir %s: %s", dir, vma_image_error(img));
    CHECK(vma_image_set_index_dir(img, dir, 0) == VMA_ERR_INVALID, "index dir set after the open");
    vma_image_free(img);
    return state;
}

/* The one *.vmaidx of dir (its name into out): how many there are. */
static int index_in(const char *dir, char *out, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d != NULL && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > 7 && strcmp(e->d_name + l - 7, ".vmaidx") == 0 && n++ == 0)
            snprintf(out, len, "%s/%s", dir, e->d_name);
    }
    if (d != NULL)
        closedir(d);
    return n;
}

/* Index files in a directory of their own: named by uuid and size, none
 * beside the archive, loaded by the next open; the least recently used
 * go first when a save passes the bound, never other files. */
static void index_dir(const char *dir)
{
    char a[4096], b[4096], c[4096], d1[4096], d2[4096], ia[4200], ib[4200], ic[4200];
    snprintf(a, sizeof(a), "%s/ia.vma", dir);
    snprintf(b, sizeof(b), "%s/ib.vma", dir);
    snprintf(c, sizeof(c), "%s/ic.vma", dir);
    snprintf(d1, sizeof(d1), "%s/idx", dir);
    snprintf(d2, sizeof(d2), "%s/idx-c", dir);
    mkdir(d1, 0700);
    mkdir(d2, 0700);
    write_archive(a, NULL, 11);
    write_archive(b, NULL, 12);
    write_archive(c, NULL, 13);
    CHECK(open_in_index_dir(a, d1, 0) == VMA_IMAGE_INDEX_SAVED, "saved in the index dir");
    CHECK(open_in_index_dir(a, d1, 0) == VMA_IMAGE_INDEX_LOADED, "loaded from the index dir");
    snprintf(ia, sizeof(ia), "%s.vmaidx", a);
    CHECK(access(ia, F_OK) != 0, "an index beside the archive");
    CHECK(index_in(d1, ia, sizeof(ia)) == 1, "one index in the dir");
    CHECK(open_in_index_dir(b, d1, 0) == VMA_IMAGE_INDEX_SAVED, "b saved");
    CHECK(open_in_index_dir(c, d2, 0) == VMA_IMAGE_INDEX_SAVED, "c saved alone");
    CHECK(index_in(d2, ic, sizeof(ic)) == 1, "c's index");
    struct stat sc, sb;
    stat(ic, &sc);
    unlink(ic);
    /* a older than b; a file of someone else's stays whatever the bound */
    struct timespec old[2] = { { 1000000000, 0 }, { 1000000000, 0 } };
    utimensat(AT_FDCWD, ia, old, 0);
    char notes[4200];
    snprintf(notes, sizeof(notes), "%s/notes.vmaidx", d1);
    FILE *f = fopen(notes, "w");
    if (f != NULL)
        fclose(f);
    utimensat(AT_FDCWD, notes, old, 0);
    CHECK(index_in(d1, ib, sizeof(ib)) == 3, "a, b and the foreign file");
    /* b's name: the one that is neither a's nor notes */
    DIR *dd = opendir(d1);
    struct dirent *e;
    while (dd != NULL && (e = readdir(dd)) != NULL)
        if (strlen(e->d_name) > 40 && strstr(ia, e->d_name) == NULL)
            snprintf(ib, sizeof(ib), "%s/%s", d1, e->d_name);
    if (dd != NULL)
        closedir(dd);
    stat(ib, &sb);
    CHECK(open_in_index_dir(c, d1, (uint64_t)(sb.st_size + sc.st_size)) ==
              VMA_IMAGE_INDEX_SAVED, "c saved with a bound");
    CHECK(access(ia, F_OK) != 0, "the least recently used index (a) was kept past the bound");
    CHECK(access(ib, F_OK) == 0, "b was evicted though the bound held it");
    CHECK(access(notes, F_OK) == 0, "a file not named as ours was removed");
    CHECK(index_in(d1, ic, sizeof(ic)) == 3, "b, c and the foreign file");
    char cache[4096];
    setenv("XDG_CACHE_HOME", d2, 1);
    CHECK(vma_index_cache_dir(cache, sizeof(cache)) == VMA_OK && strstr(cache, "/idx-c/vmarchive"),
          "vma_index_cache_dir: %s", vma_last_error());
    CHECK(vma_index_cache_dir(cache, 8) == VMA_ERR_INVALID && vma_last_error()[0] != '\0',
          "a short buffer");
    unsetenv("XDG_CACHE_HOME");
}

/* One device of `size` bytes whose clusters hold pseudo-random blocks
 * (a quarter of them zero), written in order, as plain VMA. */
static void write_big_archive(const char *path, uint64_t size)
{
    vma_writer *w = vma_writer_new();
    int rc = vma_writer_open_path(w, path);
    int id = rc == VMA_OK ? vma_writer_add_device(w, "drive-scsi0", size) : rc;
    unsigned char *buf = malloc(VMA_CLUSTER_SIZE);
    unsigned seed = 4242;
    rc = id > 0 && buf != NULL ? VMA_OK : VMA_ERR_INVALID;
    for (uint32_t c = 0; (uint64_t)c * VMA_CLUSTER_SIZE < size && rc == VMA_OK; c++) {
        for (unsigned b = 0; b < 16; b++) {
            bool zero = rand_r(&seed) % 4 == 0;
            for (unsigned x = 0; x < VMA_BLOCK_SIZE; x++)
                buf[b * VMA_BLOCK_SIZE + x] = zero ? 0 : (unsigned char)(rand_r(&seed) % 7);
        }
        rc = vma_writer_write_cluster(w, (unsigned)id, c, buf);
    }
    if (rc == VMA_OK)
        rc = vma_writer_close_device(w, (unsigned)id);
    if (rc == VMA_OK)
        rc = vma_writer_finish(w);
    CHECK(rc == VMA_OK, "big archive: %s", vma_writer_error(w));
    vma_writer_free(w);
    free(buf);
}

/* `from` as one gzip member of a single deflate block (fixed Huffman
 * codes, literals only), as a hostile encoder may write: no access point
 * can lie inside it. */
static void write_one_block_gzip(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    static const unsigned char head[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3 };
    fwrite(head, 1, sizeof(head), out);
    uint64_t acc = 1 | (1u << 1); /* BFINAL, then BTYPE 01 (fixed codes) */
    unsigned nbits = 3;
    uLong crc = crc32(0, NULL, 0);
    uint32_t isize = 0;
    unsigned char buf[65536];
    size_t got;
    bool last = false;
    while (!last) {
        got = fread(buf, 1, sizeof(buf), in);
        last = got == 0;
        crc = crc32(crc, buf, (uInt)got);
        isize += (uint32_t)got;
        for (size_t i = 0; i <= got; i++) {
            /* Literals 0-143: 8-bit codes from 0x30; 144-255: 9-bit from
             * 0x190; the block's end (256): 7 zero bits. Huffman codes go
             * out most significant bit first. */
            unsigned code, len;
            if (i == got) {
                if (!last)
                    break;
                code = 0, len = 7;
            } else if (buf[i] < 144) {
                code = 0x30u + buf[i], len = 8;
            } else {
                code = 0x190u + (buf[i] - 144u), len = 9;
            }
            for (unsigned b = len; b-- > 0;)
                acc |= (uint64_t)((code >> b) & 1) << nbits++;
            while (nbits >= 8) {
                fputc((int)(acc & 0xff), out);
                acc >>= 8;
                nbits -= 8;
            }
        }
    }
    if (nbits > 0)
        fputc((int)(acc & 0xff), out);
    put_le32(out, (uint32_t)crc);
    put_le32(out, isize);
    fclose(in);
    fclose(out);
}

/* Compressed archives whose blocks are too long to read in place (20 MiB
 * zstd frames, one deflate block of 21 MiB) go to the cache, which says so
 * (one notice), and read the same (created_zstd_in_place: 4 MiB frames
 * stay in place). Read in place, each read of such a file held or
 * inflated a whole block. */
static void long_blocks_cached(const char *dir)
{
    char plain[4096], path[4200];
    snprintf(plain, sizeof(plain), "%s/big.vma", dir);
    write_big_archive(plain, 28u << 20); /* 21 MiB of stored blocks */
    static const struct {
        const char *name;
        size_t frame; /* 0: one deflate block */
        int notices;
    } cases[] = { { "frames20.vma.zst", 20u << 20, 1 },
                  { "oneblock.vma.gz", 0, 1 } };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, cases[i].name);
        if (cases[i].frame > 0)
            write_seekable(plain, path, cases[i].frame, 0);
        else
            write_one_block_gzip(plain, path);
        open_counting_notices(path, dir, VMA_IMAGE_NO_INDEX_FILE, cases[i].notices);
    }
}

/* --- forged and stale index files --- */

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    struct stat st;
    unsigned char *b = NULL;
    int fd = open(path, O_RDONLY);
    if (fd >= 0 && fstat(fd, &st) == 0 && (b = malloc((size_t)st.st_size + 1)) != NULL &&
        pread(fd, b, (size_t)st.st_size, 0) == st.st_size)
        *len = (size_t)st.st_size;
    else
        *len = 0;
    if (fd >= 0)
        close(fd);
    return b;
}

/* Write an index file with its SHA-256 made anew, as anyone can. */
static void seal_index(const char *path, unsigned char *b, size_t len)
{
    SHA2_CTX c;
    SHA256Init(&c);
    SHA256Update(&c, b, len - 32);
    SHA256Final(b + len - 32, &c);
    int fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(fd >= 0 && write(fd, b, len) == (ssize_t)len, "cannot write %s", path);
    close(fd);
}

/* Read dev cluster by cluster: every read must fail (saying why) or return
 * the archive's own bytes; with a data file, located pieces likewise.
 * Returns the reads that failed. */
static unsigned never_wrong(vma_image *img, const struct ref *rf, unsigned dev, const char *what)
{
    unsigned char *buf = malloc(VMA_CLUSTER_SIZE);
    unsigned failed = 0;
    for (uint64_t off = 0; off < rf->size[dev]; off += VMA_CLUSTER_SIZE) {
        size_t want = rf->size[dev] - off < VMA_CLUSTER_SIZE ? (size_t)(rf->size[dev] - off)
                                                             : VMA_CLUSTER_SIZE;
        int64_t n = vma_image_pread(img, dev, buf, VMA_CLUSTER_SIZE, off);
        if (n < 0) {
            failed++;
            CHECK(n == VMA_ERR_CORRUPT && strstr(vma_last_error(), "stale or forged"),
                  "%s: read at %llu failed with %lld '%s'", what, (unsigned long long)off,
                  (long long)n, vma_last_error());
        } else {
            CHECK(n == (int64_t)want && memcmp(buf, rf->data[dev] + off, want) == 0,
                  "%s: read at %llu returned other bytes than the archive's", what,
                  (unsigned long long)off);
        }
        if (vma_image_data_fd(img) >= 0) {
            int fd = vma_image_data_fd(img);
            struct assemble a = { fd, buf, 0, 0, 0 };
            int rc = vma_image_locate(img, dev, off, want, assemble_piece, &a);
            CHECK(rc != VMA_OK || (a.pos == want && memcmp(buf, rf->data[dev] + off, want) == 0),
                  "%s: pieces located at %llu hold other bytes than the archive's", what,
                  (unsigned long long)off);
        }
    }
    free(buf);
    return failed;
}

/* After a refused read the index file is gone: the next open builds and
 * saves a new one, and reads the archive's own bytes. */
static void reopened_anew(const char *path, const struct ref *rf, const char *what)
{
    int rc;
    vma_image *img = open_image(path, 0, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_SAVED,
          "%s: reopen gave %d, state %d: %s", what, rc, vma_image_index_state(img),
          vma_image_error(img));
    if (rc == VMA_OK)
        compare(img, rf, what);
    vma_image_free(img);
}

/* An index whose entries of two clusters (same mask, other bytes) trade
 * their offsets, with its checksum made anew: it names this archive and
 * passes every check of the loader, so the open takes it; no read may
 * then serve one cluster's bytes for the other's. */
static void forged_index(const char *dir, const char *codec)
{
    char path[4096], idx[4200], what[64];
    snprintf(path, sizeof(path), "%s/forged-%s.vma", dir, codec ? codec : "none");
    snprintf(idx, sizeof(idx), "%s.vmaidx", path);
    snprintf(what, sizeof(what), "forged index (%s)", codec ? codec : "plain");
    write_archive(path, codec, 4242);
    struct ref rf;
    ref_load(&rf, path);
    int rc;
    vma_image *img = open_image(path, 0, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_SAVED, "%s: first open",
          what);
    unsigned dev = vma_reader_find_device(vma_image_reader(img), "drive-scsi0");
    vma_image_free(img);

    size_t len;
    unsigned char *b = slurp(idx, &len);
    unsigned ndev = b != NULL && len > 64 ? get_le32(b + 36) : 0;
    size_t at = 64 + (size_t)ndev * 24, first = 0, second = 0;
    for (unsigned k = 0; k < ndev; k++) {
        uint64_t count = get_le32(b + 64 + 24 * k + 8);
        if (get_le32(b + 64 + 24 * k) != dev) {
            at += count * 12;
            continue;
        }
        for (uint64_t e = 0; e < count && second == 0; e++, at += 12) {
            uint32_t num = get_le32(b + at);
            if (b[at + 4] != 0xff || b[at + 5] != 0xff)
                continue; /* a cluster stored whole */
            if (first == 0)
                first = at;
            else if (memcmp(rf.data[dev] + (uint64_t)num * VMA_CLUSTER_SIZE,
                            rf.data[dev] + (uint64_t)get_le32(b + first) * VMA_CLUSTER_SIZE,
                            VMA_CLUSTER_SIZE) != 0)
                second = at;
        }
        break;
    }
    CHECK(second != 0, "%s: no two whole clusters to swap", what);
    if (second != 0) {
        unsigned char t[6];
        memcpy(t, b + first + 6, 6);
        memcpy(b + first + 6, b + second + 6, 6);
        memcpy(b + second + 6, t, 6);
        seal_index(idx, b, len);
        img = open_image(path, 0, &rc);
        CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_LOADED,
              "%s: the forged index was not loaded: %d %s", what, rc, vma_image_error(img));
        if (rc == VMA_OK) {
            CHECK(never_wrong(img, &rf, dev, what) > 0, "%s: no read was refused", what);
            CHECK(access(idx, F_OK) != 0, "%s: the refuted index file is still there", what);
        }
        vma_image_free(img);
        reopened_anew(path, &rf, what);
    }
    free(b);
    ref_free(&rf);
}

/* One disk of whole clusters, written in order or backwards: the same
 * size, uuid and ctime, every cluster somewhere else. */
static void write_ordered(const char *path, int backwards)
{
    static const unsigned char uuid[16] = { 's', 't', 'a', 'l', 'e' };
    vma_writer *w = vma_writer_new();
    int rc = vma_writer_set_uuid(w, uuid);
    if (rc == VMA_OK)
        rc = vma_writer_set_ctime(w, 1700000000);
    if (rc == VMA_OK)
        rc = vma_writer_open_path(w, path);
    int id = rc == VMA_OK ? vma_writer_add_device(w, "drive-scsi0", 80 * VMA_CLUSTER_SIZE) : rc;
    unsigned char *buf = malloc(VMA_CLUSTER_SIZE);
    for (uint32_t k = 0; k < 80 && id > 0 && rc == VMA_OK; k++) {
        uint32_t c = backwards ? 79 - k : k;
        for (size_t x = 0; x < VMA_CLUSTER_SIZE; x++)
            buf[x] = (unsigned char)(1 + (c * 31 + x / 4096 + (backwards ? 7 : 0)) % 255);
        rc = vma_writer_write_cluster(w, (unsigned)id, c, buf);
    }
    if (rc == VMA_OK && id > 0)
        rc = vma_writer_close_device(w, (unsigned)id);
    if (rc == VMA_OK)
        rc = vma_writer_finish(w);
    CHECK(rc == VMA_OK && id > 0, "write %s: %s", path, vma_writer_error(w));
    free(buf);
    vma_writer_free(w);
}

/* An archive rewritten in place with the same uuid, ctime and size, its
 * mtime put back: its old index is refused, and one forged to match (the
 * inode ctime changed too) names it still, but no read may serve the old
 * layout's bytes. */
static void rewritten_in_place(const char *dir)
{
    char path[4096], other[4200], idx[4200];
    snprintf(path, sizeof(path), "%s/rewritten.vma", dir);
    snprintf(other, sizeof(other), "%s.new", path);
    snprintf(idx, sizeof(idx), "%s.vmaidx", path);
    write_ordered(path, 0);
    int rc;
    vma_image *img = open_image(path, 0, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_SAVED,
          "rewritten: first open: %s", vma_image_error(img));
    vma_image_free(img);
    struct stat st, st2;
    stat(path, &st);
    write_ordered(other, 1);
    stat(other, &st2);
    CHECK(st.st_size == st2.st_size, "rewritten: sizes differ (%lld, %lld)",
          (long long)st.st_size, (long long)st2.st_size);
    size_t len;
    unsigned char *b = slurp(other, &len);
    int fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(b != NULL && fd >= 0 && write(fd, b, len) == (ssize_t)len, "rewritten: rewrite");
    close(fd);
    free(b);
    unlink(other);
    struct timespec ts[2] = { st.st_atim, st.st_mtim };
    utimensat(AT_FDCWD, path, ts, 0);
    struct ref rf;
    ref_load(&rf, path);
    /* The inode change time, which nobody can put back, gives it away. */
    expect_refused(path, "ctime differs", "rewritten archive");
    /* An old index made to match (the ctime field set anew and the file
     * sealed again, as the owner could): each entry still meets the
     * extent headers. */
    unsigned char *ib = slurp(idx, &len);
    stat(path, &st);
    if (ib != NULL && len > 64) {
        for (int i = 0; i < 8; i++)
            ib[24 + i] = (unsigned char)((uint64_t)st.st_ctim.tv_sec >> (8 * i));
        for (int i = 0; i < 4; i++)
            ib[32 + i] = (unsigned char)((uint32_t)st.st_ctim.tv_nsec >> (8 * i));
        seal_index(idx, ib, len);
    }
    free(ib);
    img = open_image(path, 0, &rc);
    CHECK(rc == VMA_OK && vma_image_index_state(img) == VMA_IMAGE_INDEX_LOADED,
          "rewritten: the old index was not loaded: %d %s", rc, vma_image_error(img));
    if (rc == VMA_OK) {
        unsigned dev = vma_reader_find_device(vma_image_reader(img), "drive-scsi0");
        CHECK(never_wrong(img, &rf, dev, "rewritten archive") > 0,
              "rewritten: no read was refused");
    }
    vma_image_free(img);
    reopened_anew(path, &rf, "rewritten archive");
    ref_free(&rf);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: image_api <golden dir>\n");
        return 99;
    }
    static const char *golden[] = { "basic.vma", "basic.vma.gz", "basic.vma.lzo",
                                    "basic.vma.zst", "diskless.vma", "legacy.vma",
                                    "odd-sizes.vma", "zero-disk.vma" };
    char path[4096];
    for (size_t i = 0; i < sizeof(golden) / sizeof(golden[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", argv[1], golden[i]);
        check_archive(path, VMA_IMAGE_NO_INDEX_FILE); /* no .vmaidx in the source tree */
    }
    char tdir[4096];
    char *d = vt_mkdtemp(tdir, sizeof(tdir), "vma-image-api");
    if (d == NULL) {
        perror("mkdtemp");
        return 99;
    }
    static const char *codecs[] = { NULL, "zstd", "gzip", "lzo" };
    for (unsigned seed = 1; seed <= 3; seed++)
        for (unsigned c = 0; c < 4; c++) {
            snprintf(path, sizeof(path), "%s/r%u-%u.vma", d, seed, c);
            write_archive(path, codecs[c], seed * 100 + c);
            check_archive(path, 0);
            reopen_with_index(path, codecs[c]);
        }
    index_files(d);
    index_dir(d);
    forged_index(d, NULL);
    forged_index(d, "lzo");
    forged_index(d, "zstd");
    rewritten_in_place(d);
    damaged(argv[1], d);
    damaged_lzo(d);
    seekable_zstd(d);
    created_zstd_in_place(d);
    long_blocks_cached(d);
    vt_rm_tree(d);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("image_api: all checks passed\n");
    return 0;
}
