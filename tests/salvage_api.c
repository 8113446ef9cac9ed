/*
 * Salvage mode through the public API (vma_reader_set_salvage): archives
 * written from generated images are cut, bit-flipped, padded with garbage
 * and planted with forged extent headers; each salvage read must hand out
 * exactly the clusters of the extents that survived, each equal to the
 * image's, and vma_reader_cluster_run() must report the rest as lost. The
 * expected sets come from the archive's own extent table, parsed here with
 * the internal format code (independent of the reader).
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <zstd.h>

#include "rmtree.h"
#include "vmatest.h"
#include "vma.h"

#define NDEV 3 /* dev_ids 1, 2 (disks), 3 (vmstate) */
#define MAX_EXTENTS 64

static const unsigned char uuid[16] = {0x5a, 0x1a, 0x9e, 1, 2, 3, 4, 5,
                                       6, 7, 8, 9, 10, 11, 12, 13};
/* scsi0 ends inside a block, at a sector (the writer records whole sectors) */
static const uint64_t dev_size[NDEV + 1] = {0, 150 * 65536ull + 5120, 40 * 65536ull,
                                            20 * 65536ull};
static const char *const dev_name[NDEV + 1] = {NULL, "scsi0", "efi", "vmstate"};
static const char config_text[] = "salvage-config-data: memory 512\n";

static unsigned char *image[NDEV + 1];
static char tmpdir[] = "/tmp/salvage_api.XXXXXX";

/* The archive's layout, from its bytes. */
struct layout {
    size_t header_size;
    unsigned n;
    size_t off[MAX_EXTENTS], len[MAX_EXTENTS];
    struct vmai_extent e[MAX_EXTENTS];
};

static uint64_t clusters_of(unsigned d) { return (dev_size[d] + 65535) / 65536; }

static uint32_t rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Seeded images: some clusters all zero, some zero blocks, the rest noise. */
static void make_images(void)
{
    uint32_t seed = 0x12345678;
    for (unsigned d = 1; d <= NDEV; d++) {
        size_t len = clusters_of(d) * 65536;
        image[d] = calloc(1, len);
        assert_non_null(image[d]);
        for (uint64_t c = 0; c < clusters_of(d); c++) {
            if (c % 7 == 3)
                continue;
            for (unsigned b = 0; b < 16; b++) {
                if ((c * 16 + b) % 5 == 0)
                    continue;
                unsigned char *p = image[d] + c * 65536 + b * 4096;
                for (unsigned i = 0; i < 4096; i += 4) {
                    uint32_t v = rnd(&seed);
                    memcpy(p + i, &v, 4);
                }
            }
        }
        /* Bytes past the device end are stored as zeros. */
        memset(image[d] + dev_size[d], 0, len - dev_size[d]);
    }
}

static char *path_of(const char *name)
{
    return vt_path_in(tmpdir, name);
}

static void write_archive(const char *path, const char *compression)
{
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    assert_int_equal(vma_writer_set_uuid(w, uuid), VMA_OK);
    assert_int_equal(vma_writer_set_ctime(w, 1700000000), VMA_OK);
    if (compression != NULL)
        assert_int_equal(vma_writer_set_compression(w, compression), VMA_OK);
    assert_int_equal(vma_writer_open_path(w, path), VMA_OK);
    assert_int_equal(vma_writer_add_config(w, "qemu-server.conf", config_text,
                                           sizeof(config_text) - 1), VMA_OK);
    for (unsigned d = 1; d <= NDEV; d++)
        assert_int_equal(vma_writer_add_device(w, dev_name[d], dev_size[d]), (int)d);
    for (uint64_t c = 0; c < clusters_of(1); c++)
        for (unsigned d = 1; d <= NDEV; d++)
            if (c < clusters_of(d))
                assert_int_equal(vma_writer_write_cluster(w, d, c, image[d] + c * 65536),
                                 VMA_OK);
    for (unsigned d = 1; d <= NDEV; d++)
        assert_int_equal(vma_writer_close_device(w, d), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    vma_writer_free(w);
}

static void read_file(const char *path, struct vt_buf *b)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    b->len = 0;
    unsigned char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        vt_append(b, chunk, n);
    fclose(f);
}

