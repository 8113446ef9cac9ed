/*
 * Helpers shared by the commands: usage, errors, options, signals, paths.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "help.h"
#include "json.h"
#include "progress_bar.h"

volatile sig_atomic_t cli_signal;

/* Same text as the deployed tool, so scripts that grep it keep working. */
static const char usage_text[] =
    "usage: vma command [command options]\n"
    "\n"
    "vma list <filename>\n"
    "vma config <filename> [-c <config>]\n"
    "vma create <filename> [-v] [--compress=zstd[:N]|gzip[:N]|lzo] [-c <config>] [-d format=<format>:<device name>=<path> [-d ...]]\n"
    "vma extract <filename> [-v] [-d <drive-list>] [-r <fifo>] <targetdir>\n"
    "vma verify <filename> [-v]\n"
    "vma checksum <filename> [-d <drive-list>]\n"
    "vma mount [-f] [-o allow_other] [-c <cachedir>] [-r] [-n] <filename> <mountpoint>\n"
    "vma backup --qmp <socket> [--qga <socket>] [-d <drive-list>] [-c [<name>=]<config>] <filename>\n"
    "(vma <command> --help: the command's options)\n";

int cli_usage(FILE *f)
{
    /* Help asked for after a command: that command's usage only. */
    if (f == stdout && cli_help_current(f) == 0)
        return CLI_OK;
    cli_put_usage(usage_text, f);
    return f == stdout ? CLI_OK : CLI_USAGE;
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;

    progress_bar_end(); /* the message goes on a line of its own */
    fflush(stdout); /* keep the order of stdout and stderr on a terminal */
    fputs("vma: ", stderr);
    if (cli_signal) {
        fputs("interrupted by signal", stderr);
    } else {
        char *msg = NULL;
        va_start(ap, fmt);
        int n = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (n < 0)
            fputs("out of memory for an error message", stderr);
        /* The message may quote names and map lines: it stays one line and
         * drives no terminal (control characters as \n, \x1b). */
        for (int i = 0; i < n; i++) {
            unsigned char c = (unsigned char)msg[i];
            unsigned char next = i + 1 < n ? (unsigned char)msg[i + 1] : 0;
            if (c == '\n')
                fputs("\\n", stderr);
            else if (c < 0x20 || c == 0x7f)
                fprintf(stderr, "\\x%02x", c);
            else if (c == 0xc2 && next >= 0x80 && next <= 0x9f) /* C1 in UTF-8 */
                fprintf(stderr, "\\x%02x\\x%02x", c, msg[++i] & 0xff);
            else
                fputc(c, stderr);
        }
        free(msg);
    }
    fputc('\n', stderr);
    va_start(ap, fmt); /* the same message for --output-format=json */
    cli_json_error(cli_signal ? "interrupted by signal" : NULL, fmt, ap);
    va_end(ap);
    return CLI_FAIL;
}

int cli_getopt(int argc, char **argv, const char *optstring)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "compress", required_argument, NULL, 'Z' }, /* create only */
        { "output-format", required_argument, NULL, 'J' },
        { "progress", no_argument, NULL, 'p' },
        { "no-progress", no_argument, NULL, 'P' },
        { "uuid", required_argument, NULL, 'U' },  /* create only */
        { "ctime", required_argument, NULL, 'T' }, /* create only */
        { "salvage", no_argument, NULL, 'S' },      /* extract, verify */
        { "force-header", no_argument, NULL, 'F' }, /* with --salvage */
        { "qmp", required_argument, NULL, 'Q' },          /* backup only */
        { "qga", required_argument, NULL, 'G' },          /* backup only */
        { "fleecing-dir", required_argument, NULL, 'D' }, /* backup only */
        { "qmp-timeout", required_argument, NULL, 'O' },  /* backup only */
        { "cleanup", no_argument, NULL, 'C' },            /* backup only */
        { "format", required_argument, NULL, 'f' },       /* extract only */
        { "index", required_argument, NULL, 'I' },        /* mount only */
        { NULL, 0, NULL, 0 },
    };

    return getopt_long(argc, argv, optstring, longopts, NULL);
}

/* The handles a caught signal cancels; set and cleared by the main thread
 * only, where the handler runs too (the library's threads block signals),
 * so a handle is never cancelled while it is freed. */
static vma_reader *volatile signal_reader;
static vma_writer *volatile signal_writer;
static vma_source *volatile signal_source;
static vma_backup *volatile signal_backup;

static void on_signal(int sig)
{
    vma_reader *r = signal_reader;
    vma_writer *w = signal_writer;
    vma_source *s = signal_source;
    vma_backup *b = signal_backup;

    cli_signal = sig;
    /* Wakes a read or write waiting on an idle pipe: the progress
     * callbacks see cli_signal only between clusters. */
    if (r)
        vma_reader_cancel(r);
    if (w)
        vma_writer_cancel(w);
    if (s)
        vma_source_cancel(s);
    if (b)
        vma_backup_cancel(b);
}

