/*
 * Unit tests of the on-disk format code (lib/format.h): integer helpers,
 * blockinfo, popcount, zero detection, cluster counts, the name rule,
 * extent encode/parse, MD5, header parsing of every golden archive, and
 * status names. Memory buffers only, except reading the golden files.
 *
 * Usage: unit_format <golden-dir>
 * SPDX-License-Identifier: MIT
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "format.h"
#include "vma.h"
#include "vmatest.h"

static const char *golden_dir = "tests/golden";

/* splitmix64: deterministic test data */
static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- */

static void test_be_le_layout(void **state)
{
    (void)state;
    unsigned char b[8];

    vmai_put_be16(b, 0x0102);
    assert_int_equal(b[0], 0x01);
    assert_int_equal(b[1], 0x02);
    vmai_put_le16(b, 0x0102);
    assert_int_equal(b[0], 0x02);
    assert_int_equal(b[1], 0x01);
    vmai_put_be32(b, 0x01020304u);
    assert_memory_equal(b, "\x01\x02\x03\x04", 4);
    vmai_put_be64(b, 0x0102030405060708ull);
    assert_memory_equal(b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);

    static const unsigned char ff[8] = {0xff, 0xfe, 0xfd, 0xfc, 0x80, 0x00, 0x7f, 0x01};
    assert_int_equal(vmai_get_be16(ff), 0xfffe);
    assert_int_equal(vmai_get_le16(ff), 0xfeff);
    assert_int_equal(vmai_get_be32(ff), 0xfffefdfcu);
    assert_true(vmai_get_be64(ff) == 0xfffefdfc80007f01ull);
}

static void test_be_le_roundtrip(void **state)
{
    (void)state;
    unsigned char b[8];
    static const uint64_t fixed[] = {0, 1, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff,
                                     0x80000000u, 0xffffffffu, 0x100000000ull,
                                     0x7fffffffffffffffull, 0x8000000000000000ull,
                                     0xffffffffffffffffull};
    for (unsigned i = 0; i < sizeof(fixed) / sizeof(fixed[0]) + 10000; i++) {
        uint64_t v = i < sizeof(fixed) / sizeof(fixed[0]) ? fixed[i] : rnd();
        vmai_put_be64(b, v);
        assert_true(vmai_get_be64(b) == v);
        vmai_put_be32(b, (uint32_t)v);
        assert_int_equal(vmai_get_be32(b), (uint32_t)v);
        vmai_put_be16(b, (uint16_t)v);
        assert_int_equal(vmai_get_be16(b), (uint16_t)v);
        vmai_put_le16(b, (uint16_t)v);
        assert_int_equal(vmai_get_le16(b), (uint16_t)v);
        /* le16 and be16 are byte swaps of each other */
        assert_int_equal(vmai_get_be16(b), (uint16_t)((uint16_t)v << 8 | (uint16_t)v >> 8));
    }
}

/* ---------------------------------------------------------------- */

static uint64_t manual_blockinfo(uint16_t mask, uint8_t reserved, uint8_t dev, uint32_t cluster)
{
    return (uint64_t)mask << 48 | (uint64_t)reserved << 40 | (uint64_t)dev << 32 | cluster;
}

static void test_blockinfo_roundtrip(void **state)
{
    (void)state;
    static const struct vmai_blockinfo cases[] = {
        {0, 0, 0, 0},
        {0xffff, 0, 1, 0},
        {0x0001, 0, 254, 0xffffffffu},
        {0x8000, 0, 255, 0x12345678u},
        {0xa5a5, 0xff, 0x7f, 0x80000000u},
        {0, 0x01, 0, 0},
        {0, 0x80, 0, 0},
        {0xffff, 0xff, 0xff, 0xffffffffu},
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct vmai_blockinfo *c = &cases[i];
        uint64_t v = vmai_blockinfo_encode(c);
        assert_true(v == manual_blockinfo(c->mask, c->reserved, c->dev_id, c->cluster_num));
        struct vmai_blockinfo d;
        memset(&d, 0x5a, sizeof(d));
        vmai_blockinfo_decode(v, &d);
        assert_int_equal(d.mask, c->mask);
        assert_int_equal(d.reserved, c->reserved);
        assert_int_equal(d.dev_id, c->dev_id);
        assert_int_equal(d.cluster_num, c->cluster_num);
    }
    /* every 64-bit value decodes and re-encodes to itself (reserved bits too) */
    for (unsigned i = 0; i < 100000; i++) {
        uint64_t v = rnd();
        struct vmai_blockinfo d;
        vmai_blockinfo_decode(v, &d);
        assert_true(vmai_blockinfo_encode(&d) == v);
        assert_int_equal(d.mask, (uint16_t)(v >> 48));
        assert_int_equal(d.reserved, (uint8_t)(v >> 40));
        assert_int_equal(d.dev_id, (uint8_t)(v >> 32));
        assert_int_equal(d.cluster_num, (uint32_t)v);
    }
}