static void write_file(const char *path, const unsigned char *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void parse_layout(const struct vt_buf *a, struct layout *l)
{
    char err[512];
    uint32_t hsize;
    assert_int_equal(vmai_header_prefix(a->p, a->len, &hsize, err, sizeof(err)), VMA_OK);
    l->header_size = hsize;
    l->n = 0;
    for (size_t off = hsize; off < a->len; l->n++) {
        assert_true(l->n < MAX_EXTENTS);
        assert_int_equal(vmai_extent_parse(a->p + off, uuid, &l->e[l->n], err, sizeof(err)),
                         VMA_OK);
        l->off[l->n] = off;
        l->len[l->n] = 512 + (size_t)l->e[l->n].block_count * 4096;
        off += l->len[l->n];
    }
    assert_true(l->n >= 4); /* the scenarios need several extents */
}

/* What one salvage read gave. */
struct result {
    unsigned char *present[NDEV + 1];
    unsigned char *got[NDEV + 1]; /* the clusters handed out, at their place */
    unsigned mismatched;   /* clusters whose data differs from the image */
    unsigned events[8];
    const unsigned char *flip_at; /* data-flip test: expected different byte */
};

static int on_cluster(void *opaque, unsigned dev_id, uint32_t c, uint16_t mask,
                      const unsigned char *data)
{
    struct result *res = opaque;
    assert_true(dev_id >= 1 && dev_id <= NDEV);
    assert_true(c < clusters_of(dev_id));
    assert_int_equal(res->present[dev_id][c], 0);
    res->present[dev_id][c] = 1;
    unsigned char got[65536];
    for (unsigned b = 0; b < 16; b++) {
        if (mask & (1u << b)) {
            memcpy(got + b * 4096, data, 4096);
            data += 4096;
        } else {
            memset(got + b * 4096, 0, 4096);
        }
    }
    if (memcmp(got, image[dev_id] + (uint64_t)c * 65536, 65536) != 0)
        res->mismatched++;
    memcpy(res->got[dev_id] + (uint64_t)c * 65536, got, 65536);
    return 0;
}

static void on_event(void *opaque, int event, uint64_t offset, uint64_t length, const char *msg)
{
    struct result *res = opaque;
    (void)offset;
    (void)length;
    assert_true(event >= 1 && event <= 6);
    assert_string_not_equal(vma_salvage_event_name(event), "unknown");
    assert_true(msg[0] != '\0');
    res->events[event]++;
}

static void on_event_image(void *opaque, int event, uint64_t offset, uint64_t length,
                           const char *msg)
{
    unsigned *events = opaque;
    (void)offset;
    (void)length;
    (void)msg;
    events[event]++;
}

/* The same archive opened as an image in salvage mode serves what the
 * salvage read handed out: present clusters read back the same bytes,
 * lost ones fail with VMA_ERR_CORRUPT, and skipping holes never skips a
 * lost cluster. */
static void check_image(const char *path, unsigned flags, const struct result *res)
{
    unsigned events[8] = {0};
    vma_image *img = vma_image_new();
    assert_non_null(img);
    assert_int_equal(vma_image_set_salvage(img, flags, on_event_image, events), VMA_OK);
    assert_int_equal(vma_image_open(img, path, 0), VMA_OK);
    assert_int_equal(vma_image_index_state(img), VMA_IMAGE_INDEX_BUILT);
    assert_int_equal(memcmp(events, res->events, sizeof(events)), 0);
    unsigned char *buf = malloc(65536);
    assert_non_null(buf);
    for (unsigned d = 1; d <= NDEV; d++) {
        uint64_t size = vma_image_device_size(img, d), n_lost = 0;
        if (d == NDEV) { /* vmstate: up to its first lost cluster */
            uint64_t c = 0;
            while (c < clusters_of(d) && res->present[d][c])
                c++;
            assert_int_equal(size, c * 65536 < dev_size[d] ? c * 65536 : dev_size[d]);
        } else {
            assert_int_equal(size, dev_size[d]);
        }
        for (uint64_t c = 0; c * 65536 < size; c++) {
            size_t len = size - c * 65536 < 65536 ? (size_t)(size - c * 65536) : 65536;
            int64_t n = vma_image_pread(img, d, buf, len, c * 65536);
            uint64_t off, dlen;
            if (res->present[d][c]) {
                assert_int_equal(n, (int64_t)len);
                assert_memory_equal(buf, res->got[d] + c * 65536, len);
                continue;
            }
            n_lost++;
            assert_int_equal(n, VMA_ERR_CORRUPT);
            assert_non_null(strstr(vma_image_error(img), "is lost"));
            assert_int_equal(vma_image_next_data(img, d, c * 65536, &off, &dlen), VMA_OK);
            assert_int_equal(off, c * 65536);
            assert_true(dlen > 0);
        }
        /* One read of the whole device fails exactly when something is lost. */
        unsigned char *all = malloc(size + 1);
        assert_non_null(all);
        int64_t n = vma_image_pread(img, d, all, size, 0);
        assert_int_equal(n, n_lost > 0 ? VMA_ERR_CORRUPT : (int64_t)size);
        free(all);
    }
    free(buf);
    vma_image_free(img);
}

/* Salvage-read path; returns the open status (the read must succeed). */
static int salvage(const char *path, unsigned flags, struct result *res)
{
    memset(res, 0, sizeof(*res));
    for (unsigned d = 1; d <= NDEV; d++) {
        res->present[d] = calloc(1, clusters_of(d));
        res->got[d] = calloc(clusters_of(d), 65536);
    }
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_set_salvage(r, flags, on_event, res), VMA_OK);
    int rc = vma_reader_open_path(r, path);
    if (rc == VMA_OK) {
        assert_int_equal(vma_reader_read(r, on_cluster, res), VMA_OK);
        /* cluster_run agrees with what was handed out, run by run. */
        for (unsigned d = 1; d <= NDEV; d++) {
            uint64_t c = 0, n;
            int present;
            while ((n = vma_reader_cluster_run(r, d, c, &present)) != 0) {
                for (uint64_t i = c; i < c + n; i++)
                    assert_int_equal(res->present[d][i], present);
                c += n;
            }
            assert_int_equal(c, clusters_of(d));
        }
    }
    vma_reader_free(r);
    if (rc == VMA_OK)
        check_image(path, flags, res);
    return rc;
}

