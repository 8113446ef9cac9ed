/*
 * One test per reader rule: each case takes a valid archive (the golden
 * basic.vma written by Proxmox's tool, or one laid out by hand with
 * vmatest.h), breaks exactly one rule, re-signs the header or extent MD5
 * where the rule is semantic (so only that check can catch it), and feeds
 * it to the public reader, once from a file and once through a pipe. It
 * asserts the exact status, a key phrase of the message and where it
 * points (offset, extent, device), and that the handle stays failed.
 * A few "lenient" cases check what a reader must accept.
 *
 * Usage: negative_reader <golden-dir>
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "format.h"
#include "vma.h"
#include "vmatest.h"
#include "rmtree.h"

static const char *golden_dir = "tests/golden";
static struct vt_buf g_basic, g_diskless, g_std, g_vms;
static char g_tmpdir[4096];

static const unsigned char UUID[16] = {0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04,
                                       0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c};

/* Offsets in the golden basic.vma */
#define B_HS 13312u          /* header_size */
#define B_E0 13312u          /* extent 0 */
#define B_E1 1238528u        /* extent 1 */
#define B_E2 2426880u        /* extent 2 */
#define B_LEN 2959872u
#define B_BLOB 12288u        /* blob buffer offset */
#define B_CLUSTERS 137u

/* ---------------------------------------------------------------- */
/* base archives                                                     */
/* ---------------------------------------------------------------- */

static struct vt_hdr *hdr_new(void)
{
    struct vt_hdr *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    memcpy(h->uuid, UUID, 16);
    h->ctime = 1700000000;
    return h;
}

static const char std_conf[] = "memory: 512\n";
#define STD_DEV1_SIZE (3u * 65536 + 5000) /* 4 clusters, last one partial */

/* "std": a config, two disks, two extents. */
static void build_std(struct vt_buf *b, const struct vt_ent *e0, unsigned n0,
                      const struct vt_ent *e1, unsigned n1)
{
    struct vt_hdr *h = hdr_new();
    h->nconf = 1;
    h->conf[0].name.str = "qemu-server.conf";
    h->conf[0].data = std_conf;
    h->conf[0].len = strlen(std_conf);
    h->dev[1].name.str = "drive-scsi0";
    h->dev[1].size = STD_DEV1_SIZE;
    h->dev[2].name.str = "drive-efidisk0";
    h->dev[2].size = 65536;
    b->len = 0;
    vt_header_build(b, h);
    vt_extent(b, UUID, e0, n0);
    if (e1 != NULL)
        vt_extent(b, UUID, e1, n1);
    free(h);
}

static const struct vt_ent std_e0[] = {{1, 0, 0xffff}, {2, 0, 0x0000}, {1, 2, 0x00f0}};
static const struct vt_ent std_e1[] = {{1, 1, 0x0000}, {1, 3, 0x0003}};

/* "vms": a vmstate stream in slot 1 and a disk in slot 2. */
static void build_vms(struct vt_buf *b, const struct vt_ent *e0, unsigned n0,
                      const struct vt_ent *e1, unsigned n1)
{
    struct vt_hdr *h = hdr_new();
    h->dev[1].name.str = "vmstate";
    h->dev[1].size = 3u * 65536;
    h->dev[2].name.str = "drive-scsi0";
    h->dev[2].size = 65536;
    b->len = 0;
    vt_header_build(b, h);
    vt_extent(b, UUID, e0, n0);
    if (e1 != NULL)
        vt_extent(b, UUID, e1, n1);
    free(h);
}

static const struct vt_ent vms_e0[] = {{1, 0, 0x0001}, {2, 0, 0xffff}, {1, 1, 0x0000}};
static const struct vt_ent vms_e1[] = {{1, 2, 0x8000}};

/* ---------------------------------------------------------------- */
/* running a case                                                    */
/* ---------------------------------------------------------------- */

struct seen {
    uint64_t clusters;
    int bad_data; /* stored block differs from the builder pattern */
    int check_data;
};

static int count_cb(void *opaque, unsigned dev_id, uint32_t cluster_num, uint16_t mask,
                    const unsigned char *data)
{
    struct seen *s = opaque;
    s->clusters++;
    if (s->check_data) {
        unsigned char want[VMA_BLOCK_SIZE];
        for (unsigned b = 0; b < 16; b++) {
            if (!(mask & (1u << b)))
                continue;
            vt_block_fill(want, dev_id, cluster_num, b);
            if (memcmp(want, data, VMA_BLOCK_SIZE) != 0)
                s->bad_data++;
            data += VMA_BLOCK_SIZE;
        }
    }
    return 0;
}

enum phase { AT_OPEN, AT_READ };

struct result {
    int open_rc;
    int read_rc;
    int read2_rc;        /* a second read on the same handle */
    int status;          /* vma_reader_status() after the first failure */
    char msg[1024];      /* message after the first failure */
    char msg2[1024];     /* message after the second call */
    struct seen seen;
    unsigned configs;
    unsigned devices;
};

static void run_reader(vma_reader *r, int rc, struct result *res)
{
    res->open_rc = rc;
    res->read_rc = res->read2_rc = VMA_OK;
    if (rc == VMA_OK) {
        res->configs = vma_reader_config_count(r);
        res->devices = 0;
        for (unsigned d = vma_reader_next_device(r, 0); d != 0; d = vma_reader_next_device(r, d))
            res->devices++;
        res->read_rc = vma_reader_read(r, count_cb, &res->seen);
    }
    snprintf(res->msg, sizeof(res->msg), "%s", vma_reader_error(r));
    res->status = vma_reader_status(r);
    if (rc != VMA_OK || res->read_rc != VMA_OK) {
        res->read2_rc = vma_reader_read(r, count_cb, &res->seen);
        snprintf(res->msg2, sizeof(res->msg2), "%s", vma_reader_error(r));
    }
}

/* Read an archive from a temporary file by path. */
static void run_file(const unsigned char *p, size_t len, int check_data, struct result *res)
{
    memset(res, 0, sizeof(*res));
    res->seen.check_data = check_data;
    char path[4200];
    snprintf(path, sizeof(path), "%s/case-XXXXXX", g_tmpdir);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(vt_write_fd(fd, p, len), 0);
    assert_int_equal(close(fd), 0);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    run_reader(r, vma_reader_open_path(r, path), res);
    vma_reader_free(r);
    unlink(path);
}

/* Read an archive through a pipe fed by a child process. */
static void run_pipe(const unsigned char *p, size_t len, int check_data, struct result *res)
{
    memset(res, 0, sizeof(*res));
    res->seen.check_data = check_data;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        signal(SIGPIPE, SIG_DFL);
        int rc = vt_write_fd(pfd[1], p, len);
        _exit(rc == 0 ? 0 : 1);
    }
    close(pfd[1]);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    run_reader(r, vma_reader_open_fd(r, pfd[0]), res);
    vma_reader_free(r);
    close(pfd[0]); /* the caller owns the descriptor */
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
}

