/*
 * Benchmark helper (not a test): the fastest a FUSE file system can serve
 * a file on this machine with the settings `vma mount` uses (direct I/O,
 * 512 KiB requests, replies spliced from the backing file): one read-only
 * file "disk.raw" that is the backing file itself, no index, no lookups.
 * bench/mount.sh reads it with dd beside the mount, so the mount's figure
 * can be told apart from what FUSE itself costs.
 *   fuse-ceiling <backing file> <mountpoint>   (foreground; fusermount3 -u)
 * SPDX-License-Identifier: MIT
 */
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_READ (512u << 10)

static int backing_fd;
static struct stat backing;

static void *ceiling_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)cfg;
    conn->max_read = MAX_READ;
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    return NULL;
}

static int ceiling_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    memset(st, 0, sizeof(*st));
    if (strcmp(path, "/") == 0) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        return 0;
    }
    if (strcmp(path, "/disk.raw") != 0)
        return -ENOENT;
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = backing.st_size;
    return 0;
}

static int ceiling_open(const char *path, struct fuse_file_info *fi)
{
    if (strcmp(path, "/disk.raw") != 0)
        return -ENOENT;
    fi->direct_io = 1;
    return 0;
}

static int ceiling_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
                            struct fuse_file_info *fi)
{
    (void)path;
    (void)fi;
    struct fuse_bufvec *bv = malloc(sizeof(*bv));
    if (bv == NULL)
        return -ENOMEM;
    if (off >= backing.st_size)
        size = 0;
    else if ((off_t)size > backing.st_size - off)
        size = (size_t)(backing.st_size - off);
    *bv = FUSE_BUFVEC_INIT(size);
    bv->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    bv->buf[0].fd = backing_fd;
    bv->buf[0].pos = off;
    *bufp = bv;
    return 0;
}

static const struct fuse_operations ops = {
    .init = ceiling_init,
    .getattr = ceiling_getattr,
    .open = ceiling_open,
    .read_buf = ceiling_read_buf,
};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fuse-ceiling <backing file> <mountpoint>\n");
        return 1;
    }
    backing_fd = open(argv[1], O_RDONLY);
    if (backing_fd < 0 || fstat(backing_fd, &backing) != 0) {
        perror(argv[1]);
        return 1;
    }
    char *args[] = { argv[0], "-f", "-o", "ro,max_read=524288,subtype=ceiling", argv[2], NULL };
    return fuse_main(5, args, &ops, NULL);
}