static void test_popcount16(void **state)
{
    (void)state;
    for (unsigned m = 0; m <= 0xffff; m++) {
        unsigned n = 0;
        for (unsigned b = 0; b < 16; b++)
            n += (m >> b) & 1;
        assert_int_equal(vmai_popcount16((uint16_t)m), n);
    }
}

/* ---------------------------------------------------------------- */

static void test_is_zero_sizes(void **state)
{
    (void)state;
    enum { MAX = 2 * VMA_CLUSTER_SIZE + 64 };
    unsigned char *buf = calloc(1, MAX + 64);
    assert_non_null(buf);
    assert_true(vmai_is_zero(buf, 0));
    /* every length up to 8200 and a few large ones, at several alignments */
    static const size_t big[] = {VMA_BLOCK_SIZE, VMA_CLUSTER_SIZE - 1, VMA_CLUSTER_SIZE,
                                 VMA_CLUSTER_SIZE + 1, 2 * VMA_CLUSTER_SIZE};
    for (unsigned align = 0; align < 16; align += 3) {
        unsigned char *p = buf + align;
        for (size_t len = 0; len <= 8200 + (sizeof(big) / sizeof(big[0])); len++) {
            size_t l = len <= 8200 ? len : big[len - 8201];
            assert_true(vmai_is_zero(p, l));
            if (l == 0)
                continue;
            /* last byte nonzero, first byte nonzero */
            p[l - 1] = 0x01;
            assert_false(vmai_is_zero(p, l));
            p[l - 1] = 0;
            p[0] = 0x80;
            assert_false(vmai_is_zero(p, l));
            p[0] = 0;
            /* a nonzero byte just past the end is not looked at */
            p[l] = 0xff;
            assert_true(vmai_is_zero(p, l));
            p[l] = 0;
        }
    }
    free(buf);
}

static void test_is_zero_every_position(void **state)
{
    (void)state;
    unsigned char *buf = calloc(1, VMA_BLOCK_SIZE + 16);
    assert_non_null(buf);
    for (unsigned align = 0; align < 2; align++) {
        unsigned char *p = buf + align * 7;
        for (unsigned i = 0; i < VMA_BLOCK_SIZE; i++) {
            for (unsigned v = 1; v <= 0x80; v <<= 1) {
                p[i] = (unsigned char)v;
                assert_false(vmai_is_zero(p, VMA_BLOCK_SIZE));
            }
            p[i] = 0xff;
            assert_false(vmai_is_zero(p, VMA_BLOCK_SIZE));
            /* lengths that stop before i do not see it */
            assert_true(vmai_is_zero(p, i));
            p[i] = 0;
        }
        assert_true(vmai_is_zero(p, VMA_BLOCK_SIZE));
    }
    free(buf);
}