static void expect_failure(const struct result *res, const char *via, enum phase phase,
                           int status, const char *phrase, const char *where)
{
    int got = phase == AT_OPEN ? res->open_rc : res->read_rc;
    if (phase == AT_READ && res->open_rc != VMA_OK)
        fail_msg("%s: open failed unexpectedly: %s: %s", via, vma_status_name(res->open_rc),
                 res->msg);
    if (got != status)
        fail_msg("%s: expected %s at %s, got %s (open %s): '%s'", via, vma_status_name(status),
                 phase == AT_OPEN ? "open" : "read", vma_status_name(got),
                 vma_status_name(res->open_rc), res->msg);
    if (strstr(res->msg, phrase) == NULL)
        fail_msg("%s: message '%s' lacks '%s'", via, res->msg, phrase);
    if (where != NULL && strstr(res->msg, where) == NULL)
        fail_msg("%s: message '%s' does not say where ('%s')", via, res->msg, where);
    if (strchr(res->msg, '\n') != NULL)
        fail_msg("%s: message is not one line: '%s'", via, res->msg);
    if (phase == AT_OPEN) {
        /* a failed open keeps nothing: the reader is usable, not open */
        if (res->status != VMA_OK || res->read2_rc != VMA_ERR_INVALID ||
            strcmp(res->msg2, "reader is not open") != 0)
            fail_msg("%s: after a failed open: status %s, read %s '%s'", via,
                     vma_status_name(res->status), vma_status_name(res->read2_rc), res->msg2);
        return;
    }
    /* the handle stays failed and keeps the first message */
    if (res->status != status)
        fail_msg("%s: vma_reader_status() is %s, not %s", via, vma_status_name(res->status),
                 vma_status_name(status));
    if (res->read2_rc != status)
        fail_msg("%s: second call returned %s, not %s", via, vma_status_name(res->read2_rc),
                 vma_status_name(status));
    assert_string_equal(res->msg2, res->msg);
}

struct ncase {
    const char *name;
    const struct vt_buf *base; /* NULL: mutate builds the archive */
    void (*mutate)(struct vt_buf *b);
    enum phase phase;
    int status;
    const char *phrase;
    const char *where;
};

static void run_case(void **state)
{
    const struct ncase *c = *state;
    struct vt_buf b = {0};
    if (c->base != NULL)
        vt_copy(&b, c->base->p, c->base->len);
    c->mutate(&b);
    struct result res;
    run_file(b.p, b.len, 0, &res);
    expect_failure(&res, "file", c->phase, c->status, c->phrase, c->where);
    run_pipe(b.p, b.len, 0, &res);
    expect_failure(&res, "pipe", c->phase, c->status, c->phrase, c->where);
    vt_free(&b);
}

/* ---------------------------------------------------------------- */
/* helpers for mutations                                             */
/* ---------------------------------------------------------------- */

static void put32(struct vt_buf *b, size_t off, uint32_t v) { vmai_put_be32(b->p + off, v); }
static void put64(struct vt_buf *b, size_t off, uint64_t v) { vmai_put_be64(b->p + off, v); }
static void resign(struct vt_buf *b) { vt_resign_header(b->p); }
static void resign_ext(struct vt_buf *b, size_t off) { vt_resign_extent(b->p + off); }

static size_t bi_off(size_t ext, unsigned i) { return ext + VMA_EOFF_BLOCKINFO + 8 * i; }

static struct vmai_blockinfo bi_get(const struct vt_buf *b, size_t ext, unsigned i)
{
    struct vmai_blockinfo bi;
    vmai_blockinfo_decode(vmai_get_be64(b->p + bi_off(ext, i)), &bi);
    return bi;
}

static void bi_set(struct vt_buf *b, size_t ext, unsigned i, const struct vmai_blockinfo *bi)
{
    vmai_put_be64(b->p + bi_off(ext, i), vmai_blockinfo_encode(bi));
    resign_ext(b, ext);
}

/* Golden header slots */
#define CFG_NAME(i) (VMA_HOFF_CONFIG_NAMES + 4 * (i))
#define CFG_DATA(i) (VMA_HOFF_CONFIG_DATA + 4 * (i))
#define DEV_NAME(i) (VMA_HOFF_DEV_INFO + VMA_DEV_INFO_SIZE * (i))
#define DEV_SIZE(i) (VMA_HOFF_DEV_INFO + VMA_DEV_INFO_SIZE * (i) + 8)

/* Build an archive with one config name (and/or device name) replaced. */
static void build_named(struct vt_buf *b, const struct vt_name *conf, const struct vt_name *dev)
{
    struct vt_hdr *h = hdr_new();
    h->nconf = 1;
    h->conf[0].name = conf ? *conf : (struct vt_name){.str = "qemu-server.conf"};
    h->conf[0].data = std_conf;
    h->conf[0].len = strlen(std_conf);
    h->dev[1].name = dev ? *dev : (struct vt_name){.str = "drive-scsi0"};
    h->dev[1].size = 65536;
    b->len = 0;
    vt_header_build(b, h);
    static const struct vt_ent e[] = {{1, 0, 0x0101}};
    vt_extent(b, UUID, e, 1);
    free(h);
}

static void build_conf_named(struct vt_buf *b, const char *name)
{
    struct vt_name n = {.str = name};
    build_named(b, &n, NULL);
}

static void build_dev_named(struct vt_buf *b, const char *name)
{
    struct vt_name n = {.str = name};
    build_named(b, NULL, &n);
}

/* ---------------------------------------------------------------- */
/* header mutations (golden basic.vma unless said otherwise)         */
/* ---------------------------------------------------------------- */

static void m_bad_magic(struct vt_buf *b) { b->p[0] = 'X'; }
static void m_extent_magic_as_header(struct vt_buf *b) { b->p[3] = 'E'; resign(b); }
static void m_version2(struct vt_buf *b) { put32(b, VMA_HOFF_VERSION, 2); resign(b); }
static void m_version0(struct vt_buf *b) { put32(b, VMA_HOFF_VERSION, 0); resign(b); }
static void m_header_md5_field(struct vt_buf *b) { b->p[VMA_HOFF_MD5 + 5] ^= 0x40; }
static void m_header_md5_blob(struct vt_buf *b) { b->p[B_BLOB + 100] ^= 0x01; } /* config text */
static void m_header_md5_padding(struct vt_buf *b) { b->p[B_HS - 1] = 0x01; } /* table padding */
static void m_hsize_unaligned(struct vt_buf *b) { put32(b, VMA_HOFF_HEADER_SIZE, B_HS + 1); resign(b); }
static void m_hsize_12288(struct vt_buf *b) { put32(b, VMA_HOFF_HEADER_SIZE, 12288); resign(b); }
static void m_hsize_below_fixed(struct vt_buf *b) { put32(b, VMA_HOFF_HEADER_SIZE, 512); }
static void m_hsize_huge(struct vt_buf *b) { put32(b, VMA_HOFF_HEADER_SIZE, 0xfffffe00u); }
static void m_hsize_over_max(struct vt_buf *b)
{
    put32(b, VMA_HOFF_HEADER_SIZE, VMA_MAX_HEADER_SIZE + 512);
}
/* A short file declaring the largest header: truncation, from a buffer
 * that grew with the bytes read rather than 32 MiB up front. */
