/*
 * Random access into an lzop stream by its independent blocks (see
 * lzo_blocks.c). Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_LZO_BLOCKS_H
#define LIBVMA_LZO_BLOCKS_H

#include <stddef.h>

#include "block_map.h"

/* Scan the block headers of the lzop file on fd (its header was already
 * checked by the reader); read through vmai_block_map_read(). */
int vmai_lzo_map_scan(int fd, struct vmai_block_map **out, char *err, size_t errlen);

#endif
