/*
 * NBD connections (see nbd.h): qemu-nbd by socket activation, or an NBD
 * URI, driven through libnbd's aio calls so that every wait also watches
 * the cancel switch. We do the socket activation ourselves instead of
 * nbd_connect_systemd_socket_activation() because that call lets the
 * child write to our stderr: a library must not print, and qemu-nbd's
 * error belongs in our one-line message.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"
#include "vma.h"

/* --- which path goes where --- */

static const char *const uri_schemes[] = {
    "nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://", "nbds+vsock://",
};

/* A Proxmox VE host: its qemu-nbd (with rbd and iSCSI built in) comes from
 * pve-qemu-kvm, which conflicts with Debian's qemu-utils, so a hint must
 * not name Debian's packages there. */
static bool on_proxmox_ve(void)
{
    return access("/usr/share/doc/pve-qemu-kvm", F_OK) == 0 || access("/etc/pve", F_OK) == 0;
}

/* QEMU's protocol filenames ("<proto>:..."), those of Debian's qemu-utils
 * and qemu-block-extra. An explicit list: a plain relative file name may
 * contain a colon too. */
static const char *const qemu_protocols[] = {
    "rbd", "iscsi", "iser", "nbd", "nbd+tcp", "nbd+unix", "ssh", "http", "https", "ftp",
    "ftps", "gluster", "gluster+tcp", "gluster+unix", "gluster+rdma", "nfs",
};

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* How a target or source given as (format, path) is reached. */
enum vmai_nbd_kind {
    VMAI_NBD_NONE = 0, /* raw file or block device: direct I/O, no NBD */
    VMAI_NBD_QEMU,     /* image format other than raw, or a QEMU protocol
                        * filename (rbd:, iscsi://, nbd:, ssh://, http://, ...):
                        * through qemu-nbd */
    VMAI_NBD_URI,      /* nbd://, nbds://, nbd+unix://, ... of a raw export:
                        * libnbd connects to it directly */
};

/* The one rule shared by restore and create. format may be NULL (raw). */
static enum vmai_nbd_kind nbd_kind(const char *format, const char *path)
{
    bool raw = format == NULL || strcmp(format, "raw") == 0;
    if (path == NULL)
        return VMAI_NBD_NONE;
    for (size_t i = 0; i < sizeof(uri_schemes) / sizeof(uri_schemes[0]); i++)
        if (has_prefix(path, uri_schemes[i]))
            return raw ? VMAI_NBD_URI : VMAI_NBD_QEMU;
    if (!raw)
        return VMAI_NBD_QEMU;
    for (size_t i = 0; i < sizeof(qemu_protocols) / sizeof(qemu_protocols[0]); i++) {
        size_t n = strlen(qemu_protocols[i]);
        if (strncmp(path, qemu_protocols[i], n) == 0 && path[n] == ':')
            return VMAI_NBD_QEMU;
    }
    return VMAI_NBD_NONE;
}

int vma_path_needs_nbd(const char *format, const char *path)
{
    return nbd_kind(format, path) != VMAI_NBD_NONE;
}

#ifdef VMA_HAVE_NBD /* the rest needs libnbd */

#include "libnbd_load.h"

extern char **environ;

#define STDERR_KEEP 4096 /* the tail of qemu-nbd's stderr we keep */

/*
 * The thread qemu-nbd is forked from. The child asks for SIGKILL when its
 * parent dies (PR_SET_PDEATHSIG), so that no qemu-nbd outlives a killed
 * vma; but the kernel sends it when the *thread* that forked ends, and a
 * library caller may open a connection in a short-lived thread and use it
 * in another. So the fork is done by a thread of ours that waits, doing
 * nothing, until qemu-nbd is reaped (vmai_nbd_close()).
 */
struct forker {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool forked; /* fork() returned: pid and err are set */
    bool leave;  /* qemu-nbd is reaped: the thread may end */
    pid_t pid;
    int err;
    /* What the child needs, valid until forked. */
    const char *prog;
    char *const *argv, *const *envp;
    char *pid_digits;
    int sock, out, null;
    pid_t parent;
};

