/*
 * rm -rf for the tests' scratch directories (public API tests and
 * internal ones alike include it; it needs nothing of libvma).
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_TESTS_RMTREE_H
#define LIBVMA_TESTS_RMTREE_H

#include <ftw.h>
#include <stdio.h>

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

#endif
