/*
 * The corruption matrix: takes valid archives (the golden ones written by
 * Proxmox's tool, and small ones made here with the writer API or laid out
 * by tests/vmatest.h), breaks them in every way a disk, a network copy or
 * a hostile author can (bit flips, truncation, dropped and duplicated
 * extents, extents and headers re-signed so only the semantic checks can
 * catch them), and checks that every case is refused cleanly:
 *
 *  - in-process, for EVERY case: vma_reader_open_fd + vma_reader_read
 *    fails with a one-line message that names the problem (and where);
 *    a restore (vma_reader_target_create per device + vma_reader_restore)
 *    fails too, and the scratch directory is empty after vma_reader_free;
 *  - through the built `vma` command, for every case except the bit flips
 *    (of those a deterministic sample: of the header flips of basic.vma
 *    every 61st bit plus every bit of the first 64 bytes, of
 *    writer-small.vma every 127th bit; of the extent header flips every
 *    61st bit and the first and last bit of each field): `vma verify` and
 *    `vma extract` exit 2 (no signal) with exactly one stderr line
 *    "vma: ..." that names the problem, verify prints nothing on stdout,
 *    and extract writes nothing outside its target directory (the listings
 *    of its parent, grandparent and the work directory are unchanged) and
 *    leaves no target directory, disk-*.raw or tmp-disk-*.raw behind.
 *
 * It also cuts small archives at EVERY length N in-process (from a memfd;
 * through a pipe every 16th N and every N near a boundary): each must fail
 * with VMA_ERR_TRUNCATED and a "truncated" message; and it feeds
 * `head -c N` of archives to `vma verify -` through a pipe for every
 * header and extent boundary +-1 plus a seeded sample of N.
 *
 * Sanitizer builds (about 10 times slower per case) sample: see
 * VMA_MATRIX_SAMPLE and VMA_MATRIX_CLI_STRIDE below.
 *
 * Usage: corruption_matrix <golden-dir> <vma-binary> [part=all|header|rest] [seed=N]
 *   part=header runs only the header bit flips, part=rest all the others
 *   (meson runs the two as two tests, in parallel).
 * Environment:
 *   VMA_RUNNER                a prefix for every `vma` run (e.g. valgrind ...)
 *   VMA_MATRIX_SEED           the seed (default 20261126; seed=N wins)
 *   VMA_MATRIX_CLI_STRIDE=N   run the CLI on the first and every Nth CLI case
 *                             of each class only (default 1; 4 in sanitizer
 *                             builds)
 *   VMA_MATRIX_SAMPLE=N       run every Nth bit flip and every-length cut
 *                             in-process (default 1 = all; 7 in sanitizer
 *                             builds, where every case costs ~10 times more)
 *   VMA_MATRIX_API=0          skip the in-process runs (CLI only)
 * Prints a count per class at the end; exits 0 only if every case of every
 * class was refused cleanly (cases marked as known failures are listed).
 * SPDX-License-Identifier: MIT
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "format.h"
#include "vma.h"
#include "vmatest.h"
#include "rmtree.h"

extern char **environ;

/* Sanitizer builds (ASan) are about 10 times slower per case. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

/* ---------------------------------------------------------------- */
/* globals, classes, reporting                                       */
/* ---------------------------------------------------------------- */

static const char *g_golden;
static const char *g_vma;
static char *g_runner[16];
static unsigned g_nrunner;
static unsigned long long g_seed = 20261126ull;
#ifdef SANITIZED
static unsigned long g_cli_stride = 4;
#else
static unsigned long g_cli_stride = 1;
#endif
static bool g_api = true;
/* In-process sample of the bit-flip and every-length classes: every Nth
 * case (1 = all). Sanitizer builds default to 7 (coprime to 8, so every
 * bit position of a byte still occurs) and a CLI stride of 4; all other
 * classes stay complete. */
#ifdef SANITIZED
static unsigned long g_sample = 7;
#else
static unsigned long g_sample = 1;
#endif

static char g_work[4096];    /* everything we write lives under here */
static char g_scratch[4200]; /* in-process restore targets */
static char g_io[4200];      /* case files, stdout and stderr of the CLI */
static char g_top[4200];     /* g_work/a: the grandparent of the jail */
static char g_mid[4200];     /* g_work/a/b: the parent of the jail */
static char g_jail[4200];    /* g_work/a/b/jail: the parent of the target */
static char g_target[4300];  /* g_jail/target: extract's new directory */
static char g_abs_escape[4200];
static int g_memfd = -1;     /* scratch memfd for in-process runs */
static unsigned long g_failures;

struct cls {
    const char *name;
    unsigned long api, cli, failed, xfail;
    unsigned long cli_seen; /* CLI-eligible cases so far (for the stride) */
    char example[300];      /* the first refusal's message */
};
static struct cls g_cls[96];
static unsigned g_ncls;

static void set_example(struct cls *c, const char *msg)
{
    if (c->example[0] != 0)
        return;
    size_t n = strlen(msg);
    if (n >= sizeof(c->example))
        n = sizeof(c->example) - 1;
    memcpy(c->example, msg, n);
    c->example[n] = 0;
}

