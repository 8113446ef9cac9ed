/*
 * <archive>.vmaidx: save and load a random-access index (see
 * index_file.c for the layout and what the loader checks). Internal to
 * libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_INDEX_FILE_H
#define LIBVMA_INDEX_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "ra_index.h"
#include "vma.h"

/* What an index file is bound to: the archive as opened. */
struct vmai_index_binding {
    const vma_reader *r;   /* its header: uuid and devices */
    const struct stat *st; /* the archive's status at open: size, ctime */
    uint64_t data_size;    /* bytes the offsets count in (the archive, or
                            * the decompressed stream read in place) */
};

/* Save ix to path atomically (temporary file, rename). Returns VMA_OK or a
 * status with a message in err. */
int vmai_index_save(const struct vmai_ra_index *ix, const struct vmai_index_binding *b,
                    const char *path, char *err, size_t errlen);

/* Load and check the index at path into the empty ix. VMA_ERR_NOT_FOUND
 * when there is no such file (or an older layout, to be rebuilt); any
 * other failure means the file is refused (err says why). On success,
 * *dev and *ino name the file loaded. */
int vmai_index_load(struct vmai_ra_index *ix, const struct vmai_index_binding *b,
                    const char *path, dev_t *dev, ino_t *ino, char *err, size_t errlen);

#endif