struct vmai_nbd {
    struct nbd_handle *h;
    const struct vmai_cancel *cancel;
    uint64_t size;
    pid_t pid;      /* qemu-nbd, or -1 for a direct URI connection */
    bool connecting; /* in the handshake: a failure is qemu-nbd's own */
    bool reaped;
    bool readonly;  /* nothing to flush: a stop need not wait */
    int wstatus;    /* wait status once reaped */
    int err_fd;     /* read end of qemu-nbd's stdout+stderr; -1 at EOF */
    size_t errlen;
    char errbuf[STDERR_KEEP];
    char dir[96]; /* mkdtemp directory, "" once removed */
    char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int conn_fd;  /* our end, connected before the fork; -1 once libnbd's */
    bool forker_up;
    struct forker fk;
};

/* snprintf that may cut: messages are bounded. */
__attribute__((format(printf, 3, 4))) static void put(char *out, size_t len, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, len, fmt, ap);
    va_end(ap);
}

/* --- qemu-nbd's stderr --- */

/* Read what qemu-nbd wrote so far (non-blocking), keeping the tail. */
static void stderr_drain(struct vmai_nbd *c)
{
    while (c->err_fd >= 0) {
        char buf[1024];
        ssize_t n = read(c->err_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            close(c->err_fd);
            c->err_fd = -1;
            return;
        }
        size_t add = (size_t)n;
        if (c->errlen + add > sizeof(c->errbuf)) {
            size_t drop = c->errlen + add - sizeof(c->errbuf); /* <= errlen */
            memmove(c->errbuf, c->errbuf + drop, c->errlen - drop);
            c->errlen -= drop;
        }
        memcpy(c->errbuf + c->errlen, buf, add);
        c->errlen += add;
    }
}

/* qemu-nbd's own error: its last line starting "qemu-nbd: ", else its
 * last non-empty line; "" when it said nothing. */
static void stderr_line(const struct vmai_nbd *c, char *out, size_t outlen)
{
    const char *best = NULL, *last = NULL;
    size_t best_len = 0, last_len = 0;
    const char *p = c->errbuf, *end = c->errbuf + c->errlen;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        if (len > 0) {
            last = p;
            last_len = len;
            if (len > 10 && memcmp(p, "qemu-nbd: ", 10) == 0) {
                best = p;
                best_len = len;
            }
        }
        p += len + 1;
    }
    if (best == NULL) {
        best = last;
        best_len = last_len;
    }
    snprintf(out, outlen, "%.*s", best ? (int)best_len : 0, best ? best : "");
    for (char *q = out; *q; q++) /* one line, printable */
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            *q = '?';
}

static bool stderr_has(const struct vmai_nbd *c, const char *what)
{
    return memmem(c->errbuf, c->errlen, what, strlen(what)) != NULL;
}

/* --- the child --- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Wait for qemu-nbd to exit, at most timeout_ms (-1: no limit), reading its
 * stderr meanwhile; with `cancellable`, also until the switch fires.
 * Returns true once it is reaped.
 */
static bool child_wait(struct vmai_nbd *c, int timeout_ms, bool cancellable)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    while (!c->reaped) {
        pid_t p = waitpid(c->pid, &c->wstatus, WNOHANG);
        if (p == c->pid || (p < 0 && errno == ECHILD)) {
            c->reaped = true;
            break;
        }
        if (cancellable && vmai_cancelled(c->cancel))
            return false;
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return false;
            wait = (int)left;
        }
        /* qemu-nbd's exit closes its end of the stderr pipe (it is the
         * only writer); after that EOF the zombie is due at once. A look
         * now and then covers a writer that outlives it. */
        struct pollfd fds[2];
        nfds_t n = 0;
        int cap = 10;
        if (c->err_fd >= 0) {
            fds[n++] = (struct pollfd){.fd = c->err_fd, .events = POLLIN};
            cap = 1000;
        }
        if (cancellable && c->cancel != NULL && c->cancel->fd >= 0)
            fds[n++] = (struct pollfd){.fd = c->cancel->fd, .events = POLLIN};
        if (wait < 0 || wait > cap)
            wait = cap;
        poll(fds, n, wait);
        stderr_drain(c);
    }
    stderr_drain(c);
    return true;
}

/* Stop and reap qemu-nbd: SIGTERM, then SIGKILL after 5 s (a read-only one,
 * with nothing to flush, at once: it may be stuck opening rbd:). Not
 * cancellable: a cancelled restore must still leave nothing running. */