static void result_free(struct result *res)
{
    for (unsigned d = 1; d <= NDEV; d++) {
        free(res->present[d]);
        free(res->got[d]);
    }
}

/* Expected: clusters of the extents not in `lost` (a bitmask of extent
 * indexes); the vmstate stream stops at its first missing cluster. */
static void expect_lost(const struct layout *l, uint64_t lost, const struct result *res)
{
    unsigned char *want[NDEV + 1];
    for (unsigned d = 1; d <= NDEV; d++)
        want[d] = calloc(1, clusters_of(d));
    for (unsigned k = 0; k < l->n; k++) {
        if (lost & (1ull << k))
            continue;
        for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++)
            if (l->e[k].info[i].dev_id != 0)
                want[l->e[k].info[i].dev_id][l->e[k].info[i].cluster_num] = 1;
    }
    bool gap = false;
    for (uint64_t c = 0; c < clusters_of(3); c++) {
        gap = gap || !want[3][c];
        if (gap)
            want[3][c] = 0;
    }
    for (unsigned d = 1; d <= NDEV; d++) {
        for (uint64_t c = 0; c < clusters_of(d); c++)
            if (want[d][c] != res->present[d][c])
                fail_msg("device %u cluster %llu: present %d, expected %d (lost mask %llx)", d,
                         (unsigned long long)c, res->present[d][c], want[d][c],
                         (unsigned long long)lost);
        free(want[d]);
    }
}

