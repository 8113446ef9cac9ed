/*
 * Public API tests of the live backup (vma_backup_*, include/vma.h only)
 * against Debian's qemu-system-x86_64 (TCG, -S: no guest runs), started
 * here with a Proxmox-style -drive qcow2 disk on scsi-hd, a -blockdev raw
 * disk of an odd size on virtio-blk, and an empty CD-ROM:
 * - open lists the two disks (not the CD-ROM) with their names and sizes;
 * - a run into a file: the archive reads back with the reader, every
 *   byte equal to the images; the log callback tells the point in time;
 * - a cancel from another thread once the copy waits on a pipe nobody
 *   reads (full): VMA_ERR_CANCELED, and nothing of ours is left in QEMU
 *   (vma_backup_cleanup() finds nothing); the latency is printed;
 * - refusals: an unknown name to select, a second open or run, a missing
 *   socket, a socket that is not QMP, a run before open (the writer is
 *   left untouched).
 * What a killed vma leaves and `vma backup --cleanup` are tested through
 * the command, in tests/backup/live.py.
 * QEMU is always killed. Skips (77) without qemu-system-x86_64/qemu-img.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rmtree.h"
#include "vma.h"

#define D0_SIZE (64u << 20)
#define D1_SIZE ((10u << 20) + 4608u) /* not a multiple of 64 KiB */

static char g_tmp[1024];
static pid_t g_qemu = -1;
static char g_qmp[1200];

static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void stop_qemu(void)
{
    if (g_qemu > 0) {
        kill(g_qemu, SIGKILL);
        waitpid(g_qemu, NULL, 0);
        g_qemu = -1;
    }
}

static int start_qemu(void)
{
    if (sh("cd '%s' && qemu-img create -q -f qcow2 d0.qcow2 %u && "
           "qemu-io -c 'write -P 0x11 0 8M' -c 'write -P 0x22 60M 4M' d0.qcow2 >/dev/null && "
           "truncate -s %u d1.raw && "
           "head -c 3145728 /dev/urandom | dd of=d1.raw conv=notrunc status=none && "
           "printf tail | dd of=d1.raw bs=1 seek=%u conv=notrunc status=none && "
           "qemu-img convert -O raw d0.qcow2 d0.raw",
           g_tmp, D0_SIZE, D1_SIZE, D1_SIZE - 4) != 0)
        return -1;
    snprintf(g_qmp, sizeof(g_qmp), "%s/vm.qmp", g_tmp);
    char qmp_opt[1300], drive[1300], blockdev[1300];
    snprintf(qmp_opt, sizeof(qmp_opt), "unix:%s,server=on,wait=off", g_qmp);
    snprintf(drive, sizeof(drive), "if=none,id=drive-scsi0,file=%s/d0.qcow2,format=qcow2", g_tmp);
    snprintf(blockdev, sizeof(blockdev), "driver=file,filename=%s/d1.raw,node-name=file1", g_tmp);
    g_qemu = fork();
    if (g_qemu < 0)
        return -1;
    if (g_qemu == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "q35,accel=tcg",
               "-nodefaults", "-display", "none", "-m", "64", "-S", "-qmp", qmp_opt, "-drive",
               drive, "-device", "virtio-scsi-pci,id=scsihw0", "-device",
               "scsi-hd,drive=drive-scsi0,id=scsi0", "-blockdev", blockdev, "-blockdev",
               "driver=raw,file=file1,node-name=disk1", "-device",
               "virtio-blk-pci,drive=disk1,id=virtio1", "-device", "ide-cd,id=cd0",
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 600; i++) { /* up to 30 s */
        struct stat st;
        if (stat(g_qmp, &st) == 0 && S_ISSOCK(st.st_mode))
            return 0;
        if (waitpid(g_qemu, NULL, WNOHANG) == g_qemu) {
            g_qemu = -1;
            return -1;
        }
        usleep(50000);
    }
    return -1;
}