static void test_cluster_count(void **state)
{
    (void)state;
    assert_true(vmai_cluster_count(0) == 0);
    assert_true(vmai_cluster_count(1) == 1);
    assert_true(vmai_cluster_count(4096) == 1);
    assert_true(vmai_cluster_count(65535) == 1);
    assert_true(vmai_cluster_count(65536) == 1);
    assert_true(vmai_cluster_count(65537) == 2);
    assert_true(vmai_cluster_count(200704) == 4);
    assert_true(vmai_cluster_count(540672) == 9);
    assert_true(vmai_cluster_count(1050112) == 17);
    assert_true(vmai_cluster_count(8388608) == 128);
    assert_true(vmai_cluster_count(3ull << 30) == 49152);
    assert_true(vmai_cluster_count(VMA_MAX_DEVICE_SIZE) == 0x100000000ull);
    assert_true(vmai_cluster_count(VMA_MAX_DEVICE_SIZE - 1) == 0x100000000ull);
    assert_true(vmai_cluster_count(VMA_MAX_DEVICE_SIZE + 1) == 0x100000001ull);
    assert_true(vmai_cluster_count(UINT64_MAX) == (UINT64_MAX >> 16) + 1);
    for (unsigned i = 0; i < 10000; i++) {
        uint64_t s = rnd() >> (rnd() % 64);
        uint64_t c = vmai_cluster_count(s);
        /* smallest c with c * 65536 >= s */
        assert_true(s / VMA_CLUSTER_SIZE <= c);
        assert_true(c - s / VMA_CLUSTER_SIZE <= 1);
        assert_true(c == s / VMA_CLUSTER_SIZE + (s % VMA_CLUSTER_SIZE != 0));
    }
}

/* ---------------------------------------------------------------- */

static void test_name_is_valid(void **state)
{
    (void)state;
    assert_int_equal(vma_name_is_valid(""), 0);
    assert_int_equal(vma_name_is_valid("/"), 0);
    assert_int_equal(vma_name_is_valid("a/b"), 0);
    assert_int_equal(vma_name_is_valid("/a"), 0);
    assert_int_equal(vma_name_is_valid("a/"), 0);
    assert_int_equal(vma_name_is_valid("../x"), 0);
    assert_int_equal(vma_name_is_valid("."), 0);
    assert_int_equal(vma_name_is_valid(".."), 0);
    assert_int_equal(vma_name_is_valid("..."), 1);
    assert_int_equal(vma_name_is_valid(".a"), 1);
    assert_int_equal(vma_name_is_valid("..a"), 1);
    assert_int_equal(vma_name_is_valid("a.."), 1);
    assert_int_equal(vma_name_is_valid("a"), 1);
    assert_int_equal(vma_name_is_valid("qemu-server.conf"), 1);
    assert_int_equal(vma_name_is_valid("drive-scsi0"), 1);
    assert_int_equal(vma_name_is_valid("vmstate"), 1);
    assert_int_equal(vma_name_is_valid("with space"), 1);
    assert_int_equal(vma_name_is_valid("\xc3\xa9t\xc3\xa9"), 1);
    assert_int_equal(vma_name_is_valid("~!@#$%^&*()[]{}\\|;:'\",<>?= "), 1);
    /* every control character and DEL, alone and inside a name */
    for (int c = 1; c < 0x80; c++) {
        char one[2] = {(char)c, 0};
        char in[6] = {'a', (char)c, 'b', 0};
        int ok = c >= 0x20 && c != 0x7f;
        assert_int_equal(vma_name_is_valid(in), ok && c != '/');
        if (c != '.')
            assert_int_equal(vma_name_is_valid(one), ok && c != '/');
    }

    /* C1 controls as UTF-8 (NEL, CSI) too; other UTF-8 and lone bytes pass */
    assert_int_equal(vma_name_is_valid("a\xc2\x85" "b"), 0);
    assert_int_equal(vma_name_is_valid("\xc2\x9b" "31m"), 0);
    assert_int_equal(vma_name_is_valid("\xc2\x80"), 0);
    assert_int_equal(vma_name_is_valid("\xc2\x9f"), 0);
    assert_int_equal(vma_name_is_valid("\xc2\xa0"), 1);
    assert_int_equal(vma_name_is_valid("\xc2"), 1);
    assert_int_equal(vma_name_is_valid("\x9b"), 1);

    /* how refused names are quoted */
    char q[32];
    assert_string_equal(vmai_escape(q, sizeof(q), "a\nb\r\t\x1b\x7f\\", 64),
                        "a\\nb\\r\\t\\x1b\\x7f\\\\");
    assert_string_equal(vmai_escape(q, sizeof(q), "abcdef", 3), "abc...");
    assert_string_equal(vmai_escape(q, sizeof(q), "\xc2\x9b" "1m\xc2\xa0", 64),
                        "\\xc2\\x9b1m\xc2\xa0");
    assert_string_equal(vmai_escape(q, 8, "abcdefghij", 64), "abcd...");
    assert_string_equal(vmai_escape(q, sizeof(q), NULL, 64), "");
    assert_string_equal(vmai_escape(q, 1, "abc", 64), "");

    char *n = malloc(VMA_MAX_NAME_LEN + 16);
    assert_non_null(n);
    for (size_t len = VMA_MAX_NAME_LEN - 2; len <= VMA_MAX_NAME_LEN + 8; len++) {
        memset(n, 'x', len);
        n[len] = 0;
        assert_int_equal(vma_name_is_valid(n), len <= VMA_MAX_NAME_LEN);
    }
    /* a long name with a slash at its last allowed byte */
    memset(n, 'x', VMA_MAX_NAME_LEN);
    n[VMA_MAX_NAME_LEN - 1] = '/';
    n[VMA_MAX_NAME_LEN] = 0;
    assert_int_equal(vma_name_is_valid(n), 0);
    /* 64 KiB name */
    char *big = malloc(65537);
    assert_non_null(big);
    memset(big, 'y', 65536);
    big[65536] = 0;
    assert_int_equal(vma_name_is_valid(big), 0);
    free(big);
    free(n);
}