/* Extents k..n-1 as a mask. */
static uint64_t from(unsigned k, unsigned n)
{
    return ((n >= 64 ? 0 : (1ull << n)) - 1) & ~((1ull << k) - 1);
}

static struct vt_buf plain;
static struct layout lay;

static int setup(void **state)
{
    (void)state;
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    make_images();
    write_archive(path_of("plain.vma"), NULL);
    read_file(path_of("plain.vma"), &plain);
    parse_layout(&plain, &lay);
    return 0;
}

/* Salvage p without --force-header: the extents in `lost` are lost, no
 * cluster differs from the original, and `event` was reported `count`
 * times. */
static void salvage_expect(const char *p, uint64_t lost, int event, unsigned count)
{
    struct result res;
    assert_int_equal(salvage(p, 0, &res), VMA_OK);
    expect_lost(&lay, lost, &res);
    assert_int_equal(res.mismatched, 0);
    assert_int_equal(res.events[event], count);
    result_free(&res);
}

static int teardown(void **state)
{
    (void)state;
    vt_rm_tree(tmpdir);
    for (unsigned d = 1; d <= NDEV; d++)
        free(image[d]);
    vt_free(&plain);
    return 0;
}

static void test_intact(void **state)
{
    (void)state;
    struct result res;
    assert_int_equal(salvage(path_of("plain.vma"), 0, &res), VMA_OK);
    expect_lost(&lay, 0, &res);
    assert_int_equal(res.mismatched, 0);
    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(res.events[i], 0);
    result_free(&res);
}

/* Cut at every extent boundary and at points inside every extent: every
 * extent that arrived whole is kept, the rest is lost. */
static void test_truncated(void **state)
{
    (void)state;
    const char *p = path_of("cut.vma");
    for (unsigned k = 0; k <= lay.n; k++) {
        size_t start = k < lay.n ? lay.off[k] : plain.len;
        size_t cuts[] = {start, start + 1, start + 511, start + 512, start + 512 + 4096,
                         k < lay.n ? start + lay.len[k] - 1 : start};
        for (unsigned i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
            if (cuts[i] > plain.len)
                continue;
            write_file(p, plain.p, cuts[i]);
            salvage_expect(p, from(k, lay.n), VMA_SALVAGE_TRUNCATED, cuts[i] > start ? 1 : 0);
        }
    }
    /* Inside the archive header: nothing to salvage, the open fails. */
    write_file(p, plain.p, lay.header_size - 100);
    struct result res;
    assert_int_equal(salvage(p, 0, &res), VMA_ERR_TRUNCATED);
    result_free(&res);
}

/* A flipped bit in an extent header (magic, MD5, uuid, a blockinfo): that
 * extent alone is lost. */
static void test_header_flips(void **state)
{
    (void)state;
    const char *p = path_of("flip.vma");
    size_t where[] = {0, 2, 6, 12, 30, VMA_EOFF_BLOCKINFO + 3, VMA_EOFF_BLOCKINFO + 8 * 5 + 7,
                      511};
    for (unsigned k = 0; k < lay.n; k++)
        for (unsigned i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
            struct vt_buf a = {0};
            vt_copy(&a, plain.p, plain.len);
            a.p[lay.off[k] + where[i]] ^= 0x10;
            write_file(p, a.p, a.len);
            vt_free(&a);
            salvage_expect(p, 1ull << k, VMA_SALVAGE_BAD_EXTENT, 1);
        }
}

