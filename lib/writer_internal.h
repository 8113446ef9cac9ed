/* What source.c needs from the writer. Internal to libvma. SPDX-License-Identifier: MIT */
#ifndef LIBVMA_WRITER_INTERNAL_H
#define LIBVMA_WRITER_INTERNAL_H

#include <stdint.h>

#include "vma.h"

/* Before writing device dev_id whole from a source: refuses (the writer
 * stays usable) an ended or finished writer, one without output, an
 * unknown or closed device or one that has clusters already; else gives
 * its name and recorded size. */
int vmai_writer_whole_device(vma_writer *w, unsigned dev_id, const char **name,
                             uint64_t *size);

/* Refuse a call (a bad argument): the message, the writer stays usable;
 * returns the status (an ended writer's own instead). */
int vmai_writer_refuse(vma_writer *w, int status, const char *msg);

/* Fail the writer (sticky) with a message; returns the status. */
int vmai_writer_fail(vma_writer *w, int status, const char *msg);

/* The writer's cancel switch: sources that wait in poll(2) (NBD) watch
 * its eventfd so that vma_writer_cancel() wakes them. */
struct vmai_cancel;
const struct vmai_cancel *vmai_writer_cancel_switch(const vma_writer *w);

#endif
