/*
 * vma: list, check, extract and create Proxmox VE VMA backup archives.
 * This file only picks the command; each command lives in cmd_<name>.c.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    { "list", cmd_list },
    { "config", cmd_config },
    { "create", cmd_create },
    { "extract", cmd_extract },
    { "verify", cmd_verify },
    { "mount", cmd_mount },
};

int main(int argc, char **argv)
{
    static char progname[] = "vma";
    size_t i;

    if (argc < 2)
        return cli_usage(stderr);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        return cli_usage(stdout);
    /* The loaded library's version: the command has none of its own. */
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("vma (libvma) %s\n", vma_version());
        return cli_flush_stdout();
    }
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(argv[1], commands[i].name)) {
            /* The command sees its options from argv[1] on; getopt's own
             * messages then start with "vma: ". */
            argv[1] = progname;
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    return cli_usage(stderr);
}
