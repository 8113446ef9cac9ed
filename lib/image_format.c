/*
 * Recognize disk image formats by their signature, so that a qcow2 or vmdk
 * file given as a raw source is refused instead of backed up as its bytes.
 * Signatures from the formats' specifications (QEMU's docs/interop for
 * qcow2 and QED, Microsoft's VHD and VHDX, VMware's VMDK, VirtualBox's
 * VDI). SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "vma.h"

/* pread() of up to len bytes; returns how many were read. */
static size_t read_at(int fd, unsigned char *buf, size_t len, off_t off)
{
    size_t got;
    (void)vmai_pread_exact(fd, buf, len, (uint64_t)off, &got); /* a short file is no error */
    return got;
}

static int has(const unsigned char *buf, size_t len, size_t off, const char *magic, size_t n)
{
    return len >= off + n && memcmp(buf + off, magic, n) == 0;
}

const char *vma_detect_image_format(int fd)
{
    unsigned char head[512];
    size_t n = read_at(fd, head, sizeof(head), 0);

    if (has(head, n, 0, "QFI\xfb", 4)) /* big-endian version follows: 1 is qcow */
        return n >= 8 && head[4] == 0 && head[5] == 0 && head[6] == 0 && head[7] == 1
                   ? "qcow" : "qcow2";
    if (has(head, n, 0, "KDMV", 4) || has(head, n, 0, "COWD", 4) ||
        has(head, n, 0, "# Disk DescriptorFile", 21))
        return "vmdk";
    if (has(head, n, 64, "\x7f\x10\xda\xbe", 4)) /* 0xbeda107f, little-endian, after 64 bytes of text */
        return "vdi";
    if (has(head, n, 0, "vhdxfile", 8))
        return "vhdx";
    if (has(head, n, 0, "QED\0", 4))
        return "qed";
    if (has(head, n, 0, "conectix", 8))
        return "vpc";
    /* A fixed VHD is the raw disk followed by its 512-byte footer. The
     * descriptor's position is restored: callers may read sequentially. */
    off_t pos = lseek(fd, 0, SEEK_CUR);
    off_t end = pos < 0 ? -1 : lseek(fd, 0, SEEK_END);
    if (pos >= 0)
        (void)lseek(fd, pos, SEEK_SET);
    if (end >= 1024 && read_at(fd, head, 8, end - 512) == 8 && has(head, 8, 0, "conectix", 8))
        return "vpc";
    return NULL;
}
