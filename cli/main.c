/*
 * vma: list, check, extract and create Proxmox VE VMA backup archives.
 * This file only picks the command; each command lives in cmd_<name>.c.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "help.h"
#include "json.h"
#include "progress_bar.h"

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
    { "checksum", cmd_checksum },
    { "backup", cmd_backup },
};

int main(int argc, char **argv)
{
    static char progname[] = "vma";
    size_t i;

    if (cli_std_fds_init() != 0)
        return CLI_FAIL;
    cli_set_name(argv[0]);
    if (argc < 2)
        return cli_usage(stderr);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        return cli_usage(stdout);
    /* The loaded library's version: the command has none of its own. */
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("%s (libvma) %s\n", cli_name(), vma_version());
        return cli_flush_stdout();
    }
    if (!strcmp(argv[1], "help")) /* vma help [<command>] */
        return argc == 2 ? cli_usage(stdout)
               : argc == 3 && cli_help(argv[2], stdout) == 0 ? cli_flush_stdout()
                                                             : cli_usage(stderr);
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(argv[1], commands[i].name)) {
            int rc;

            /* The command sees its options from argv[1] on; getopt's own
             * messages then start with "vma: ". */
            cli_set_command(commands[i].name);
            argv[1] = progname;
            rc = commands[i].run(argc - 1, argv + 1);
            progress_bar_end();
            return cli_json_finish(rc);
        }
    }
    return cli_usage(stderr);
}