static int setup(void **state)
{
    (void)state;
    if (vt_mkdtemp(g_tmp, sizeof(g_tmp), "vma-backup-api") == NULL)
        return -1;
    if (start_qemu() != 0) {
        fprintf(stderr, "cannot start qemu-system-x86_64 (see %s)\n", g_tmp);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    stop_qemu();
    vt_rm_tree(g_tmp);
    return 0;
}

/* What vma_backup_cleanup() finds of ours in QEMU: must be 0 after a run. */
static unsigned leftovers(void)
{
    vma_backup *b = vma_backup_new();
    unsigned removed = 99;
    assert_non_null(b);
    assert_int_equal(vma_backup_cleanup(b, g_qmp, &removed), VMA_OK);
    vma_backup_free(b);
    return removed;
}

static void test_open_lists_disks(void **state)
{
    (void)state;
    vma_backup *b = vma_backup_new();
    assert_non_null(b);
    assert_int_equal(vma_backup_open(b, g_qmp), VMA_OK);
    assert_true(vma_backup_qemu_version(b) >= 50200);
    assert_int_equal(vma_backup_device_count(b), 2); /* the CD-ROM is left out */
    assert_string_equal(vma_backup_device_name(b, 0), "drive-scsi0");
    assert_int_equal(vma_backup_device_size(b, 0), D0_SIZE);
    assert_string_equal(vma_backup_device_name(b, 1), "drive-virtio1");
    assert_int_equal(vma_backup_device_size(b, 1), D1_SIZE);
    assert_string_equal(vma_backup_device_node(b, 1), "disk1");
    assert_null(vma_backup_device_name(b, 2));
    assert_int_equal(vma_backup_device_id(b, 0), 0); /* before a run */
    assert_int_equal(vma_backup_select(b, "drive-nothing"), VMA_ERR_NOT_FOUND);
    assert_non_null(strstr(vma_backup_error(b), "drive-nothing"));
    assert_int_equal(vma_backup_open(b, g_qmp), VMA_ERR_INVALID); /* once */
    vma_backup_free(b);
    vma_backup_free(NULL);
}

struct log {
    int steps, warnings;
    char last[512];
};

static void on_log(void *opaque, int warning, const char *line)
{
    struct log *l = opaque;
    if (warning)
        l->warnings++;
    else
        l->steps++;
    snprintf(l->last, sizeof(l->last), "%s", line);
}

/* Every cluster of a device against the image file it came from. */
struct cmp {
    int fd[3];       /* by dev_id */
    uint64_t size[3];
    unsigned bad;
};

static int compare_cluster(void *opaque, unsigned dev_id, uint32_t cluster_num, uint16_t mask,
                           const unsigned char *data)
{
    struct cmp *c = opaque;
    unsigned char want[VMA_CLUSTER_SIZE], got[VMA_CLUSTER_SIZE];
    uint64_t off = (uint64_t)cluster_num * VMA_CLUSTER_SIZE;
    memset(want, 0, sizeof(want));
    if (dev_id < 1 || dev_id > 2 || pread(c->fd[dev_id], want, sizeof(want), (off_t)off) < 0) {
        c->bad++;
        return 0;
    }
    vma_cluster_expand(mask, data, got);
    size_t n = off + VMA_CLUSTER_SIZE <= c->size[dev_id] ? VMA_CLUSTER_SIZE
                                                        : (size_t)(c->size[dev_id] - off);
    if (memcmp(want, got, n) != 0)
        c->bad++;
    return 0;
}

static void test_run_into_file(void **state)
{
    (void)state;
    char archive[1200];
    struct log log = {0};
    snprintf(archive, sizeof(archive), "%s/run.vma", g_tmp);
    vma_backup *b = vma_backup_new();
    vma_writer *w = vma_writer_new();
    assert_non_null(b);
    assert_non_null(w);
    vma_backup_set_log(b, on_log, &log);
    assert_int_equal(vma_backup_set_fleecing_dir(b, g_tmp), VMA_OK);
    assert_int_equal(vma_backup_set_timeout(b, 0), VMA_ERR_INVALID);
    assert_int_equal(vma_backup_set_timeout(b, 30), VMA_OK);
    assert_int_equal(vma_backup_open(b, g_qmp), VMA_OK);
    assert_int_equal(vma_writer_add_config(w, "qemu-server.conf", "memory: 64\n", 11), VMA_OK);
    assert_int_equal(vma_writer_open_path(w, archive), VMA_OK);
    assert_int_equal(vma_backup_run(b, w), VMA_OK);
    assert_int_equal(vma_backup_device_id(b, 0), 1);
    assert_int_equal(vma_backup_device_id(b, 1), 2);
    uint64_t bytes = 0, zeros = 0;
    assert_int_equal(vma_writer_device_stats(w, 2, &bytes, &zeros), VMA_OK);
    assert_int_equal(bytes, (D1_SIZE + 511) & ~511u);
    assert_int_equal(vma_writer_finish(w), VMA_OK);
    assert_true(log.steps > 0);
    assert_int_equal(log.warnings, 0);
    assert_true(vma_backup_freeze_seconds(b) < 0); /* no agent */
    assert_int_equal(vma_backup_run(b, w), VMA_ERR_INVALID); /* once */
    vma_writer_free(w);
    vma_backup_free(b);
    assert_int_equal(leftovers(), 0);

    /* The archive, read back: every byte as in the images. */
    vma_reader *r = vma_reader_new();
    assert_int_equal(vma_reader_open_path(r, archive), VMA_OK);
    assert_string_equal(vma_reader_device_name(r, 1), "drive-scsi0");
    assert_string_equal(vma_reader_device_name(r, 2), "drive-virtio1");
    assert_int_equal(vma_reader_device_size(r, 2), (D1_SIZE + 511) & ~511u);
    struct cmp c = {.fd = {-1, -1, -1}, .size = {0, D0_SIZE, D1_SIZE}};
    char p0[1200], p1[1200];
    snprintf(p0, sizeof(p0), "%s/d0.raw", g_tmp);
    snprintf(p1, sizeof(p1), "%s/d1.raw", g_tmp);
    c.fd[1] = open(p0, O_RDONLY);
    c.fd[2] = open(p1, O_RDONLY);
    assert_true(c.fd[1] >= 0 && c.fd[2] >= 0);
    assert_int_equal(vma_reader_read(r, compare_cluster, &c), VMA_OK);
    assert_int_equal(c.bad, 0);
    close(c.fd[1]);
    close(c.fd[2]);
    vma_reader_free(r);
}

struct canceller {
    vma_backup *b;
    int pipe_read; /* the archive's pipe, which nobody reads */
    double cancelled_at;
};

/* Cancel once the pipe is full: the writer then waits in poll(2). */
static void *cancel_main(void *arg)
{
    struct canceller *c = arg;
    int queued = 0;
    while (ioctl(c->pipe_read, FIONREAD, &queued) == 0 && queued < 65536)
        usleep(1000);
    usleep(20000);
    c->cancelled_at = now();
    vma_backup_cancel(c->b);
    return NULL;
}

static void test_cancel_from_thread(void **state)
{
    (void)state;
    int pipefd[2];
    /* Nobody reads it; O_NONBLOCK, so that the writer waits in poll(2),
     * where a cancel ends the wait (vma_writer_cancel()). */
    assert_int_equal(pipe2(pipefd, O_NONBLOCK), 0);
    struct canceller c = {.pipe_read = pipefd[0]};
    vma_backup *b = c.b = vma_backup_new();
    vma_writer *w = vma_writer_new();
    assert_int_equal(vma_backup_set_fleecing_dir(b, g_tmp), VMA_OK);
    assert_int_equal(vma_backup_open(b, g_qmp), VMA_OK);
    assert_int_equal(vma_writer_open_fd(w, pipefd[1]), VMA_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_main, &c), 0);
    int rc = vma_backup_run(b, w);
    double returned = now();
    pthread_join(t, NULL);
    assert_int_equal(rc, VMA_ERR_CANCELED);
    assert_int_equal(vma_writer_status(w), VMA_ERR_CANCELED);
    assert_int_equal(vma_writer_finish(w), VMA_ERR_CANCELED);
    printf("cancel -> vma_backup_run returned, QEMU cleaned up: %.1f ms\n",
           (returned - c.cancelled_at) * 1000);
    vma_writer_free(w);
    vma_backup_free(b);
    close(pipefd[0]);
    close(pipefd[1]);
    assert_int_equal(leftovers(), 0);
}