/* ---------------------------------------------------------------- */

static const unsigned char uuid_a[16] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
                                         0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00};

static void random_extent(struct vmai_extent *e, unsigned used)
{
    memset(e, 0, sizeof(*e));
    for (unsigned i = 0; i < used; i++) {
        uint64_t r = rnd();
        e->info[i].dev_id = (uint8_t)(1 + r % 254);
        e->info[i].cluster_num = (uint32_t)(r >> 8);
        switch ((r >> 40) % 4) {
        case 0: e->info[i].mask = 0; break;
        case 1: e->info[i].mask = 0xffff; break;
        default: e->info[i].mask = (uint16_t)(r >> 48); break;
        }
    }
}

static void test_extent_roundtrip(void **state)
{
    (void)state;
    unsigned char buf[VMA_EXTENT_HEADER_SIZE];
    char err[256];
    for (unsigned iter = 0; iter < 2000; iter++) {
        unsigned used = iter < 60 ? iter % 60 : (unsigned)(rnd() % 60);
        struct vmai_extent e, d;
        random_extent(&e, used);
        unsigned blocks = 0;
        for (unsigned i = 0; i < used; i++)
            blocks += vmai_popcount16(e.info[i].mask);
        memset(buf, 0xcc, sizeof(buf));
        vmai_extent_encode(buf, uuid_a, &e);
        /* layout */
        assert_memory_equal(buf, "VMAE", 4);
        assert_int_equal(vmai_get_be16(buf + VMA_EOFF_RESERVED), 0);
        assert_int_equal(vmai_get_be16(buf + VMA_EOFF_BLOCK_COUNT), blocks);
        assert_memory_equal(buf + VMA_EOFF_UUID, uuid_a, 16);
        for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++)
            assert_true(vmai_get_be64(buf + VMA_EOFF_BLOCKINFO + 8 * i) ==
                        vmai_blockinfo_encode(&e.info[i]));
        unsigned char md5[16];
        vmai_md5_zeroed(buf, sizeof(buf), VMA_EOFF_MD5, md5);
        assert_memory_equal(md5, buf + VMA_EOFF_MD5, 16);
        /* parse gives it back */
        memset(&d, 0x5a, sizeof(d));
        err[0] = 0;
        assert_int_equal(vmai_extent_parse(buf, uuid_a, &d, err, sizeof(err)), VMA_OK);
        assert_int_equal(d.block_count, blocks);
        for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
            assert_int_equal(d.info[i].dev_id, e.info[i].dev_id);
            assert_int_equal(d.info[i].cluster_num, e.info[i].cluster_num);
            assert_int_equal(d.info[i].mask, e.info[i].mask);
            assert_int_equal(d.info[i].reserved, 0);
        }
    }
}

