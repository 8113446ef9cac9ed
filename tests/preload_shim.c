/*
 * An LD_PRELOAD shim for the failing-environment tests: makes pread() on
 * one file fail, shrink the file, or crawl, so `vma create` can be tested
 * against a source that breaks while it is read. Everything is driven by
 * the environment; pread() on any other file is untouched.
 *
 *   VMA_SHIM_PATH=<path>        the file to act on (required)
 *   VMA_SHIM_EIO_AT=<offset>    reads stop short before byte <offset>, and a
 *                               read at it fails with EIO
 *   VMA_SHIM_SHRINK_AT=<offset> on the first read that reaches <offset>,
 *   VMA_SHIM_SHRINK_TO=<size>   truncate the file to <size> bytes first
 *                               (reads of at most 512 bytes, the image
 *                               signature check of create, do not count)
 *   VMA_SHIM_DELAY_US=<us>      sleep this long before every read
 *   VMA_SHIM_READY=<path>       create this file at the first read, so a
 *                               test knows the command is in flight
 *   VMA_SHIM_NO_LIB=<soname>    dlopen() of exactly this name fails, as on
 *                               a host without that library (libnbd.so.0,
 *                               libcrypto.so.3: loaded on first use)
 *
 * SPDX-License-Identifier: MIT
 */
#undef _FILE_OFFSET_BITS /* we define both pread and pread64 ourselves */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);
typedef ssize_t (*pread64_fn)(int, void *, size_t, off64_t);

static int env_u64(const char *name, uint64_t *v)
{
    const char *s = getenv(name);
    if (s == NULL || *s == 0)
        return 0;
    *v = strtoull(s, NULL, 0);
    return 1;
}

/* Is fd the file named by VMA_SHIM_PATH? */
static int is_target(int fd)
{
    const char *want = getenv("VMA_SHIM_PATH");
    char link[64], got[PATH_MAX], real[PATH_MAX];
    if (want == NULL || *want == 0)
        return 0;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, got, sizeof(got) - 1);
    if (n < 0)
        return 0;
    got[n] = 0;
    if (realpath(want, real) == NULL)
        return strcmp(got, want) == 0;
    return strcmp(got, real) == 0;
}

static int g_shrunk, g_ready;

/* What the shim does before the real read. Returns -1 (errno set) to fail
 * the read, else the byte count to read (possibly cut). */
static ssize_t before_read(int fd, size_t count, uint64_t off)
{
    if (!is_target(fd))
        return (ssize_t)count;
    uint64_t v;
    if (!g_ready) {
        g_ready = 1;
        const char *ready = getenv("VMA_SHIM_READY");
        if (ready != NULL && *ready) {
            int rfd = open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (rfd >= 0)
                close(rfd);
        }
    }
    if (env_u64("VMA_SHIM_DELAY_US", &v) && v > 0) {
        struct timespec ts = {(time_t)(v / 1000000), (long)(v % 1000000) * 1000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    if (!g_shrunk && count > 512 && env_u64("VMA_SHIM_SHRINK_AT", &v) && off + count > v) {
        uint64_t to = 0;
        env_u64("VMA_SHIM_SHRINK_TO", &to);
        g_shrunk = 1;
        if (truncate(getenv("VMA_SHIM_PATH"), (off_t)to) != 0)
            return -1;
    }
    if (env_u64("VMA_SHIM_EIO_AT", &v) && off + count > v) {
        if (off >= v) {
            errno = EIO;
            return -1;
        }
        count = (size_t)(v - off);
    }
    return (ssize_t)count;
}

ssize_t pread(int fd, void *buf, size_t count, off_t off)
{
    static pread_fn real;
    if (real == NULL)
        real = (pread_fn)dlsym(RTLD_NEXT, "pread");
    ssize_t n = before_read(fd, count, (uint64_t)off);
    if (n < 0)
        return -1;
    return real(fd, buf, (size_t)n, off);
}

ssize_t pread64(int fd, void *buf, size_t count, off64_t off)
{
    static pread64_fn real;
    if (real == NULL)
        real = (pread64_fn)dlsym(RTLD_NEXT, "pread64");
    ssize_t n = before_read(fd, count, (uint64_t)off);
    if (n < 0)
        return -1;
    return real(fd, buf, (size_t)n, off);
}

typedef void *(*dlopen_fn)(const char *, int);

void *dlopen(const char *file, int mode)
{
    static dlopen_fn real;
    const char *missing = getenv("VMA_SHIM_NO_LIB");
    if (file != NULL && missing != NULL && strcmp(file, missing) == 0)
        return NULL; /* dlerror() then has nothing to say: the caller copes */
    if (real == NULL)
        real = (dlopen_fn)dlsym(RTLD_NEXT, "dlopen");
    return real(file, mode);
}
