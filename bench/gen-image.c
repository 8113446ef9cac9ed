/*
 * gen-image: deterministic test images for bench/bench.sh (same arguments,
 * same bytes, on any machine; a few hundred MB/s to GB/s, so the disk and
 * not the generator sets how long it takes).
 *
 *   gen-image vm PATH SIZE SEED
 *       A VM-like raw disk of SIZE bytes, in 4 MiB segments. Each group of
 *       three segments holds, in a seeded order:
 *         - a hole (never written, so the file is sparse there);
 *         - partly zero 64 KiB clusters: each 4 KiB block is either zero
 *           (written as zero bytes, like blocks a guest freed) or random,
 *           at least one of each per cluster, about half and half;
 *         - compressible data: log-like text lines drawn from a small
 *           vocabulary (zstd -3 makes it several times smaller).
 *   gen-image spread PATH SIZE SEED COUNT CHUNK
 *       A sparse file of SIZE bytes with COUNT chunks of CHUNK random bytes
 *       at evenly spread offsets; the rest are holes.
 *
 * SPDX-License-Identifier: MIT
 */
#define _FILE_OFFSET_BITS 64
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEGMENT (4u << 20)
#define CLUSTER (64u << 10)
#define BLOCK (4u << 10)
#define WORDS 512

/* xoshiro256** seeded by splitmix64: fast, and fixed by the seed alone. */
static uint64_t s[4];

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next(void)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static void seed(uint64_t x)
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        s[i] = z ^ (z >> 31);
    }
}

static void fill_random(unsigned char *p, size_t n)
{
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t v = next();
        memcpy(p + i, &v, 8);
    }
}

/* Partly zero clusters: per cluster a 16-bit mask of data blocks, never
 * all zero nor all data. */
static void fill_partial(unsigned char *p, size_t n)
{
    for (size_t c = 0; c < n; c += CLUSTER) {
        unsigned mask = (unsigned)(next() & 0xffff);
        if (mask == 0 || mask == 0xffff)
            mask = 0x5a5a;
        for (unsigned b = 0; b < CLUSTER / BLOCK && c + (size_t)b * BLOCK < n; b++) {
            unsigned char *q = p + c + (size_t)b * BLOCK;
            size_t len = n - (c + (size_t)b * BLOCK) < BLOCK ? n - (c + (size_t)b * BLOCK) : BLOCK;
            if (mask & (1u << b))
                fill_random(q, len);
            else
                memset(q, 0, len);
        }
    }
}

/* Log-like text: "<seq> <word> <word> ...\n", words from a fixed vocabulary,
 * skewed towards the first ones (the minimum of two draws). */
static char vocab[WORDS][12];
static unsigned char vocab_len[WORDS];
static uint64_t line_no;

static void make_vocab(void)
{
    for (int i = 0; i < WORDS; i++) {
        unsigned len = 2 + (unsigned)(next() % 9);
        for (unsigned j = 0; j < len; j++)
            vocab[i][j] = (char)('a' + next() % 26);
        vocab_len[i] = (unsigned char)len;
    }
}

static void fill_text(unsigned char *p, size_t n)
{
    char line[256];
    size_t at = 0;
    while (at < n) {
        int len = snprintf(line, sizeof(line), "%010" PRIu64, line_no++);
        unsigned words = 4 + (unsigned)(next() % 9);
        for (unsigned w = 0; w < words; w++) {
            uint64_t r = next();
            unsigned a = (unsigned)(r % WORDS), b = (unsigned)((r >> 32) % WORDS);
            unsigned k = a < b ? a : b;
            line[len++] = ' ';
            memcpy(line + len, vocab[k], vocab_len[k]);
            len += vocab_len[k];
        }
        line[len++] = '\n';
        size_t take = (size_t)len < n - at ? (size_t)len : n - at;
        memcpy(p + at, line, take);
        at += take;
    }
}

static int write_all(int fd, const unsigned char *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w <= 0)
            return -1;
        p += w, n -= (size_t)w, off += (uint64_t)w;
    }
    return 0;
}

static int gen_vm(int fd, uint64_t size)
{
    static const unsigned char perms[6][3] = {
        {0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    unsigned char *buf = malloc(SEGMENT);
    if (!buf)
        return -1;
    make_vocab();
    unsigned perm = 0;
    for (uint64_t seg = 0; seg * SEGMENT < size; seg++) {
        uint64_t off = seg * SEGMENT;
        size_t len = size - off < SEGMENT ? (size_t)(size - off) : SEGMENT;
        if (seg % 3 == 0)
            perm = (unsigned)(next() % 6);
        switch (perms[perm][seg % 3]) {
        case 0: /* hole */
            continue;
        case 1:
            fill_partial(buf, len);
            break;
        default:
            fill_text(buf, len);
            break;
        }
        if (write_all(fd, buf, len, off) != 0)
            return -1;
    }
    free(buf);
    return 0;
}

static int gen_spread(int fd, uint64_t size, uint64_t count, uint64_t chunk)
{
    unsigned char *buf = malloc(SEGMENT);
    if (!buf || count == 0 || count * chunk > size)
        return -1;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t base = i * (size / count);
        for (uint64_t done = 0; done < chunk; done += SEGMENT) {
            size_t len = chunk - done < SEGMENT ? (size_t)(chunk - done) : SEGMENT;
            fill_random(buf, len);
            if (write_all(fd, buf, len, base + done) != 0)
                return -1;
        }
    }
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int vm = argc == 5 && strcmp(argv[1], "vm") == 0;
    int spread = argc == 7 && strcmp(argv[1], "spread") == 0;
    if (!vm && !spread) {
        fprintf(stderr, "usage: gen-image vm PATH SIZE SEED\n"
                        "       gen-image spread PATH SIZE SEED COUNT CHUNK\n");
        return 1;
    }
    uint64_t size = strtoull(argv[3], NULL, 0);
    seed(strtoull(argv[4], NULL, 0));
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
        perror(argv[2]);
        return 2;
    }
    int rc = vm ? gen_vm(fd, size)
                : gen_spread(fd, size, strtoull(argv[5], NULL, 0), strtoull(argv[6], NULL, 0));
    if (rc != 0 || close(fd) != 0) {
        perror(argv[2]);
        return 2;
    }
    return 0;
}
