/*
 * qemu-server.conf as vzdump stores it (see pve_config.h).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pve_config.h"

struct buf {
    char *p;
    size_t len, cap;
    int failed;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static int starts(const char *line, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(line, prefix, n) == 0;
}

/* Lines vzdump leaves out: lock:, parent:, unusedN:, its own #qmdump#. */
static int dropped(const char *line, size_t len)
{
    if (starts(line, len, "lock:") || starts(line, len, "parent:") ||
        starts(line, len, "#qmdump#"))
        return 1;
    if (!starts(line, len, "unused"))
        return 0;
    size_t i = 6;
    while (i < len && line[i] >= '0' && line[i] <= '9')
        i++;
    return i > 6 && i < len && line[i] == ':';
}

/* A section header "[name]" ends the current configuration. */
static int section(const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
        len--;
    return len >= 2 && line[0] == '[' && line[len - 1] == ']';
}

/* Where the current configuration ends: at its first [section]. */
static size_t config_end(const char *conf, size_t len)
{
    size_t cut = 0;
    while (cut < len) {
        const char *nl = memchr(conf + cut, '\n', len - cut);
        size_t ln = nl ? (size_t)(nl - conf - cut) : len - cut;
        if (section(conf + cut, ln))
            break;
        cut += ln + 1;
    }
    return cut > len ? len : cut;
}

/* The value of "<key>: <value>" in the kept lines, or NULL. */
static const char *find_key(const char *conf, size_t len, const char *key, size_t *vlen)
{
    size_t klen = strlen(key);
    for (const char *l = conf; l < conf + len;) {
        const char *nl = memchr(l, '\n', (size_t)(conf + len - l));
        size_t n = nl ? (size_t)(nl - l) : (size_t)(conf + len - l);
        if (n > klen && memcmp(l, key, klen) == 0 && l[klen] == ':') {
            const char *v = l + klen + 1;
            while (v < l + n && (*v == ' ' || *v == '\t'))
                v++;
            *vlen = (size_t)(l + n - v);
            return v;
        }
        l += n + 1;
    }
    return NULL;
}

/* "<storeid>:<volname>[,options]": the storage, and the format that the
 * volume name's extension says (raw for block storages: LVM, RBD, ZFS). */
static void map_line(struct buf *b, const char *key, const char *devname, const char *v,
                     size_t vlen)
{
    const char *comma = memchr(v, ',', vlen);
    size_t vol_len = comma ? (size_t)(comma - v) : vlen;
    const char *colon = memchr(v, ':', vol_len);
    size_t store_len = colon && v[0] != '/' ? (size_t)(colon - v) : 0;
    const char *format = "raw";
    static const char *const ext[] = {"qcow2", "vmdk", "raw"};
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        size_t e = strlen(ext[i]);
        if (vol_len > e + 1 && v[vol_len - e - 1] == '.' && memcmp(v + vol_len - e, ext[i], e) == 0)
            format = ext[i];
    }
    char head[600];
    int n = snprintf(head, sizeof(head), "#qmdump#map:%s:%s:", key, devname);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        b->failed = 1;
        return;
    }
    put(b, head, (size_t)n);
    put(b, v, store_len);
    put(b, ":", 1);
    put(b, format, strlen(format));
    put(b, ":\n", 2);
}

int pve_backup_config(const char *conf, size_t len, const char *const *devnames, size_t n,
                      char **out, size_t *out_len, size_t *unmapped,
                      const char **first_unmapped)
{
    struct buf b = {0};
    *unmapped = 0;
    *first_unmapped = NULL;
    put(&b, "", 0);
    for (const char *l = conf; l < conf + len;) {
        const char *nl = memchr(l, '\n', (size_t)(conf + len - l));
        size_t ln = nl ? (size_t)(nl - l) : (size_t)(conf + len - l);
        if (section(l, ln))
            break;
        if (!dropped(l, ln)) {
            put(&b, l, ln);
            put(&b, "\n", 1);
        }
        l += ln + 1;
    }
    /* Map lines look at the configuration before its first section. */
    size_t cut = config_end(conf, len);
    for (size_t i = 0; i < n; i++) {
        const char *key = strncmp(devnames[i], "drive-", 6) == 0 ? devnames[i] + 6 : NULL;
        size_t vlen = 0;
        const char *v = key && *key && strlen(key) < 500 ? find_key(conf, cut, key, &vlen)
                                                          : NULL;
        if (v) {
            map_line(&b, key, devnames[i], v, vlen);
        } else if ((*unmapped)++ == 0) {
            *first_unmapped = devnames[i];
        }
    }
    if (b.failed) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
}

int pve_config_backup_off(const char *conf, size_t len, const char *devname)
{
    static const char *const off[] = {"backup=0", "backup=no", "backup=off", "backup=false"};
    size_t vlen = 0;
    const char *v = strncmp(devname, "drive-", 6) == 0 && devname[6]
                        ? find_key(conf, config_end(conf, len), devname + 6, &vlen) : NULL;
    const char *end = v + vlen;
    /* The options after the volume: ",opt=value,opt=value". */
    for (const char *o = v ? memchr(v, ',', vlen) : NULL; o; ) {
        const char *start = o + 1;
        const char *next = memchr(start, ',', (size_t)(end - start));
        size_t n = (size_t)((next ? next : end) - start);
        for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++)
            if (n == strlen(off[i]) && memcmp(start, off[i], n) == 0)
                return 1;
        o = next;
    }
    return 0;
}