/* Data carries no checksum: a flipped data bit is handed out as it is. */
static void test_data_flip(void **state)
{
    (void)state;
    const char *p = path_of("dflip.vma");
    for (unsigned k = 0; k < lay.n; k++) {
        struct vt_buf a = {0};
        vt_copy(&a, plain.p, plain.len);
        a.p[lay.off[k] + 512 + 4096 + 77] ^= 1;
        write_file(p, a.p, a.len);
        vt_free(&a);
        struct result res;
        assert_int_equal(salvage(p, 0, &res), VMA_OK);
        expect_lost(&lay, 0, &res);
        assert_int_equal(res.mismatched, 1);
        result_free(&res);
    }
}

/* Garbage between two extents, with extent magics in it: nothing lost. */
static void test_garbage(void **state)
{
    (void)state;
    const char *p = path_of("garbage.vma");
    uint32_t seed = 99;
    for (unsigned k = 1; k < lay.n; k++) {
        struct vt_buf a = {0};
        vt_append(&a, plain.p, lay.off[k]);
        size_t glen = 70000 + k * 4099;
        for (size_t i = 0; i < glen; i++) {
            unsigned char c = (unsigned char)rnd(&seed);
            vt_append(&a, &c, 1);
        }
        /* magics at odd places, one a whole copy of an extent header
         * with a broken MD5, one across the window's refill points */
        memcpy(a.p + lay.off[k] + 100, "VMAE", 4);
        memcpy(a.p + lay.off[k] + 5000, plain.p + lay.off[0], 512);
        a.p[lay.off[k] + 5000 + 200] ^= 1;
        memcpy(a.p + lay.off[k] + glen - 3, "VMA", 3);
        vt_append(&a, plain.p + lay.off[k], plain.len - lay.off[k]);
        write_file(p, a.p, a.len);
        vt_free(&a);
        salvage_expect(p, 0, VMA_SALVAGE_BAD_EXTENT, 1);
    }
    /* More garbage than the scan window (1 MiB), then the rest. */
    struct vt_buf a = {0};
    vt_append(&a, plain.p, lay.off[2]);
    for (size_t i = 0; i < 3u << 20; i++) {
        unsigned char c = (unsigned char)rnd(&seed);
        vt_append(&a, &c, 1);
    }
    vt_append(&a, plain.p + lay.off[2], plain.len - lay.off[2]);
    write_file(p, a.p, a.len);
    vt_free(&a);
    struct result res;
    assert_int_equal(salvage(p, 0, &res), VMA_OK);
    expect_lost(&lay, 0, &res);
    result_free(&res);
}

/* Extent headers planted in the data of a damaged extent, signed with the
 * archive's uuid and a valid MD5 but breaking a rule (unknown device, a
 * cluster past the end, a cluster read before, a vmstate cluster read
 * before): the scan passes over each, so only the damaged extent is lost. */
static void test_forged(void **state)
{
    (void)state;
    const char *p = path_of("forged.vma");
    struct { unsigned dev; uint32_t cluster; } forge[] = {
        {200, 0}, {1, 100000}, {1, 0}, {3, 0}, {2, 39},
    };
    unsigned k = 2;
    for (unsigned f = 0; f < sizeof(forge) / sizeof(forge[0]); f++) {
        struct vmai_extent e;
        memset(&e, 0, sizeof(e));
        e.info[0].dev_id = (uint8_t)forge[f].dev;
        e.info[0].cluster_num = forge[f].cluster;
        e.info[0].mask = 0;
        /* {2, 39} twice in one extent */
        if (forge[f].dev == 2) {
            e.info[1] = e.info[0];
        }
        unsigned char hdr[512];
        vmai_extent_encode(hdr, uuid, &e);
        char err[256];
        struct vmai_extent check;
        assert_int_equal(vmai_extent_parse(hdr, uuid, &check, err, sizeof(err)), VMA_OK);

        struct vt_buf a = {0};
        vt_copy(&a, plain.p, plain.len);
        memcpy(a.p + lay.off[k] + 512 + 8192, hdr, 512);
        memcpy(a.p + lay.off[k] + 512 + 3 * 4096 + 100, hdr, 512);
        /* Undamaged, the forged headers are only data (delivered as it is). */
        write_file(p, a.p, a.len);
        struct result res;
        assert_int_equal(salvage(p, 0, &res), VMA_OK);
        expect_lost(&lay, 0, &res);
        assert_true(res.mismatched >= 1);
        result_free(&res);
        /* With the real header damaged, the scan meets them and goes on. */
        a.p[lay.off[k] + 30] ^= 0x80;
        write_file(p, a.p, a.len);
        vt_free(&a);
        assert_int_equal(salvage(p, 0, &res), VMA_OK);
        expect_lost(&lay, 1ull << k, &res);
        assert_int_equal(res.mismatched, 0);
        result_free(&res);
    }
}

