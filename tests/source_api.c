/*
 * The image side of create through the public API: vma_detect_image_format()
 * on signatures, plain data, empty files and pipes (nothing consumed, the
 * file offset kept); vma_path_needs_nbd()'s rule; vma_source's argument and
 * state errors; a qcow2 written through vma_writer_write_device_source()
 * and read back; a cancel before the open and a writer cancelled before the
 * device is read. The CLI test tests/cli/nbd_create.sh covers the formats,
 * NBD exports and failures of qemu-nbd.
 *
 * Usage: source_api (needs qemu-img and qemu-nbd in PATH for the last two
 * groups; skipped without them)
 * SPDX-License-Identifier: MIT
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "rmtree.h"
#include "vma.h"

static char dir[] = "/tmp/vma-source-api.XXXXXX";

static char *path_of(const char *name)
{
    return vt_path_in(dir, name);
}

/* A file of `len` bytes: zeros, with `magic` at offset `at`. */
static int file_with(const char *name, size_t len, size_t at, const void *magic, size_t n)
{
    unsigned char *b = calloc(1, len ? len : 1);
    assert_non_null(b);
    if (n)
        memcpy(b + at, magic, n);
    int fd = open(path_of(name), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    free(b);
    return fd;
}

static void guess_is(const char *name, size_t len, size_t at, const void *magic, size_t n,
                     const char *want)
{
    int fd = file_with(name, len, at, magic, n);
    assert_int_equal(lseek(fd, 7, SEEK_SET), 7);
    const char *got = vma_detect_image_format(fd);
    if (want == NULL)
        assert_null(got);
    else
        assert_string_equal(got, want);
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 7); /* offset kept */
    close(fd);
}

static void test_guess_signatures(void **state)
{
    (void)state;
    guess_is("qcow2", 4096, 0, "QFI\xfb\0\0\0\3", 8, "qcow2");
    guess_is("qcow", 4096, 0, "QFI\xfb\0\0\0\1", 8, "qcow");
    guess_is("vmdk", 4096, 0, "KDMV", 4, "vmdk");
    guess_is("cowd", 4096, 0, "COWD", 4, "vmdk");
    guess_is("desc", 100, 0, "# Disk DescriptorFile\nversion=1\n", 32, "vmdk");
    guess_is("vdi", 4096, 64, "\x7f\x10\xda\xbe", 4, "vdi");
    guess_is("vhdx", 4096, 0, "vhdxfile", 8, "vhdx");
    guess_is("qed", 4096, 0, "QED\0", 4, "qed");
    guess_is("vpc", 4096, 0, "conectix", 8, "vpc");
    guess_is("vpcfixed", 1 << 20, (1 << 20) - 512, "conectix", 8, "vpc");
}

static void test_guess_none(void **state)
{
    (void)state;
    guess_is("zero", 1 << 16, 0, "", 0, NULL);
    guess_is("empty", 0, 0, "", 0, NULL);
    guess_is("short", 3, 0, "QFI", 3, NULL);              /* cut magic */
    guess_is("vdi-early", 4096, 60, "\x7f\x10\xda\xbe", 4, NULL); /* wrong offset */
    guess_is("qed-nonul", 4096, 0, "QEDX", 4, NULL);
    guess_is("footer-small", 600, 600 - 512, "conectix", 8, NULL); /* no room for a disk */
    guess_is("footer-off", 4096, 4096 - 511, "conectix", 8, NULL);
}

/* A pipe cannot be read at an offset: no guess, and nothing consumed. */
static void test_guess_pipe(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "QFI\xfb", 4), 4);
    assert_null(vma_detect_image_format(p[0]));
    char b[4];
    assert_int_equal(read(p[0], b, 4), 4);
    assert_memory_equal(b, "QFI\xfb", 4);
    close(p[0]);
    close(p[1]);
    assert_null(vma_detect_image_format(-1));
}

static void test_needed(void **state)
{
    (void)state;
    assert_int_equal(vma_path_needs_nbd("raw", "/var/lib/vz/disk.raw"), 0);
    assert_int_equal(vma_path_needs_nbd(NULL, "/dev/sda"), 0);
    assert_int_equal(vma_path_needs_nbd("raw", "./a:b"), 0);
    assert_int_equal(vma_path_needs_nbd("qcow2", "/x/disk.qcow2"), 1);
    assert_int_equal(vma_path_needs_nbd("raw", "rbd:pool/img:conf=/etc/ceph.conf"), 1);
    assert_int_equal(vma_path_needs_nbd("raw", "iscsi://host/iqn.x/0"), 1);
    assert_int_equal(vma_path_needs_nbd("raw", "nbd+unix:///?socket=/s"), 1);
}

static void test_source_states(void **state)
{
    (void)state;
    vma_source_free(NULL);
    vma_source *s = vma_source_new();
    assert_non_null(s);
    assert_string_equal(vma_source_error(s), "");
    assert_true(vma_source_size(s) == 0);
    /* A raw file is read directly, not through NBD. */
    assert_int_equal(vma_source_open(s, "raw", path_of("zero")), VMA_ERR_INVALID);
    assert_non_null(strstr(vma_source_error(s), "raw file"));
    /* The calling thread's message too, as for every handle. */
    assert_string_equal(vma_last_error(), vma_source_error(s));
    /* Once per source. */
    assert_int_equal(vma_source_open(s, "qcow2", path_of("qcow2")), VMA_ERR_INVALID);
    assert_non_null(strstr(vma_last_error(), "already opened"));
    vma_source_free(s);

    s = vma_source_new();
    assert_int_equal(vma_source_open(s, NULL, "x"), VMA_ERR_INVALID);
    assert_non_null(strstr(vma_last_error(), "no format given"));
    vma_source_free(s);

    /* A source never opened cannot feed a device; the writer says so. */
    vma_writer *w = vma_writer_new();
    assert_non_null(w);
    int null_fd = open("/dev/null", O_WRONLY);
    assert_int_equal(vma_writer_open_fd(w, null_fd), VMA_OK);
    s = vma_source_new();
    int id = vma_writer_add_device(w, "d0", 1 << 20);
    assert_true(id > 0);
    assert_int_equal(vma_writer_write_device_source(w, (unsigned)id, s), VMA_ERR_INVALID);
    assert_non_null(strstr(vma_writer_error(w), "not open"));
    assert_int_equal(vma_writer_status(w), VMA_OK); /* refused, not ended */
    vma_source_free(s);
    vma_writer_free(w);
    close(null_fd);
}

