/*
 * The library's run-time version: the header's macros as this library was
 * built with them, so a program can tell which libvmarchive it loaded.
 * SPDX-License-Identifier: MIT
 */
#include "vma.h"

const char *vma_version(void)
{
    return VMA_VERSION_STRING;
}

unsigned vma_version_number(void)
{
    return VMA_VERSION_NUMBER;
}