static void child_stop(struct vmai_nbd *c)
{
    if (c->pid <= 0 || c->reaped)
        return;
    kill(c->pid, c->readonly ? SIGKILL : SIGTERM);
    if (!child_wait(c, 5000, false)) {
        kill(c->pid, SIGKILL);
        child_wait(c, -1, false);
    }
}

/* The first place in PATH where prog is an executable file. */
static char *find_in_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (path == NULL || *path == '\0')
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path;;) {
        const char *colon = strchr(p, ':');
        int n = (int)(colon ? (size_t)(colon - p) : strlen(p));
        char *cand = NULL;
        if (asprintf(&cand, "%.*s/%s", n, n > 0 ? p : ".", prog) < 0)
            return NULL;
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
            return cand;
        free(cand);
        if (colon == NULL)
            break;
        p = colon + 1;
    }
    errno = ENOENT;
    return NULL;
}

/* The descriptor moved to 10 or above, so the child's dup2() onto 0-3
 * never overwrites another of them. */
static int high_fd(int fd)
{
    if (fd < 0 || fd >= 10)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    int e = errno;
    close(fd);
    errno = e;
    return moved;
}

/* Between fork and exec: async-signal-safe calls only (the caller may
 * have threads). */
__attribute__((noreturn)) static void child_exec(const struct forker *f)
{
    /* A handler of the caller must not run in the child (it could fire
     * the caller's cancel eventfd, which the child shares). Signals are
     * blocked here; reset the handlers before unblocking. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++) {
        struct sigaction cur;
        if (s != SIGKILL && s != SIGSTOP && sigaction(s, NULL, &cur) == 0 &&
            cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN)
            sigaction(s, &dfl, NULL);
    }
    /* Its own process group: a terminal's ^C goes to vma, which then
     * stops qemu-nbd itself, in order. */
    setpgid(0, 0);
    /* Die with us, even by SIGKILL (see struct forker); if we are gone
     * already, the signal will never come. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != f->parent)
        _exit(127);
    if (dup2(f->sock, 3) < 0 || dup2(f->null, 0) < 0 || dup2(f->out, 1) < 0 ||
        dup2(f->out, 2) < 0)
        _exit(127);
#ifdef SYS_close_range
    syscall(SYS_close_range, 4u, ~0u, 0u); /* nothing of the caller's leaks */
#endif
    /* LISTEN_PID must be the pid that execs. */
    char digits[24];
    int n = 0;
    for (unsigned long v = (unsigned long)getpid(); v > 0 || n == 0; v /= 10)
        digits[n++] = (char)('0' + v % 10);
    for (int i = 0; i < n; i++)
        f->pid_digits[i] = digits[n - 1 - i];
    f->pid_digits[n] = '\0';
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(f->prog, f->argv, f->envp);
    static const char msg[] = "qemu-nbd: cannot execute it\n";
    ssize_t w = write(2, msg, sizeof(msg) - 1);
    (void)w;
    _exit(127);
}

/* The forking thread (all signals blocked, as it was started): fork, say
 * so, and wait until told to leave. */
