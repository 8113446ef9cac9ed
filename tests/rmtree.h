/*
 * The tests' scratch directories: rm -rf, and paths inside one (public
 * API tests and internal ones alike include it; it needs nothing of
 * libvma).
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_TESTS_RMTREE_H
#define LIBVMA_TESTS_RMTREE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

static inline int vt_rm_entry(const char *path, const struct stat *st, int flag,
                              struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Remove path and everything below it; errors are ignored. */
static inline void vt_rm_tree(const char *path)
{
    nftw(path, vt_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A new directory "$TMPDIR/<prefix>-XXXXXX" (else /tmp) in buf, as
 * mkdtemp() makes it; returns buf, or NULL with errno set. */
static inline char *vt_mkdtemp(char *buf, size_t len, const char *prefix)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, len, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    return mkdtemp(buf);
}

/* "dir/name" in one of four static buffers used in turn, so that up to
 * four such paths may be in use at once (the arguments of one call). Not
 * for threads. */
static inline char *vt_path_in(const char *dir, const char *name)
{
    static char buf[4][4096];
    static unsigned i;
    char *p = buf[i++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
    return p;
}

#endif