static struct cls *cls_get(const char *name)
{
    for (unsigned i = 0; i < g_ncls; i++)
        if (strcmp(g_cls[i].name, name) == 0)
            return &g_cls[i];
    if (g_ncls == sizeof(g_cls) / sizeof(g_cls[0])) {
        fprintf(stderr, "corruption_matrix: too many classes\n");
        exit(99);
    }
    g_cls[g_ncls].name = name;
    return &g_cls[g_ncls++];
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("corruption_matrix: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(99);
}

/* Print at most 40 failure lines in full, then count only. */
static void failf(struct cls *c, const char *desc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void failf(struct cls *c, const char *desc, const char *fmt, ...)
{
    c->failed++;
    g_failures++;
    if (g_failures > 40)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL [%s] %s: ", c->name, desc);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* splitmix64 */
static uint64_t g_rng;
static uint64_t rnd(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint64_t rnd_below(uint64_t n) { return n ? rnd() % n : 0; }

/* ---------------------------------------------------------------- */
/* files and directories                                             */
/* ---------------------------------------------------------------- */

/* Sorted, '/'-joined names in a directory ("" if empty, "?" if unreadable). */
static void dir_list(const char *path, char *out, size_t outlen)
{
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    out[0] = 0;
    if (n < 0) {
        snprintf(out, outlen, "?%s", strerror(errno));
        return;
    }
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (strcmp(nm, ".") != 0 && strcmp(nm, "..") != 0 && used + strlen(nm) + 2 < outlen)
            used += (size_t)snprintf(out + used, outlen - used, "%s%s", used ? "/" : "", nm);
        free(names[i]);
    }
    free(names);
}

static void put_file(const char *path, const unsigned char *p, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || vt_write_fd(fd, p, len) != 0 || close(fd) != 0)
        die("cannot write %s: %s", path, strerror(errno));
}

static void fd_set_content(int fd, const unsigned char *p, size_t len)
{
    if (ftruncate(fd, 0) != 0 || pwrite(fd, p, len, 0) != (ssize_t)len)
        die("memfd write: %s", strerror(errno));
}

static void patch_byte(int fd, size_t off, unsigned char v)
{
    if (pwrite(fd, &v, 1, (off_t)off) != 1)
        die("pwrite: %s", strerror(errno));
}

/* ---------------------------------------------------------------- */
/* expectations                                                      */
/* ---------------------------------------------------------------- */

struct expect {
    const char *phrases; /* '|'-separated; the message contains one of them */
    char where[96];      /* "" or a substring the message contains too */
    int status;          /* 0: any failure status, else exactly this one */
};

static struct expect exp_(const char *phrases, int status)
{
    struct expect e;
    memset(&e, 0, sizeof(e));
    e.phrases = phrases;
    e.status = status;
    return e;
}

static struct expect exp_at(const char *phrases, int status, unsigned long ext, size_t off)
{
    struct expect e = exp_(phrases, status);
    snprintf(e.where, sizeof(e.where), "extent %lu at offset %zu", ext, off);
    return e;
}

static bool has_phrase(const char *msg, const char *phrases)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", phrases);
    char *save = NULL;
    for (char *t = strtok_r(buf, "|", &save); t != NULL; t = strtok_r(NULL, "|", &save))
        if (strstr(msg, t) != NULL)
            return true;
    return false;
}

/* Why a message does not name the problem, or NULL when it does. */
static const char *msg_problem(const char *msg, const struct expect *e)
{
    if (msg[0] == 0)
        return "empty message";
    if (strchr(msg, '\n') != NULL)
        return "message is not one line";
    if (!has_phrase(msg, e->phrases))
        return "message does not name the problem";
    if (e->where[0] && strstr(msg, e->where) == NULL)
        return "message does not say where";
    return NULL;
}

/* ---------------------------------------------------------------- */
/* in-process runs                                                   */
/* ---------------------------------------------------------------- */

static int api_verify(int fd, char *msg, size_t msglen)
{
    if (lseek(fd, 0, SEEK_SET) != 0)
        die("lseek: %s", strerror(errno));
    vma_reader *r = vma_reader_new();
    if (r == NULL)
        die("out of memory");
    int rc = vma_reader_open_fd(r, fd);
    if (rc == VMA_OK)
        rc = vma_reader_read(r, NULL, NULL);
    snprintf(msg, msglen, "%s", vma_reader_error(r));
    vma_reader_free(r);
    return rc;
}

/* Restore every device into new files in g_scratch; *left gets what is
 * left in g_scratch after vma_reader_free (then removed). */
static int api_restore(int fd, char *msg, size_t msglen, char *left, size_t leftlen)
{
    if (lseek(fd, 0, SEEK_SET) != 0)
        die("lseek: %s", strerror(errno));
    vma_reader *r = vma_reader_new();
    if (r == NULL)
        die("out of memory");
    int rc = vma_reader_open_fd(r, fd);
    for (unsigned id = rc == VMA_OK ? vma_reader_next_device(r, 0) : 0; id != 0 && rc == VMA_OK;
         id = vma_reader_next_device(r, id)) {
        char path[4300];
        snprintf(path, sizeof(path), "%s/t%u", g_scratch, id);
        rc = vma_reader_target_create(r, id, path);
    }
    if (rc == VMA_OK)
        rc = vma_reader_restore(r);
    snprintf(msg, msglen, "%s", vma_reader_error(r));
    vma_reader_free(r);
    dir_list(g_scratch, left, leftlen);
    if (left[0] != 0) {
        vt_rm_tree(g_scratch);
        if (mkdir(g_scratch, 0755) != 0)
            die("mkdir %s: %s", g_scratch, strerror(errno));
    }
    return rc;
}

/* 1 if refused cleanly, 0 if accepted (counted by the caller), -1 if it
 * failed in a wrong way (reported). */
static int api_check(struct cls *c, const char *desc, int fd, const struct expect *e,
                     bool restore)
{
    char msg[1024], left[1024];
    int rc = api_verify(fd, msg, sizeof(msg));
    if (rc == VMA_OK)
        return 0;
    const char *why = msg_problem(msg, e);
    if (why != NULL) {
        failf(c, desc, "verify: %s: %s '%s' (want '%s'%s%s)", why, vma_status_name(rc), msg,
              e->phrases, e->where[0] ? " at " : "", e->where);
        return -1;
    }
    if (e->status != 0 && rc != e->status) {
        failf(c, desc, "verify: status %s, want %s: '%s'", vma_status_name(rc),
              vma_status_name(e->status), msg);
        return -1;
    }
    set_example(c, msg);
    if (!restore)
        return 1;
    rc = api_restore(fd, msg, sizeof(msg), left, sizeof(left));
    if (rc == VMA_OK) {
        failf(c, desc, "restore succeeded where verify failed");
        return -1;
    }
    if (left[0] != 0) {
        failf(c, desc, "restore left files in the scratch directory: %s", left);
        return -1;
    }
    why = msg_problem(msg, e);
    if (why != NULL) {
        failf(c, desc, "restore: %s: %s '%s' (want '%s')", why, vma_status_name(rc), msg,
              e->phrases);
        return -1;
    }
    return 1;
}

/* ---------------------------------------------------------------- */
/* the CLI                                                           */
/* ---------------------------------------------------------------- */

/* A thread writes a buffer into a pipe for vma's stdin, then closes it. */
struct feed {
    int fd;
    const unsigned char *p;
    size_t len;
};

static void *feed_thread(void *arg)
{
    struct feed *f = arg;
    (void)vt_write_fd(f->fd, f->p, f->len); /* EPIPE when vma stops early */
    close(f->fd);
    return NULL;
}

/* Run vma with args; stdin from `in` (NULL: /dev/null) through a pipe;
 * stdout and stderr to g_io/out and g_io/err. Returns the wait status. */
static int run_vma(const char *const *args, const unsigned char *in, size_t inlen)
{
    char *argv[40];
    unsigned n = 0;
    for (unsigned i = 0; i < g_nrunner; i++)
        argv[n++] = g_runner[i];
    argv[n++] = (char *)g_vma;
    for (unsigned i = 0; args[i] != NULL && n < 39; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;

    char out[4300], err[4300];
    snprintf(out, sizeof(out), "%s/out", g_io);
    snprintf(err, sizeof(err), "%s/err", g_io);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    int pfd[2] = {-1, -1};
    if (in != NULL) {
        if (pipe2(pfd, O_CLOEXEC) != 0)
            die("pipe: %s", strerror(errno));
        posix_spawn_file_actions_adddup2(&fa, pfd[0], 0);
    } else {
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    }
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        die("cannot run %s: %s", argv[0], strerror(rc));
    pthread_t th;
    struct feed f = {pfd[1], in, inlen};
    if (in != NULL) {
        close(pfd[0]);
        if (pthread_create(&th, NULL, feed_thread, &f) != 0)
            die("pthread_create failed");
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die("waitpid: %s", strerror(errno));
    if (in != NULL)
        pthread_join(th, NULL);
    return st;
}

/* Check one CLI run: exit 2, no signal, one "vma: " line naming the
 * problem, stdout empty unless allowed. Returns 1 if clean. */
static int cli_result(struct cls *c, const char *desc, const char *what, int st,
                      const struct expect *e, bool stdout_may_have)
{
    if (WIFSIGNALED(st)) {
        failf(c, desc, "%s: killed by signal %d", what, WTERMSIG(st));
        return 0;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 2) {
        char path[4300];
        struct vt_buf eb = {0};
        snprintf(path, sizeof(path), "%s/err", g_io);
        vt_read_file(path, &eb);
        vt_append(&eb, "", 1);
        failf(c, desc, "%s: exit status %d, want 2; stderr '%.300s'", what,
              WIFEXITED(st) ? WEXITSTATUS(st) : -1, (const char *)eb.p);
        vt_free(&eb);
        return 0;
    }
    char path[4300];
    struct vt_buf b = {0};
    snprintf(path, sizeof(path), "%s/err", g_io);
    if (vt_read_file(path, &b) != 0)
        die("cannot read %s", path);
    size_t len = b.len;
    vt_append(&b, "", 1);
    const char *s = (const char *)b.p;
    int ok = 1;
    if (len < 6 || strncmp(s, "vma: ", 5) != 0 || s[len - 1] != '\n' ||
        memchr(s, '\n', len - 1) != NULL || memchr(s, 0, len) != NULL) {
        failf(c, desc, "%s: stderr is not exactly one line 'vma: ...': '%.300s'", what, s);
        ok = 0;
    } else {
        b.p[len - 1] = 0;
        set_example(c, s + 5);
        const char *why = msg_problem(s + 5, e);
        if (why != NULL) {
            failf(c, desc, "%s: %s: '%s' (want '%s'%s%s)", what, why, s, e->phrases,
                  e->where[0] ? " at " : "", e->where);
            ok = 0;
        }
    }
    if (!stdout_may_have) {
        struct stat sb;
        snprintf(path, sizeof(path), "%s/out", g_io);
        if (stat(path, &sb) == 0 && sb.st_size != 0) {
            failf(c, desc, "%s: stdout is not empty", what);
            ok = 0;
        }
    }
    vt_free(&b);
    return ok;
}

/* verify and extract of the case file; returns 1 if both clean. */
static int cli_check_file(struct cls *c, const char *desc, const char *file,
                          const struct expect *e)
{
    const char *va[] = {"verify", file, NULL};
    int ok = cli_result(c, desc, "vma verify", run_vma(va, NULL, 0), e, false);

    char before_top[512], before_mid[512], before_jail[512], before_work[512];
    dir_list(g_top, before_top, sizeof(before_top));
    dir_list(g_mid, before_mid, sizeof(before_mid));
    dir_list(g_jail, before_jail, sizeof(before_jail));
    dir_list(g_work, before_work, sizeof(before_work));
    const char *xa[] = {"extract", file, g_target, NULL};
    ok &= cli_result(c, desc, "vma extract", run_vma(xa, NULL, 0), e, true);
    char after[512];
    dir_list(g_jail, after, sizeof(after));
    if (after[0] != 0 || before_jail[0] != 0) {
        /* the target directory (or anything else) was left behind */
        failf(c, desc, "vma extract left '%s' in the jail directory", after);
        vt_rm_tree(g_jail);
        if (mkdir(g_jail, 0755) != 0)
            die("mkdir: %s", strerror(errno));
        ok = 0;
    }
    dir_list(g_mid, after, sizeof(after));
    if (strcmp(after, before_mid) != 0) {
        failf(c, desc, "vma extract wrote outside its target: '%s' -> '%s'", before_mid, after);
        ok = 0;
    }
    dir_list(g_top, after, sizeof(after));
    if (strcmp(after, before_top) != 0) {
        failf(c, desc, "vma extract wrote outside its target: '%s' -> '%s'", before_top, after);
        ok = 0;
    }
    dir_list(g_work, after, sizeof(after));
    if (strcmp(after, before_work) != 0) {
        failf(c, desc, "vma extract wrote outside its target: '%s' -> '%s'", before_work,
              after);
        ok = 0;
    }
    if (access(g_abs_escape, F_OK) == 0) {
        failf(c, desc, "vma extract wrote %s", g_abs_escape);
        unlink(g_abs_escape);
        ok = 0;
    }
    return ok;
}

/* The stride counts per class, so every class keeps its first case. */
static bool cli_take(struct cls *c) { return c->cli_seen++ % g_cli_stride == 0; }

/* ---------------------------------------------------------------- */
/* running one case                                                  */
/* ---------------------------------------------------------------- */

/* xfail: NULL, or why this case is a known, reported defect (accepted
 * although it should not be). */
static void finish_case(struct cls *c, const char *desc, int api, const char *xfail)
{
    /* api: 1 refused, 0 accepted, -1 reported, 2 not run */
    if (api == 0 && xfail == NULL)
        failf(c, desc, "accepted by vma_reader_read (should be refused)");
    if (xfail != NULL) {
        if (api == 0) {
            c->xfail++;
            fprintf(stderr, "XFAIL [%s] %s: accepted (%s)\n", c->name, desc, xfail);
        } else if (api == 1) {
            failf(c, desc, "refused now, remove its known-failure mark (%s)", xfail);
        }
    }
}

/* A case given as bytes. cli: whether it is a CLI case (subject to the
 * stride). */
static void run_case(const char *cls, const char *desc, const unsigned char *p, size_t len,
                     struct expect e, bool cli, const char *xfail)
{
    struct cls *c = cls_get(cls);
    int api = 2;
    if (g_api) {
        fd_set_content(g_memfd, p, len);
        api = api_check(c, desc, g_memfd, &e, true);
        c->api++;
    }
    if (cli && xfail == NULL && cli_take(c)) {
        char file[4300];
        snprintf(file, sizeof(file), "%s/case.vma", g_io);
        put_file(file, p, len);
        cli_check_file(c, desc, file, &e);
        c->cli++;
    }
    finish_case(c, desc, api, xfail);
}

/* ---------------------------------------------------------------- */
/* base archives                                                     */
/* ---------------------------------------------------------------- */

#define MAX_EXT 64

struct base {
    char name[64];
    struct vt_buf b;
    uint32_t hs;
    size_t ext[MAX_EXT + 1]; /* extent offsets, ext[next] = end */
    unsigned next;
    struct vmai_extent e[MAX_EXT];
    struct vmai_header *h;
    int memfd;          /* the archive, for in-place bit flips */
    char cli_file[4300]; /* a copy for the CLI, patched in place */
};

static struct base *g_bases[16];
static unsigned g_nbases;

static void base_init(struct base *B)
{
    const unsigned char *p = B->b.p;
    if (B->b.len < VMA_HEADER_FIXED_SIZE)
        die("%s: too short", B->name);
    B->hs = vmai_get_be32(p + VMA_HOFF_HEADER_SIZE);
    B->h = calloc(1, sizeof(*B->h));
    if (B->h == NULL)
        die("out of memory");
    char err[512];
    if (vmai_header_parse(p, B->b.len, B->h, err, sizeof(err)) != VMA_OK)
        die("%s: %s", B->name, err);
    B->next = vt_extent_offsets(p, B->b.len, B->ext, MAX_EXT);
    if (B->next == 0 || B->next == MAX_EXT)
        die("%s: %u extents", B->name, B->next);
    for (unsigned k = 0; k < B->next; k++)
        if (vmai_extent_parse(p + B->ext[k], B->h->uuid, &B->e[k], err, sizeof(err)) != VMA_OK)
            die("%s: extent %u: %s", B->name, k, err);
    B->ext[B->next] = B->ext[B->next - 1] + VMA_EXTENT_HEADER_SIZE +
                      (size_t)B->e[B->next - 1].block_count * VMA_BLOCK_SIZE;
    if (B->ext[B->next] != B->b.len)
        die("%s: extents end at %zu of %zu bytes", B->name, B->ext[B->next], B->b.len);
    /* the base must be valid */
    B->memfd = memfd_create("base", MFD_CLOEXEC);
    if (B->memfd < 0)
        die("memfd_create: %s", strerror(errno));
    fd_set_content(B->memfd, p, B->b.len);
    char msg[1024];
    int rc = api_verify(B->memfd, msg, sizeof(msg));
    if (rc != VMA_OK)
        die("base %s does not verify: %s", B->name, msg);
    snprintf(B->cli_file, sizeof(B->cli_file), "%s/base-%s", g_io, B->name);
    put_file(B->cli_file, p, B->b.len);
    printf("base %-22s %8zu bytes, header %u bytes, %u extents, %u configs\n", B->name, B->b.len,
           B->hs, B->next, B->h->config_count);
}

static struct base *base_new(const char *name)
{
    struct base *B = calloc(1, sizeof(*B));
    if (B == NULL)
        die("out of memory");
    snprintf(B->name, sizeof(B->name), "%s", name);
    g_bases[g_nbases++] = B;
    return B;
}

static void base_golden(const char *file)
{
    struct base *B = base_new(file);
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", g_golden, file);
    if (vt_read_file(path, &B->b) != 0)
        die("cannot read %s: %s", path, strerror(errno));
    base_init(B);
}

/* A stored block of the writer archive. */
struct slot {
    unsigned dev;
    uint64_t cluster;
    unsigned block;
};

/* The cluster with its data blocks filled, or NULL when it has none. */
static const unsigned char *fill(unsigned char *cl, const struct slot *blocks, unsigned dev,
                                 uint64_t num)
{
    int any = 0;
    memset(cl, 0, VMA_CLUSTER_SIZE);
    for (unsigned i = 0; i < 8; i++)
        if (blocks[i].dev == dev && blocks[i].cluster == num) {
            vt_block_fill(cl + blocks[i].block * VMA_BLOCK_SIZE, dev, (uint32_t)num,
                          blocks[i].block);
            any = 1;
        }
    return any ? cl : NULL;
}

static void wcheck(vma_writer *w, int rc, const char *what)
{
    if (rc < 0)
        die("writer: %s: %s", what, vma_writer_error(w));
}

/* A small archive made with the writer API: two configs, a vmstate
 * stream (written first), two disks (the first 150 clusters + 1536 bytes,
 * clusters in a seeded order), 8 stored data blocks in all, so the
 * archive is about 50 KB and has 3 extents. */
static void base_writer(void)
{
    struct base *B = base_new("writer-small.vma");
    int fd = memfd_create("writer", MFD_CLOEXEC);
    if (fd < 0)
        die("memfd_create: %s", strerror(errno));
    vma_writer *w = vma_writer_new();
    if (w == NULL)
        die("out of memory");
    static const unsigned char uuid[16] = {0x6d, 0x61, 0x74, 0x72, 0x69, 0x78, 0x2d, 0x77,
                                           0x72, 0x69, 0x74, 0x65, 0x72, 0x00, 0x01, 0x02};
    wcheck(w, vma_writer_set_uuid(w, uuid), "uuid");
    wcheck(w, vma_writer_set_ctime(w, 1764115200), "ctime");
    static const char conf[] = "boot: order=scsi0\nmemory: 2048\nscsi0: local:100/d.raw\n";
    static const char fw[] = "[OPTIONS]\nenable: 1\n";
    wcheck(w, vma_writer_add_config(w, "qemu-server.conf", conf, strlen(conf)), "config");
    wcheck(w, vma_writer_add_config(w, "qemu-server.fw", fw, strlen(fw)), "config");
    const uint64_t vms_size = 2 * VMA_CLUSTER_SIZE + 100, d1_size = 150 * VMA_CLUSTER_SIZE + 1536,
                   d2_size = 2 * VMA_CLUSTER_SIZE;
    int vms = vma_writer_add_device(w, "vmstate", vms_size);
    int d1 = vma_writer_add_device(w, "drive-scsi0", d1_size);
    int d2 = vma_writer_add_device(w, "drive-efidisk0", d2_size);
    wcheck(w, vms, "vmstate");
    wcheck(w, d1, "disk");
    wcheck(w, d2, "disk");
    wcheck(w, vma_writer_open_fd(w, fd), "open");

    /* 8 stored blocks: 2 in the vmstate, 5 in drive-scsi0, 1 in efidisk */
    struct slot blocks[8];
    blocks[0] = (struct slot){(unsigned)vms, 0, (unsigned)rnd_below(16)};
    blocks[1] = (struct slot){(unsigned)vms, 2, (unsigned)rnd_below(16)};
    for (unsigned i = 2; i < 7; i++)
        blocks[i] = (struct slot){(unsigned)d1, rnd_below(151), (unsigned)rnd_below(16)};
    blocks[7] = (struct slot){(unsigned)d2, rnd_below(2), (unsigned)rnd_below(16)};
    unsigned char *cl = malloc(VMA_CLUSTER_SIZE);
    if (cl == NULL)
        die("out of memory");

    for (uint64_t n = 0; n < 3; n++)
        wcheck(w, vma_writer_write_cluster(w, (unsigned)vms, n, fill(cl, blocks, (unsigned)vms, n)),
               "vms");
    wcheck(w, vma_writer_close_device(w, (unsigned)vms), "close");
    /* drive-scsi0 in a seeded order, efidisk in the middle */
    uint32_t order[151];
    for (unsigned i = 0; i < 151; i++)
        order[i] = i;
    for (unsigned i = 150; i > 0; i--) {
        unsigned j = (unsigned)rnd_below(i + 1);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (unsigned i = 0; i < 151; i++) {
        if (i == 75)
            for (uint64_t n = 0; n < 2; n++)
                wcheck(w, vma_writer_write_cluster(w, (unsigned)d2, n,
                                                   fill(cl, blocks, (unsigned)d2, n)),
                       "efi");
        wcheck(w, vma_writer_write_cluster(w, (unsigned)d1, order[i],
                                           fill(cl, blocks, (unsigned)d1, order[i])),
               "disk");
    }
    wcheck(w, vma_writer_close_device(w, (unsigned)d1), "close");
    wcheck(w, vma_writer_close_device(w, (unsigned)d2), "close");
    wcheck(w, vma_writer_finish(w), "finish");
    vma_writer_free(w);
    free(cl);
    off_t len = lseek(fd, 0, SEEK_END);
    if (len <= 0)
        die("writer archive is empty");
    vt_reserve(&B->b, (size_t)len);
    if (pread(fd, B->b.p, (size_t)len, 0) != len)
        die("pread: %s", strerror(errno));
    B->b.len = (size_t)len;
    close(fd);
    base_init(B);
}

/* Laid out by hand: a disk and a vmstate stream whose last extent holds
 * only vmstate clusters (cutting it off loses no disk cluster). */
static void base_vmstate_tail(void)
{
    struct base *B = base_new("vmstate-tail.vma");
    static const unsigned char uuid[16] = {0x76, 0x6d, 0x73, 0x2d, 0x74, 0x61, 0x69, 0x6c,
                                           1, 2, 3, 4, 5, 6, 7, 8};
    struct vt_hdr *h = calloc(1, sizeof(*h));
    if (h == NULL)
        die("out of memory");
    memcpy(h->uuid, uuid, 16);
    h->ctime = 1764115200;
    h->nconf = 1;
    h->conf[0].name.str = "qemu-server.conf";
    h->conf[0].data = "memory: 512\nvmstate: local:state\n";
    h->conf[0].len = strlen(h->conf[0].data);
    h->dev[1].name.str = "drive-scsi0";
    h->dev[1].size = 2 * VMA_CLUSTER_SIZE;
    h->dev[2].name.str = "vmstate";
    h->dev[2].size = 3 * VMA_CLUSTER_SIZE;
    vt_header_build(&B->b, h);
    static const struct vt_ent e0[] = {{1, 0, 0x0001}, {2, 0, 0x0100}, {1, 1, 0x0000}};
    static const struct vt_ent e1[] = {{2, 1, 0x8000}, {2, 2, 0x0000}};
    vt_extent(&B->b, uuid, e0, 3);
    vt_extent(&B->b, uuid, e1, 2);
    free(h);
    base_init(B);
}

/* Does cutting/dropping extents [from, to) lose only vmstate clusters
 * (and at least one of them)? Then no rule of the reader can see it. */
static bool loses_only_vmstate(const struct base *B, unsigned from, unsigned to)
{
    bool vms = false;
    for (unsigned k = from; k < to; k++)
        for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
            unsigned d = B->e[k].info[i].dev_id;
            if (d == 0)
                continue;
            if (!B->h->devices[d].is_vmstate)
                return false;
            vms = true;
        }
    return vms;
}

static const char XFAIL_VMSTATE[] =
    "known: a vmstate stream has no completeness check, so losing only its last clusters "
    "is not detected";

/* ---------------------------------------------------------------- */
/* bit flips                                                         */
/* ---------------------------------------------------------------- */

static struct expect header_flip_expect(size_t byte)
{
    if (byte < 4)
        return exp_("bad magic", VMA_ERR_CORRUPT);
    if (byte < 8)
        return exp_("unsupported version", VMA_ERR_CORRUPT);
    if (byte >= VMA_HOFF_BLOB_OFFSET && byte < 60)
        /* blob pointers and header_size: checked before the MD5 */
        return exp_("bad header_size|blob buffer|MD5 checksum mismatch|truncated inside the "
                    "header",
                    0);
    return exp_("MD5 checksum mismatch", VMA_ERR_CORRUPT);
}

/* Flip one bit of the base in place (memfd and CLI copy), run, undo. */
static void flip_case(struct base *B, const char *cls, const char *desc, size_t byte,
                      unsigned bit, struct expect e, bool in_sample, bool cli)
{
    struct cls *c = cls_get(cls);
    unsigned char orig = B->b.p[byte], v = (unsigned char)(orig ^ (1u << bit));
    int api = 2;
    if (g_api && in_sample) {
        patch_byte(B->memfd, byte, v);
        api = api_check(c, desc, B->memfd, &e, true);
        patch_byte(B->memfd, byte, orig);
        c->api++;
    }
    if (cli && cli_take(c)) {
        int fd = open(B->cli_file, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            die("open %s: %s", B->cli_file, strerror(errno));
        patch_byte(fd, byte, v);
        cli_check_file(c, desc, B->cli_file, &e);
        patch_byte(fd, byte, orig);
        close(fd);
        c->cli++;
    }
    finish_case(c, desc, api, NULL);
}

/* cli_stride: the CLI runs every cli_stride-th bit, plus every bit of the
 * first 64 bytes when first64. */
static void header_bitflips(struct base *B, unsigned cli_stride, bool first64)
{
    for (size_t bit = 0; bit < (size_t)VMA_HEADER_FIXED_SIZE * 8; bit++) {
        size_t byte = bit / 8;
        char desc[128];
        snprintf(desc, sizeof(desc), "%s: header bit %zu (byte %zu, bit %zu)", B->name, bit, byte,
                 bit % 8);
        flip_case(B, "header bit flip", desc, byte, (unsigned)(bit % 8), header_flip_expect(byte),
                  bit % g_sample == 0, bit % cli_stride == 0 || (first64 && byte < 64));
    }
}

static const struct field {
    const char *cls;
    unsigned off, len;
} ext_fields[] = {
    {"extent bit flip: magic", VMA_EOFF_MAGIC, 4},
    {"extent bit flip: reserved", VMA_EOFF_RESERVED, 2},
    {"extent bit flip: block_count", VMA_EOFF_BLOCK_COUNT, 2},
    {"extent bit flip: uuid", VMA_EOFF_UUID, 16},
    {"extent bit flip: md5", VMA_EOFF_MD5, 16},
    {"extent bit flip: blockinfo", VMA_EOFF_BLOCKINFO, VMA_EXTENT_HEADER_SIZE - VMA_EOFF_BLOCKINFO},
};

/* Every bit of every extent header (not re-signed: the MD5 or the magic
 * check must catch each). For extents that start past 1 MiB (each case
 * reads and restores everything before them) every bit of magic, reserved,
 * block_count, uuid and md5, and every 7th bit of the blockinfo array. */
static void extent_bitflips(struct base *B)
{
    for (unsigned k = 0; k < B->next; k++) {
        for (unsigned f = 0; f < sizeof(ext_fields) / sizeof(ext_fields[0]); f++) {
            const struct field *F = &ext_fields[f];
            unsigned step = B->ext[k] > (1u << 20) && F->off == VMA_EOFF_BLOCKINFO ? 7 : 1;
            for (unsigned bit = F->off * 8; bit < (F->off + F->len) * 8; bit += step) {
                size_t byte = B->ext[k] + bit / 8;
                char desc[160];
                snprintf(desc, sizeof(desc), "%s: extent %u at %zu, bit %u", B->name, k,
                         B->ext[k], bit);
                struct expect e = exp_at(bit < 32 ? "bad extent magic"
                                                  : "extent header MD5 checksum mismatch",
                                         VMA_ERR_CORRUPT, k, B->ext[k]);
                bool edge = bit == F->off * 8 || bit == (F->off + F->len) * 8 - 1;
                flip_case(B, F->cls, desc, byte, bit % 8, e, edge || bit % g_sample == 0,
                          edge || bit % 61 == 0);
            }
        }
    }
}

/* ---------------------------------------------------------------- */
/* truncation, dropped and duplicated extents                        */
/* ---------------------------------------------------------------- */

static void cut_case(struct base *B, const char *cls, size_t n, const char *phrase,
                     const char *where_fmt, unsigned long k, size_t off, const char *xfail)
{
    char desc[160];
    snprintf(desc, sizeof(desc), "%s cut to %zu bytes", B->name, n);
    struct expect e = exp_(phrase, VMA_ERR_TRUNCATED);
    if (where_fmt != NULL)
        snprintf(e.where, sizeof(e.where), where_fmt, k, off);
    run_case(cls, desc, B->b.p, n, e, true, xfail);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Sort and drop duplicates; returns the new count. */
static unsigned uniq(size_t *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_size);
    unsigned m = 0;
    for (unsigned i = 0; i < n; i++)
        if (m == 0 || v[m - 1] != v[i])
            v[m++] = v[i];
    return m;
}

static void truncations(struct base *B)
{
    /* inside the header */
    size_t hn[32];
    unsigned nh = 0;
    static const size_t fixed[] = {0, 1, 3, 4, 8, 59, 60, 2044, 4095, 4096, 12287, 12288, 12289};
    for (unsigned i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (fixed[i] < B->hs)
            hn[nh++] = fixed[i];
    hn[nh++] = B->hs - 1;
    for (unsigned i = 0; i < 6; i++)
        hn[nh++] = (size_t)rnd_below(B->hs);
    nh = uniq(hn, nh);
    for (unsigned i = 0; i < nh; i++)
        cut_case(B, "truncated inside the header", hn[i], "truncated", NULL, 0, 0, NULL);

    for (unsigned k = 0; k < B->next; k++) {
        size_t o = B->ext[k];
        /* at the boundary before extent k */
        if (k == 0)
            cut_case(B, "truncated at an extent boundary", o, "without any extent", NULL, 0, 0,
                     NULL);
        else if (!loses_only_vmstate(B, k, B->next))
            cut_case(B, "truncated at an extent boundary", o, "missing cluster", NULL, 0, 0,
                     NULL);
        else /* the known defect; once fixed, any "truncated" message will do */
            cut_case(B, "truncated at an extent boundary", o, "truncated", NULL, 0, 0,
                     XFAIL_VMSTATE);
        /* inside its header */
        size_t in[16];
        unsigned ni = 0;
        static const size_t hoff[] = {1, 4, 6, 8, 24, 40, 256, 511};
        for (unsigned i = 0; i < sizeof(hoff) / sizeof(hoff[0]); i++)
            in[ni++] = o + hoff[i];
        in[ni++] = o + 1 + rnd_below(511);
        in[ni++] = o + 1 + rnd_below(511);
        ni = uniq(in, ni);
        for (unsigned i = 0; i < ni; i++)
            cut_case(B, "truncated inside an extent header", in[i],
                     "truncated inside the header of extent", "extent %lu at offset %zu", k, o, NULL);
        /* inside its data */
        size_t end = B->ext[k + 1];
        if (end == o + VMA_EXTENT_HEADER_SIZE)
            continue;
        size_t dn[16];
        unsigned nd = 0;
        dn[nd++] = o + VMA_EXTENT_HEADER_SIZE;
        dn[nd++] = o + VMA_EXTENT_HEADER_SIZE + 1;
        if (o + VMA_EXTENT_HEADER_SIZE + VMA_BLOCK_SIZE < end)
            dn[nd++] = o + VMA_EXTENT_HEADER_SIZE + VMA_BLOCK_SIZE;
        dn[nd++] = (o + VMA_EXTENT_HEADER_SIZE + end) / 2;
        dn[nd++] = end - 1;
        for (unsigned i = 0; i < 3; i++)
            dn[nd++] = o + VMA_EXTENT_HEADER_SIZE + rnd_below(end - o - VMA_EXTENT_HEADER_SIZE);
        nd = uniq(dn, nd);
        for (unsigned i = 0; i < nd; i++)
            cut_case(B, "truncated inside extent data", dn[i],
                     "truncated inside the data of extent", "extent %lu at offset %zu", k, o, NULL);
    }
}

static unsigned used_entries(const struct vmai_extent *e)
{
    unsigned n = 0;
    for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++)
        n += e->info[i].dev_id != 0;
    return n;
}

static void drop_dup(struct base *B)
{
    struct vt_buf o = {0};
    for (unsigned k = 0; k < B->next; k++) {
        size_t a = B->ext[k], z = B->ext[k + 1];
        char desc[160];
        /* dropped */
        vt_copy(&o, B->b.p, a);
        vt_append(&o, B->b.p + z, B->b.len - z);
        snprintf(desc, sizeof(desc), "%s: extent %u (at %zu) dropped", B->name, k, a);
        const char *xf = NULL;
        if (k == B->next - 1 && loses_only_vmstate(B, k, k + 1))
            xf = XFAIL_VMSTATE;
        run_case("extent dropped", desc, o.p, o.len,
                 exp_("missing cluster|out of order|without any extent|truncated", 0), true, xf);
        if (used_entries(&B->e[k]) == 0)
            continue; /* an empty extent twice is still a valid archive */
        /* duplicated right after itself */
        vt_copy(&o, B->b.p, z);
        vt_append(&o, B->b.p + a, z - a);
        vt_append(&o, B->b.p + z, B->b.len - z);
        snprintf(desc, sizeof(desc), "%s: extent %u (at %zu) twice in a row", B->name, k, a);
        run_case("extent duplicated", desc, o.p, o.len,
                 exp_at("duplicate cluster|out of order", VMA_ERR_CORRUPT, k + 1, z), true, NULL);
        /* and again at the end */
        if (k + 1 < B->next) {
            vt_copy(&o, B->b.p, B->b.len);
            vt_append(&o, B->b.p + a, z - a);
            snprintf(desc, sizeof(desc), "%s: extent %u (at %zu) again at the end", B->name, k, a);
            run_case("extent duplicated", desc, o.p, o.len,
                     exp_at("duplicate cluster|out of order", VMA_ERR_CORRUPT, B->next,
                            B->b.len),
                     true, NULL);
        }
    }
    vt_free(&o);
}

/* ---------------------------------------------------------------- */
/* re-signed extents                                                 */
/* ---------------------------------------------------------------- */

static size_t bi_off(const struct base *B, unsigned k, unsigned i)
{
    return B->ext[k] + VMA_EOFF_BLOCKINFO + 8 * (size_t)i;
}

/* A copy of the base with blockinfo i of extent k replaced, re-signed. */
static void set_bi(struct vt_buf *o, const struct base *B, unsigned k, unsigned i,
                   const struct vmai_blockinfo *bi)
{
    vmai_put_be64(o->p + bi_off(B, k, i), vmai_blockinfo_encode(bi));
    vt_resign_extent(o->p + B->ext[k]);
}

/* One extent of a base archive and where its kinds of entries are:
 * the first used entry, the first disk entry, the first vmstate entry,
 * the first unused one (-1: none); unused_dev is a dev_id no device has. */
struct ext_at {
    struct base *B;
    unsigned k;
    size_t x; /* the extent's offset */
    const struct vmai_extent *E;
    int first, disk, vms, unused;
    unsigned unused_dev;
};

/* A dev_id no device has, in a used and an unused entry. */
static void resigned_ext_dev_ids(const struct ext_at *c)
{
    struct base *B = c->B;
    unsigned k = c->k;
    size_t x = c->x;
    const struct vmai_extent *E = c->E;
    int first = c->first, unused = c->unused;
    unsigned unused_dev = c->unused_dev;
    struct vt_buf o = {0};
    char desc[200];

    /* unknown dev_id */
    unsigned bad_devs[] = {unused_dev, 254, 255};
    for (unsigned j = 0; j < 3; j++) {
        unsigned d = bad_devs[j];
        if (d == 0 || (d < 255 && B->h->devices[d].name != NULL) || (j == 1 && d == unused_dev))
            continue;
        int slots[2] = {first, unused};
        for (unsigned s = 0; s < 2; s++) {
            if (slots[s] < 0)
                continue;
            struct vmai_blockinfo bi = E->info[slots[s]];
            bi.dev_id = (uint8_t)d;
            if (slots[s] == unused)
                bi.mask = 0; /* keeps block_count right */
            vt_copy(&o, B->b.p, B->b.len);
            set_bi(&o, B, k, (unsigned)slots[s], &bi);
            snprintf(desc, sizeof(desc), "%s: extent %u entry %d: dev_id %u", B->name, k,
                     slots[s], d);
            char ph[64];
            snprintf(ph, sizeof(ph), "unknown dev_id %u", d);
            struct expect e = exp_at(ph, VMA_ERR_CORRUPT, k, x);
            run_case("re-signed extent: unknown dev_id", desc, o.p, o.len, e, true, NULL);
        }
    }
    vt_free(&o);
}

/* A disk cluster past the device, a vmstate cluster out of order. */
static void resigned_ext_clusters(const struct ext_at *c)
{
    struct base *B = c->B;
    unsigned k = c->k;
    size_t x = c->x;
    const struct vmai_extent *E = c->E;
    int disk = c->disk, vms = c->vms;
    struct vt_buf o = {0};
    char desc[200];

    /* cluster number past the device */
    if (disk >= 0) {
        const struct vmai_blockinfo *bi0 = &E->info[disk];
        uint64_t count = vmai_cluster_count(B->h->devices[bi0->dev_id].size);
        uint64_t nums[] = {count, count + 1, 0x80000000u, 0xffffffffu};
        for (unsigned j = 0; j < 4; j++) {
            if (nums[j] > 0xffffffffu || (j > 0 && nums[j] == nums[j - 1]))
                continue;
            struct vmai_blockinfo bi = *bi0;
            bi.cluster_num = (uint32_t)nums[j];
            vt_copy(&o, B->b.p, B->b.len);
            set_bi(&o, B, k, (unsigned)disk, &bi);
            snprintf(desc, sizeof(desc), "%s: extent %u entry %d: cluster %llu of %llu",
                     B->name, k, disk, (unsigned long long)nums[j],
                     (unsigned long long)count);
            run_case("re-signed extent: cluster past the device", desc, o.p, o.len,
                     exp_at("is past the end of device", VMA_ERR_CORRUPT, k, x), true, NULL);
        }
    }
    /* a vmstate cluster out of order */
    if (vms >= 0) {
        uint32_t nums[] = {E->info[vms].cluster_num + 1, E->info[vms].cluster_num + 100,
                           0xffffffffu};
        for (unsigned j = 0; j < 3; j++) {
            struct vmai_blockinfo bi = E->info[vms];
            bi.cluster_num = nums[j];
            vt_copy(&o, B->b.p, B->b.len);
            set_bi(&o, B, k, (unsigned)vms, &bi);
            snprintf(desc, sizeof(desc), "%s: extent %u entry %d: vmstate cluster %u",
                     B->name, k, vms, nums[j]);
            run_case("re-signed extent: vmstate cluster out of order", desc, o.p, o.len,
                     exp_at("out of order", VMA_ERR_CORRUPT, k, x), true, NULL);
        }
    }
    vt_free(&o);
}

/* block_count against the masks, alone and with a mask. */
static void resigned_ext_counts(const struct ext_at *c)
{
    struct base *B = c->B;
    unsigned k = c->k;
    size_t x = c->x;
    const struct vmai_extent *E = c->E;
    int first = c->first;
    struct vt_buf o = {0};
    char desc[200];

    /* block_count that disagrees with the masks */
    uint32_t counts[] = {E->block_count + 1u, E->block_count ? E->block_count - 1u : 2u,
                         E->block_count ? 0u : 59u, 0xffffu};
    for (unsigned j = 0; j < 4; j++) {
        if (counts[j] == E->block_count || counts[j] > 0xffff)
            continue;
        vt_copy(&o, B->b.p, B->b.len);
        vmai_put_be16(o.p + x + VMA_EOFF_BLOCK_COUNT, (uint16_t)counts[j]);
        vt_resign_extent(o.p + x);
        snprintf(desc, sizeof(desc), "%s: extent %u: block_count %u (masks: %u)", B->name, k,
                 counts[j], E->block_count);
        run_case("re-signed extent: block_count vs masks", desc, o.p, o.len,
                 exp_at("disagrees with its masks", VMA_ERR_CORRUPT, k, x), true, NULL);
    }
    /* a mask changed together with block_count: the data no longer
     * lines up with the next extent header */
    if (first >= 0) {
        struct vmai_blockinfo bi = E->info[first];
        int delta = 0;
        if (bi.mask != 0xffff) {
            bi.mask = (uint16_t)(bi.mask | (bi.mask + 1)); /* set the lowest clear bit */
            delta = 1;
        } else {
            bi.mask = 0x7fff;
            delta = -1;
        }
        vt_copy(&o, B->b.p, B->b.len);
        vmai_put_be16(o.p + x + VMA_EOFF_BLOCK_COUNT, (uint16_t)(E->block_count + delta));
        set_bi(&o, B, k, (unsigned)first, &bi);
        snprintf(desc, sizeof(desc), "%s: extent %u entry %d: mask and block_count %+d",
                 B->name, k, first, delta);
        run_case("re-signed extent: mask and block_count shifted", desc, o.p, o.len,
                 exp_("bad extent magic|truncated inside", 0), true, NULL);
    }
    vt_free(&o);
}

/* The extent's reserved field, a blockinfo's reserved bits. */
static void resigned_ext_reserved(const struct ext_at *c)
{
    struct base *B = c->B;
    unsigned k = c->k;
    size_t x = c->x;
    const struct vmai_extent *E = c->E;
    int first = c->first, unused = c->unused;
    struct vt_buf o = {0};
    char desc[200];

    /* the reserved field */
    uint16_t res[] = {0x0001, 0x0080, 0x8000, 0xffff};
    for (unsigned j = 0; j < 4; j++) {
        vt_copy(&o, B->b.p, B->b.len);
        vmai_put_be16(o.p + x + VMA_EOFF_RESERVED, res[j]);
        vt_resign_extent(o.p + x);
        snprintf(desc, sizeof(desc), "%s: extent %u: reserved 0x%04x", B->name, k, res[j]);
        run_case("re-signed extent: reserved field set", desc, o.p, o.len,
                 exp_at("reserved field", VMA_ERR_CORRUPT, k, x), true, NULL);
    }
    /* reserved bits of a blockinfo (used and unused entries) */
    int rslots[2] = {first, unused};
    for (unsigned s = 0; s < 2; s++) {
        if (rslots[s] < 0)
            continue;
        uint8_t rv[] = {0x01, 0x80};
        for (unsigned j = 0; j < 2; j++) {
            struct vmai_blockinfo bi = E->info[rslots[s]];
            bi.reserved = rv[j];
            vt_copy(&o, B->b.p, B->b.len);
            set_bi(&o, B, k, (unsigned)rslots[s], &bi);
            snprintf(desc, sizeof(desc), "%s: extent %u entry %d: reserved bits 0x%02x",
                     B->name, k, rslots[s], rv[j]);
            run_case("re-signed extent: blockinfo reserved bits", desc, o.p, o.len,
                     exp_at("reserved bits", VMA_ERR_CORRUPT, k, x), true, NULL);
        }
    }
    vt_free(&o);
}

/* The extent's uuid and magic. */
static void resigned_ext_uuid_magic(const struct ext_at *c)
{
    struct base *B = c->B;
    unsigned k = c->k;
    size_t x = c->x;
    struct vt_buf o = {0};
    char desc[200];

    /* uuid and magic */
    for (unsigned j = 0; j < 2; j++) {
        vt_copy(&o, B->b.p, B->b.len);
        o.p[x + VMA_EOFF_UUID + (j ? 15 : 0)] ^= (unsigned char)(j ? 0x80 : 0x01);
        vt_resign_extent(o.p + x);
        snprintf(desc, sizeof(desc), "%s: extent %u: uuid byte %u changed", B->name, k,
                 j ? 15 : 0);
        run_case("re-signed extent: uuid differs", desc, o.p, o.len,
                 exp_at("uuid differs", VMA_ERR_CORRUPT, k, x), true, NULL);
    }
    static const char *magics[] = {"VMAF", "VMA\0", "\0\0\0\0"};
    for (unsigned j = 0; j < 3; j++) {
        vt_copy(&o, B->b.p, B->b.len);
        memcpy(o.p + x, magics[j], 4);
        vt_resign_extent(o.p + x);
        snprintf(desc, sizeof(desc), "%s: extent %u: magic %u", B->name, k, j);
        run_case("re-signed extent: bad magic", desc, o.p, o.len,
                 exp_at("bad extent magic", VMA_ERR_CORRUPT, k, x), true, NULL);
    }
    vt_free(&o);
}

static void resigned_extents(struct base *B)
{
    unsigned unused_dev = 0;
    for (unsigned d = 1; d < 255 && unused_dev == 0; d++)
        if (B->h->devices[d].name == NULL)
            unused_dev = d;
    for (unsigned k = 0; k < B->next; k++) {
        struct ext_at c = {B, k, B->ext[k], &B->e[k], -1, -1, -1, -1, unused_dev};
        for (unsigned i = 0; i < VMA_BLOCKINFO_PER_EXTENT; i++) {
            unsigned d = c.E->info[i].dev_id;
            if (d == 0) {
                if (c.unused < 0)
                    c.unused = (int)i;
                continue;
            }
            if (c.first < 0)
                c.first = (int)i;
            if (B->h->devices[d].is_vmstate) {
                if (c.vms < 0)
                    c.vms = (int)i;
            } else if (c.disk < 0) {
                c.disk = (int)i;
            }
        }
        resigned_ext_dev_ids(&c);
        resigned_ext_clusters(&c);
        resigned_ext_counts(&c);
        resigned_ext_reserved(&c);
        resigned_ext_uuid_magic(&c);
    }
}

/* ---------------------------------------------------------------- */
/* re-signed headers                                                 */
/* ---------------------------------------------------------------- */

/* The base's header as a vt_hdr (names point into the base). */
static struct vt_hdr *hdr_of(const struct base *B)
{
    struct vt_hdr *d = calloc(1, sizeof(*d));
    if (d == NULL)
        die("out of memory");
    memcpy(d->uuid, B->h->uuid, 16);
    d->ctime = B->h->ctime;
    d->nconf = B->h->config_count;
    for (unsigned i = 0; i < B->h->config_count; i++) {
        d->conf[i].name.str = B->h->configs[i].name;
        d->conf[i].data = B->h->configs[i].data;
        d->conf[i].len = B->h->configs[i].len;
    }
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++) {
        d->dev[i].name.str = B->h->devices[i].name;
        d->dev[i].size = B->h->devices[i].size;
    }
    return d;
}

/* The base with a new header laid out from d (extents unchanged). */
static void rebuild(struct vt_buf *o, const struct base *B, const struct vt_hdr *d)
{
    o->len = 0;
    vt_header_build(o, d);
    vt_append(o, B->b.p + B->hs, B->b.len - B->hs);
}

static void rebuilt_case(const struct base *B, const char *cls, const char *what,
                         const struct vt_hdr *d, struct expect e)
{
    struct vt_buf o = {0};
    rebuild(&o, B, d);
    char desc[200];
    snprintf(desc, sizeof(desc), "%s: %s", B->name, what);
    run_case(cls, desc, o.p, o.len, e, true, NULL);
    vt_free(&o);
}

/* A copy of the base with one 32-bit header field replaced (re-signed
 * when resign). */
static void field_case(const struct base *B, const char *cls, const char *what, size_t off,
                       uint32_t v, bool resign, struct expect e)
{
    struct vt_buf o = {0};
    vt_copy(&o, B->b.p, B->b.len);
    vmai_put_be32(o.p + off, v);
    if (resign)
        vt_resign_header(o.p);
    char desc[200];
    snprintf(desc, sizeof(desc), "%s: %s = %u", B->name, what, v);
    run_case(cls, desc, o.p, o.len, e, true, NULL);
    vt_free(&o);
}

struct ptr {
    size_t off;      /* where the pointer is in the header */
    uint32_t value;  /* the blob offset it holds */
    char what[48];
};

static unsigned header_ptrs(const struct base *B, struct ptr *v)
{
    unsigned n = 0;
    const unsigned char *p = B->b.p;
    for (unsigned i = 0; i < VMA_MAX_CONFIGS; i++) {
        uint32_t a = vmai_get_be32(p + VMA_HOFF_CONFIG_NAMES + 4 * i);
        uint32_t b = vmai_get_be32(p + VMA_HOFF_CONFIG_DATA + 4 * i);
        if (a == 0 || b == 0)
            continue;
        v[n] = (struct ptr){VMA_HOFF_CONFIG_NAMES + 4 * i, a, ""};
        snprintf(v[n++].what, sizeof(v[0].what), "config %u name pointer", i);
        v[n] = (struct ptr){VMA_HOFF_CONFIG_DATA + 4 * i, b, ""};
        snprintf(v[n++].what, sizeof(v[0].what), "config %u data pointer", i);
    }
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++) {
        size_t off = VMA_HOFF_DEV_INFO + VMA_DEV_INFO_SIZE * i;
        uint32_t a = vmai_get_be32(p + off);
        if (a == 0)
            continue;
        v[n] = (struct ptr){off, a, ""};
        snprintf(v[n++].what, sizeof(v[0].what), "device %u name pointer", i);
    }
    return n;
}

/* The first device's dev_id, 0 if the archive has none. */
static unsigned first_device(const struct base *B)
{
    for (unsigned i = 1; i < VMA_DEV_SLOTS; i++)
        if (B->h->devices[i].name != NULL)
            return i;
    return 0;
}

/* Blob pointers: out of range, into a blob's middle, two entries on one
 * blob, a name on a config's data. */
static void resigned_blob_pointers(struct base *B)
{
    const unsigned char *p = B->b.p;
    uint32_t boff = vmai_get_be32(p + VMA_HOFF_BLOB_OFFSET);
    uint32_t bsize = vmai_get_be32(p + VMA_HOFF_BLOB_SIZE);
    struct ptr ptrs[2 * VMA_MAX_CONFIGS + VMA_DEV_SLOTS];
    unsigned np = header_ptrs(B, ptrs);

    /* blob pointers out of range / not on a blob start */
    for (unsigned i = 0; i < np; i++) {
        uint32_t out[] = {bsize, bsize + 1, B->hs, 0x7fffffffu, 0xffffffffu};
        for (unsigned j = 0; j < 5; j++)
            field_case(B, "re-signed header: blob pointer out of range", ptrs[i].what,
                       ptrs[i].off, out[j], true, exp_("not a blob start", VMA_ERR_CORRUPT));
        uint16_t len = vmai_get_le16(p + boff + ptrs[i].value);
        uint32_t mid[] = {ptrs[i].value + 1, ptrs[i].value + 2, ptrs[i].value + 1 + len};
        for (unsigned j = 0; j < 3; j++)
            if (mid[j] < ptrs[i].value + 2u + len)
                field_case(B, "re-signed header: blob pointer into the middle of a blob",
                           ptrs[i].what, ptrs[i].off, mid[j], true,
                           exp_("not a blob start", VMA_ERR_CORRUPT));
        /* into the middle of the next entry's blob */
        const struct ptr *o = &ptrs[(i + 1) % np];
        if (o != &ptrs[i] && vmai_get_le16(p + boff + o->value) >= 2)
            field_case(B, "re-signed header: blob pointer into the middle of a blob",
                       ptrs[i].what, ptrs[i].off, o->value + 3, true,
                       exp_("not a blob start", VMA_ERR_CORRUPT));
    }
    /* two entries pointing at the same blob */
    for (unsigned i = 0; i < np; i++)
        for (unsigned j = 0; j < np; j++) {
            if (i == j)
                continue;
            /* entry j takes entry i's blob. The later of the two in parse
             * order (configs, then devices) is refused: "uses too",
             * unless a name check sees a non-string first. */
            bool j_is_name = strstr(ptrs[j].what, "name") != NULL;
            bool i_is_name = strstr(ptrs[i].what, "name") != NULL;
            if (j_is_name && !i_is_name)
                continue; /* a config text as a name: covered below */
            char what[128];
            snprintf(what, sizeof(what), "%s -> blob of %s", ptrs[j].what, ptrs[i].what);
            field_case(B, "re-signed header: two entries share a blob", what, ptrs[j].off,
                       ptrs[i].value, true, exp_("another entry uses too", VMA_ERR_CORRUPT));
        }
    /* a name pointer at a config's data blob: not a string */
    for (unsigned j = 0; j < np; j++) {
        if (strstr(ptrs[j].what, "name") == NULL)
            continue;
        for (unsigned i = 0; i < np; i++) {
            if (strstr(ptrs[i].what, "data") == NULL)
                continue;
            char what[128];
            snprintf(what, sizeof(what), "%s -> blob of %s", ptrs[j].what, ptrs[i].what);
            field_case(B, "re-signed header: two entries share a blob", what, ptrs[j].off,
                       ptrs[i].value, true,
                       exp_("another entry uses too|not one NUL-terminated string",
                            VMA_ERR_CORRUPT));
            break;
        }
    }
}

/* header_size, the blob buffer's offset and size, version. */
static void resigned_sizes(struct base *B)
{
    const unsigned char *p = B->b.p;
    uint32_t boff = vmai_get_be32(p + VMA_HOFF_BLOB_OFFSET);
    uint32_t bsize = vmai_get_be32(p + VMA_HOFF_BLOB_SIZE);
    struct ptr ptrs[2 * VMA_MAX_CONFIGS + VMA_DEV_SLOTS];
    unsigned np = header_ptrs(B, ptrs);

    /* header_size */
    uint32_t hsizes[] = {0xfffffe00u, 0x80000000u, VMA_MAX_HEADER_SIZE + 512, B->hs + 1,
                         B->hs - 1, VMA_HEADER_FIXED_SIZE, 0, 512};
    for (unsigned j = 0; j < sizeof(hsizes) / sizeof(hsizes[0]); j++)
        field_case(B, "re-signed header: bad header_size", "header_size", VMA_HOFF_HEADER_SIZE,
                   hsizes[j], false, exp_("bad header_size", VMA_ERR_CORRUPT));
    if (B->b.len >= B->hs + 512u)
        field_case(B, "re-signed header: bad header_size", "header_size (grown by 512)",
                   VMA_HOFF_HEADER_SIZE, B->hs + 512, true,
                   exp_("bad extent magic|without any extent|missing cluster", 0));
    if (B->hs - 512 > VMA_HEADER_FIXED_SIZE)
        field_case(B, "re-signed header: bad header_size", "header_size (shrunk by 512)",
                   VMA_HOFF_HEADER_SIZE, B->hs - 512, true,
                   exp_(B->hs - 512 - boff < bsize ? "blob buffer" : "bad extent magic",
                        VMA_ERR_CORRUPT));
    /* blob_buffer_size / offset past header_size */
    uint32_t bsizes[] = {B->hs - boff + 1, B->hs - boff + 512, B->hs, 0x80000000u, 0xffffffffu};
    for (unsigned j = 0; j < 5; j++)
        field_case(B, "re-signed header: blob buffer past header_size", "blob_buffer_size",
                   VMA_HOFF_BLOB_SIZE, bsizes[j], true, exp_("blob buffer", VMA_ERR_CORRUPT));
    uint32_t boffs[] = {0, VMA_HEADER_FIXED_SIZE - 1, B->hs, B->hs - bsize + 1, 0xffffffffu};
    for (unsigned j = 0; j < 5; j++)
        field_case(B, "re-signed header: blob buffer past header_size", "blob_buffer_offset",
                   VMA_HOFF_BLOB_OFFSET, boffs[j], true, exp_("blob buffer", VMA_ERR_CORRUPT));
    /* blob_buffer_size that cuts the last blob */
    if (bsize > 2)
        field_case(B, "re-signed header: blob buffer cuts a blob", "blob_buffer_size",
                   VMA_HOFF_BLOB_SIZE, bsize - 1, true,
                   exp_("runs past blob_buffer_size|cut length field", VMA_ERR_CORRUPT));
    if (np > 0)
        field_case(B, "re-signed header: blob buffer cuts a blob", "blob_buffer_size",
                   VMA_HOFF_BLOB_SIZE, 1, true, exp_("not a blob start", VMA_ERR_CORRUPT));
    /* version */
    uint32_t versions[] = {0, 2, 0x01000000u, 0xffffffffu};
    for (unsigned j = 0; j < 4; j++)
        field_case(B, "re-signed header: bad version", "version", VMA_HOFF_VERSION, versions[j],
                   true, exp_("unsupported version", VMA_ERR_CORRUPT));
}

/* uuid: every extent then differs. */
static void resigned_uuid(struct base *B)
{
    struct vt_buf o = {0};
    vt_copy(&o, B->b.p, B->b.len);
    o.p[VMA_HOFF_UUID + 7] ^= 0x10;
    vt_resign_header(o.p);
    char desc[160];
    snprintf(desc, sizeof(desc), "%s: header uuid changed", B->name);
    run_case("re-signed header: uuid", desc, o.p, o.len,
             exp_at("uuid differs", VMA_ERR_CORRUPT, 0, B->hs), true, NULL);
    vt_free(&o);
}

/* Devices: slot 255, slot 0, size past 2^48, size without a name. */
static void resigned_devices(struct base *B)
{
    const unsigned char *p = B->b.p;
    unsigned first_dev = first_device(B);

    if (first_dev != 0) {
        unsigned slots[] = {255, 0};
        for (unsigned j = 0; j < 2; j++) {
            struct vt_hdr *d = hdr_of(B);
            d->dev[slots[j]] = d->dev[first_dev];
            d->dev[first_dev] = (struct vt_dev){{NULL, NULL, 0}, 0};
            char what[64], ph[32];
            snprintf(what, sizeof(what), "device %u moved to slot %u", first_dev, slots[j]);
            snprintf(ph, sizeof(ph), "in slot %u", slots[j]);
            rebuilt_case(B, "re-signed header: device in slot 255 or 0", what, d,
                         exp_(ph, VMA_ERR_CORRUPT));
            free(d);
        }
        /* a second device in slot 255 */
        struct vt_hdr *d = hdr_of(B);
        d->dev[255].name.str = "drive-scsi255";
        d->dev[255].size = VMA_CLUSTER_SIZE;
        rebuilt_case(B, "re-signed header: device in slot 255 or 0", "extra device in slot 255",
                     d, exp_("in slot 255", VMA_ERR_CORRUPT));
        free(d);
        unsigned disk_dev = 0;
        for (unsigned i = 1; i < VMA_DEV_SLOTS && disk_dev == 0; i++)
            if (B->h->devices[i].name != NULL && !B->h->devices[i].is_vmstate)
                disk_dev = i;
        size_t so = VMA_HOFF_DEV_INFO + VMA_DEV_INFO_SIZE * (disk_dev ? disk_dev : first_dev) + 8;
        if (disk_dev != 0) {
            uint64_t sizes[] = {VMA_MAX_DEVICE_SIZE + 1, VMA_MAX_DEVICE_SIZE + 512,
                                (uint64_t)1 << 63, UINT64_MAX};
            for (unsigned j = 0; j < 4; j++) {
                struct vt_buf o = {0};
                vt_copy(&o, p, B->b.len);
                vmai_put_be64(o.p + so, sizes[j]);
                vt_resign_header(o.p);
                char desc[160];
                snprintf(desc, sizeof(desc), "%s: device %u size %llu", B->name, disk_dev,
                         (unsigned long long)sizes[j]);
                run_case("re-signed header: device size past 2^48", desc, o.p, o.len,
                         exp_("beyond the format's limit", VMA_ERR_CORRUPT), true, NULL);
                vt_free(&o);
            }
        }
        field_case(B, "re-signed header: device size without a name", "device name pointer",
                   so - 8, 0, true, exp_("but no name", VMA_ERR_CORRUPT));
    }
}

/* Names: empty, unterminated, unsafe, too long, duplicate. */
static void resigned_names(struct base *B)
{
    unsigned first_dev = first_device(B);

    static char longname[VMA_MAX_NAME_LEN + 2];
    memset(longname, 'n', VMA_MAX_NAME_LEN + 1);
    static char abs_name[4200];
    snprintf(abs_name, sizeof(abs_name), "%s", g_abs_escape);
    const char *unsafe[] = {"a/b", "../x", "../../escape", "x/", "/", abs_name, ".", "..",
                            longname};
    for (unsigned kind = 0; kind < 2; kind++) {
        bool cfg = kind == 0;
        if (cfg ? B->h->config_count == 0 : first_dev == 0)
            continue;
        const char *who = cfg ? "config 0" : "first device";
        for (unsigned j = 0; j < sizeof(unsafe) / sizeof(unsafe[0]); j++) {
            struct vt_hdr *d = hdr_of(B);
            struct vt_name *n = cfg ? &d->conf[0].name : &d->dev[first_dev].name;
            n->str = unsafe[j];
            char what[200];
            snprintf(what, sizeof(what), "%s named '%.40s'%s", who, unsafe[j],
                     strlen(unsafe[j]) > 40 ? "..." : "");
            const char *cls = strcmp(unsafe[j], ".") == 0 || strcmp(unsafe[j], "..") == 0
                                  ? "re-signed header: name '.' or '..'"
                              : unsafe[j] == longname ? "re-signed header: name too long"
                                                      : "re-signed header: name with '/'";
            rebuilt_case(B, cls, what, d, exp_("unsafe or invalid name", VMA_ERR_CORRUPT));
            free(d);
        }
        struct {
            const char *raw;
            size_t len;
            const char *ph;
            const char *cls;
        } raws[] = {
            {"", 0, "is empty", "re-signed header: zero-length name blob"},
            {"abc", 3, "not one NUL-terminated string", "re-signed header: unterminated name blob"},
            {"drive", 5, "not one NUL-terminated string", "re-signed header: unterminated name blob"},
            {"ab\0cd", 6, "not one NUL-terminated string", "re-signed header: unterminated name blob"},
            {"\0", 1, "unsafe or invalid name", "re-signed header: zero-length name blob"},
        };
        for (unsigned j = 0; j < sizeof(raws) / sizeof(raws[0]); j++) {
            struct vt_hdr *d = hdr_of(B);
            struct vt_name *n = cfg ? &d->conf[0].name : &d->dev[first_dev].name;
            n->str = NULL;
            n->raw = raws[j].raw;
            n->rawlen = raws[j].len;
            char what[120];
            snprintf(what, sizeof(what), "%s name blob of %zu bytes", who, raws[j].len);
            rebuilt_case(B, raws[j].cls, what, d, exp_(raws[j].ph, VMA_ERR_CORRUPT));
            free(d);
        }
        /* duplicate names */
        struct vt_hdr *d = hdr_of(B);
        if (cfg) {
            if (d->nconf >= 2) {
                d->conf[1].name = d->conf[0].name;
            } else {
                d->conf[1] = d->conf[0];
                d->conf[1].data = "other";
                d->conf[1].len = 5;
                d->nconf = 2;
            }
            rebuilt_case(B, "re-signed header: duplicate config names", "two configs, one name",
                         d, exp_("same name", VMA_ERR_CORRUPT));
        } else {
            unsigned second = 0;
            for (unsigned i = first_dev + 1; i < 255 && second == 0; i++)
                if (d->dev[i].name.str != NULL)
                    second = i;
            if (second != 0) {
                d->dev[second].name = d->dev[first_dev].name;
            } else {
                second = first_dev + 1;
                d->dev[second].name = d->dev[first_dev].name;
                d->dev[second].size = VMA_CLUSTER_SIZE;
            }
            char what[64];
            snprintf(what, sizeof(what), "device %u named as device %u", second, first_dev);
            rebuilt_case(B, "re-signed header: duplicate device names", what, d,
                         exp_("same name", VMA_ERR_CORRUPT));
        }
        free(d);
    }
}

static void resigned_headers(struct base *B)
{
    resigned_blob_pointers(B);
    resigned_sizes(B);
    resigned_uuid(B);
    resigned_devices(B);
    resigned_names(B);
}

/* ---------------------------------------------------------------- */
/* every length N, and head -c N | vma verify -                      */
/* ---------------------------------------------------------------- */

static int api_verify_pipe(const unsigned char *p, size_t len, char *msg, size_t msglen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        die("pipe: %s", strerror(errno));
    struct feed f = {pfd[1], p, len};
    pthread_t th;
    if (pthread_create(&th, NULL, feed_thread, &f) != 0)
        die("pthread_create failed");
    vma_reader *r = vma_reader_new();
    if (r == NULL)
        die("out of memory");
    int rc = vma_reader_open_fd(r, pfd[0]);
    if (rc == VMA_OK)
        rc = vma_reader_read(r, NULL, NULL);
    snprintf(msg, msglen, "%s", vma_reader_error(r));
    vma_reader_free(r);
    close(pfd[0]); /* a writer still blocked gets EPIPE */
    pthread_join(th, NULL);
    return rc;
}

/* Is n within 2 bytes of the header end, an extent start or an extent's
 * data start? */
static bool near_boundary(const struct base *B, size_t n)
{
    for (unsigned k = 0; k <= B->next; k++) {
        size_t marks[] = {B->ext[k], B->ext[k] + VMA_EXTENT_HEADER_SIZE};
        for (unsigned j = 0; j < 2; j++)
            if (n + 2 >= marks[j] && n <= marks[j] + 2)
                return true;
    }
    return n <= 2 || (n + 2 >= VMA_HEADER_FIXED_SIZE && n <= VMA_HEADER_FIXED_SIZE + 2);
}

/* In-process: every N in [0, len) from a memfd; through a pipe every 16th
 * N and every N near a boundary. */
static void every_length(struct base *B)
{
    struct cls *c = cls_get("truncated at every length N (in-process)");
    int fd = memfd_create("every", MFD_CLOEXEC);
    if (fd < 0)
        die("memfd_create: %s", strerror(errno));
    fd_set_content(fd, B->b.p, B->b.len);
    struct expect e = exp_("truncated", VMA_ERR_TRUNCATED);
    for (size_t n = B->b.len; n-- > 0;) {
        if (n % g_sample != 0 && !near_boundary(B, n))
            continue;
        if (ftruncate(fd, (off_t)n) != 0)
            die("ftruncate: %s", strerror(errno));
        char desc[128], msg[1024];
        snprintf(desc, sizeof(desc), "%s cut to %zu bytes", B->name, n);
        bool known = false;
        for (unsigned k = 1; k < B->next; k++)
            if (B->ext[k] == n && loses_only_vmstate(B, k, B->next))
                known = true;
        for (unsigned via = 0; via < 2; via++) {
            if (via == 1 && n % 16 != 0 && !near_boundary(B, n))
                break;
            int rc = via == 0 ? api_verify(fd, msg, sizeof(msg))
                              : api_verify_pipe(B->b.p, n, msg, sizeof(msg));
            if (known && rc == VMA_OK) {
                if (via == 0) {
                    c->xfail++;
                    fprintf(stderr, "XFAIL [%s] %s: accepted (%s)\n", c->name, desc,
                            XFAIL_VMSTATE);
                }
                continue;
            }
            if (known) {
                failf(c, desc, "refused now, remove its known-failure mark (%s)", XFAIL_VMSTATE);
                continue;
            }
            const char *why = rc == VMA_OK ? "accepted" : msg_problem(msg, &e);
            if (why == NULL && rc != VMA_ERR_TRUNCATED)
                why = "status is not VMA_ERR_TRUNCATED";
            if (why == NULL)
                set_example(c, msg);
            if (why != NULL)
                failf(c, desc, "%s: %s: %s '%s'", via ? "pipe" : "memfd", why,
                      vma_status_name(rc), msg);
        }
        c->api++;
    }
    close(fd);
}

/* The CLI: head -c N | vma verify - for the boundaries +-1 and a sample. */
static void stdin_cuts(struct base *B)
{
    struct cls *c = cls_get("head -c N | vma verify - (CLI)");
    size_t v[512];
    unsigned n = 0;
    size_t marks[] = {0, 4, 8, 60, 2044, 4096, 12288, B->hs};
    for (unsigned i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
        v[n++] = marks[i];
        v[n++] = marks[i] + 1;
        if (marks[i] > 0)
            v[n++] = marks[i] - 1;
    }
    for (unsigned k = 0; k < B->next && n < 480; k++) {
        size_t o = B->ext[k];
        v[n++] = o - 1;
        v[n++] = o;
        v[n++] = o + 1;
        v[n++] = o + 511;
        v[n++] = o + 512;
        v[n++] = o + 513;
    }
    v[n++] = B->b.len - 1;
    for (unsigned i = 0; i < 12; i++)
        v[n++] = (size_t)rnd_below(B->b.len);
    n = uniq(v, n);
    for (unsigned i = 0; i < n; i++) {
        if (v[i] >= B->b.len)
            continue;
        char desc[128];
        snprintf(desc, sizeof(desc), "head -c %zu %s | vma verify -", v[i], B->name);
        /* a cut at a boundary that loses only vmstate clusters is the known
         * defect above: leave it to the xfail cases */
        bool at_boundary = false;
        unsigned k = 0;
        for (k = 1; k < B->next; k++)
            if (B->ext[k] == v[i]) {
                at_boundary = true;
                break;
            }
        if (at_boundary && loses_only_vmstate(B, k, B->next))
            continue;
        if (!cli_take(c))
            continue;
        const char *args[] = {"verify", "-", NULL};
        struct expect e = exp_("truncated", VMA_ERR_TRUNCATED);
        cli_result(c, desc, "vma verify -", run_vma(args, B->b.p, v[i]), &e, false);
        c->cli++;
    }
}

/* ---------------------------------------------------------------- */

/* Wall-clock time of each phase, for information only. */
static void phase(const char *done)
{
    static struct timespec t0;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (done != NULL)
        printf("phase %-45s %7.1f s\n", done,
               (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9);
    fflush(stdout);
    t0 = t;
}

static void setup_dirs(void)
{
    const char *tmp = getenv("TMPDIR");
    const char *root = tmp && *tmp ? tmp : access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_work, sizeof(g_work), "%s/vma-matrix-XXXXXX", root);
    if (mkdtemp(g_work) == NULL)
        die("mkdtemp in %s: %s", root, strerror(errno));
    snprintf(g_scratch, sizeof(g_scratch), "%s/scratch", g_work);
    snprintf(g_io, sizeof(g_io), "%s/io", g_work);
    snprintf(g_top, sizeof(g_top), "%s/a", g_work);
    snprintf(g_mid, sizeof(g_mid), "%s/a/b", g_work);
    snprintf(g_jail, sizeof(g_jail), "%s/a/b/jail", g_work);
    snprintf(g_target, sizeof(g_target), "%s/target", g_jail);
    /* an absolute name a hostile config could carry */
    snprintf(g_abs_escape, sizeof(g_abs_escape), "%s/abs-escape", g_work);
    const char *dirs[] = {g_scratch, g_io, g_top, g_mid, g_jail};
    for (unsigned i = 0; i < 5; i++)
        if (mkdir(dirs[i], 0755) != 0)
            die("mkdir %s: %s", dirs[i], strerror(errno));
}

static void cleanup(void)
{
    if (g_work[0])
        vt_rm_tree(g_work);
}

static void on_signal(int sig)
{
    (void)sig;
    _exit(98); /* atexit handlers do not run here; meson's timeout kills us anyway */
}

/* Arguments and environment: the golden dir, the vma binary, the part to
 * run, the seed, the sampling strides and the runner (valgrind). */
static void parse_args(int argc, char **argv, bool *do_header, bool *do_rest)
{
    if (argc < 3) {
        fprintf(stderr, "usage: corruption_matrix <golden-dir> <vma-binary> "
                        "[part=all|header|rest] [seed=N]\n");
        exit(99);
    }
    g_golden = argv[1];
    g_vma = argv[2];
    const char *s = getenv("VMA_MATRIX_SEED");
    if (s != NULL && *s)
        g_seed = strtoull(s, NULL, 0);
    *do_header = *do_rest = true;
    for (int i = 3; i < argc; i++) {
        if (strncmp(argv[i], "seed=", 5) == 0)
            g_seed = strtoull(argv[i] + 5, NULL, 0);
        else if (strcmp(argv[i], "part=header") == 0)
            *do_rest = false;
        else if (strcmp(argv[i], "part=rest") == 0)
            *do_header = false;
        else if (strcmp(argv[i], "part=all") != 0)
            die("unknown argument '%s'", argv[i]);
    }
    g_rng = g_seed;
    s = getenv("VMA_MATRIX_CLI_STRIDE");
    if (s != NULL && *s)
        g_cli_stride = strtoul(s, NULL, 10) ? strtoul(s, NULL, 10) : 1;
    s = getenv("VMA_MATRIX_SAMPLE");
    if (s != NULL && *s)
        g_sample = strtoul(s, NULL, 10) ? strtoul(s, NULL, 10) : 1;
    s = getenv("VMA_MATRIX_API");
    if (s != NULL && strcmp(s, "0") == 0)
        g_api = false;
}

/* VMA_RUNNER split into g_runner; returns it as given, for the banner. */
static const char *parse_runner(void)
{
    static char runner[1024];
    const char *s = getenv("VMA_RUNNER");
    if (s == NULL || *s == '\0')
        return "";
    snprintf(runner, sizeof(runner), "%s", s);
    char *save = NULL;
    for (char *t = strtok_r(runner, " \t", &save); t != NULL && g_nrunner < 15;
         t = strtok_r(NULL, " \t", &save))
        g_runner[g_nrunner++] = t;
    return s;
}

/* The archives every class starts from: two written here, the goldens. */
static void make_bases(void)
{
    base_writer();
    base_vmstate_tail();
    static const char *golden[] = {"basic.vma", "legacy.vma", "odd-sizes.vma", "zero-disk.vma",
                                   "diskless.vma"};
    for (unsigned i = 0; i < sizeof(golden) / sizeof(golden[0]); i++)
        base_golden(golden[i]);
    fflush(stdout);
}

/* Every class but the header bit flips, over every base. */
static void run_rest(void)
{
    for (unsigned i = 0; i < g_nbases; i++)
        extent_bitflips(g_bases[i]);
    phase("extent bit flips");
    for (unsigned i = 0; i < g_nbases; i++) {
        struct base *B = g_bases[i];
        truncations(B);
        drop_dup(B);
    }
    phase("truncation, dropped and duplicated extents");
    for (unsigned i = 0; i < g_nbases; i++)
        resigned_extents(g_bases[i]);
    phase("re-signed extents");
    for (unsigned i = 0; i < g_nbases; i++)
        resigned_headers(g_bases[i]);
    phase("re-signed headers");
    if (g_api) {
        every_length(g_bases[0]); /* writer-small */
        every_length(g_bases[1]); /* vmstate-tail: only its boundary cut is a known defect */
        every_length(g_bases[6]); /* diskless */
        every_length(g_bases[5]); /* zero-disk */
    }
    phase("every length N");
    stdin_cuts(g_bases[0]);
    stdin_cuts(g_bases[2]);
    phase("head -c N | vma verify -");
}

/* The table of classes, an example message each; the exit status. */
static int report(void)
{
    printf("\n%-62s %9s %7s  %s\n", "class", "in-proc", "CLI", "result");
    unsigned long tot_api = 0, tot_cli = 0;
    for (unsigned i = 0; i < g_ncls; i++) {
        const struct cls *c = &g_cls[i];
        tot_api += c->api;
        tot_cli += c->cli;
        char res[128];
        if (c->failed)
            snprintf(res, sizeof(res), "%lu FAILED", c->failed);
        else if (c->xfail)
            snprintf(res, sizeof(res), "all refused but %lu known (XFAIL)", c->xfail);
        else
            snprintf(res, sizeof(res), "all refused");
        printf("%-62s %9lu %7lu  %s\n", c->name, c->api, c->cli, res);
    }
    printf("%-62s %9lu %7lu  %s\n", "total", tot_api, tot_cli,
           g_failures ? "FAILED" : "all refused cleanly");
    printf("\nan example message per class:\n");
    for (unsigned i = 0; i < g_ncls; i++)
        printf("  %s:\n    %s\n", g_cls[i].name, g_cls[i].example);
    if (g_failures)
        fprintf(stderr, "corruption_matrix: %lu failures\n", g_failures);
    return g_failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    bool do_header, do_rest;
    parse_args(argc, argv, &do_header, &do_rest);
    const char *runner_env = parse_runner();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    setup_dirs();
    atexit(cleanup);
    g_memfd = memfd_create("case", MFD_CLOEXEC);
    if (g_memfd < 0)
        die("memfd_create: %s", strerror(errno));

    printf("corruption_matrix: seed %llu (rerun with VMA_MATRIX_SEED=%llu), vma %s%s%s\n"
           "in-process runs %s; bit flips and every-length cuts in-process: every %lu%s; "
           "CLI: every %lu%s of its cases\n",
           g_seed, g_seed, runner_env, *runner_env ? " " : "", g_vma,
           g_api ? "on" : "off", g_sample, g_sample == 1 ? " (all)" : "th (sampled)",
           g_cli_stride, g_cli_stride == 1 ? " (all)" : "th");
    fflush(stdout);
    make_bases();

    /* Every bit of the fixed header: the golden basic.vma and the writer's.
     * The header bit flips use no random numbers, so part=header and
     * part=rest make the same cases as one run of both. */
    phase(NULL);
    if (do_header) {
        header_bitflips(g_bases[2], 61, true); /* basic.vma */
        header_bitflips(g_bases[0], 127, false); /* writer-small.vma */
        phase("header bit flips");
    }
    if (do_rest)
        run_rest();
    return report();
}