static void test_extent_parse_rejects(void **state)
{
    (void)state;
    unsigned char good[VMA_EXTENT_HEADER_SIZE], buf[VMA_EXTENT_HEADER_SIZE];
    char err[256];
    struct vmai_extent e, d;
    random_extent(&e, 20);
    e.info[0].mask = 0xffff;
    vmai_extent_encode(good, uuid_a, &e);

    /* any single flipped bit outside the MD5 is caught */
    for (unsigned i = 0; i < VMA_EXTENT_HEADER_SIZE; i += 7) {
        memcpy(buf, good, sizeof(buf));
        buf[i] ^= 0x10;
        err[0] = 0;
        assert_int_equal(vmai_extent_parse(buf, uuid_a, &d, err, sizeof(err)), VMA_ERR_CORRUPT);
        assert_true(err[0] != 0);
    }
    /* another uuid */
    unsigned char uuid_b[16];
    memcpy(uuid_b, uuid_a, 16);
    uuid_b[15] ^= 1;
    assert_int_equal(vmai_extent_parse(good, uuid_b, &d, err, sizeof(err)), VMA_ERR_CORRUPT);
    /* re-signed: reserved field, reserved bits, block count */
    memcpy(buf, good, sizeof(buf));
    vmai_put_be16(buf + VMA_EOFF_RESERVED, 0x8000);
    vt_resign_extent(buf);
    assert_int_equal(vmai_extent_parse(buf, uuid_a, &d, err, sizeof(err)), VMA_ERR_CORRUPT);
    memcpy(buf, good, sizeof(buf));
    buf[VMA_EOFF_BLOCKINFO + 8 * 3 + 2] = 0x01; /* bits 47..40 of entry 3 */
    vt_resign_extent(buf);
    assert_int_equal(vmai_extent_parse(buf, uuid_a, &d, err, sizeof(err)), VMA_ERR_CORRUPT);
    memcpy(buf, good, sizeof(buf));
    vmai_put_be16(buf + VMA_EOFF_BLOCK_COUNT,
                  (uint16_t)(vmai_get_be16(buf + VMA_EOFF_BLOCK_COUNT) - 1));
    vt_resign_extent(buf);
    assert_int_equal(vmai_extent_parse(buf, uuid_a, &d, err, sizeof(err)), VMA_ERR_CORRUPT);
    /* a NULL error buffer is allowed */
    assert_int_equal(vmai_extent_parse(buf, uuid_a, &d, NULL, 0), VMA_ERR_CORRUPT);
}

/* ---------------------------------------------------------------- */

static void test_md5_zeroed(void **state)
{
    (void)state;
    /* RFC 1321 vector: MD5("abc") with the 16 bytes at offset 3 taken as zero
     * equals MD5 of "abc" followed by 16 zero bytes. Here: MD5 of
     * "abc" + 16 zeros computed the same way from another buffer. */
    unsigned char a[3 + 16 + 5], b[3 + 16 + 5], ma[16], mb[16];
    memcpy(a, "abc", 3);
    memset(a + 3, 0xee, 16);
    memcpy(a + 19, "defgh", 5);
    memcpy(b, a, sizeof(b));
    memset(b + 3, 0, 16);
    vmai_md5_zeroed(a, sizeof(a), 3, ma);
    vmai_md5_zeroed(b, sizeof(b), 3, mb);
    assert_memory_equal(ma, mb, 16);
    /* MD5 of 16 zero bytes: 4ae71336e44bf9bf79d2752e234818a5 */
    static const unsigned char md5_16z[16] = {0x4a, 0xe7, 0x13, 0x36, 0xe4, 0x4b, 0xf9, 0xbf,
                                              0x79, 0xd2, 0x75, 0x2e, 0x23, 0x48, 0x18, 0xa5};
    unsigned char z[16], m[16];
    memset(z, 0x77, 16);
    vmai_md5_zeroed(z, 16, 0, m);
    assert_memory_equal(m, md5_16z, 16);
    /* a byte outside the zeroed field changes the digest */
    a[0] ^= 1;
    vmai_md5_zeroed(a, sizeof(a), 3, ma);
    assert_memory_not_equal(ma, mb, 16);
}

/* ---------------------------------------------------------------- */
/* golden headers                                                    */
/* ---------------------------------------------------------------- */

struct list_expect {
    unsigned nconf;
    char conf_name[8][128];
    size_t conf_len[8];
    unsigned ndev;
    unsigned dev_id[8];
    char dev_name[8][128];
    uint64_t dev_size[8];
    char ctime_line[512];
};