/* A whole extent repeated: its copy breaks the no-duplicate rule. */
static void test_duplicate_extent(void **state)
{
    (void)state;
    const char *p = path_of("dup.vma");
    struct vt_buf a = {0};
    vt_append(&a, plain.p, lay.off[2]);
    vt_append(&a, plain.p + lay.off[1], lay.len[1]);
    vt_append(&a, plain.p + lay.off[2], plain.len - lay.off[2]);
    write_file(p, a.p, a.len);
    vt_free(&a);
    salvage_expect(p, 0, VMA_SALVAGE_BAD_RULES, 1);
}

/* A header MD5 mismatch: refused unless forced; a header whose structure
 * is broken is refused even when forced. */
static void test_header_md5(void **state)
{
    (void)state;
    const char *p = path_of("hdr.vma");
    struct vt_buf a = {0};
    vt_copy(&a, plain.p, plain.len);
    unsigned char *at = memmem(a.p, lay.header_size, "memory 512", 10);
    assert_non_null(at);
    at[7] = '9';
    write_file(p, a.p, a.len);
    struct result res;
    assert_int_equal(salvage(p, 0, &res), VMA_ERR_HEADER_MD5);
    result_free(&res);
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_set_salvage(r, 0, NULL, NULL), VMA_OK);
    assert_int_equal(vma_reader_open_path(r, p), VMA_ERR_HEADER_MD5);
    assert_non_null(strstr(vma_reader_error(r), "MD5"));
    assert_non_null(strstr(vma_reader_error(r), "force"));
    vma_reader_free(r);
    /* Without salvage mode the message is the usual one. */
    r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, p), VMA_ERR_CORRUPT);
    assert_null(strstr(vma_reader_error(r), "force"));
    vma_reader_free(r);

    assert_int_equal(salvage(p, VMA_SALVAGE_FORCE_HEADER, &res), VMA_OK);
    assert_int_equal(res.events[VMA_SALVAGE_HEADER_MD5], 1);
    expect_lost(&lay, 0, &res);
    result_free(&res);

    /* A device name pointer out of the blob table: not forced. */
    vt_copy(&a, plain.p, plain.len);
    a.p[VMA_HOFF_DEV_INFO + VMA_DEV_INFO_SIZE + 0] ^= 0x7f;
    write_file(p, a.p, a.len);
    vt_free(&a);
    assert_int_equal(salvage(p, VMA_SALVAGE_FORCE_HEADER, &res), VMA_ERR_CORRUPT);
    result_free(&res);
}

