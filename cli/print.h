/*
 * The list lines that list, verify -v and extract -r print. Proxmox VE
 * parses them, so they are an interface byte for byte.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_PRINT_H
#define VMA_CLI_PRINT_H

#include "vma.h"

/* Print CFG:, DEV:/VMSTATE: and CTIME: lines on stdout and flush.
 * Returns CLI_OK, or CLI_FAIL (message printed) when stdout fails. */
int print_list(const vma_reader *r);

#endif
