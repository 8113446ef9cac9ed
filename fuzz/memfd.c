/* The input as a file: a memfd, named by its /proc/self/fd path, for the
 * targets whose code under test opens a path. SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"

int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t path_len)
{
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t put = 0;
    ssize_t n = 0;
    while (put < size && (n = write(fd, data + put, size - put)) > 0)
        put += (size_t)n;
    if (put != size) {
        close(fd);
        return -1;
    }
    snprintf(path, path_len, "/proc/self/fd/%d", fd);
    return fd;
}
