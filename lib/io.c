/* Whole reads and writes, retried on EINTR and short transfers. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "io.h"

ssize_t vmai_read_full(int fd, void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, (char *)buf + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int vmai_write_full(int fd, const void *buf, size_t len, int64_t offset)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n;
        if (offset >= 0)
            n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(offset + (int64_t)done));
        else
            n = write(fd, (const char *)buf + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = ENOSPC;
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

void vmai_errorf(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, VMAI_ERRLEN, fmt, ap);
    va_end(ap);
}
