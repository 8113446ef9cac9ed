/*
 * Random access into a seekable zstd file (zstd's seekable format:
 * independent frames, then a skippable frame holding the seek table); see
 * zst_frames.c. Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_ZST_FRAMES_H
#define LIBVMA_ZST_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#include "block_map.h"

/* Read and check the seek table at the end of the file on fd (file_size
 * bytes); read through vmai_block_map_read(). VMA_ERR_NOT_FOUND: the file
 * is not in the seekable format (one zstd frame, as Proxmox writes). */
int vmai_zst_map_load(int fd, uint64_t file_size, struct vmai_block_map **out, char *err,
                      size_t errlen);

#endif
