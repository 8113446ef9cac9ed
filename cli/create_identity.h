/*
 * create --uuid / --ctime / SOURCE_DATE_EPOCH: what makes two creates of
 * the same sources give the same bytes.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_CREATE_IDENTITY_H
#define VMA_CLI_CREATE_IDENTITY_H

#include "vma.h"

/* Set the writer's uuid from `uuid` (NULL: keep the random one) and its
 * ctime from `ctime`, else from $SOURCE_DATE_EPOCH, else keep the current
 * time. Returns CLI_OK or fails with a message for a malformed value. */
int create_identity(vma_writer *w, const char *uuid, const char *ctime);

#endif