static void test_refusals(void **state)
{
    (void)state;
    char path[1200];
    vma_backup *b = vma_backup_new();
    snprintf(path, sizeof(path), "%s/no-such.qmp", g_tmp);
    assert_int_equal(vma_backup_open(b, path), VMA_ERR_IO);
    assert_non_null(strstr(vma_backup_error(b), "no-such.qmp"));
    vma_backup_free(b);

    /* A listening socket that speaks first, and not QMP. */
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(path, sizeof(path), "%s/not-qmp.sock", g_tmp);
    assert_true(strlen(path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(ls, 1), 0);
    pid_t child = fork();
    if (child == 0) {
        int c = accept(ls, NULL, NULL);
        if (c >= 0 && write(c, "NBDMAGIC\n", 9) < 0)
            _exit(1);
        sleep(5);
        _exit(0);
    }
    b = vma_backup_new();
    assert_int_equal(vma_backup_set_timeout(b, 5), VMA_OK);
    assert_int_equal(vma_backup_open(b, path), VMA_ERR_IO);
    assert_non_null(strstr(vma_backup_error(b), "not a QMP socket"));
    vma_backup_free(b);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    close(ls);

    /* Run before open; cleanup of nothing; select before open. */
    b = vma_backup_new();
    vma_writer *w = vma_writer_new();
    assert_int_equal(vma_backup_select(b, "drive-scsi0"), VMA_ERR_INVALID);
    assert_int_equal(vma_backup_run(b, w), VMA_ERR_INVALID);
    assert_int_equal(vma_writer_status(w), VMA_OK); /* nothing happened to it */
    vma_writer_free(w);
    vma_backup_free(b);
    assert_int_equal(leftovers(), 0);
}

int main(void)
{
    if (system("command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null && "
               "command -v qemu-io >/dev/null") != 0) {
        fprintf(stderr, "qemu-system-x86_64, qemu-img or qemu-io missing: scripts/deps.sh\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_lists_disks),
        cmocka_unit_test(test_run_into_file),
        cmocka_unit_test(test_cancel_from_thread),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