static void m_hsize_max_short(struct vt_buf *b) { put32(b, VMA_HOFF_HEADER_SIZE, VMA_MAX_HEADER_SIZE); }
static void m_hsize_below_blobs(struct vt_buf *b)
{
    /* 12288 + 522 bytes of blobs do not fit in 12800 */
    put32(b, VMA_HOFF_HEADER_SIZE, 12800);
    resign(b);
}
static void m_blob_offset_huge(struct vt_buf *b) { put32(b, VMA_HOFF_BLOB_OFFSET, 0xfffffff0u); resign(b); }
static void m_blob_offset_past(struct vt_buf *b) { put32(b, VMA_HOFF_BLOB_OFFSET, B_HS); resign(b); }
static void m_blob_offset_plus_size(struct vt_buf *b)
{
    put32(b, VMA_HOFF_BLOB_OFFSET, B_BLOB + 600); /* 12888 + 522 > 13312 */
    resign(b);
}
static void m_blob_size_huge(struct vt_buf *b) { put32(b, VMA_HOFF_BLOB_SIZE, 0xffffffffu); resign(b); }
static void m_blob_size_past(struct vt_buf *b) { put32(b, VMA_HOFF_BLOB_SIZE, 1025); resign(b); }
static void m_blob_size_cuts_blob(struct vt_buf *b)
{
    /* the last blob (drive-efidisk0 at 505, 2 + 15 bytes) ends at 522 */
    put32(b, VMA_HOFF_BLOB_SIZE, 521);
    resign(b);
}
static void m_blob_size_cuts_length(struct vt_buf *b)
{
    /* 506: only one byte of the last blob's length field is inside */
    put32(b, VMA_HOFF_BLOB_SIZE, 506);
    resign(b);
}
static void m_cfg_ptr_out_of_range(struct vt_buf *b) { put32(b, CFG_NAME(0), 600); resign(b); }
static void m_cfg_ptr_huge(struct vt_buf *b) { put32(b, CFG_NAME(1), 0xffffffffu); resign(b); }
static void m_cfg_data_ptr_mid(struct vt_buf *b) { put32(b, CFG_DATA(1), 0x1a6 + 1); resign(b); }
static void m_cfg_ptr_inside_blob(struct vt_buf *b) { put32(b, CFG_NAME(0), 2); resign(b); }
static void m_dev_ptr_mid(struct vt_buf *b) { put32(b, DEV_NAME(2), 0x1f9 + 3); resign(b); }
static void m_dev_ptr_out_of_range(struct vt_buf *b) { put32(b, DEV_NAME(1), 522); resign(b); }
static void m_cfg_name_unterminated(struct vt_buf *b)
{
    /* "qemu-server.conf\0" at blob offset 1: its NUL at 1 + 2 + 16 */
    b->p[B_BLOB + 1 + 2 + 16] = 'X';
    resign(b);
}
static void m_dev_name_unterminated(struct vt_buf *b)
{
    /* "drive-scsi0\0" at blob offset 491 (0x1eb) */
    b->p[B_BLOB + 0x1eb + 2 + 11] = '0';
    resign(b);
}
static void m_dev_name_inner_nul(struct vt_buf *b)
{
    /* "drive\0scsi0\0": a blob that is not one string */
    b->p[B_BLOB + 0x1eb + 2 + 5] = 0;
    resign(b);
}
static void m_cfg_name_empty(struct vt_buf *b)
{
    struct vt_name n = {.raw = "", .rawlen = 0};
    build_named(b, &n, NULL);
}
static void m_dev_name_empty(struct vt_buf *b)
{
    struct vt_name n = {.raw = "", .rawlen = 0};
    build_named(b, NULL, &n);
}
static void m_cfg_name_only_nul(struct vt_buf *b)
{
    struct vt_name n = {.raw = "", .rawlen = 1}; /* "" */
    build_named(b, &n, NULL);
}
static void m_dev_name_raw_unterminated(struct vt_buf *b)
{
    struct vt_name n = {.raw = "disk", .rawlen = 4};
    build_named(b, NULL, &n);
}
static void m_dup_config_names(struct vt_buf *b)
{
    struct vt_hdr *h = hdr_new();
    h->nconf = 3;
    h->conf[0].name.str = "qemu-server.conf";
    h->conf[0].data = "a";
    h->conf[0].len = 1;
    h->conf[1].name.str = "other.conf";
    h->conf[1].data = "b";
    h->conf[1].len = 1;
    h->conf[2].name.str = "qemu-server.conf";
    h->conf[2].data = "c";
    h->conf[2].len = 1;
    b->len = 0;
    vt_header_build(b, h);
    vt_extent(b, UUID, NULL, 0);
    free(h);
}
static void m_dup_device_names(struct vt_buf *b)
{
    struct vt_hdr *h = hdr_new();
    h->dev[1].name.str = "drive-scsi0";
    h->dev[1].size = 65536;
    h->dev[3].name.str = "drive-scsi0";
    h->dev[3].size = 131072;
    b->len = 0;
    vt_header_build(b, h);
    static const struct vt_ent e[] = {{1, 0, 0}, {3, 0, 0}, {3, 1, 0}};
    vt_extent(b, UUID, e, 3);
    free(h);
}
static void m_cfg_name_slash(struct vt_buf *b) { build_conf_named(b, "a/b"); }
static void m_cfg_name_dot(struct vt_buf *b) { build_conf_named(b, "."); }
static void m_cfg_name_dotdot(struct vt_buf *b) { build_conf_named(b, ".."); }
static void m_cfg_name_dotdot_x(struct vt_buf *b) { build_conf_named(b, "../x"); }
static void m_cfg_name_absolute(struct vt_buf *b) { build_conf_named(b, "/etc/passwd"); }
static void m_dev_name_slash(struct vt_buf *b) { build_dev_named(b, "a/b"); }
static void m_dev_name_dot(struct vt_buf *b) { build_dev_named(b, "."); }
static void m_dev_name_dotdot(struct vt_buf *b) { build_dev_named(b, ".."); }
/* Control characters would forge list lines or drive a terminal. */
static void m_cfg_name_newline(struct vt_buf *b) { build_conf_named(b, "x\nDEV: dev_id=9"); }
static void m_cfg_name_cr(struct vt_buf *b) { build_conf_named(b, "x\rCTIME: 0"); }
static void m_cfg_name_tab(struct vt_buf *b) { build_conf_named(b, "a\tb"); }
static void m_cfg_name_esc(struct vt_buf *b) { build_conf_named(b, "\x1b[31mred"); }
static void m_cfg_name_del(struct vt_buf *b) { build_conf_named(b, "del\x7f"); }
static void m_cfg_name_ctrl_a(struct vt_buf *b) { build_conf_named(b, "\x01"); }
static void m_dev_name_newline(struct vt_buf *b) { build_dev_named(b, "d\nDEV: dev_id=9 size: 1"); }
static void m_dev_name_cr(struct vt_buf *b) { build_dev_named(b, "d\r"); }
static void m_dev_name_tab(struct vt_buf *b) { build_dev_named(b, "\td"); }
static void m_dev_name_esc(struct vt_buf *b) { build_dev_named(b, "d\x1b]0;title\x07"); }
static void m_dev_name_del(struct vt_buf *b) { build_dev_named(b, "\x7f"); }
static void m_dev_name_ctrl_1f(struct vt_buf *b) { build_dev_named(b, "d\x1f"); }
static void m_dev_name_nel(struct vt_buf *b) { build_dev_named(b, "d\xc2\x85" "DEV: x"); }
static void m_cfg_name_csi(struct vt_buf *b) { build_conf_named(b, "\xc2\x9b" "2J"); }
static void m_cfg_name_too_long(struct vt_buf *b)
{
    char *n = malloc(VMA_MAX_NAME_LEN + 2);
    assert_non_null(n);
    memset(n, 'c', VMA_MAX_NAME_LEN + 1);
    n[VMA_MAX_NAME_LEN + 1] = 0;
    build_conf_named(b, n);
    free(n);
}
static void m_dev_name_too_long(struct vt_buf *b)
{
    char *n = malloc(VMA_MAX_NAME_LEN + 2);
    assert_non_null(n);
    memset(n, 'd', VMA_MAX_NAME_LEN + 1);
    n[VMA_MAX_NAME_LEN + 1] = 0;
    build_dev_named(b, n);
    free(n);
}
static void m_dev_slot255(struct vt_buf *b)
{
    struct vt_hdr *h = hdr_new();
    h->dev[1].name.str = "drive-scsi0";
    h->dev[1].size = 65536;
    h->dev[255].name.str = "drive-scsi1";
    h->dev[255].size = 65536;
    b->len = 0;
    vt_header_build(b, h);
    static const struct vt_ent e[] = {{1, 0, 0x0001}, {255, 0, 0x0001}};
    vt_extent(b, UUID, e, 2);
    free(h);
}
static void m_dev_size_over_max(struct vt_buf *b)
{
    put64(b, DEV_SIZE(1), VMA_MAX_DEVICE_SIZE + 1);
    resign(b);
}
static void m_dev_size_u64max(struct vt_buf *b)
{
    put64(b, DEV_SIZE(2), UINT64_MAX);
    resign(b);
}

