/* What source.c needs from the writer. Internal to libvma. SPDX-License-Identifier: MIT */
#ifndef LIBVMA_WRITER_INTERNAL_H
#define LIBVMA_WRITER_INTERNAL_H

#include <stdint.h>

#include "vma.h"

/* The recorded size and name of a device, or 0 for an unknown dev_id. */
uint64_t vmai_writer_device_size(const vma_writer *w, unsigned dev_id, const char **name);

/* Fail the writer (sticky) with a message; returns the status. */
int vmai_writer_fail(vma_writer *w, int status, const char *msg);

/* The writer's cancel switch: sources that wait in poll(2) (NBD) watch
 * its eventfd so that vma_writer_cancel() wakes them. */
struct vmai_cancel;
const struct vmai_cancel *vmai_writer_cancel_switch(const vma_writer *w);

#endif
