/*
 * Per-command usage texts (see help.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_HELP_H
#define VMA_CLI_HELP_H

#include <stdio.h>

/* The command main() dispatched to (its --help prints its own usage). */
void cli_set_command(const char *name);

/* Print the usage of command `name` to f: 0, or -1 for no such command. */
int cli_help(const char *name, FILE *f);

/* The command's name as invoked (basename of argv[0]: vma, vmarchive...),
 * for the version and usage lines; "vma" until cli_set_name(). */
void cli_set_name(const char *argv0);
const char *cli_name(void);

/* Usage text with each "vma " that starts a command line (at a line's
 * start, after "usage: " or "(") written as the invoked name. */
void cli_put_usage(const char *text, FILE *f);

/* cli_help() of the current command (-1 before dispatch). */
int cli_help_current(FILE *f);

#endif