static void *forker_main(void *arg)
{
    struct forker *f = arg;
    pid_t pid = fork();
    if (pid == 0)
        child_exec(f);
    int e = errno;
    pthread_mutex_lock(&f->lock);
    f->pid = pid;
    f->err = e;
    f->forked = true;
    pthread_cond_broadcast(&f->cond);
    while (!f->leave)
        pthread_cond_wait(&f->cond, &f->lock);
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

/* Fork qemu-nbd from a new forking thread; the pid, or -1 with errno. */
static pid_t forker_start(struct vmai_nbd *c)
{
    struct forker *f = &c->fk;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    f->parent = getpid();
    int rc = vmai_thread_start(&f->thread, forker_main, f);
    if (rc != 0) {
        pthread_mutex_destroy(&f->lock);
        pthread_cond_destroy(&f->cond);
        errno = rc;
        return -1;
    }
    c->forker_up = true;
    pthread_mutex_lock(&f->lock);
    while (!f->forked)
        pthread_cond_wait(&f->cond, &f->lock);
    pthread_mutex_unlock(&f->lock);
    errno = f->err;
    return f->pid;
}

/* End the forking thread, once qemu-nbd is reaped (or was never born). */
static void forker_end(struct vmai_nbd *c)
{
    struct forker *f = &c->fk;
    if (!c->forker_up)
        return;
    pthread_mutex_lock(&f->lock);
    f->leave = true;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    c->forker_up = false;
}

/* Our environment without systemd's LISTEN_* variables, plus ours. The
 * LISTEN_PID value has room for the child to write its pid into. */
/*
 * qemu-nbd allocates a buffer for each NBD write (up to 32 MiB); glibc
 * hands buffers that large out by mmap, so every request page-faults and
 * zeroes fresh memory and unmaps it again. With the mmap threshold at 32
 * MiB they are reused from the heap: about a third less CPU for a restore
 * into qcow2. A fixed mmap threshold also fixes the trim threshold at
 * 128 KiB, so the heap's top went back to the kernel after each request
 * and was faulted in again (35,000 faults, 0.2 s of qemu-nbd's one thread
 * for 1 GiB): it is raised to 256 MiB too. Only when the caller did not
 * choose tunables itself.
 */
static char tunables[] =
    "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456";

static char **child_env(char *listen_pid, char *listen_fds)
{
    size_t n = 0;
    bool have_tunables = false;
    for (char **e = environ; e && *e; e++) {
        n++;
        have_tunables |= has_prefix(*e, "GLIBC_TUNABLES=");
    }
    char **env = calloc(n + 4, sizeof(*env));
    if (env == NULL)
        return NULL;
    size_t k = 0;
    for (char **e = environ; e && *e; e++)
        if (!has_prefix(*e, "LISTEN_PID=") && !has_prefix(*e, "LISTEN_FDS=") &&
            !has_prefix(*e, "LISTEN_FDNAMES="))
            env[k++] = *e;
    env[k++] = listen_pid;
    env[k++] = listen_fds;
    if (!have_tunables)
        env[k++] = tunables;
    return env;
}

/* The socket's path is not needed once we are connected: the directory
 * goes at once, before qemu-nbd starts, so that a vma killed while qemu-nbd
 * opens its image leaves none behind. */
static void remove_dir(struct vmai_nbd *c)
{
    if (c->dir[0] == '\0')
        return;
    unlink(c->sock);
    rmdir(c->dir);
    c->dir[0] = '\0';
}

/*
 * Start qemu-nbd on a socket made in a new private directory and connect
 * to it at once (the connection waits in the backlog until qemu-nbd
 * accepts it), then remove the directory: our end is c->conn_fd.
 */
static int spawn_qemu_nbd(struct vmai_nbd *c, const char *format, const char *path,
                          unsigned flags, char *err)
{
    char *prog = find_in_path("qemu-nbd");
    if (prog == NULL) {
        if (errno == ENOENT)
            vmai_errorf(err, "qemu-nbd not found in PATH: %s",
                        on_proxmox_ve() ? "it comes with the Proxmox VE package pve-qemu-kvm"
                                        : "install the Debian package qemu-utils");
        else
            vmai_errorf(err, "out of memory");
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 64)
        tmp = "/tmp"; /* the socket path must fit in sun_path */
    snprintf(c->dir, sizeof(c->dir), "%s/vma-nbd.XXXXXX", tmp);
    if (mkdtemp(c->dir) == NULL) {
        vmai_errorf(err, "cannot make a directory for qemu-nbd's socket in %s: %s", tmp,
                    strerror(errno));
        c->dir[0] = '\0';
        free(prog);
        return -1;
    }
    put(c->sock, sizeof(c->sock), "%s/sock", c->dir);

    char fmt_opt[64], cache_opt[32];
    snprintf(fmt_opt, sizeof(fmt_opt), "--format=%s", format ? format : "raw");
    const char *cache = "writeback";
    if (flags & VMAI_NBD_DIRECT)
        cache = (flags & VMAI_NBD_SYNC) ? "directsync" : "none";
    else if (flags & VMAI_NBD_SYNC)
        cache = "writethrough";
    snprintf(cache_opt, sizeof(cache_opt), "--cache=%s", cache);
    const char *argv[10];
    int a = 0;
    argv[a++] = "qemu-nbd";
    argv[a++] = fmt_opt;
    argv[a++] = cache_opt;
    if (flags & VMAI_NBD_DIRECT)
        argv[a++] = "--aio=native";
    if (flags & VMAI_NBD_DISCARD)
        argv[a++] = "--discard=unmap";
    if (flags & VMAI_NBD_READONLY)
        argv[a++] = "--read-only";
    argv[a++] = "--";
    argv[a++] = path;
    argv[a] = NULL;

    char listen_pid[40] = "LISTEN_PID=";
    char listen_fds[] = "LISTEN_FDS=1";
    char **env = child_env(listen_pid, listen_fds);
    int sock = -1, pipefd[2] = {-1, -1}, null = -1, rc = -1;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, c->sock, sizeof(addr.sun_path));
    if (env == NULL) {
        vmai_errorf(err, "out of memory");
        goto out;
    }
    sock = high_fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (sock < 0 || bind(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(sock, 4) != 0) {
        vmai_errorf(err, "cannot listen on %s for qemu-nbd: %s", c->sock, strerror(errno));
        goto out;
    }
    c->conn_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->conn_fd < 0 || connect(c->conn_fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        vmai_errorf(err, "cannot connect to %s for qemu-nbd: %s", c->sock, strerror(errno));
        goto out;
    }
    remove_dir(c);
    null = high_fd(open("/dev/null", O_RDWR | O_CLOEXEC));
    if (null < 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
        vmai_errorf(err, "cannot start qemu-nbd: %s", strerror(errno));
        goto out;
    }
    pipefd[1] = high_fd(pipefd[1]);
    if (pipefd[1] < 0) {
        vmai_errorf(err, "cannot start qemu-nbd: %s", strerror(errno));
        goto out;
    }
    c->fk.prog = prog;
    c->fk.argv = (char *const *)argv;
    c->fk.envp = env;
    c->fk.pid_digits = listen_pid + strlen("LISTEN_PID=");
    c->fk.sock = sock;
    c->fk.out = pipefd[1];
    c->fk.null = null;
    pid_t pid = forker_start(c);
    if (pid < 0) {
        vmai_errorf(err, "cannot start qemu-nbd: %s", strerror(errno));
        goto out;
    }
    c->pid = pid;
    c->err_fd = pipefd[0];
    pipefd[0] = -1;
    fcntl(c->err_fd, F_SETFL, fcntl(c->err_fd, F_GETFL) | O_NONBLOCK);
    rc = 0;
out:
    if (sock >= 0)
        close(sock); /* qemu-nbd has it; we connect by path */
    if (null >= 0)
        close(null);
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    free(env);
    free(prog);
    return rc;
}

/* --- failures --- */

/* Why the connection failed: qemu-nbd's word if it has one, else libnbd's. */
static void reason(struct vmai_nbd *c, char *out, size_t len)
{
    const char *nbd_err = nbd_get_error();
    char nbd_msg[VMAI_ERRLEN];
    put(nbd_msg, sizeof(nbd_msg), "%s", nbd_err ? nbd_err : "NBD error");
    if (vmai_cancelled(c->cancel)) {
        put(out, len, "cancelled");
        return;
    }
    if (c->pid > 0 && !c->reaped)
        child_wait(c, 2000, true); /* a qemu-nbd that failed is exiting */
    stderr_drain(c);
    char line[VMAI_ERRLEN];
    stderr_line(c, line, sizeof(line));
    if (c->pid > 0 && (c->reaped || line[0] != '\0')) {
        if (stderr_has(c, "Unknown protocol"))
            put(out, len, "%s (%s)", line,
                on_proxmox_ve() ? "on Proxmox VE, pve-qemu-kvm's /usr/bin/qemu-nbd has it: "
                                  "check which qemu-nbd comes first in PATH"
                                : "install the Debian package qemu-block-extra");
        else if (stderr_has(c, "Failed to get \"write\" lock") ||
                 stderr_has(c, "Failed to get \"read\" lock") ||
                 stderr_has(c, "Failed to get shared \"write\" lock"))
            put(out, len, "the image is in use by another process (%s)", line);
        else if (line[0] != '\0')
            put(out, len, "%s", line);
        else if (WIFSIGNALED(c->wstatus))
            put(out, len, "qemu-nbd was killed by signal %d (%s)", WTERMSIG(c->wstatus),
                     strsignal(WTERMSIG(c->wstatus)));
        else
            put(out, len, "qemu-nbd exited early with status %d", WEXITSTATUS(c->wstatus));
        return;
    }
    put(out, len, "%s", nbd_msg);
}

int vmai_nbd_fail(struct vmai_nbd *c, char *err, const char *fmt, ...)
{
    char what[VMAI_ERRLEN], why[VMAI_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    reason(c, why, sizeof(why));
    vmai_errorf(err, "%s: %s", what, why);
    return -1;
}

/* --- the connection --- */

static int cancelled(char *err)
{
    vmai_errorf(err, "cancelled");
    return -1;
}

/* The connection broke. During the handshake the reason alone says it
 * ("qemu-nbd: Failed to blk_new_open ..."). */
static int lost(struct vmai_nbd *c, char *err)
{
    if (!c->connecting)
        return vmai_nbd_fail(c, err, "lost the connection to %s", vmai_nbd_server(c));
    char why[VMAI_ERRLEN];
    reason(c, why, sizeof(why));
    vmai_errorf(err, "%s", why);
    return -1;
}

/* One poll(2) round, waiting at most timeout_ms (-1: until something
 * happens), then nbd_aio_notify_*. */
static int poll_round(struct vmai_nbd *c, int timeout_ms, char *err)
{
    if (vmai_cancelled(c->cancel))
        return cancelled(err);
    int fd = nbd_aio_get_fd(c->h);
    if (fd < 0 || nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h))
        return lost(c, err);
    unsigned dir = nbd_aio_get_direction(c->h);
    struct pollfd p[3];
    nfds_t n = 0;
    p[n++] = (struct pollfd){
        .fd = fd,
        .events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                          ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)),
    };
    if (c->cancel != NULL && c->cancel->fd >= 0)
        p[n++] = (struct pollfd){.fd = c->cancel->fd, .events = POLLIN};
    if (c->err_fd >= 0)
        p[n++] = (struct pollfd){.fd = c->err_fd, .events = POLLIN};
    int ready = poll(p, n, timeout_ms);
    if (ready < 0) {
        if (errno == EINTR)
            return 0; /* the caller loops; a cancel is seen next time */
        vmai_errorf(err, "poll: %s", strerror(errno));
        return -1;
    }
    if (ready == 0)
        return 0;
    stderr_drain(c);
    if (vmai_cancelled(c->cancel))
        return cancelled(err);
    int rc = 0;
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))
        rc = nbd_aio_notify_read(c->h);
    else if (p[0].revents & POLLOUT)
        rc = nbd_aio_notify_write(c->h);
    if (rc < 0 || nbd_aio_is_dead(c->h))
        return lost(c, err);
    return 0;
}

