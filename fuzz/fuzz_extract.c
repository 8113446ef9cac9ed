/* Fuzz target: restore into a scratch directory, as `vma extract` does,
 * then check nothing was left behind on failure. SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "vma.h"

static char scratch[4096];

static void clean_scratch(int must_be_empty)
{
    DIR *d = opendir(scratch);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (must_be_empty)
            abort(); /* a failed restore left a file behind */
        char path[sizeof(scratch) + 300];
        snprintf(path, sizeof(path), "%s/%s", scratch, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
}

static void remove_scratch(void)
{
    clean_scratch(0);
    rmdir(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (scratch[0] == '\0') {
        const char *tmp = getenv("TMPDIR");
        snprintf(scratch, sizeof(scratch), "%s/vma-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (mkdtemp(scratch) == NULL)
            abort();
        atexit(remove_scratch);
    }
    vma_reader *r = vma_reader_new();
    int rc = r ? vma_reader_open_memory(r, data, size) : VMA_ERR_NOMEM;
    for (unsigned id = rc == VMA_OK ? vma_reader_next_device(r, 0) : 0; id != 0 && rc == VMA_OK;
         id = vma_reader_next_device(r, id)) {
        char path[sizeof(scratch) + 300];
        snprintf(path, sizeof(path), "%s/%u.raw", scratch, id);
        rc = vma_reader_target_create(r, id, path);
    }
    if (rc == VMA_OK)
        rc = vma_reader_restore(r);
    vma_reader_free(r);
    clean_scratch(rc != VMA_OK);
    return 0;
}
