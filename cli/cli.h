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

/* Print the usage text to `f`; returns CLI_OK for stdout (help was asked
 * for) and CLI_USAGE otherwise. */
int cli_usage(FILE *f);

/* Print "vma: <message>" on stderr and return CLI_FAIL. After a caught
 * SIGINT/SIGTERM the message is "interrupted by signal" instead: the
 * failure is then the EINTR or cancelled callback the signal caused. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* getopt() that also maps "--help" to 'h'. */
int cli_getopt(int argc, char **argv, const char *optstring);

/* Set by the SIGINT/SIGTERM handler; the only global of the CLI. */
extern volatile sig_atomic_t cli_signal;

/* Catch SIGINT and SIGTERM (no SA_RESTART, so blocking calls return
 * EINTR) and ignore SIGPIPE. Returns 0 or -1. */
int cli_catch_signals(void);

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

/* Flush stdout; returns CLI_OK or fails with a message. */
int cli_flush_stdout(void);

int cmd_list(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_create(int argc, char **argv);

#endif