int vmai_nbd_poll(struct vmai_nbd *c, char *err) { return poll_round(c, -1, err); }

int vmai_nbd_progress(struct vmai_nbd *c, char *err) { return poll_round(c, 0, err); }

int vmai_nbd_drain(struct vmai_nbd *c, unsigned max, char *err)
{
    for (;;) {
        int n = nbd_aio_in_flight(c->h);
        if (n < 0)
            return lost(c, err);
        if ((unsigned)n <= max)
            return 0;
        if (vmai_nbd_poll(c, err) < 0)
            return -1;
    }
}

int vmai_nbd_wait_cookie(struct vmai_nbd *c, int64_t cookie, char *err, int *cmd_errno)
{
    for (;;) {
        int done = nbd_aio_command_completed(c->h, (uint64_t)cookie);
        if (done == 1)
            return 0;
        if (done < 0) {
            int e = nbd_get_errno();
            if (cmd_errno != NULL)
                *cmd_errno = e;
            vmai_errorf(err, "%s", strerror(e ? e : EIO));
            return -1;
        }
        if (vmai_nbd_poll(c, err) < 0)
            return -1;
    }
}

int vmai_nbd_open(struct vmai_nbd **out, const char *format, const char *path,
                  unsigned flags, const struct vmai_cancel *cancel, char *err)
{
    *out = NULL;
    enum vmai_nbd_kind kind = nbd_kind(format, path);
    if (kind == VMAI_NBD_NONE) {
        vmai_errorf(err, "%s is a raw file, not an NBD target", path);
        return -1;
    }
    if (vmai_libnbd_load(err, VMAI_ERRLEN) != 0)
        return -1;
    struct vmai_nbd *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        vmai_errorf(err, "out of memory");
        return -1;
    }
    c->cancel = cancel;
    c->readonly = (flags & VMAI_NBD_READONLY) != 0;
    c->pid = -1;
    c->err_fd = -1;
    c->conn_fd = -1;
    c->h = nbd_create();
    if (c->h == NULL) {
        vmai_errorf(err, "%s", nbd_get_error() ? nbd_get_error() : "nbd_create failed");
        free(c);
        return -1;
    }
    if ((flags & VMAI_NBD_BLOCK_STATUS) &&
        nbd_add_meta_context(c->h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0) {
        vmai_errorf(err, "%s", nbd_get_error());
        vmai_nbd_close(c);
        return -1;
    }
    int rc;
    if (kind == VMAI_NBD_QEMU) {
        if (spawn_qemu_nbd(c, format, path, flags, err) != 0) {
            vmai_nbd_close(c);
            return -1;
        }
        rc = nbd_aio_connect_socket(c->h, c->conn_fd);
        c->conn_fd = -1; /* libnbd's now */
    } else {
        rc = nbd_aio_connect_uri(c->h, path);
    }
    c->connecting = true;
    if (rc < 0) {
        lost(c, err);
        vmai_nbd_close(c);
        return -1;
    }
    while (nbd_aio_is_connecting(c->h)) {
        if (vmai_nbd_poll(c, err) < 0) {
            vmai_nbd_close(c);
            return -1;
        }
    }
    c->connecting = false;
    int64_t size = nbd_get_size(c->h);
    if (!nbd_aio_is_ready(c->h) || size < 0) {
        vmai_nbd_fail(c, err, "no NBD connection to %s", vmai_nbd_server(c));
        vmai_nbd_close(c);
        return -1;
    }
    if (!(flags & VMAI_NBD_READONLY) && nbd_is_read_only(c->h) == 1) {
        vmai_errorf(err, "the NBD export is read-only");
        vmai_nbd_close(c);
        return -1;
    }
    c->size = (uint64_t)size;
    *out = c;
    return 0;
}