static void test_api_rules(void **state)
{
    (void)state;
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_set_salvage(r, 0x80, NULL, NULL), VMA_ERR_INVALID);
    assert_int_equal(vma_reader_set_salvage(r, VMA_SALVAGE_FORCE_HEADER, NULL, NULL), VMA_OK);
    vma_reader_free(r);
    r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, path_of("plain.vma")), VMA_OK);
    /* Refused: the reader stays usable (and not in salvage mode). */
    assert_int_equal(vma_reader_set_salvage(r, 0, NULL, NULL), VMA_ERR_INVALID);
    /* Before the read nothing is present; unknown devices have no runs. */
    int present = 5;
    assert_int_equal(vma_reader_cluster_run(r, 1, 0, &present), clusters_of(1));
    assert_int_equal(present, 0);
    assert_int_equal(vma_reader_cluster_run(r, 9, 0, &present), 0);
    assert_int_equal(vma_reader_cluster_run(r, 1, clusters_of(1), &present), 0);
    /* A normal read fills the same map. */
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_OK);
    assert_int_equal(vma_reader_cluster_run(r, 1, 0, &present), clusters_of(1));
    assert_int_equal(present, 1);
    assert_int_equal(vma_reader_cluster_run(r, 3, 5, &present), clusters_of(3) - 5);
    assert_int_equal(present, 1);
    vma_reader_free(r);
    /* The image: refused after the open and with unknown flags; a salvage
     * image of an intact plain archive leaves no index file behind. */
    vma_image *img = vma_image_new();
    assert_int_equal(vma_image_set_salvage(img, 0x80, NULL, NULL), VMA_ERR_INVALID);
    assert_int_equal(vma_image_open(img, path_of("plain.vma"), 0), VMA_OK);
    assert_int_equal(vma_image_set_salvage(img, 0, NULL, NULL), VMA_ERR_INVALID);
    vma_image_free(img);
    char idx[4096];
    snprintf(idx, sizeof(idx), "%s", path_of("plain.vma.vmaidx"));
    assert_int_equal(unlink(idx), 0); /* the normal open saved one */
    img = vma_image_new();
    assert_int_equal(vma_image_set_salvage(img, 0, NULL, NULL), VMA_OK);
    assert_int_equal(vma_image_open(img, path_of("plain.vma"), 0), VMA_OK);
    assert_int_equal(vma_image_index_state(img), VMA_IMAGE_INDEX_BUILT);
    assert_int_equal(access(idx, F_OK), -1);
    vma_image_free(img);
    assert_string_equal(vma_salvage_event_name(VMA_SALVAGE_BAD_EXTENT), "bad-extent");
    assert_string_equal(vma_salvage_event_name(0), "unknown");
    assert_string_equal(vma_salvage_event_name(99), "unknown");
}

/* The lost clusters must be those of a run of extents k..m (and nothing
 * else). Returns k; *last gets m. */
static unsigned check_lost_run(const struct result *res, unsigned *last)
{
    bool none = true; /* nothing lost: k = n */
    for (unsigned d = 1; d <= 2; d++)
        for (uint64_t c = 0; c < clusters_of(d); c++)
            none = none && res->present[d][c];
    if (none) {
        *last = lay.n;
        return lay.n;
    }
    for (unsigned k = 0; k < lay.n; k++)
        for (unsigned m = k; m < lay.n; m++) {
            uint64_t lost = from(k, lay.n) & ~from(m + 1, lay.n);
            bool ok = true;
            for (unsigned j = 0; j < lay.n && ok; j++)
                for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
                    const struct vmai_blockinfo *bi = &lay.e[j].info[i];
                    bool want = !(lost & (1ull << j));
                    if (bi->dev_id != 0 && bi->dev_id != 3 &&
                        res->present[bi->dev_id][bi->cluster_num] != want) {
                        ok = false;
                        break;
                    }
                }
            if (ok) {
                expect_lost(&lay, lost, res);
                *last = m;
                return k;
            }
        }
    fail_msg("the clusters lost are not those of a run of extents");
    return 0;
}

/* Compressed streams cut short or broken in the middle: every extent
 * before the damage is kept (a codec error ends the stream). */