static int have_qemu(void)
{
    return system("command -v qemu-img >/dev/null && command -v qemu-nbd >/dev/null") == 0;
}

/* 4 MiB qcow2: 1 MiB of 0x5a at 1 MiB, the rest unallocated. */
static void make_qcow2(const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "qemu-img create -q -f qcow2 '%s' 4M && "
             "qemu-io -f qcow2 -c 'write -P 0x5a 1M 1M' '%s' >/dev/null", path, path);
    assert_int_equal(system(cmd), 0);
}

/* Write the source's image into a new archive as drive-scsi0; it must hold
 * make_qcow2()'s 4 MiB with 3 MiB of zeros. */
static void write_from(vma_source *s, const char *archive)
{
    vma_writer *w = vma_writer_new();
    unlink(archive);
    assert_int_equal(vma_writer_open_path(w, archive), VMA_OK);
    int id = vma_writer_add_device(w, "drive-scsi0", vma_source_size(s));
    assert_true(id > 0);
    assert_int_equal(vma_writer_write_device_source(w, (unsigned)id, s), VMA_OK);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    uint64_t bytes = 0, zeros = 0;
    assert_int_equal(vma_writer_device_stats(w, (unsigned)id, &bytes, &zeros), VMA_OK);
    assert_true(bytes == 4u << 20);
    assert_true(zeros == 3u << 20);
    vma_writer_free(w);
}

static void test_qcow2_roundtrip(void **state)
{
    (void)state;
    if (!have_qemu())
        skip();
    const char *img = path_of("r.qcow2");
    make_qcow2(img);
    vma_source *s = vma_source_new();
    assert_int_equal(vma_source_open(s, "qcow2", img), VMA_OK);
    assert_true(vma_source_size(s) == 4u << 20);

    const char *archive = path_of("r.vma");
    write_from(s, archive);
    vma_source_free(s);

    /* Read back: the data cluster by cluster. */
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, archive), VMA_OK);
    assert_int_equal(vma_reader_read(r, NULL, NULL), VMA_OK);
    uint64_t clusters = 0, zc = 0, zb = 0;
    vma_reader_counters(r, &clusters, &zc, &zb);
    assert_true(clusters == 64);
    assert_true(zc == 3u << 20);
    vma_reader_free(r);
}

static void test_cancel(void **state)
{
    (void)state;
    if (!have_qemu())
        skip();
    const char *img = path_of("c.qcow2");
    make_qcow2(img);
    /* Cancelled before the open: the open fails, nothing started. */
    vma_source *s = vma_source_new();
    vma_source_cancel(s);
    assert_int_equal(vma_source_open(s, "qcow2", img), VMA_ERR_CANCELED);
    vma_source_free(s);

    /* A cancelled writer reads nothing and stops the source's qemu-nbd. */
    s = vma_source_new();
    assert_int_equal(vma_source_open(s, "qcow2", img), VMA_OK);
    vma_writer *w = vma_writer_new();
    const char *archive = path_of("c.vma");
    unlink(archive);
    assert_int_equal(vma_writer_open_path(w, archive), VMA_OK);
    int id = vma_writer_add_device(w, "d0", vma_source_size(s));
    vma_writer_cancel(w);
    assert_int_equal(vma_writer_write_device_source(w, (unsigned)id, s), VMA_ERR_CANCELED);
    vma_writer_free(w);
    vma_source_free(s);
    assert_int_equal(access(archive, F_OK), -1);
}

/* An opened source crosses a fork(): in the child its calls are refused
 * and vma_source_free() leaves the parent's qemu-nbd alone; the parent
 * then reads the whole image through it. */
static void test_fork(void **state)
{
    (void)state;
    if (!have_qemu())
        skip();
    const char *img = path_of("f.qcow2");
    make_qcow2(img);
    vma_source *s = vma_source_new();
    assert_int_equal(vma_source_open(s, "qcow2", img), VMA_OK);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        int code = 0;
        vma_writer *w = vma_writer_new();
        int id = w != NULL && vma_writer_open_path(w, path_of("child.vma")) == VMA_OK
                     ? vma_writer_add_device(w, "d0", vma_source_size(s))
                     : -1;
        if (id <= 0)
            code = 1;
        else if (vma_writer_write_device_source(w, (unsigned)id, s) != VMA_ERR_INVALID ||
                 strstr(vma_writer_error(w), "after fork") == NULL)
            code = 2;
        else if (vma_source_open(s, "qcow2", img) != VMA_ERR_INVALID)
            code = 3;
        vma_writer_free(w);
        vma_source_cancel(s);
        vma_source_free(s);
        _exit(code);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    write_from(s, path_of("f.vma"));
    vma_source_free(s);
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 99;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guess_signatures),
        cmocka_unit_test(test_guess_none),
        cmocka_unit_test(test_guess_pipe),
        cmocka_unit_test(test_needed),
        cmocka_unit_test(test_source_states),
        cmocka_unit_test(test_qcow2_roundtrip),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_fork),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    vt_rm_tree(dir);
    return rc;
}
