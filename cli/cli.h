/*
 * Shared declarations of the vma command: exit codes, usage, error output,
 * option parsing and signal handling. Only the CLI prints; the library never.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_H
#define VMA_CLI_H

#include <signal.h>
#include <stdio.h>

#include "vma.h"

/* Exit codes: see docs/cli.md. */
enum { CLI_OK = 0, CLI_USAGE = 1, CLI_FAIL = 2 };
/* --salvage only: partial, some data lost (cmd_salvage.c). */
enum { CLI_PARTIAL = 3 };

/* Print the usage text to `f`; returns CLI_OK for stdout (help was asked
 * for) and CLI_USAGE otherwise. */
int cli_usage(FILE *f);

/* Print "vma: <message>" on stderr and return CLI_FAIL. After a caught
 * SIGINT/SIGTERM the message is "interrupted by signal" instead: the
 * failure is then the EINTR or cancelled callback the signal caused. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* getopt_long() over `optstring` with long options: "--help" returns
 * 'h', "--compress=<c>" 'Z', "--output-format=<f>" 'J', "--progress" 'p',
 * "--no-progress" 'P', "--uuid=<u>" 'U', "--ctime=<t>" 'T',
 * "--salvage" 'S', "--force-header" 'F', and for backup "--qmp=<s>" 'Q',
 * "--qga=<s>" 'G', "--fleecing-dir=<d>" 'D', "--qmp-timeout=<s>" 'O',
 * "--cleanup" 'C'. A command
 * that does not take one treats it as an unknown option (a usage error). */
int cli_getopt(int argc, char **argv, const char *optstring);

/* Set by the SIGINT/SIGTERM handler. */
extern volatile sig_atomic_t cli_signal;

/* Catch SIGINT and SIGTERM (no SA_RESTART, so blocking calls return
 * EINTR) and ignore SIGPIPE. Returns 0 or -1. */
int cli_catch_signals(void);

/* extract makes files named <config> and tmp-disk-<devname>.raw (then
 * disk-<devname>.raw): each must fit a file name, 255 bytes (NAME_MAX). */
/* Arrays indexed by dev_id (0 is never used; the library hands out
 * 1..VMA_MAX_DEVICES). */
#define CLI_DEV_SLOTS (VMA_MAX_DEVICES + 1u)
#define CLI_FILE_NAME_MAX 255u
#define CLI_DEVNAME_MAX (CLI_FILE_NAME_MAX - (unsigned)(sizeof("tmp-disk-.raw") - 1))

/* "dir/<prefix><name><suffix>" in a new string, or NULL when out of memory. */
char *cli_path(const char *dir, const char *prefix, const char *name,
               const char *suffix);

/* Let a caught SIGINT/SIGTERM cancel this reader or writer (NULL: none),
 * so that a read or write waiting on an idle pipe stops at once. Clear it
 * before the handle is freed. */
void cli_cancel_on_signal(vma_reader *r, vma_writer *w);

/* The same for a source being opened (qemu-nbd starting, an NBD
 * handshake); NULL: none. */
void cli_cancel_source_on_signal(vma_source *s);

/* The same for a live backup (vma_backup_cancel()); NULL: none. */
void cli_cancel_backup_on_signal(vma_backup *b);

/* Read a whole config file into a new buffer (the library, not we,
 * enforces the size limit). CLI_OK, or CLI_FAIL after the message. */
int cli_read_file(const char *path, void **out, size_t *len);

/* A reader on the archive at path ("-" = stdin), or NULL after printing
 * the library's message. A caught signal cancels it (see above). */
vma_reader *cli_open_archive(const char *path);

/* Free a reader from cli_open_archive(). NULL is a no-op. */
void cli_close_archive(vma_reader *r);

/* The start of list, config and verify: parse the options (opt() gets each
 * one but -h and returns 0 to accept it; NULL accepts none), then open the
 * one archive argument. NULL after printing usage or the error, with the
 * exit code in *rc. */
vma_reader *cli_archive_args(int argc, char **argv, const char *optstring,
                             int (*opt)(int c, void *ctx), void *ctx, int *rc);

/* Make descriptors 0-2 safe at startup: a closed one gets /dev/null
 * (opened so that I/O on it still fails), so that no file the command or
 * the library opens lands there and is read as the archive or written as
 * output. Remembers which were closed.
 * Returns 0, or -1 if /dev/null cannot be opened. */
int cli_std_fds_init(void);

/* 1 if descriptor fd (0-2) was closed when vma started. */
int cli_std_was_closed(int fd);

/* Flush stdout; returns CLI_OK or fails with a message ("standard output
 * is closed" when it was at startup and something was printed). */
int cli_flush_stdout(void);

/* After a command wrote its whole JSON document: flush stdout and mark it
 * printed (main() then prints no error object). Returns CLI_OK or fails
 * as cli_flush_stdout(). */
int cli_json_printed(void);

int cmd_list(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_checksum(int argc, char **argv);
int cmd_backup(int argc, char **argv);
/* extract/verify --salvage (extract: 1 for extract, 0 for verify). */
int cmd_salvage(int argc, char **argv, int extract);
/* 1 if argv holds the option --salvage (before a "--"). */
int cli_has_salvage(int argc, char **argv);

#endif
