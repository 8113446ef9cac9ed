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

/* cli_help() of the current command (-1 before dispatch). */
int cli_help_current(FILE *f);

#endif