void cli_cancel_on_signal(vma_reader *r, vma_writer *w)
{
    signal_reader = r;
    signal_writer = w;
    if (cli_signal && r)
        vma_reader_cancel(r);
    if (cli_signal && w)
        vma_writer_cancel(w);
}

void cli_cancel_source_on_signal(vma_source *s)
{
    signal_source = s;
    if (cli_signal && s)
        vma_source_cancel(s);
}

void cli_cancel_backup_on_signal(vma_backup *b)
{
    signal_backup = b;
    if (cli_signal && b)
        vma_backup_cancel(b);
}

int cli_read_file(const char *path, void **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t cap = 0, n = 0;
    char *buf = NULL;
    ssize_t got = 1;

    if (fd < 0)
        return cli_fail("unable to read config file %s - %s", path, strerror(errno));
    while (got > 0) {
        if (n == cap) {
            size_t want = cap ? 2 * cap : 4096;
            char *p = realloc(buf, want);

            if (!p) {
                got = -1;
                errno = ENOMEM;
                break;
            }
            buf = p;
            cap = want;
        }
        got = read(fd, buf + n, cap - n);
        if (got > 0)
            n += (size_t)got;
    }
    if (got < 0) {
        int rc = cli_fail("unable to read config file %s - %s", path, strerror(errno));

        free(buf);
        close(fd);
        return rc;
    }
    close(fd);
    *out = buf;
    *len = n;
    return CLI_OK;
}

int cli_catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return -1;
    /* A reader that goes away must give EPIPE, not kill us mid-cleanup. */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        return -1;
    return 0;
}

char *cli_path(const char *dir, const char *prefix, const char *name,
               const char *suffix)
{
    char *p;

    if (asprintf(&p, "%s/%s%s%s", dir, prefix, name, suffix) < 0)
        return NULL;
    return p;
}

static unsigned char std_closed[3];

int cli_std_fds_init(void)
{
    for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        /* Opened the other way round: the slot is taken, and reads or
         * writes on it still fail (EBADF) as on a closed descriptor. */
        int n = open("/dev/null", fd == STDIN_FILENO ? O_WRONLY : O_RDONLY);
        if (n < 0)
            return -1;
        if (n != fd) { /* lower ones are open: n is fd, but be sure */
            if (dup2(n, fd) < 0)
                return -1;
            close(n);
        }
        std_closed[fd] = 1;
    }
    return 0;
}

int cli_std_was_closed(int fd) { return fd >= 0 && fd <= 2 && std_closed[fd]; }

int cli_flush_stdout(void)
{
    if ((fflush(stdout) != 0 || ferror(stdout)) && std_closed[STDOUT_FILENO])
        return cli_fail("standard output is closed");
    if (ferror(stdout))
        return cli_fail("write error on standard output - %s", strerror(errno));
    return CLI_OK;
}

int cli_json_printed(void)
{
    int rc = cli_flush_stdout();

    if (rc == CLI_OK)
        cli_json_mark_printed();
    return rc;
}

vma_reader *cli_open_archive(const char *path)
{
    vma_reader *r = vma_reader_new();

    if (!r) {
        cli_fail("out of memory");
        return NULL;
    }
    cli_cancel_on_signal(r, NULL);
    if (strcmp(path, "-") == 0 && cli_std_was_closed(STDIN_FILENO)) {
        cli_fail("standard input is closed");
        cli_close_archive(r);
        return NULL;
    }
    if (vma_reader_open_path(r, path) != VMA_OK) {
        cli_fail("%s", vma_reader_error(r));
        cli_close_archive(r);
        return NULL;
    }
    return r;
}

void cli_close_archive(vma_reader *r)
{
    cli_cancel_on_signal(NULL, NULL);
    vma_reader_free(r);
}

vma_reader *cli_archive_args(int argc, char **argv, const char *optstring,
                             int (*opt)(int c, void *ctx), void *ctx, int *rc)
{
    vma_reader *r;
    int c;

    while ((c = cli_getopt(argc, argv, optstring)) != -1) {
        if (c == 'h' || c == '?' || !opt || opt(c, ctx) != 0) {
            *rc = cli_usage(c == 'h' ? stdout : stderr);
            return NULL;
        }
    }
    if (optind + 1 != argc) {
        *rc = cli_usage(stderr);
        return NULL;
    }
    r = cli_open_archive(argv[optind]);
    *rc = r ? CLI_OK : CLI_FAIL;
    return r;
}
