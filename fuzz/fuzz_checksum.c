/* Fuzz target: `vma checksum <archive>` as the command runs it (worker
 * threads, clusters out of order and their spill file), the input a memfd
 * opened by its /proc/self/fd path. Its stdout goes to /dev/null; run the
 * libFuzzer binary with -close_fd_mask=2 to drop the command's messages.
 * SPDX-License-Identifier: MIT */
#include <stdbool.h>
#include <stdio.h>
#include <getopt.h>
#include <unistd.h>

#include "cli.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet)
        quiet = freopen("/dev/null", "w", stdout) != NULL;
    char path[64], prog[] = "vma";
    int fd = fuzz_memfd(data, size, path, sizeof(path));
    if (fd < 0)
        return 0;
    char *argv[] = { prog, path, NULL };
    optind = 0; /* getopt starts afresh, as in a new process */
    (void)cmd_checksum(2, argv);
    close(fd);
    return 0;
}
