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

/* A reader on the archive at path ("-" = stdin), or NULL after printing
 * the library's message. */
vma_reader *cli_open_archive(const char *path);

/* Flush stdout; returns CLI_OK or fails with a message. */
int cli_flush_stdout(void);

int cmd_list(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_create(int argc, char **argv);

#endif
