/*
 * The restore map of `vma extract -r`: one line per device,
 *   [format=<fmt>:][throttling.bps=<n>:][throttling.group=<g>:][cache=<mode>:]0|1:<devname>=<path>
 *   skip=<devname>
 * with the options in any order, each at most once. Parsing is a pure
 * function on one line, unit-tested without files in
 * tests/unit_restore_map.c.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_RESTORE_MAP_H
#define VMA_CLI_RESTORE_MAP_H

#include <stdint.h>

struct restore_map_entry {
    char *devname;  /* the device this line is for */
    char *path;     /* target path; NULL for skip= */
    char *format;   /* format= value, or NULL */
    char *group;    /* throttling.group= value, or NULL */
    uint64_t bps;   /* throttling.bps= value, 0 = no limit */
    unsigned flags; /* VMA_TARGET_* from "0:"/"1:" and cache= */
    int skip;       /* a skip=<devname> line */
    char *buf;      /* owns the strings above */
};

/*
 * Parse one line, without its newline. Returns 0 and fills *e (release it
 * with restore_map_entry_free()), or -1 and sets *msg to a new string
 * "<what> ('<line>')" that the caller frees (NULL when out of memory).
 */
int restore_map_parse(const char *line, struct restore_map_entry *e, char **msg);

/* Free the strings of an entry; the entry itself is the caller's. */
void restore_map_entry_free(struct restore_map_entry *e);

/* 1 if the target is raw: format=raw, or no format= and a path that ends
 * in ".raw" or starts with "/dev/" (the deployed tool's rule); else 0. */
int restore_map_is_raw(const struct restore_map_entry *e);

#endif