/* Parse the X.list file the deployed tool printed. */
static void read_list(const char *path, struct list_expect *x)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    memset(x, 0, sizeof(*x));
    char line[512];
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t len;
        unsigned id;
        unsigned long long size;
        char name[128];
        if (sscanf(line, "CFG: size: %zu name: %127s", &len, name) == 2) {
            assert_true(x->nconf < 8);
            strcpy(x->conf_name[x->nconf], name);
            x->conf_len[x->nconf++] = len;
        } else if (sscanf(line, "DEV: dev_id=%u size: %llu devname: %127s", &id, &size, name) ==
                   3) {
            assert_true(x->ndev < 8);
            x->dev_id[x->ndev] = id;
            strcpy(x->dev_name[x->ndev], name);
            x->dev_size[x->ndev++] = size;
        } else if (strncmp(line, "CTIME: ", 7) == 0) {
            snprintf(x->ctime_line, sizeof(x->ctime_line), "%s", line + 7);
        } else {
            fail_msg("unexpected line in %s: %s", path, line);
        }
    }
    fclose(f);
}

static void check_golden(const char *name)
{
    char path[4096];
    struct vt_buf b = {0};
    snprintf(path, sizeof(path), "%s/%s.vma", golden_dir, name);
    if (vt_read_file(path, &b) != 0)
        fail_msg("cannot read %s", path);
    struct list_expect x;
    snprintf(path, sizeof(path), "%s/%s.list", golden_dir, name);
    read_list(path, &x);

    char err[512] = "";
    uint32_t hs = 0;
    assert_int_equal(vmai_header_prefix(b.p, b.len, &hs, err, sizeof(err)), VMA_OK);
    assert_int_equal(hs, vmai_get_be32(b.p + VMA_HOFF_HEADER_SIZE));
    assert_true(hs > VMA_HEADER_FIXED_SIZE && hs % 512 == 0 && hs <= b.len);
    /* also from exactly the fixed part */
    assert_int_equal(vmai_header_prefix(b.p, VMA_HEADER_FIXED_SIZE, &hs, err, sizeof(err)),
                     VMA_OK);

    /* the stored MD5 is MD5 over header_size bytes with the field zeroed */
    unsigned char md5[16];
    vmai_md5_zeroed(b.p, hs, VMA_HOFF_MD5, md5);
    assert_memory_equal(md5, b.p + VMA_HOFF_MD5, 16);

    struct vmai_header *h = malloc(sizeof(*h));
    assert_non_null(h);
    int rc = vmai_header_parse(b.p, hs, h, err, sizeof(err));
    if (rc != VMA_OK)
        fail_msg("%s: vmai_header_parse: %s (%s)", name, vma_status_name(rc), err);
    assert_memory_equal(h->uuid, b.p + VMA_HOFF_UUID, 16);
    assert_true(h->ctime == (int64_t)vmai_get_be64(b.p + VMA_HOFF_CTIME));
    assert_int_equal(h->header_size, hs);
    assert_int_equal(h->blob_offset, vmai_get_be32(b.p + VMA_HOFF_BLOB_OFFSET));
    assert_int_equal(h->blob_size, vmai_get_be32(b.p + VMA_HOFF_BLOB_SIZE));

    /* ctime as the deployed tool printed it (TZ=UTC) */
    time_t t = (time_t)h->ctime;
    struct tm tm;
    char ct[64];
    assert_non_null(gmtime_r(&t, &tm));
    assert_non_null(asctime_r(&tm, ct));
    assert_string_equal(ct, x.ctime_line);

    assert_int_equal(h->config_count, x.nconf);
    for (unsigned i = 0; i < x.nconf; i++) {
        assert_string_equal(h->configs[i].name, x.conf_name[i]);
        assert_int_equal(h->configs[i].len, x.conf_len[i]);
        /* pointers into the buffer */
        assert_true((const unsigned char *)h->configs[i].name > b.p &&
                    (const unsigned char *)h->configs[i].name < b.p + hs);
        assert_true(h->configs[i].data > b.p && h->configs[i].data + h->configs[i].len <= b.p + hs);
        if (strcmp(x.conf_name[i], "qemu-server.conf") == 0) {
            struct vt_buf conf = {0};
            snprintf(path, sizeof(path), "%s/%s.conf", golden_dir, name);
            assert_int_equal(vt_read_file(path, &conf), 0);
            assert_int_equal(conf.len, h->configs[i].len);
            assert_memory_equal(conf.p, h->configs[i].data, conf.len);
            vt_free(&conf);
        }
    }
    unsigned ndev = 0;
    for (unsigned slot = 0; slot < VMA_DEV_SLOTS; slot++) {
        if (h->devices[slot].name == NULL)
            continue;
        assert_true(ndev < x.ndev);
        assert_int_equal(slot, x.dev_id[ndev]);
        assert_string_equal(h->devices[slot].name, x.dev_name[ndev]);
        assert_true(h->devices[slot].size == x.dev_size[ndev]);
        assert_false(h->devices[slot].is_vmstate);
        ndev++;
    }
    assert_int_equal(ndev, x.ndev);

    /* every extent header of the archive parses against the header uuid */
    size_t off = hs;
    unsigned extents = 0;
    while (off < b.len) {
        struct vmai_extent e;
        assert_true(off + VMA_EXTENT_HEADER_SIZE <= b.len);
        rc = vmai_extent_parse(b.p + off, h->uuid, &e, err, sizeof(err));
        if (rc != VMA_OK)
            fail_msg("%s: extent at %zu: %s", name, off, err);
        /* re-encoding gives the same bytes */
        unsigned char again[VMA_EXTENT_HEADER_SIZE];
        vmai_extent_encode(again, h->uuid, &e);
        assert_memory_equal(again, b.p + off, VMA_EXTENT_HEADER_SIZE);
        off += VMA_EXTENT_HEADER_SIZE + (size_t)e.block_count * VMA_BLOCK_SIZE;
        extents++;
    }
    assert_int_equal(off, b.len);
    assert_true(extents >= 1);

    /* a header cut short is truncated */
    rc = vmai_header_parse(b.p, hs - 512, h, err, sizeof(err));
    assert_int_equal(rc, VMA_ERR_TRUNCATED);
    rc = vmai_header_prefix(b.p, VMA_HEADER_FIXED_SIZE - 1, &hs, err, sizeof(err));
    assert_int_equal(rc, VMA_ERR_TRUNCATED);
    free(h);
    vt_free(&b);
}