void vmai_nbd_set_cancel(struct vmai_nbd *c, const struct vmai_cancel *cancel)
{
    c->cancel = cancel;
}

struct nbd_handle *vmai_nbd_handle(struct vmai_nbd *c) { return c->h; }

uint64_t vmai_nbd_size(const struct vmai_nbd *c) { return c->size; }

const char *vmai_nbd_server(const struct vmai_nbd *c)
{
    return c->pid > 0 ? "qemu-nbd" : "the NBD server";
}

int vmai_nbd_finish(struct vmai_nbd *c, char *err)
{
    if (vmai_nbd_drain(c, 0, err) != 0)
        return -1;
    if (nbd_aio_disconnect(c->h, 0) != 0)
        return vmai_nbd_fail(c, err, "disconnecting from %s", vmai_nbd_server(c));
    /* The server closes its end after the disconnect. */
    while (!nbd_aio_is_closed(c->h) && !nbd_aio_is_dead(c->h)) {
        if (vmai_cancelled(c->cancel))
            return cancelled(err);
        if (vmai_nbd_poll(c, err) != 0)
            break;
    }
    if (c->pid <= 0)
        return 0;
    if (!child_wait(c, -1, true))
        return cancelled(err);
    if (WIFEXITED(c->wstatus) && WEXITSTATUS(c->wstatus) == 0)
        return 0;
    char why[VMAI_ERRLEN];
    reason(c, why, sizeof(why));
    vmai_errorf(err, "qemu-nbd failed at the end: %s", why);
    return -1;
}

void vmai_nbd_close(struct vmai_nbd *c)
{
    if (c == NULL)
        return;
    if (c->h != NULL)
        nbd_close(c->h); /* qemu-nbd exits when its client is gone */
    child_stop(c);
    forker_end(c); /* after the reaping: its end would kill qemu-nbd */
    remove_dir(c);
    if (c->err_fd >= 0)
        close(c->err_fd);
    if (c->conn_fd >= 0)
        close(c->conn_fd);
    free(c);
}

#endif /* VMA_HAVE_NBD */