/* ---------------------------------------------------------------- */
/* extent mutations                                                  */
/* ---------------------------------------------------------------- */

static void m_ext_magic(struct vt_buf *b) { b->p[B_E0 + 3] = 'X'; resign_ext(b, B_E0); }
static void m_ext_magic_header(struct vt_buf *b) { memcpy(b->p + B_E1, "VMA\0", 4); resign_ext(b, B_E1); }
static void m_ext_reserved(struct vt_buf *b)
{
    vmai_put_be16(b->p + B_E0 + VMA_EOFF_RESERVED, 1);
    resign_ext(b, B_E0);
}
static void m_ext_reserved_2nd(struct vt_buf *b)
{
    vmai_put_be16(b->p + B_E2 + VMA_EOFF_RESERVED, 0x8000);
    resign_ext(b, B_E2);
}
static void m_ext_uuid(struct vt_buf *b) { b->p[B_E0 + VMA_EOFF_UUID + 15] ^= 1; resign_ext(b, B_E0); }
static void m_ext_uuid_2nd(struct vt_buf *b) { memset(b->p + B_E1 + VMA_EOFF_UUID, 0, 16); resign_ext(b, B_E1); }
static void m_ext_md5_field(struct vt_buf *b) { b->p[B_E0 + VMA_EOFF_MD5] ^= 0x80; }
static void m_ext_md5_blockinfo(struct vt_buf *b) { b->p[bi_off(B_E1, 10) + 7] ^= 0x01; }
static void m_ext_md5_unused_entry(struct vt_buf *b)
{
    /* extent 2 has 21 entries: entry 58 is unused (all zero) */
    b->p[bi_off(B_E2, 58) + 7] = 0x01;
}
static void m_ext_block_count_plus(struct vt_buf *b)
{
    uint16_t n = vmai_get_be16(b->p + B_E0 + VMA_EOFF_BLOCK_COUNT);
    vmai_put_be16(b->p + B_E0 + VMA_EOFF_BLOCK_COUNT, (uint16_t)(n + 1));
    resign_ext(b, B_E0);
}
static void m_ext_block_count_minus(struct vt_buf *b)
{
    uint16_t n = vmai_get_be16(b->p + B_E1 + VMA_EOFF_BLOCK_COUNT);
    vmai_put_be16(b->p + B_E1 + VMA_EOFF_BLOCK_COUNT, (uint16_t)(n - 1));
    resign_ext(b, B_E1);
}
static void m_ext_mask_changed(struct vt_buf *b)
{
    /* entry 1 of extent 0 is an all-zero cluster (mask 0): give it a block */
    struct vmai_blockinfo bi = bi_get(b, B_E0, 1);
    assert_int_equal(bi.mask, 0);
    bi.mask = 0x0001;
    bi_set(b, B_E0, 1, &bi);
}
static void m_ext_bi_reserved(struct vt_buf *b)
{
    struct vmai_blockinfo bi = bi_get(b, B_E0, 0);
    bi.reserved = 0x01;
    bi_set(b, B_E0, 0, &bi);
}
static void m_ext_bi_reserved_high(struct vt_buf *b)
{
    struct vmai_blockinfo bi = bi_get(b, B_E2, 20);
    bi.reserved = 0x80;
    bi_set(b, B_E2, 20, &bi);
}
static void m_ext_unknown_dev(struct vt_buf *b)
{
    struct vmai_blockinfo bi = bi_get(b, B_E0, 0);
    bi.dev_id = 3;
    bi_set(b, B_E0, 0, &bi);
}
static void m_ext_unknown_dev_255(struct vt_buf *b)
{
    struct vmai_blockinfo bi = bi_get(b, B_E1, 5);
    bi.dev_id = 255;
    bi_set(b, B_E1, 5, &bi);
}
static void m_ext_cluster_at_end(struct vt_buf *b)
{
    /* drive-scsi0 is 8 MiB: clusters 0..127 */
    struct vmai_blockinfo bi = bi_get(b, B_E0, 0);
    assert_int_equal(bi.dev_id, 1);
    bi.cluster_num = 128;
    bi_set(b, B_E0, 0, &bi);
}
static void m_ext_cluster_far(struct vt_buf *b)
{
    struct vmai_blockinfo bi = bi_get(b, B_E0, 0);
    bi.cluster_num = 0xffffffffu;
    bi_set(b, B_E0, 0, &bi);
}
/* Find the entry of (dev, cluster) in the golden archive. */
static void find_entry(const struct vt_buf *b, unsigned dev, uint32_t cluster, size_t *ext,
                       unsigned *idx)
{
    size_t offs[8];
    unsigned n = vt_extent_offsets(b->p, b->len, offs, 8);
    for (unsigned e = 0; e < n; e++)
        for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
            struct vmai_blockinfo bi = bi_get(b, offs[e], i);
            if (bi.dev_id == dev && bi.cluster_num == cluster) {
                *ext = offs[e];
                *idx = i;
                return;
            }
        }
    fail_msg("no entry for dev %u cluster %u", dev, cluster);
}
static void m_ext_cluster_past_partial(struct vt_buf *b)
{
    /* drive-efidisk0 is 540672 bytes: clusters 0..8 (8 partial); 9 is past */
    size_t ext = 0;
    unsigned idx = 0;
    find_entry(b, 2, 8, &ext, &idx);
    struct vmai_blockinfo bi = bi_get(b, ext, idx);
    bi.cluster_num = 9;
    bi_set(b, ext, idx, &bi);
}
static void m_ext_dup_cluster(struct vt_buf *b)
{
    /* extent 0: entry 0 is scsi0 cluster 0, entry 1 scsi0 cluster 1 */
    struct vmai_blockinfo bi = bi_get(b, B_E0, 1);
    assert_int_equal(bi.dev_id, 1);
    bi.cluster_num = bi_get(b, B_E0, 0).cluster_num;
    bi_set(b, B_E0, 1, &bi);
}
static void m_ext_dup_cluster_across(struct vt_buf *b)
{
    /* a cluster of extent 0 again in extent 2 */
    struct vmai_blockinfo first = bi_get(b, B_E0, 3);
    size_t ext = B_E2;
    unsigned idx = 0;
    struct vmai_blockinfo bi;
    for (idx = 0; idx < VMA_BLOCKINFO_PER_EXTENT; idx++) {
        bi = bi_get(b, ext, idx);
        if (bi.dev_id == first.dev_id)
            break;
    }
    assert_true(idx < VMA_BLOCKINFO_PER_EXTENT);
    bi.cluster_num = first.cluster_num;
    bi_set(b, ext, idx, &bi);
}
static void m_vms_out_of_order(struct vt_buf *b)
{
    static const struct vt_ent e0[] = {{1, 1, 0x0001}, {2, 0, 0xffff}, {1, 0, 0x0000}};
    build_vms(b, e0, 3, vms_e1, 1);
}
static void m_vms_repeat(struct vt_buf *b)
{
    static const struct vt_ent e1[] = {{1, 1, 0x8000}};
    build_vms(b, vms_e0, 3, e1, 1);
}
static void m_vms_gap(struct vt_buf *b)
{
    static const struct vt_ent e1[] = {{1, 3, 0x8000}};
    build_vms(b, vms_e0, 3, e1, 1);
}

/* ---------------------------------------------------------------- */
/* truncation and stream structure                                   */
/* ---------------------------------------------------------------- */

