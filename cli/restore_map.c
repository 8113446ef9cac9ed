/*
 * Restore map line parser (see restore_map.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "restore_map.h"
#include "vma.h"

enum { OPT_FORMAT, OPT_BPS, OPT_GROUP, OPT_CACHE, OPT_COUNT };

static const char *const option_names[OPT_COUNT] = {
    "format", "throttling.bps", "throttling.group", "cache",
};

__attribute__((format(printf, 4, 5)))
static int fail(struct restore_map_entry *e, const char *line, char **msg,
                const char *fmt, ...)
{
    char *what = NULL;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&what, fmt, ap);
    va_end(ap);
    *msg = NULL;
    if (n >= 0 && asprintf(msg, "%s ('%s')", what, line) < 0)
        *msg = NULL;
    if (n >= 0)
        free(what);
    restore_map_entry_free(e); /* only now: the arguments may point into it */
    return -1;
}

/* QEMU's cache modes mapped to target flags; -1 for an unknown mode. */
static int cache_flags(const char *mode)
{
    if (!strcmp(mode, "none"))
        return VMA_TARGET_DIRECT;
    if (!strcmp(mode, "directsync"))
        return VMA_TARGET_DIRECT | VMA_TARGET_SYNC;
    if (!strcmp(mode, "writethrough"))
        return VMA_TARGET_SYNC;
    if (!strcmp(mode, "writeback") || !strcmp(mode, "unsafe"))
        return 0;
    return -1;
}

/* A whole unsigned number (decimal, 0x hex or 0 octal, as QEMU takes it). */
static int parse_u64(const char *s, uint64_t *out)
{
    unsigned long long v;
    char *end;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int restore_map_parse(const char *line, struct restore_map_entry *e, char **msg)
{
    char *value[OPT_COUNT] = { NULL };
    char *p, *eq;
    int flags;

    memset(e, 0, sizeof *e);
    e->buf = strdup(line);
    if (!e->buf)
        return fail(e, line, msg, "out of memory");
    p = e->buf;

    if (!strncmp(p, "skip", 4)) {
        if (p[4] != '=' || p[5] == '\0')
            return fail(e, line, msg, "option 'skip' has no value");
        e->devname = p + 5;
        e->skip = 1;
        return 0;
    }

    /* Leading "name=value:" options, in any order. */
    for (;;) {
        size_t len = 0;
        int i;
        char *colon;

        for (i = 0; i < OPT_COUNT; i++) {
            len = strlen(option_names[i]);
            if (!strncmp(p, option_names[i], len) && p[len] == '=')
                break;
        }
        if (i == OPT_COUNT)
            break;
        if (value[i])
            return fail(e, line, msg, "duplicate value for option '%s'", option_names[i]);
        colon = strchr(p + len + 1, ':');
        if (!colon)
            return fail(e, line, msg, "option '%s' not terminated", option_names[i]);
        *colon = '\0';
        value[i] = p + len + 1;
        p = colon + 1;
    }

    e->format = value[OPT_FORMAT];
    e->group = value[OPT_GROUP];
    if (value[OPT_BPS] && parse_u64(value[OPT_BPS], &e->bps) < 0)
        return fail(e, line, msg, "not a number: %s", value[OPT_BPS]);
    flags = value[OPT_CACHE] ? cache_flags(value[OPT_CACHE]) : 0;
    if (flags < 0)
        return fail(e, line, msg, "invalid cache option: %s", value[OPT_CACHE]);
    e->flags = (unsigned)flags;

    if ((p[0] != '0' && p[0] != '1') || p[1] != ':')
        return fail(e, line, msg, "parse error");
    if (p[0] == '1')
        e->flags |= VMA_TARGET_WRITE_ZEROS;
    p += 2;

    eq = strchr(p, '=');
    if (!eq || eq == p)
        return fail(e, line, msg, "no dev name specified");
    *eq = '\0';
    e->devname = p;
    e->path = eq + 1;
    if (!*e->path)
        return fail(e, line, msg, "no target path specified");
    return 0;
}

void restore_map_entry_free(struct restore_map_entry *e)
{
    free(e->buf);
    memset(e, 0, sizeof *e);
}

int restore_map_is_raw(const struct restore_map_entry *e)
{
    size_t len;

    if (e->format)
        return !strcmp(e->format, "raw");
    if (!e->path)
        return 0;
    len = strlen(e->path);
    return (len > 4 && !strcmp(e->path + len - 4, ".raw")) ||
           !strncmp(e->path, "/dev/", 5);
}
