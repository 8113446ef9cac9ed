/* Fuzz target: the restore map line parser of `vma extract -r`
 * (cli/restore_map.c, a pure function). SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "restore_map.h"

/* True when s is a string inside the parser's own copy of the line. */
static int inside(const struct restore_map_entry *e, const char *s, size_t line_len)
{
    return s >= e->buf && s + strlen(s) <= e->buf + line_len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1); /* one line: the bytes up to a NUL */
    if (line == NULL)
        return 0;
    memcpy(line, data, size);
    line[size] = '\0';
    size_t len = strlen(line);
    struct restore_map_entry e;
    char *msg = NULL;
    if (restore_map_parse(line, &e, &msg) == 0) {
        /* Our invariants: a device name always; a target path unless
         * skip=; every string points into the entry's own buffer. */
        if (e.devname == NULL || !*e.devname || !inside(&e, e.devname, len))
            abort();
        if (e.skip ? e.path != NULL : (e.path == NULL || !*e.path || !inside(&e, e.path, len)))
            abort();
        if ((e.format != NULL && !inside(&e, e.format, len)) ||
            (e.group != NULL && !inside(&e, e.group, len)))
            abort();
        (void)restore_map_is_raw(&e);
        restore_map_entry_free(&e);
        if (e.buf != NULL)
            abort();
    } else {
        /* A refusal says why and quotes the line (NULL only when out of
         * memory); the entry holds nothing. */
        if (e.buf != NULL || (msg != NULL && strstr(msg, line) == NULL))
            abort();
        free(msg);
    }
    free(line);
    return 0;
}