static void m_trunc_empty(struct vt_buf *b) { b->len = 0; }
static void m_trunc_100(struct vt_buf *b) { b->len = 100; }
static void m_trunc_fixed_minus1(struct vt_buf *b) { b->len = 12287; }
static void m_trunc_fixed(struct vt_buf *b) { b->len = 12288; }
static void m_trunc_blob_table(struct vt_buf *b) { b->len = 13000; }
static void m_trunc_header_minus1(struct vt_buf *b) { b->len = B_HS - 1; }
static void m_no_extent(struct vt_buf *b) { b->len = B_HS; }
static void m_trunc_ext_header(struct vt_buf *b) { b->len = B_E0 + 100; }
static void m_trunc_ext_header_1(struct vt_buf *b) { b->len = B_E0 + 1; }
static void m_trunc_ext_header_2nd(struct vt_buf *b) { b->len = B_E1 + 511; }
static void m_trunc_ext_data(struct vt_buf *b) { b->len = B_E0 + 512 + 4096 * 10 + 7; }
static void m_trunc_ext_data_first_byte(struct vt_buf *b) { b->len = B_E1 + 512; }
static void m_trunc_last_byte(struct vt_buf *b) { b->len = B_LEN - 1; }
static void m_trunc_boundary(struct vt_buf *b) { b->len = B_E1; }
static void m_trunc_boundary_last(struct vt_buf *b) { b->len = B_E2; }
static void m_drop_extent(struct vt_buf *b)
{
    memmove(b->p + B_E1, b->p + B_E2, B_LEN - B_E2);
    b->len = B_LEN - (B_E2 - B_E1);
}
static void m_drop_last_extent(struct vt_buf *b) { b->len = B_E2; }
static void m_dup_extent(struct vt_buf *b)
{
    size_t e0len = B_E1 - B_E0;
    vt_reserve(b, e0len);
    memmove(b->p + B_E1 + e0len, b->p + B_E1, B_LEN - B_E1);
    memcpy(b->p + B_E1, b->p + B_E0, e0len);
    b->len = B_LEN + e0len;
}
static void m_dup_last_extent(struct vt_buf *b)
{
    size_t len = B_LEN - B_E2;
    vt_append(b, b->p + B_E2, len);
}
static void m_trailing_garbage(struct vt_buf *b)
{
    /* bytes after the last extent are read as an extent header */
    vt_append(b, "garbage", 7);
}
static void m_trailing_zero_header(struct vt_buf *b)
{
    vt_append(b, NULL, VMA_EXTENT_HEADER_SIZE);
}
static void m_std_missing_partial(struct vt_buf *b)
{
    /* drive-scsi0 has 4 clusters; the partial last one (3) is missing */
    static const struct vt_ent e1[] = {{1, 1, 0x0000}};
    build_std(b, std_e0, 3, e1, 1);
}
static void m_std_missing_dev2(struct vt_buf *b)
{
    static const struct vt_ent e0[] = {{1, 0, 0xffff}, {1, 2, 0x00f0}};
    build_std(b, e0, 2, std_e1, 2);
}

