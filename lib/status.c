/*
 * Status names and the name rule shared by reader and writer.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "io.h"
#include "vma.h"

const char *vma_status_name(int status)
{
    switch (status) {
    case VMA_OK: return "VMA_OK";
    case VMA_ERR_IO: return "VMA_ERR_IO";
    case VMA_ERR_CORRUPT: return "VMA_ERR_CORRUPT";
    case VMA_ERR_TRUNCATED: return "VMA_ERR_TRUNCATED";
    case VMA_ERR_NOMEM: return "VMA_ERR_NOMEM";
    case VMA_ERR_INVALID: return "VMA_ERR_INVALID";
    case VMA_ERR_EXISTS: return "VMA_ERR_EXISTS";
    case VMA_ERR_LIMIT: return "VMA_ERR_LIMIT";
    case VMA_ERR_NOT_FOUND: return "VMA_ERR_NOT_FOUND";
    case VMA_ERR_INCOMPLETE: return "VMA_ERR_INCOMPLETE";
    case VMA_ERR_CALLBACK: return "VMA_ERR_CALLBACK";
    case VMA_ERR_CANCELED: return "VMA_ERR_CANCELED";
    case VMA_ERR_HEADER_MD5: return "VMA_ERR_HEADER_MD5";
    default: return "unknown";
    }
}

int vma_name_is_valid(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    size_t len = strnlen(name, VMA_MAX_NAME_LEN + 1);
    if (len > VMA_MAX_NAME_LEN)
        return 0;
    /* Names become file names on extract: never a path, never . or .. */
    if (memchr(name, '/', len) != NULL)
        return 0;
    /* Names are printed one per line (list, DEVINFO) and parsed by other
     * tools: no control character may forge a line or drive a terminal,
     * C0, DEL, nor C1 as UTF-8 (U+0080-U+009F: NEL, CSI). */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
        if (c == 0xc2 && (unsigned char)name[i + 1] >= 0x80 && (unsigned char)name[i + 1] <= 0x9f)
            return 0;
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    return 1;
}

/* The message of this thread's last failed call: each thread has its own,
 * so a worker reads why its own call failed whatever other threads do. */
static _Thread_local char last_error[VMAI_ERRLEN];

void vmai_set_last_error(const char *msg)
{
    snprintf(last_error, sizeof(last_error), "%s", msg);
}

const char *vmai_vset_last_error(const char *fmt, va_list ap)
{
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    return last_error;
}

const char *vma_last_error(void) { return last_error; }