static void test_golden_basic(void **state) { (void)state; check_golden("basic"); }
static void test_golden_legacy(void **state) { (void)state; check_golden("legacy"); }
static void test_golden_zero_disk(void **state) { (void)state; check_golden("zero-disk"); }
static void test_golden_odd_sizes(void **state) { (void)state; check_golden("odd-sizes"); }
static void test_golden_diskless(void **state) { (void)state; check_golden("diskless"); }

/* A header in memory: parse of a builder-made header with a vmstate device
 * and a device in the largest writer slot. */
static void test_header_parse_built(void **state)
{
    (void)state;
    static struct vt_hdr hd;
    memset(&hd, 0, sizeof(hd));
    memcpy(hd.uuid, uuid_a, 16);
    hd.ctime = -1; /* signed */
    hd.nconf = 1;
    hd.conf[0].name.str = "c";
    hd.conf[0].data = "";
    hd.conf[0].len = 0;
    hd.dev[1].name.str = "vmstate";
    hd.dev[1].size = 12345;
    hd.dev[254].name.str = "last";
    hd.dev[254].size = VMA_MAX_DEVICE_SIZE;
    hd.extra_table = 2048; /* header_size larger than the blobs need */
    struct vt_buf b = {0};
    uint32_t hs = vt_header_build(&b, &hd);
    struct vmai_header *h = malloc(sizeof(*h));
    assert_non_null(h);
    char err[512] = "";
    int rc = vmai_header_parse(b.p, hs, h, err, sizeof(err));
    if (rc != VMA_OK)
        fail_msg("vmai_header_parse: %s", err);
    assert_true(h->ctime == -1);
    assert_int_equal(h->config_count, 1);
    assert_string_equal(h->configs[0].name, "c");
    assert_int_equal(h->configs[0].len, 0);
    assert_string_equal(h->devices[1].name, "vmstate");
    assert_true(h->devices[1].is_vmstate);
    assert_true(h->devices[1].size == 12345);
    assert_string_equal(h->devices[254].name, "last");
    assert_false(h->devices[254].is_vmstate);
    assert_true(h->devices[254].size == VMA_MAX_DEVICE_SIZE);
    for (unsigned i = 2; i < 254; i++)
        assert_null(h->devices[i].name);
    assert_null(h->devices[0].name);
    assert_null(h->devices[255].name);
    free(h);
    vt_free(&b);
}

