/*
 * Index files kept in a cache directory instead of beside the archive (a
 * backup storage may be read-only, shared, or pruned without them): named
 * by the archive's identity, bounded in size, least recently used first
 * out. Internal to libvma, plus vma_index_cache_dir(). SPDX-License-Identifier: MIT
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_internal.h"
#include "index_cache.h"
#include "io.h"

char *vmai_index_cache_path(const char *dir, const vma_reader *r, const struct stat *st)
{
    unsigned char uuid[16];
    char hex[33];
    vma_reader_uuid(r, uuid);
    for (unsigned i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", uuid[i]);
    /* The file too (device, inode): two copies of one backup (same uuid
     * and size) keep an index each instead of replacing each other's. */
    size_t n = strlen(dir) + sizeof("/----.vmaidx") + 32 + 3 * 20;
    char *path = malloc(n);
    if (path != NULL)
        snprintf(path, n, "%s/%s-%llu-%llu-%llu.vmaidx", dir, hex, (unsigned long long)st->st_size,
                 (unsigned long long)st->st_dev, (unsigned long long)st->st_ino);
    return path;
}

void vmai_index_cache_touch(const char *path)
{
    (void)utimensat(AT_FDCWD, path, NULL, 0);
}

struct cached {
    char *name;
    off_t size;
    struct timespec mtime;
};

static int older_first(const void *a, const void *b)
{
    const struct cached *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec)
        return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    return (x->mtime.tv_nsec > y->mtime.tv_nsec) - (x->mtime.tv_nsec < y->mtime.tv_nsec);
}

void vmai_index_cache_evict(const char *dir, uint64_t max_bytes, const char *keep)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (d == NULL) {
        if (dfd >= 0)
            close(dfd);
        return;
    }
    const char *keep_name = strrchr(keep, '/') != NULL ? strrchr(keep, '/') + 1 : keep;
    struct cached *all = NULL;
    size_t count = 0, cap = 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        struct stat st;
        /* Only our own files: <32 hex digits>-<size>.vmaidx, regular. */
        if (len < 40 || strcmp(e->d_name + len - 7, ".vmaidx") != 0 || e->d_name[32] != '-' ||
            fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        total += (uint64_t)st.st_size;
        if (strcmp(e->d_name, keep_name) == 0)
            continue;
        if (count == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            struct cached *n = realloc(all, ncap * sizeof(*n));
            if (n == NULL)
                break;
            all = n;
            cap = ncap;
        }
        if ((all[count].name = strdup(e->d_name)) == NULL)
            break;
        all[count].size = st.st_size;
        all[count].mtime = st.st_mtim;
        count++;
    }
    if (count > 0)
        qsort(all, count, sizeof(*all), older_first);
    for (size_t i = 0; i < count && total > max_bytes; i++)
        if (unlinkat(dfd, all[i].name, 0) == 0)
            total -= (uint64_t)all[i].size;
    for (size_t i = 0; i < count; i++)
        free(all[i].name);
    free(all);
    closedir(d);
}

/* mkdir -p with mode 0700 for what it makes. */
static int make_dirs(char *path)
{
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = mkdir(path, 0700);
        *p = '/';
        if (rc != 0 && errno != EEXIST)
            return -1;
    }
    return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

/* Set this thread's vma_last_error() and return rc. */
static int refuse(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmai_vset_last_error(fmt, ap);
    va_end(ap);
    return rc;
}

int vma_index_cache_dir(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (geteuid() == 0 && (xdg == NULL || xdg[0] != '/'))
        n = snprintf(buf, len, "/var/cache/vmarchive");
    else if (xdg != NULL && xdg[0] == '/')
        n = snprintf(buf, len, "%s/vmarchive", xdg);
    else if (home != NULL && home[0] == '/')
        n = snprintf(buf, len, "%s/.cache/vmarchive", home);
    else
        return refuse(VMA_ERR_NOT_FOUND,
                                   "no index cache directory: neither XDG_CACHE_HOME nor HOME "
                                   "is an absolute path");
    if (n < 0 || (size_t)n >= len)
        return refuse(VMA_ERR_INVALID, "the index cache directory's name is too "
                                                    "long for the buffer");
    if (make_dirs(buf) != 0)
        return refuse(VMA_ERR_IO, "cannot make the index cache directory %s: %s",
                                   buf, strerror(errno));
    return VMA_OK;
}