#define OPENCASE(fn, base, st, phrase, where) \
    {#fn, base, fn, AT_OPEN, st, phrase, where}
#define READCASE(fn, base, st, phrase, where) \
    {#fn, base, fn, AT_READ, st, phrase, where}

static const struct ncase cases[] = {
    /* header: prefix */
    OPENCASE(m_bad_magic, &g_basic, VMA_ERR_CORRUPT, "bad magic", "offset 0"),
    OPENCASE(m_extent_magic_as_header, &g_basic, VMA_ERR_CORRUPT, "bad magic", "offset 0"),
    OPENCASE(m_version2, &g_basic, VMA_ERR_CORRUPT, "unsupported version 2", "offset 4"),
    OPENCASE(m_version0, &g_basic, VMA_ERR_CORRUPT, "unsupported version 0", "offset 4"),
    OPENCASE(m_hsize_unaligned, &g_basic, VMA_ERR_CORRUPT, "bad header_size 13313", "offset 56"),
    OPENCASE(m_hsize_12288, &g_basic, VMA_ERR_CORRUPT, "bad header_size 12288", "offset 56"),
    OPENCASE(m_hsize_below_fixed, &g_basic, VMA_ERR_CORRUPT, "bad header_size 512", "offset 56"),
    OPENCASE(m_hsize_huge, &g_basic, VMA_ERR_CORRUPT, "bad header_size 4294966784", "offset 56"),
    OPENCASE(m_hsize_over_max, &g_basic, VMA_ERR_CORRUPT, "bad header_size", "offset 56"),
    OPENCASE(m_hsize_max_short, &g_basic, VMA_ERR_TRUNCATED, "truncated inside the header",
             "of 33554432 bytes"),
    OPENCASE(m_hsize_below_blobs, &g_basic, VMA_ERR_CORRUPT, "blob buffer", "12288, size 522"),
    OPENCASE(m_blob_offset_huge, &g_basic, VMA_ERR_CORRUPT, "blob buffer", "4294967280"),
    OPENCASE(m_blob_offset_past, &g_basic, VMA_ERR_CORRUPT, "blob buffer", "13312"),
    OPENCASE(m_blob_offset_plus_size, &g_basic, VMA_ERR_CORRUPT, "blob buffer", "12888"),
    OPENCASE(m_blob_size_huge, &g_basic, VMA_ERR_CORRUPT, "blob buffer", "4294967295"),
    OPENCASE(m_blob_size_past, &g_basic, VMA_ERR_CORRUPT, "blob buffer", "1025"),
    /* header: MD5 */
    OPENCASE(m_header_md5_field, &g_basic, VMA_ERR_CORRUPT, "MD5 checksum mismatch", "header"),
    OPENCASE(m_header_md5_blob, &g_basic, VMA_ERR_CORRUPT, "MD5 checksum mismatch", "header"),
    OPENCASE(m_header_md5_padding, &g_basic, VMA_ERR_CORRUPT, "MD5 checksum mismatch", "header"),
    /* header: blob chain and pointers */
    OPENCASE(m_blob_size_cuts_blob, &g_basic, VMA_ERR_CORRUPT, "runs past blob_buffer_size", "505"),
    OPENCASE(m_blob_size_cuts_length, &g_basic, VMA_ERR_CORRUPT, "cut length field", "505"),
    OPENCASE(m_cfg_ptr_out_of_range, &g_basic, VMA_ERR_CORRUPT, "not a blob start", "config 0"),
    OPENCASE(m_cfg_ptr_huge, &g_basic, VMA_ERR_CORRUPT, "not a blob start", "config 1"),
    OPENCASE(m_cfg_data_ptr_mid, &g_basic, VMA_ERR_CORRUPT, "not a blob start", "config data 1"),
    OPENCASE(m_cfg_ptr_inside_blob, &g_basic, VMA_ERR_CORRUPT, "not a blob start", "config 0"),
    OPENCASE(m_dev_ptr_mid, &g_basic, VMA_ERR_CORRUPT, "not a blob start", "device 2"),
    OPENCASE(m_dev_ptr_out_of_range, &g_basic, VMA_ERR_CORRUPT, "not a blob start", "device 1"),
    /* header: names */
    OPENCASE(m_cfg_name_empty, NULL, VMA_ERR_CORRUPT, "is empty", "config 0"),
    OPENCASE(m_dev_name_empty, NULL, VMA_ERR_CORRUPT, "is empty", "device 1"),
    OPENCASE(m_cfg_name_only_nul, NULL, VMA_ERR_CORRUPT, "invalid name", "config 0"),
    OPENCASE(m_cfg_name_unterminated, &g_basic, VMA_ERR_CORRUPT, "not one NUL-terminated string", "config 0"),
    OPENCASE(m_dev_name_unterminated, &g_basic, VMA_ERR_CORRUPT, "not one NUL-terminated string", "device 1"),
    OPENCASE(m_dev_name_inner_nul, &g_basic, VMA_ERR_CORRUPT, "not one NUL-terminated string", "device 1"),
    OPENCASE(m_dev_name_raw_unterminated, NULL, VMA_ERR_CORRUPT, "not one NUL-terminated string", "device 1"),
    OPENCASE(m_dup_config_names, NULL, VMA_ERR_CORRUPT, "same name", "qemu-server.conf"),
    OPENCASE(m_dup_device_names, NULL, VMA_ERR_CORRUPT, "same name", "drive-scsi0"),
    OPENCASE(m_cfg_name_slash, NULL, VMA_ERR_CORRUPT, "invalid name", "'a/b'"),
    OPENCASE(m_cfg_name_dot, NULL, VMA_ERR_CORRUPT, "invalid name", "'.'"),
    OPENCASE(m_cfg_name_dotdot, NULL, VMA_ERR_CORRUPT, "invalid name", "'..'"),
    OPENCASE(m_cfg_name_dotdot_x, NULL, VMA_ERR_CORRUPT, "invalid name", "'../x'"),
    OPENCASE(m_cfg_name_absolute, NULL, VMA_ERR_CORRUPT, "invalid name", "'/etc/passwd'"),
    OPENCASE(m_cfg_name_too_long, NULL, VMA_ERR_CORRUPT, "invalid name", "config 0"),
    OPENCASE(m_dev_name_slash, NULL, VMA_ERR_CORRUPT, "invalid name", "'a/b'"),
    OPENCASE(m_dev_name_dot, NULL, VMA_ERR_CORRUPT, "invalid name", "'.'"),
    OPENCASE(m_dev_name_dotdot, NULL, VMA_ERR_CORRUPT, "invalid name", "'..'"),
    OPENCASE(m_dev_name_too_long, NULL, VMA_ERR_CORRUPT, "invalid name", "device 1"),
    OPENCASE(m_cfg_name_newline, NULL, VMA_ERR_CORRUPT, "'x\\nDEV: dev_id=9' at header offset 12291", "config 0"),
    OPENCASE(m_cfg_name_cr, NULL, VMA_ERR_CORRUPT, "'x\\rCTIME: 0' at header offset 12291", "config 0"),
    OPENCASE(m_cfg_name_tab, NULL, VMA_ERR_CORRUPT, "'a\\tb'", "config 0"),
    OPENCASE(m_cfg_name_esc, NULL, VMA_ERR_CORRUPT, "'\\x1b[31mred'", "config 0"),
    OPENCASE(m_cfg_name_del, NULL, VMA_ERR_CORRUPT, "'del\\x7f'", "control characters"),
    OPENCASE(m_cfg_name_ctrl_a, NULL, VMA_ERR_CORRUPT, "'\\x01'", "config 0"),
    OPENCASE(m_dev_name_newline, NULL, VMA_ERR_CORRUPT, "'d\\nDEV: dev_id=9 size: 1' at header offset", "device 1"),
    OPENCASE(m_dev_name_cr, NULL, VMA_ERR_CORRUPT, "'d\\r'", "device 1"),
    OPENCASE(m_dev_name_tab, NULL, VMA_ERR_CORRUPT, "'\\td'", "device 1"),
    OPENCASE(m_dev_name_esc, NULL, VMA_ERR_CORRUPT, "'d\\x1b]0;title\\x07'", "device 1"),
    OPENCASE(m_dev_name_del, NULL, VMA_ERR_CORRUPT, "'\\x7f'", "device 1"),
    OPENCASE(m_dev_name_ctrl_1f, NULL, VMA_ERR_CORRUPT, "'d\\x1f'", "device 1"),
    OPENCASE(m_dev_name_nel, NULL, VMA_ERR_CORRUPT, "'d\\xc2\\x85DEV: x'", "device 1"),
    OPENCASE(m_cfg_name_csi, NULL, VMA_ERR_CORRUPT, "'\\xc2\\x9b2J'", "config 0"),
    /* header: devices */
    OPENCASE(m_dev_slot255, NULL, VMA_ERR_CORRUPT, "slot 255", "drive-scsi1"),
    OPENCASE(m_dev_size_over_max, &g_basic, VMA_ERR_CORRUPT, "281474976710657", "drive-scsi0"),
    OPENCASE(m_dev_size_u64max, &g_basic, VMA_ERR_CORRUPT, "18446744073709551615", "drive-efidisk0"),
    /* truncated header */
    OPENCASE(m_trunc_empty, &g_basic, VMA_ERR_TRUNCATED, "truncated inside the header", "0 of 12288"),
    OPENCASE(m_trunc_100, &g_basic, VMA_ERR_TRUNCATED, "truncated inside the header", "100 of 12288"),
    OPENCASE(m_trunc_fixed_minus1, &g_basic, VMA_ERR_TRUNCATED, "truncated inside the header", "12287 of 12288"),
    OPENCASE(m_trunc_fixed, &g_basic, VMA_ERR_TRUNCATED, "truncated inside the header", "12288 of 13312"),
    OPENCASE(m_trunc_blob_table, &g_basic, VMA_ERR_TRUNCATED, "truncated inside the header", "13000 of 13312"),
    OPENCASE(m_trunc_header_minus1, &g_basic, VMA_ERR_TRUNCATED, "truncated inside the header", "13311 of 13312"),
    /* extents */
    READCASE(m_ext_magic, &g_basic, VMA_ERR_CORRUPT, "bad extent magic", "extent 0 at offset 13312"),
    READCASE(m_ext_magic_header, &g_basic, VMA_ERR_CORRUPT, "bad extent magic", "extent 1 at offset 1238528"),
    READCASE(m_ext_reserved, &g_basic, VMA_ERR_CORRUPT, "reserved field", "extent 0 at offset 13312"),
    READCASE(m_ext_reserved_2nd, &g_basic, VMA_ERR_CORRUPT, "reserved field", "extent 2 at offset 2426880"),
    READCASE(m_ext_uuid, &g_basic, VMA_ERR_CORRUPT, "uuid differs", "extent 0 at offset 13312"),
    READCASE(m_ext_uuid_2nd, &g_basic, VMA_ERR_CORRUPT, "uuid differs", "extent 1 at offset 1238528"),
    READCASE(m_ext_md5_field, &g_basic, VMA_ERR_CORRUPT, "MD5 checksum mismatch", "extent 0 at offset 13312"),
    READCASE(m_ext_md5_blockinfo, &g_basic, VMA_ERR_CORRUPT, "MD5 checksum mismatch", "extent 1 at offset 1238528"),
    READCASE(m_ext_md5_unused_entry, &g_basic, VMA_ERR_CORRUPT, "MD5 checksum mismatch", "extent 2 at offset 2426880"),
    READCASE(m_ext_block_count_plus, &g_basic, VMA_ERR_CORRUPT, "disagrees with its masks", "extent 0 at offset 13312"),
    READCASE(m_ext_block_count_minus, &g_basic, VMA_ERR_CORRUPT, "disagrees with its masks", "extent 1 at offset 1238528"),
    READCASE(m_ext_mask_changed, &g_basic, VMA_ERR_CORRUPT, "disagrees with its masks", "extent 0 at offset 13312"),
    READCASE(m_ext_bi_reserved, &g_basic, VMA_ERR_CORRUPT, "reserved bits", "extent 0 at offset 13312"),
    READCASE(m_ext_bi_reserved_high, &g_basic, VMA_ERR_CORRUPT, "reserved bits", "extent 2 at offset 2426880"),
    READCASE(m_ext_unknown_dev, &g_basic, VMA_ERR_CORRUPT, "unknown dev_id 3", "extent 0 at offset 13312"),
    READCASE(m_ext_unknown_dev_255, &g_basic, VMA_ERR_CORRUPT, "unknown dev_id 255", "extent 1 at offset 1238528"),
    READCASE(m_ext_cluster_at_end, &g_basic, VMA_ERR_CORRUPT, "cluster 128 is past the end", "drive-scsi0"),
    READCASE(m_ext_cluster_far, &g_basic, VMA_ERR_CORRUPT, "cluster 4294967295 is past the end", "drive-scsi0"),
    READCASE(m_ext_cluster_past_partial, &g_basic, VMA_ERR_CORRUPT, "cluster 9 is past the end", "drive-efidisk0"),
    READCASE(m_ext_dup_cluster, &g_basic, VMA_ERR_CORRUPT, "duplicate cluster 0", "extent 0 at offset 13312"),
    READCASE(m_ext_dup_cluster_across, &g_basic, VMA_ERR_CORRUPT, "duplicate cluster", "extent 2 at offset 2426880"),
    READCASE(m_vms_out_of_order, NULL, VMA_ERR_CORRUPT, "vmstate cluster 1 out of order", "'vmstate'"),
    READCASE(m_vms_repeat, NULL, VMA_ERR_CORRUPT, "vmstate cluster 1 out of order", "extent 1"),
    READCASE(m_vms_gap, NULL, VMA_ERR_CORRUPT, "vmstate cluster 3 out of order", "extent 1"),
    /* truncation and structure */
    READCASE(m_no_extent, &g_basic, VMA_ERR_TRUNCATED, "without any extent", "offset 13312"),
    READCASE(m_trunc_ext_header, &g_basic, VMA_ERR_TRUNCATED, "inside the header of extent 0", "offset 13312"),
    READCASE(m_trunc_ext_header_1, &g_basic, VMA_ERR_TRUNCATED, "inside the header of extent 0", "offset 13312"),
    READCASE(m_trunc_ext_header_2nd, &g_basic, VMA_ERR_TRUNCATED, "inside the header of extent 1", "offset 1238528"),
    READCASE(m_trunc_ext_data, &g_basic, VMA_ERR_TRUNCATED, "inside the data of extent 0", "offset 13312"),
    READCASE(m_trunc_ext_data_first_byte, &g_basic, VMA_ERR_TRUNCATED, "inside the data of extent 1", "offset 1238528"),
    READCASE(m_trunc_last_byte, &g_basic, VMA_ERR_TRUNCATED, "inside the data of extent 2", "offset 2426880"),
    READCASE(m_trunc_boundary, &g_basic, VMA_ERR_TRUNCATED, "missing cluster", "drive-scsi0"),
    READCASE(m_trunc_boundary_last, &g_basic, VMA_ERR_TRUNCATED, "missing cluster", "'drive-"),
    READCASE(m_drop_extent, &g_basic, VMA_ERR_TRUNCATED, "missing cluster", "'drive-"),
    READCASE(m_drop_last_extent, &g_basic, VMA_ERR_TRUNCATED, "missing cluster", "'drive-"),
    READCASE(m_dup_extent, &g_basic, VMA_ERR_CORRUPT, "duplicate cluster", "extent 1 at offset 1238528"),
    READCASE(m_dup_last_extent, &g_basic, VMA_ERR_CORRUPT, "duplicate cluster", "extent 3 at offset 2959872"),
    READCASE(m_trailing_garbage, &g_basic, VMA_ERR_TRUNCATED, "inside the header of extent 3", "offset 2959872"),
    READCASE(m_trailing_zero_header, &g_basic, VMA_ERR_CORRUPT, "bad extent magic", "extent 3 at offset 2959872"),
    READCASE(m_std_missing_partial, NULL, VMA_ERR_TRUNCATED, "missing cluster 3 of 4", "drive-scsi0"),
    READCASE(m_std_missing_dev2, NULL, VMA_ERR_TRUNCATED, "missing cluster 0 of 1", "drive-efidisk0"),
};

/* ---------------------------------------------------------------- */
/* what a reader must accept                                         */
/* ---------------------------------------------------------------- */

static void expect_ok(const struct vt_buf *b, uint64_t clusters, int check_data,
                      struct result *out)
{
    struct result res;
    run_file(b->p, b->len, check_data, &res);
    if (res.open_rc != VMA_OK || res.read_rc != VMA_OK)
        fail_msg("file: %s / %s: %s", vma_status_name(res.open_rc), vma_status_name(res.read_rc),
                 res.msg);
    assert_int_equal(res.seen.clusters, clusters);
    assert_int_equal(res.seen.bad_data, 0);
    assert_string_equal(res.msg, "");
    run_pipe(b->p, b->len, check_data, &res);
    if (res.open_rc != VMA_OK || res.read_rc != VMA_OK)
        fail_msg("pipe: %s / %s: %s", vma_status_name(res.open_rc), vma_status_name(res.read_rc),
                 res.msg);
    assert_int_equal(res.seen.clusters, clusters);
    assert_int_equal(res.seen.bad_data, 0);
    if (out != NULL)
        *out = res;
}

static void ok_golden_basic(void **state)
{
    (void)state;
    struct result res;
    expect_ok(&g_basic, B_CLUSTERS, 0, &res);
    assert_int_equal(res.configs, 2);
    assert_int_equal(res.devices, 2);
}

static void ok_golden_diskless(void **state)
{
    (void)state;
    struct result res;
    expect_ok(&g_diskless, 0, 0, &res);
    assert_int_equal(res.configs, 2);
    assert_int_equal(res.devices, 0);
}

static void ok_built_std(void **state)
{
    (void)state;
    struct result res;
    expect_ok(&g_std, 5, 1, &res);
    assert_int_equal(res.configs, 1);
    assert_int_equal(res.devices, 2);
}

static void ok_built_vmstate(void **state)
{
    (void)state;
    expect_ok(&g_vms, 4, 1, NULL);
}

/* Re-signing an unchanged header and extent changes nothing. */
static void ok_resigned_unchanged(void **state)
{
    (void)state;
    struct vt_buf b = {0};
    vt_copy(&b, g_basic.p, g_basic.len);
    resign(&b);
    resign_ext(&b, B_E0);
    resign_ext(&b, B_E1);
    resign_ext(&b, B_E2);
    assert_memory_equal(b.p, g_basic.p, b.len);
    vt_free(&b);
}

/* Writers before 2020 could set mask bits past the device end (even a
 * full mask) with garbage: a reader accepts them. */
static void ok_mask_past_end(void **state)
{
    (void)state;
    struct vt_hdr *h = hdr_new();
    h->dev[1].name.str = "drive-scsi0";
    h->dev[1].size = 5000; /* blocks 0 and 1 of cluster 0 */
    h->dev[2].name.str = "drive-scsi1";
    h->dev[2].size = 65536 + 512;
    struct vt_buf b = {0};
    vt_header_build(&b, h);
    static const struct vt_ent e[] = {{1, 0, 0xffff}, {2, 0, 0x0f0f}, {2, 1, 0xffff}};
    vt_extent(&b, UUID, e, 3);
    expect_ok(&b, 3, 1, NULL);
    vt_free(&b);
    free(h);
}

/* header_size may be any multiple of 512 that holds the blob buffer. */
static void ok_large_header_size(void **state)
{
    (void)state;
    struct vt_hdr *h = hdr_new();
    h->nconf = 1;
    h->conf[0].name.str = "qemu-server.conf";
    h->conf[0].data = std_conf;
    h->conf[0].len = strlen(std_conf);
    h->dev[7].name.str = "drive-virtio7";
    h->dev[7].size = 4096;
    h->extra_table = 8 * 512;
    struct vt_buf b = {0};
    vt_header_build(&b, h);
    static const struct vt_ent e[] = {{7, 0, 0x0001}};
    vt_extent(&b, UUID, e, 1);
    struct result res;
    expect_ok(&b, 1, 1, &res);
    assert_int_equal(res.devices, 1);
    vt_free(&b);
    free(h);
}

/* A config slot is in use only when both offsets are set. */
static void ok_config_slot_name_only(void **state)
{
    (void)state;
    struct vt_buf b = {0};
    vt_copy(&b, g_basic.p, g_basic.len);
    put32(&b, CFG_DATA(1), 0);
    resign(&b);
    struct result res;
    expect_ok(&b, B_CLUSTERS, 0, &res);
    assert_int_equal(res.configs, 1);
    vt_free(&b);
}

/* A named device slot of size 0 is not in use. */
static void ok_device_size_zero(void **state)
{
    (void)state;
    struct vt_hdr *h = hdr_new();
    h->dev[1].name.str = "drive-scsi0";
    h->dev[1].size = 65536;
    h->dev[2].name.str = "unused";
    h->dev[2].size = 0;
    struct vt_buf b = {0};
    vt_header_build(&b, h);
    static const struct vt_ent e[] = {{1, 0, 0x0001}};
    vt_extent(&b, UUID, e, 1);
    struct result res;
    expect_ok(&b, 1, 1, &res);
    assert_int_equal(res.devices, 1);
    vt_free(&b);
    free(h);
}

/* Unused entries (dev_id 0) are skipped; empty extents are fine anywhere. */
static void ok_unused_entries_and_empty_extents(void **state)
{
    (void)state;
    struct vt_hdr *h = hdr_new();
    h->dev[1].name.str = "drive-scsi0";
    h->dev[1].size = 3 * 65536;
    struct vt_buf b = {0};
    vt_header_build(&b, h);
    vt_extent(&b, UUID, NULL, 0);
    static const struct vt_ent e0[] = {{0, 0, 0}, {1, 2, 0x1000}, {0, 0, 0}, {1, 0, 0}};
    vt_extent(&b, UUID, e0, 4);
    vt_extent(&b, UUID, NULL, 0);
    static const struct vt_ent e1[] = {{1, 1, 0xffff}};
    vt_extent(&b, UUID, e1, 1);
    vt_extent(&b, UUID, NULL, 0);
    expect_ok(&b, 3, 1, NULL);
    vt_free(&b);
    free(h);
}

/* The vmstate size is not a bound on its clusters. */
static void ok_vmstate_past_size(void **state)
{
    (void)state;
    struct vt_hdr *h = hdr_new();
    h->dev[1].name.str = "vmstate";
    h->dev[1].size = 100;
    struct vt_buf b = {0};
    vt_header_build(&b, h);
    static const struct vt_ent e[] = {{1, 0, 0xffff}, {1, 1, 0}, {1, 2, 0x0101}};
    vt_extent(&b, UUID, e, 3);
    expect_ok(&b, 3, 1, NULL);
    vt_free(&b);
    free(h);
}

/* Clusters in any order, interleaved, over many extents; slot 254 works. */
static void ok_any_order(void **state)
{
    (void)state;
    struct vt_hdr *h = hdr_new();
    h->dev[3].name.str = "drive-a";
    h->dev[3].size = 100 * 65536;
    h->dev[254].name.str = "drive-b";
    h->dev[254].size = 70 * 65536 + 1;
    struct vt_buf b = {0};
    vt_header_build(&b, h);
    struct vt_ent all[171];
    unsigned n = 0;
    for (unsigned i = 0; i < 100; i++)
        all[n++] = (struct vt_ent){3, 99 - i, (uint16_t)(i * 2654435761u >> 16)};
    for (unsigned i = 0; i < 71; i++)
        all[n++] = (struct vt_ent){254, (i * 37) % 71, (uint16_t)(i & 1 ? 0 : 0x8001)};
    /* interleave: pick alternately from both halves */
    struct vt_ent mix[171];
    unsigned a = 0, c = 100, m = 0;
    while (m < n) {
        if (a < 100)
            mix[m++] = all[a++];
        if (c < n)
            mix[m++] = all[c++];
    }
    for (unsigned i = 0; i < n; i += 59)
        vt_extent(&b, UUID, mix + i, n - i < 59 ? n - i : 59);
    expect_ok(&b, n, 1, NULL);
    vt_free(&b);
    free(h);
}

/* Reading from a pipe, the reader consumes the archive without seeking:
 * bytes after the archive's last extent in the same stream are read as
 * another extent, so nothing else may follow (covered above); and a
 * descriptor that is not at offset 0 is read from its position. */
static void ok_fd_position(void **state)
{
    (void)state;
    char path[4200];
    snprintf(path, sizeof(path), "%s/pos-XXXXXX", g_tmpdir);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(vt_write_fd(fd, "prefix", 6), 0);
    assert_int_equal(vt_write_fd(fd, g_std.p, g_std.len), 0);
    assert_int_equal(lseek(fd, 6, SEEK_SET), 6);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_int_equal(vma_reader_open_fd(r, fd), VMA_OK);
    struct seen s = {0, 0, 1};
    assert_int_equal(vma_reader_read(r, count_cb, &s), VMA_OK);
    assert_int_equal(s.clusters, 5);
    assert_int_equal(s.bad_data, 0);
    vma_reader_free(r);
    /* the caller's descriptor is still open */
    assert_int_equal(close(fd), 0);
    unlink(path);
}

static void ok_free_null(void **state)
{
    (void)state;
    vma_reader_free(NULL);
    vma_reader *r = vma_reader_new();
    assert_non_null(r);
    assert_string_equal(vma_reader_error(r), "");
    vma_reader_free(r);
}

/* ---------------------------------------------------------------- */

static int load(const char *name, struct vt_buf *b)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", golden_dir, name);
    if (vt_read_file(path, b) != 0) {
        fprintf(stderr, "negative_reader: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        golden_dir = argv[1];
    signal(SIGPIPE, SIG_IGN);
    if (load("basic.vma", &g_basic) != 0 || load("diskless.vma", &g_diskless) != 0)
        return 1;
    if (g_basic.len != B_LEN) {
        fprintf(stderr, "negative_reader: basic.vma is not the expected golden file\n");
        return 1;
    }
    build_std(&g_std, std_e0, 3, std_e1, 2);
    build_vms(&g_vms, vms_e0, 3, vms_e1, 1);
    if (vt_mkdtemp(g_tmpdir, sizeof(g_tmpdir), "vma-neg") == NULL) {
        perror("mkdtemp");
        return 1;
    }

    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(ok_golden_basic),
        cmocka_unit_test(ok_golden_diskless),
        cmocka_unit_test(ok_built_std),
        cmocka_unit_test(ok_built_vmstate),
        cmocka_unit_test(ok_resigned_unchanged),
        cmocka_unit_test(ok_mask_past_end),
        cmocka_unit_test(ok_large_header_size),
        cmocka_unit_test(ok_config_slot_name_only),
        cmocka_unit_test(ok_device_size_zero),
        cmocka_unit_test(ok_unused_entries_and_empty_extents),
        cmocka_unit_test(ok_vmstate_past_size),
        cmocka_unit_test(ok_any_order),
        cmocka_unit_test(ok_fd_position),
        cmocka_unit_test(ok_free_null),
    };
    size_t nfixed = sizeof(fixed) / sizeof(fixed[0]);
    size_t ncases = sizeof(cases) / sizeof(cases[0]);
    struct CMUnitTest *tests = calloc(nfixed + ncases, sizeof(*tests));
    if (tests == NULL)
        return 1;
    memcpy(tests, fixed, sizeof(fixed));
    for (size_t i = 0; i < ncases; i++) {
        tests[nfixed + i].name = cases[i].name;
        tests[nfixed + i].test_func = run_case;
        tests[nfixed + i].initial_state = (void *)&cases[i];
    }
    int rc = _cmocka_run_group_tests("negative_reader", tests, nfixed + ncases, NULL, NULL);
    free(tests);
    vt_rm_tree(g_tmpdir);
    vt_free(&g_basic);
    vt_free(&g_diskless);
    vt_free(&g_std);
    vt_free(&g_vms);
    return rc;
}
