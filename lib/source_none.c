/*
 * The NBD source in a build without libnbd (meson -Dnbd=disabled): the
 * calls exist, and opening says why it cannot work.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "writer_internal.h"

struct vma_source {
    char err[VMAI_ERRLEN];
};

int vma_source_needed(const char *format, const char *path)
{
    (void)path;
    return format != NULL && strcmp(format, "raw") != 0;
}

vma_source *vma_source_new(void) { return calloc(1, sizeof(vma_source)); }
void vma_source_free(vma_source *s) { free(s); }
const char *vma_source_error(const vma_source *s) { return s->err; }
uint64_t vma_source_size(const vma_source *s) { (void)s; return 0; }
void vma_source_cancel(vma_source *s) { (void)s; }

int vma_source_open(vma_source *s, const char *format, const char *path)
{
    snprintf(s->err, sizeof(s->err), "%s: cannot read %s images: libvma was built without "
             "NBD support (libnbd)", path ? path : "(null)", format ? format : "raw");
    return VMA_ERR_INVALID;
}

int vma_writer_write_device_source(vma_writer *w, unsigned dev_id, vma_source *s)
{
    (void)dev_id;
    (void)s;
    return vmai_writer_fail(w, VMA_ERR_INVALID, "built without NBD support (libnbd)");
}
