/*
 * The memory input (vma_reader_open_memory, used by the fuzz targets)
 * against a descriptor: for each archive given, and for cut and
 * byte-flipped copies of it, both must end with the same status, the same
 * message and the same clusters handed out. So the fuzzers, which read
 * from memory, test the checks that a descriptor's reader makes.
 *
 * Usage: memory_input <file or directory>...
 * SPDX-License-Identifier: MIT
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reader_internal.h"

static int g_fail, g_cases;

struct outcome {
    int status;
    char err[VMAI_ERRLEN];
    uint64_t clusters, sum;
};

static int hash_cluster(void *opaque, unsigned dev_id, uint32_t cluster_num, uint16_t mask,
                        const unsigned char *data)
{
    uint64_t *h = opaque;
    *h = (*h ^ dev_id) * 1099511628211u;
    *h = (*h ^ cluster_num) * 1099511628211u;
    *h = (*h ^ mask) * 1099511628211u;
    for (unsigned b = 0; b < 16; b++)
        if (mask & (1u << b)) { /* stored blocks follow each other */
            for (size_t i = 0; i < 4096; i += 64)
                *h = (*h ^ data[i]) * 1099511628211u;
            data += 4096;
        }
    return 0;
}

static void run(vma_reader *r, int open_rc, struct outcome *o)
{
    o->sum = 14695981039346656037u;
    o->status = open_rc == VMA_OK ? vma_reader_read(r, hash_cluster, &o->sum) : open_rc;
    snprintf(o->err, sizeof(o->err), "%s", vma_reader_error(r));
    vma_reader_counters(r, &o->clusters, NULL, NULL);
}

static void compare(const char *name, const char *variant, const unsigned char *data, size_t len)
{
    struct outcome a = {0}, b = {0};
    int fd = memfd_create("memory_input", MFD_CLOEXEC);
    if (fd < 0 || (len > 0 && write(fd, data, len) != (ssize_t)len) || lseek(fd, 0, SEEK_SET)) {
        fprintf(stderr, "FAIL memfd for %s\n", name);
        g_fail++;
        return;
    }
    vma_reader *r = vma_reader_new();
    run(r, vma_reader_open_fd(r, fd), &a);
    vma_reader_free(r);
    close(fd);
    r = vma_reader_new();
    run(r, vma_reader_open_memory(r, data, len), &b);
    vma_reader_free(r);
    g_cases++;
    if (a.status != b.status || strcmp(a.err, b.err) != 0 || a.clusters != b.clusters ||
        a.sum != b.sum) {
        fprintf(stderr,
                "FAIL %s (%s): descriptor %s '%s' %llu clusters, memory %s '%s' %llu clusters%s\n",
                name, variant, vma_status_name(a.status), a.err, (unsigned long long)a.clusters,
                vma_status_name(b.status), b.err, (unsigned long long)b.clusters,
                a.sum != b.sum ? ", different data" : "");
        g_fail++;
    }
}

static void check_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        fprintf(stderr, "FAIL cannot open %s\n", path);
        g_fail++;
        if (f != NULL)
            fclose(f);
        return;
    }
    size_t len = (size_t)st.st_size;
    unsigned char *data = malloc(len + 1);
    if (data == NULL || fread(data, 1, len, f) != len) {
        fprintf(stderr, "FAIL cannot read %s\n", path);
        g_fail++;
        fclose(f);
        free(data);
        return;
    }
    fclose(f);
    compare(path, "whole", data, len);
    /* cut: inside the sniffed bytes, the header, the first extents, the end */
    size_t cuts[] = {0, 3, 9, 100, 12288, 13000, len / 3, len / 2, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
        if (cuts[i] < len) {
            char v[64];
            snprintf(v, sizeof(v), "cut at %zu", cuts[i]);
            compare(path, v, data, cuts[i]);
        }
    /* a flipped byte at spread positions: codec framing and data errors */
    for (unsigned k = 1; k <= 7 && len > 0; k++) {
        size_t at = len * k / 8;
        char v[64];
        snprintf(v, sizeof(v), "byte %zu flipped", at);
        data[at] ^= 0x5a;
        compare(path, v, data, len);
        data[at] ^= 0x5a;
    }
    free(data);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "FAIL %s: no such file\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            check_file(argv[i]);
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL) {
            const char *dot = strrchr(e->d_name, '.');
            if (e->d_name[0] == '.' || (dot && (!strcmp(dot, ".conf") || !strcmp(dot, ".list") ||
                                                !strcmp(dot, ".sha256") || !strcmp(dot, ".sizes") ||
                                                !strcmp(dot, ".md"))))
                continue;
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
            check_file(path);
        }
        if (d != NULL)
            closedir(d);
    }
    printf("%d cases, %d differ\n", g_cases, g_fail);
    return g_fail != 0 || g_cases == 0;
}