/* ---------------------------------------------------------------- */

static void test_status_names(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *name;
    } names[] = {
        {VMA_OK, "VMA_OK"},
        {VMA_ERR_IO, "VMA_ERR_IO"},
        {VMA_ERR_CORRUPT, "VMA_ERR_CORRUPT"},
        {VMA_ERR_TRUNCATED, "VMA_ERR_TRUNCATED"},
        {VMA_ERR_NOMEM, "VMA_ERR_NOMEM"},
        {VMA_ERR_INVALID, "VMA_ERR_INVALID"},
        {VMA_ERR_EXISTS, "VMA_ERR_EXISTS"},
        {VMA_ERR_LIMIT, "VMA_ERR_LIMIT"},
        {VMA_ERR_NOT_FOUND, "VMA_ERR_NOT_FOUND"},
        {VMA_ERR_INCOMPLETE, "VMA_ERR_INCOMPLETE"},
        {VMA_ERR_CALLBACK, "VMA_ERR_CALLBACK"},
        {VMA_ERR_CANCELED, "VMA_ERR_CANCELED"},
        {VMA_ERR_HEADER_MD5, "VMA_ERR_HEADER_MD5"},
    };
    /* the pinned values */
    assert_int_equal(VMA_OK, 0);
    assert_int_equal(VMA_ERR_IO, -1);
    assert_int_equal(VMA_ERR_CORRUPT, -2);
    assert_int_equal(VMA_ERR_TRUNCATED, -3);
    assert_int_equal(VMA_ERR_NOMEM, -4);
    assert_int_equal(VMA_ERR_INVALID, -5);
    assert_int_equal(VMA_ERR_EXISTS, -6);
    assert_int_equal(VMA_ERR_LIMIT, -7);
    assert_int_equal(VMA_ERR_NOT_FOUND, -8);
    assert_int_equal(VMA_ERR_INCOMPLETE, -9);
    assert_int_equal(VMA_ERR_CALLBACK, -10);
    assert_int_equal(VMA_ERR_CANCELED, -11);
    assert_int_equal(VMA_ERR_HEADER_MD5, -12);
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        assert_non_null(vma_status_name(names[i].code));
        assert_string_equal(vma_status_name(names[i].code), names[i].name);
    }
    static const int unknown[] = {1, 2, -13, -14, 100, -100, INT_MAX, INT_MIN};
    for (unsigned i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        assert_string_equal(vma_status_name(unknown[i]), "unknown");
}

int main(int argc, char **argv)
{
    if (argc > 1)
        golden_dir = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_be_le_layout),
        cmocka_unit_test(test_be_le_roundtrip),
        cmocka_unit_test(test_blockinfo_roundtrip),
        cmocka_unit_test(test_popcount16),
        cmocka_unit_test(test_is_zero_sizes),
        cmocka_unit_test(test_is_zero_every_position),
        cmocka_unit_test(test_cluster_count),
        cmocka_unit_test(test_name_is_valid),
        cmocka_unit_test(test_extent_roundtrip),
        cmocka_unit_test(test_extent_parse_rejects),
        cmocka_unit_test(test_md5_zeroed),
        cmocka_unit_test(test_golden_basic),
        cmocka_unit_test(test_golden_legacy),
        cmocka_unit_test(test_golden_zero_disk),
        cmocka_unit_test(test_golden_odd_sizes),
        cmocka_unit_test(test_golden_diskless),
        cmocka_unit_test(test_header_parse_built),
        cmocka_unit_test(test_status_names),
    };
    return cmocka_run_group_tests_name("unit_format", tests, NULL, NULL);
}