static void test_compressed(void **state)
{
    (void)state;
    const char *codecs[] = {"zstd", "gzip", "lzo"};
    for (unsigned c = 0; c < 3; c++) {
        const char *p = path_of("comp.vma");
        unlink(p);
        write_archive(p, codecs[c]);
        struct vt_buf a = {0};
        read_file(p, &a);
        struct result res;
        assert_int_equal(salvage(p, 0, &res), VMA_OK);
        expect_lost(&lay, 0, &res);
        result_free(&res);
        const char *q = path_of("comp-cut.vma");
        /* cut at half: some extents before, none after */
        write_file(q, a.p, a.len / 2);
        assert_int_equal(salvage(q, 0, &res), VMA_OK);
        unsigned m, k = check_lost_run(&res, &m);
        assert_true(k > 0 && m == lay.n - 1);
        assert_int_equal(res.mismatched, 0);
        assert_true(res.events[VMA_SALVAGE_STREAM] + res.events[VMA_SALVAGE_TRUNCATED] >= 1);
        result_free(&res);
        /* bytes zeroed in the middle of the stream */
        memset(a.p + a.len / 2, 0, 64);
        write_file(q, a.p, a.len);
        assert_int_equal(salvage(q, 0, &res), VMA_OK);
        k = check_lost_run(&res, &m);
        /* lzop skips the bad block only: the extents after it are kept. */
        if (strcmp(codecs[c], "lzo") == 0)
            assert_true(k < lay.n && m - k <= 1 && m < lay.n - 1);
        /* The codec noticed and said so. lzop checks each block before it
         * is used: nothing damaged is handed out. zstd and gzip check a
         * frame or member at its end, after its bytes were handed out:
         * the damaged cluster may be among them (vma.h says so). */
        assert_true(res.events[VMA_SALVAGE_STREAM] >= 1);
        if (strcmp(codecs[c], "lzo") == 0)
            assert_int_equal(res.mismatched, 0);
        result_free(&res);
        vt_free(&a);
    }
}

/* A zstd archive of many frames (as seekable zstd writes it): a frame
 * whose header is broken is skipped, and exactly the extents that had
 * bytes in it are lost. */
static void test_zstd_frames(void **state)
{
    (void)state;
    const size_t frame = 300000; /* decompressed bytes per frame */
    size_t nframes = (plain.len + frame - 1) / frame;
    struct vt_buf z = {0};
    size_t *at = calloc(nframes, sizeof(*at));
    assert_non_null(at);
    for (size_t f = 0; f < nframes; f++) {
        size_t len = plain.len - f * frame < frame ? plain.len - f * frame : frame;
        size_t bound = ZSTD_compressBound(len);
        at[f] = z.len;
        vt_reserve(&z, bound);
        size_t n = ZSTD_compress(z.p + z.len, bound, plain.p + f * frame, len, 3);
        assert_false(ZSTD_isError(n));
        z.len += n;
    }
    const char *p = path_of("frames.vma.zst");
    write_file(p, z.p, z.len);
    struct result res;
    assert_int_equal(salvage(p, 0, &res), VMA_OK);
    expect_lost(&lay, 0, &res);
    result_free(&res);
    assert_true(nframes > 4);
    for (size_t f = 1; f + 1 < nframes; f += 2) {
        struct vt_buf a = {0};
        vt_copy(&a, z.p, z.len);
        a.p[at[f] + 4] = 0xff; /* frame header descriptor: reserved bit set */
        write_file(p, a.p, a.len);
        vt_free(&a);
        uint64_t lost = 0;
        for (unsigned k = 0; k < lay.n; k++)
            if (lay.off[k] < (f + 1) * frame && lay.off[k] + lay.len[k] > f * frame)
                lost |= 1ull << k;
        assert_int_equal(salvage(p, 0, &res), VMA_OK);
        expect_lost(&lay, lost, &res);
        assert_int_equal(res.mismatched, 0);
        assert_int_equal(res.events[VMA_SALVAGE_STREAM], 1);
        result_free(&res);
    }
    free(at);
    vt_free(&z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intact),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_flips),
        cmocka_unit_test(test_data_flip),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_forged),
        cmocka_unit_test(test_duplicate_extent),
        cmocka_unit_test(test_header_md5),
        cmocka_unit_test(test_api_rules),
        cmocka_unit_test(test_compressed),
        cmocka_unit_test(test_zstd_frames),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
