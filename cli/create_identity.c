/*
 * Fixed uuid and ctime for reproducible archives (see create_identity.h).
 * The rest of an archive is already a function of its inputs: `vma create`
 * writes the devices one after another from one thread, in argument
 * order; gzip output has mtime 0; zstd's multi-threaded streaming output
 * does not depend on the number of workers; lzop headers carry mtime 0.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <uuid/uuid.h>

#include "cli.h"
#include "create_identity.h"

/* Seconds since 1970 as a whole decimal number (a sign allowed). */
static int parse_epoch(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (!*s || *end || errno)
        return -1;
    *out = v;
    return 0;
}

int create_identity(vma_writer *w, const char *uuid, const char *ctime)
{
    const char *env = getenv("SOURCE_DATE_EPOCH");
    unsigned char u[16];
    int64_t t;

    if (uuid) {
        if (uuid_parse(uuid, u) != 0)
            return cli_fail("invalid uuid '%s' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                            uuid);
        if (vma_writer_set_uuid(w, u) != VMA_OK)
            return cli_fail("%s", vma_writer_error(w));
    }
    if (ctime) {
        if (parse_epoch(ctime, &t) < 0)
            return cli_fail("invalid ctime '%s' (expected seconds since 1970)", ctime);
    } else if (env) {
        if (parse_epoch(env, &t) < 0)
            return cli_fail("invalid SOURCE_DATE_EPOCH '%s' (expected seconds since 1970)", env);
    } else {
        return CLI_OK;
    }
    if (vma_writer_set_ctime(w, t) != VMA_OK)
        return cli_fail("%s", vma_writer_error(w));
    return CLI_OK;
}
