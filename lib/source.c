/*
 * The cluster producer for a raw source (file or block device): reads it
 * in 64 KiB clusters with pread(), and hands holes of sparse files to the
 * writer as all-zero clusters without reading them (SEEK_DATA/SEEK_HOLE).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "io.h"
#include "writer_internal.h"


/* Where the next data starts at or after `off`, and where it ends.
 * Sources without SEEK_DATA support are all data. */
static void next_data(int fd, uint64_t off, uint64_t end, uint64_t *data, uint64_t *hole)
{
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    if (d < 0) {
        if (errno == ENXIO) { /* only a hole up to the end */
            *data = *hole = end;
            return;
        }
        *data = off; /* unsupported: treat everything as data */
        *hole = end;
        return;
    }
    off_t h = lseek(fd, d, SEEK_HOLE);
    *data = (uint64_t)d;
    *hole = h < 0 ? end : (uint64_t)h;
}

int vma_writer_write_device_fd(vma_writer *w, unsigned dev_id, int fd, uint64_t source_size)
{
    char msg[VMAI_ERRLEN];
    const char *name = NULL;
    uint64_t size = 0;
    int rc = vmai_writer_whole_device(w, dev_id, &name, &size);
    if (rc != VMA_OK)
        return rc;
    /* Argument errors are refusals: nothing written, the writer usable. */
    int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    if (fl < 0 || (fl & O_ACCMODE) == O_WRONLY) {
        snprintf(msg, sizeof(msg), "bad file descriptor %d for device '%s'%s", fd, name,
                 fl < 0 ? "" : ": not open for reading");
        return vmai_writer_refuse(w, VMA_ERR_INVALID, msg);
    }
    if (source_size > size) {
        snprintf(msg, sizeof(msg), "source of device '%s' has %llu bytes, more than its size %llu",
                 name, (unsigned long long)source_size, (unsigned long long)size);
        return vmai_writer_refuse(w, VMA_ERR_INVALID, msg);
    }
    unsigned char *buf = malloc(VMA_CLUSTER_SIZE);
    if (buf == NULL)
        return vmai_writer_fail(w, VMA_ERR_NOMEM, "out of memory");

    uint64_t data = 0, hole = 0; /* current data run [data, hole) */
    uint64_t clusters = vmai_cluster_count(size);
    for (uint64_t n = 0; n < clusters && rc == VMA_OK; n++) {
        uint64_t off = n * VMA_CLUSTER_SIZE;
        uint64_t want = off >= source_size ? 0 : source_size - off;
        if (want > VMA_CLUSTER_SIZE)
            want = VMA_CLUSTER_SIZE;
        if (want > 0 && off >= hole)
            next_data(fd, off, source_size, &data, &hole);
        if (want == 0 || off + want <= data) { /* inside a hole or past the source */
            rc = vma_writer_write_cluster(w, dev_id, n, NULL);
            continue;
        }
        size_t got;
        int prc = vmai_pread_exact(fd, buf, (size_t)want, off, &got);
        if (prc != VMA_OK) {
            if (prc == VMA_ERR_IO)
                snprintf(msg, sizeof(msg), "read error on the source of device '%s' at "
                         "offset %llu: %s", name, (unsigned long long)(off + got),
                         strerror(errno));
            else
                snprintf(msg, sizeof(msg), "source of device '%s' shrank while read: it "
                         "ends at %llu of %llu bytes", name, (unsigned long long)(off + got),
                         (unsigned long long)source_size);
            rc = vmai_writer_fail(w, VMA_ERR_IO, msg);
            break;
        }
        memset(buf + want, 0, VMA_CLUSTER_SIZE - (size_t)want);
        rc = vma_writer_write_cluster(w, dev_id, n, buf);
    }
    free(buf);
    /* Holes are not read, so a file that shrank into one is caught here. */
    struct stat st;
    if (rc == VMA_OK && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (uint64_t)st.st_size < source_size) {
        snprintf(msg, sizeof(msg), "source of device '%s' shrank while read: %llu of %llu bytes",
                 name, (unsigned long long)st.st_size, (unsigned long long)source_size);
        rc = vmai_writer_fail(w, VMA_ERR_IO, msg);
    }
    if (rc == VMA_OK)
        rc = vma_writer_close_device(w, dev_id);
    return rc;
}
