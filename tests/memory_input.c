/*
 * The memory input (vma_reader_open_memory, used by the fuzz targets)
 * against a descriptor: for each archive given, and for cut and
 * byte-flipped copies of it, both must end with the same status, the same
 * message and the same clusters handed out, also in salvage mode (the
 * same events, the memory input's codec resync included). So the fuzzers,
 * which read from memory, test the checks that a descriptor's reader
 * makes, and embedders get the same answers from either.
 *
 * Usage: memory_input <file or directory>...
 * SPDX-License-Identifier: MIT
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reader_internal.h"

static int g_fail, g_cases, g_salvaged, g_resync;

struct outcome {
    int status;
    char err[VMAI_ERRLEN];
    uint64_t clusters, sum;
    uint64_t events; /* salvage mode: a hash of every event */
    bool resync;     /* an event says the decoder skipped a block or frame */
};

static void hash_event(void *opaque, int event, uint64_t offset, uint64_t length,
                       const char *message)
{
    struct outcome *o = opaque;
    uint64_t *h = &o->events;
    if (strstr(message, "skipped") != NULL && strstr(message, "compressed byte") != NULL)
        o->resync = true;
    *h = (*h ^ (uint64_t)event) * 1099511628211u;
    *h = (*h ^ offset) * 1099511628211u;
    *h = (*h ^ length) * 1099511628211u;
    for (const char *c = message; *c; c++)
        *h = (*h ^ (unsigned char)*c) * 1099511628211u;
}

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

/* A new reader, in salvage mode or not; the caller opens it. */
static vma_reader *new_reader(bool salvage, struct outcome *o)
{
    vma_reader *r = vma_reader_new();
    o->events = 14695981039346656037u;
    if (salvage && vma_reader_set_salvage(r, 0, hash_event, o) != VMA_OK) {
        fprintf(stderr, "FAIL vma_reader_set_salvage: %s\n", vma_reader_error(r));
        g_fail++;
    }
    return r;
}

static void run(vma_reader *r, int open_rc, struct outcome *o)
{
    o->sum = 14695981039346656037u;
    o->status = open_rc == VMA_OK ? vma_reader_read(r, hash_cluster, &o->sum) : open_rc;
    snprintf(o->err, sizeof(o->err), "%s", vma_reader_error(r));
    vma_reader_counters(r, &o->clusters, NULL, NULL);
    vma_reader_free(r);
}

static void compare_mode(const char *name, const char *variant, const unsigned char *data,
                         size_t len, bool salvage)
{
    struct outcome a = {0}, b = {0};
    int fd = memfd_create("memory_input", MFD_CLOEXEC);
    if (fd < 0 || (len > 0 && write(fd, data, len) != (ssize_t)len) || lseek(fd, 0, SEEK_SET)) {
        fprintf(stderr, "FAIL memfd for %s\n", name);
        g_fail++;
        if (fd >= 0)
            close(fd);
        return;
    }
    vma_reader *r = new_reader(salvage, &a);
    run(r, vma_reader_open_fd(r, fd), &a);
    close(fd);
    r = new_reader(salvage, &b);
    run(r, vma_reader_open_memory(r, data, len), &b);
    g_cases++;
    if (b.events != 14695981039346656037u)
        g_salvaged++;
    if (b.resync)
        g_resync++;
    if (a.status != b.status || strcmp(a.err, b.err) != 0 || a.clusters != b.clusters ||
        a.sum != b.sum || a.events != b.events) {
        fprintf(stderr,
                "FAIL %s (%s%s): descriptor %s '%s' %llu clusters, memory %s '%s' %llu "
                "clusters%s%s\n",
                name, variant, salvage ? ", salvage" : "", vma_status_name(a.status), a.err,
                (unsigned long long)a.clusters, vma_status_name(b.status), b.err,
                (unsigned long long)b.clusters, a.sum != b.sum ? ", different data" : "",
                a.events != b.events ? ", different salvage events" : "");
        g_fail++;
    }
}

/* Both ways, and both again in salvage mode (the memory input's resync). */
static void compare(const char *name, const char *variant, const unsigned char *data, size_t len)
{
    compare_mode(name, variant, data, len, false);
    compare_mode(name, variant, data, len, true);
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
    printf("%d cases, %d differ; %d salvage cases had events, %d a codec resync\n", g_cases,
           g_fail, g_salvaged, g_resync);
    /* The inputs hold damaged lzop and zstd streams: resync must be met. */
    return g_fail != 0 || g_cases == 0 || g_resync == 0;
}
