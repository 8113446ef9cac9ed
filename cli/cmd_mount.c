/*
 * vma mount [-f] [-o allow_other] [-c <cachedir>] [-r] [-n]
 *           [--salvage [--force-header]] <archive> <mountpoint>:
 * the archive as a read-only FUSE file system: one file per config blob,
 * <devname>.raw per disk (its exact size), vmstate.bin. The index is built
 * (or loaded) before mounting, so errors reach the terminal; then, without
 * -f, the command goes to the background. Holes are visible through
 * lseek(SEEK_DATA/SEEK_HOLE). With --salvage, a damaged archive is served
 * as extract --salvage would write it (salvaged-disk-<name>.raw,
 * salvaged-vmstate.bin, salvage-report.txt and .json), and reads of lost
 * clusters fail with EIO. SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "salvage_report.h"

#ifndef VMA_HAVE_FUSE

int cmd_mount(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("mount: this vma was built without FUSE (meson option fuse)");
}

#else

#define FUSE_USE_VERSION 35
#include <fuse.h>

/* One file of the mount. */
struct mfile {
    char *name;
    unsigned dev_id;        /* 0: a config blob */
    const void *data;       /* config data */
    uint64_t size;
    uint64_t stored;        /* bytes of stored data (for st_blocks) */
};

struct mount_state {
    vma_image *img;
    struct mfile *files;
    unsigned count;
    int salvage;                 /* --salvage: names and reports as extract --salvage */
    struct salvage_log log;
    char *report[2];             /* salvage-report.txt, salvage-report.json */
    size_t report_len[2];
    int zero_fd;                 /* a sparse memfd: zeros for spliced reads, or -1 */
    time_t ctime;
    uid_t uid;
    gid_t gid;
};

static struct mount_state *state(void)
{
    return fuse_get_context()->private_data;
}

static const struct mfile *lookup(const char *path)
{
    struct mount_state *m = state();
    if (path[0] != '/')
        return NULL;
    for (unsigned i = 0; i < m->count; i++)
        if (!strcmp(m->files[i].name, path + 1))
            return &m->files[i];
    return NULL;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct mount_state *m = state();
    /* The root has no open handle of ours (no opendir): go by the path. */
    int root = !strcmp(path, "/");
    const struct mfile *f = root ? NULL : fi ? &m->files[fi->fh] : lookup(path);

    memset(st, 0, sizeof(*st));
    st->st_uid = m->uid;
    st->st_gid = m->gid;
    st->st_mtime = st->st_ctime = st->st_atime = m->ctime;
    if (root) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        return 0;
    }
    if (!f)
        return -ENOENT;
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = (off_t)f->size;
    st->st_blocks = (blkcnt_t)((f->stored + 511) / 512);
    st->st_blksize = 65536;
    return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    struct mount_state *m = state();
    (void)off;
    (void)fi;
    (void)flags;
    if (strcmp(path, "/"))
        return -ENOTDIR;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    for (unsigned i = 0; i < m->count; i++)
        if (fill(buf, m->files[i].name, NULL, 0, 0))
            break;
    return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
    const struct mfile *f = lookup(path);
    if (!f)
        return -ENOENT;
    if ((fi->flags & O_ACCMODE) != O_RDONLY)
        return -EROFS;
    fi->fh = (uint64_t)(f - state()->files);
    fi->keep_cache = 1; /* the archive does not change under the mount */
    /* Disks bypass the page cache: the kernel then sends a read(2) of
     * 1 MiB as one request instead of 128 KiB read-ahead requests (3 times
     * faster for dd bs=1M), and the archive's own pages are cached anyway. */
    fi->direct_io = f->dev_id != 0;
    return 0;
}

/* A read answered from memory: a copy of a config, or vma_image_pread(). */
static int read_to_memory(struct mount_state *m, const struct mfile *f, size_t size, off_t off,
                          struct fuse_bufvec **bufp)
{
    struct fuse_bufvec *bv = malloc(sizeof(*bv));
    void *mem = malloc(size ? size : 1);
    if (!bv || !mem) {
        free(bv);
        free(mem);
        return -ENOMEM;
    }
    if (!f->dev_id) {
        memcpy(mem, (const char *)f->data + off, size);
    } else if (vma_image_pread(m->img, f->dev_id, mem, size, (uint64_t)off) != (int64_t)size) {
        free(bv);
        free(mem);
        return -EIO;
    }
    *bv = FUSE_BUFVEC_INIT(size);
    bv->buf[0].mem = mem;
    *bufp = bv;
    return 0;
}

/* The pieces of one read as FUSE buffers on descriptors: stored bytes on
 * the archive (or cache) file, zeros on a sparse memfd. */
struct pieces {
    struct fuse_bufvec *bv;
    size_t cap;
    int data_fd, zero_fd;
    uint64_t end; /* of the furthest stored piece in the data file */
};

/* The largest read request: see fs_init(). */
#define MAX_READ (512u << 10)

/* Zeros are served from a hole of this many bytes at most per buffer. */
#define ZERO_SPAN (16u << 20)

static int add_piece(void *opaque, uint64_t len, uint64_t file_off)
{
    struct pieces *p = opaque;
    while (len > 0) {
        if (p->bv->count == p->cap) {
            size_t cap = p->cap * 2;
            struct fuse_bufvec *bv = realloc(p->bv, sizeof(*bv) + cap * sizeof(bv->buf[0]));
            if (!bv)
                return 1;
            p->bv = bv;
            p->cap = cap;
        }
        int zeros = file_off == VMA_IMAGE_ZEROS;
        size_t n = zeros && len > ZERO_SPAN ? ZERO_SPAN : (size_t)len;
        if (!zeros && file_off + n > p->end)
            p->end = file_off + n;
        p->bv->buf[p->bv->count++] = (struct fuse_buf){
            .size = n,
            .flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK,
            .fd = zeros ? p->zero_fd : p->data_fd,
            .pos = zeros ? 0 : (off_t)file_off,
        };
        len -= n;
    }
    return 0;
}

/* Reads hand FUSE descriptors and offsets instead of bytes where the
 * data lies as stored in a file: libfuse then splices them into
 * /dev/fuse, and the only copy is the kernel's into the reader's buffer
 * (pread() into our buffer and write() to /dev/fuse made two more). */
static int fs_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct mount_state *m = state();
    const struct mfile *f = &m->files[fi->fh];
    (void)path;
    if (off < 0)
        return -EINVAL;
    if ((uint64_t)off >= f->size)
        size = 0;
    else if (size > f->size - (uint64_t)off)
        size = (size_t)(f->size - (uint64_t)off);
    int data_fd = f->dev_id ? vma_image_data_fd(m->img) : -1;
    if (size == 0 || data_fd < 0 || m->zero_fd < 0)
        return read_to_memory(m, f, size, off, bufp);
    struct pieces p = { malloc(sizeof(*p.bv) + 8 * sizeof(p.bv->buf[0])), 8, data_fd,
                        m->zero_fd, 0 };
    if (!p.bv)
        return -ENOMEM;
    *p.bv = (struct fuse_bufvec){ .count = 0 };
    int rc = vma_image_locate(m->img, f->dev_id, (uint64_t)off, size, add_piece, &p);
    if (rc != VMA_OK) {
        free(p.bv);
        return rc == VMA_ERR_CALLBACK ? -ENOMEM : -EIO;
    }
    /* A splice past the end of a file that shrank since the open would
     * make a short reply, which a reader takes for the end of the disk:
     * such a read goes through vma_image_pread(), which fails it. */
    struct stat st;
    if (fstat(data_fd, &st) != 0 || (uint64_t)st.st_size < p.end) {
        free(p.bv);
        return read_to_memory(m, f, size, off, bufp);
    }
    *bufp = p.bv;
    return 0;
}

/* Splice replies where the kernel allows them (libfuse falls back to
 * copies where it cannot). libfuse splices only when a reply (data, one
 * page per buffer, the header) fits a pipe, and an unprivileged process
 * gets pipes of 1 MiB at most (fs.pipe-max-size): requests of 512 KiB
 * leave room for 127 buffers. Measured with dd bs=1M on a plain archive:
 * 2.3 times the throughput of 1 MiB requests without splice. */
static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)cfg;
    conn->max_read = MAX_READ;
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    return fuse_get_context()->private_data;
}

static off_t fs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
    struct mount_state *m = state();
    const struct mfile *f = &m->files[fi->fh];
    uint64_t data_off = f->size, data_len = 0;
    (void)path;
    if (whence != SEEK_DATA && whence != SEEK_HOLE)
        return -EINVAL;
    if (off < 0 || (uint64_t)off >= f->size)
        return -ENXIO;
    if (!f->dev_id)
        return whence == SEEK_DATA ? off : (off_t)f->size;
    vma_image_next_data(m->img, f->dev_id, (uint64_t)off, &data_off, &data_len);
    if (whence == SEEK_DATA)
        return data_len ? (off_t)data_off : -ENXIO;
    /* SEEK_HOLE: off itself when it lies in a hole, else the data's end. */
    return data_off > (uint64_t)off || !data_len ? off : (off_t)(data_off + data_len);
}

static const struct fuse_operations fs_ops = {
    .getattr = fs_getattr,
    .readdir = fs_readdir,
    .init = fs_init,
    .open = fs_open,
    .read_buf = fs_read_buf,
    .lseek = fs_lseek,
};

/* Stored bytes of a device: the sum of its data ranges. */
static uint64_t stored_bytes(vma_image *img, unsigned dev_id)
{
    uint64_t pos = 0, off, len, sum = 0;
    while (vma_image_next_data(img, dev_id, pos, &off, &len) == VMA_OK && len) {
        sum += len;
        pos = off + len;
    }
    return sum;
}

static int add_file(struct mount_state *m, char *name, unsigned dev_id, const void *data,
                    uint64_t size)
{
    if (!name)
        return cli_fail("out of memory");
    for (unsigned i = 0; i < m->count; i++)
        if (!strcmp(m->files[i].name, name)) {
            cli_fail("mount: two files would be named '%s'", name);
            free(name);
            return CLI_FAIL;
        }
    struct mfile *f = &m->files[m->count++];
    f->name = name;
    f->dev_id = dev_id;
    f->data = data;
    f->size = size;
    f->stored = dev_id ? stored_bytes(m->img, dev_id) : size;
    return CLI_OK;
}

/* File name of device d: as extract writes it, or extract --salvage. */
static char *device_file(const struct mount_state *m, const vma_reader *r, unsigned d)
{
    if (vma_reader_device_is_vmstate(r, d))
        return strdup(m->salvage ? "salvaged-vmstate.bin" : "vmstate.bin");
    char *name = cli_path("", m->salvage ? "salvaged-disk-" : "", vma_reader_device_name(r, d),
                          ".raw");
    /* cli_path gives "/<name>.raw" for an empty dir: drop the slash. */
    if (name && name[0] == '/')
        memmove(name, name + 1, strlen(name));
    return name;
}

static int build_files(struct mount_state *m)
{
    const vma_reader *r = vma_image_reader(m->img);
    unsigned n = vma_reader_config_count(r);
    m->files = calloc(n + VMA_MAX_DEVICES + 2, sizeof(*m->files));
    if (!m->files)
        return cli_fail("out of memory");
    for (unsigned i = 0; i < n; i++) {
        const char *name;
        const void *data;
        size_t len;
        vma_reader_config(r, i, &name, &data, &len);
        if (add_file(m, strdup(name), 0, data, len) != CLI_OK)
            return CLI_FAIL;
    }
    for (unsigned d = vma_reader_next_device(r, 0); d; d = vma_reader_next_device(r, d))
        if (add_file(m, device_file(m, r, d), d, NULL, vma_image_device_size(m->img, d)) !=
            CLI_OK)
            return CLI_FAIL;
    static const char *const report_name[2] = { "salvage-report.txt", "salvage-report.json" };
    for (unsigned i = 0; i < 2 && m->salvage; i++)
        if (add_file(m, strdup(report_name[i]), 0, m->report[i], m->report_len[i]) != CLI_OK)
            return CLI_FAIL;
    return CLI_OK;
}

/* After a salvage open: the reports, kept in memory for the mount, and
 * the verdict (CLI_OK, CLI_PARTIAL, or CLI_FAIL when nothing is left). */
static int salvage_reports(struct mount_state *m, const char *archive)
{
    const vma_reader *r = vma_image_reader(m->img);
    struct salvage_totals t;
    if (m->log.alloc_failed)
        return cli_fail("out of memory for the salvage report");
    salvage_totals(r, &m->log, &t);
    int rc = salvage_exit_status(&t);
    if (rc == CLI_FAIL)
        return cli_fail("nothing could be recovered from %s", archive);
    for (int i = 0; i < 2; i++) {
        FILE *f = open_memstream(&m->report[i], &m->report_len[i]);
        if (!f)
            return cli_fail("out of memory for the salvage report");
        (i ? salvage_report_json : salvage_report_text)(f, archive, r, &m->log, &t, rc);
        if (fclose(f) != 0)
            return cli_fail("out of memory for the salvage report");
    }
    if (rc == CLI_PARTIAL)
        fprintf(stderr, "vma: partial: some data lost (%llu of %llu bytes recovered); reads "
                        "of lost ranges fail with EIO, see salvage-report.txt in the mount\n",
                (unsigned long long)t.recovered, (unsigned long long)(t.recovered + t.lost));
    return rc;
}

static void free_files(struct mount_state *m)
{
    for (unsigned i = 0; i < m->count; i++)
        free(m->files[i].name);
    free(m->files);
    free(m->report[0]);
    free(m->report[1]);
    salvage_log_free(&m->log);
}

static void cache_notice(void *archive, const char *dir, uint64_t max_bytes)
{
    double gib = (double)max_bytes / (1024.0 * 1024 * 1024);
    fprintf(stderr, "vma: decompressing %s into a sparse cache in %s (up to %.1f %s)\n",
            (const char *)archive, dir, gib >= 1 ? gib : gib * 1024, gib >= 1 ? "GiB" : "MiB");
}

static int stop_on_signal(void *opaque, uint64_t clusters, uint64_t bytes)
{
    (void)opaque;
    (void)clusters;
    (void)bytes;
    return cli_signal != 0;
}

/* Serve until unmounted (fusermount3 -u, or SIGINT/SIGTERM/SIGHUP). */
static int serve(struct mount_state *m, const char *archive, const char *mountpoint,
                 int foreground, int allow_other)
{
    /* Options come from -o alone: a comma in the archive's name would
     * split the list (a file named "x.vma,allow_other" opened the disks
     * to every user), and libfuse unescapes backslashes. */
    char name[4096];
    snprintf(name, sizeof(name), "%s", archive);
    for (char *p = name; *p; p++)
        if (*p == ',' || *p == '\\')
            *p = '_';
    char fsname[4200];
    snprintf(fsname, sizeof(fsname),
             "ro,default_permissions,max_read=%u,subtype=vma,fsname=%s%s", MAX_READ, name,
             allow_other ? ",allow_other" : "");
    char *args_v[] = { "vma", "-o", fsname, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
    struct fuse *f = fuse_new(&args, &fs_ops, sizeof(fs_ops), m);
    fuse_opt_free_args(&args);
    if (!f)
        return cli_fail("mount: cannot start FUSE on %s", mountpoint);
    if (fuse_mount(f, mountpoint) != 0) {
        fuse_destroy(f);
        return cli_fail("mount: cannot mount on %s (is /dev/fuse there, fusermount3 "
                        "installed, the directory empty?)", mountpoint);
    }
    /* FUSE installs its handlers only where the default one is set. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    struct fuse_session *se = fuse_get_session(f);
    int rc = CLI_OK;
    if (fuse_set_signal_handlers(se) != 0 || fuse_daemonize(foreground) != 0) {
        rc = cli_fail("mount: cannot set up the FUSE session");
    } else {
        struct fuse_loop_config cfg = { .clone_fd = 0, .max_idle_threads = 10 };
        if (fuse_loop_mt(f, &cfg) < 0)
            rc = cli_fail("mount: the FUSE session on %s failed", mountpoint);
        fuse_remove_signal_handlers(se);
    }
    fuse_unmount(f);
    fuse_destroy(f);
    return rc;
}

/* What the command line asks for. */
struct mount_opts {
    int help, foreground, allow_other, salvage;
    unsigned flags, salvage_flags;
    const char *cache_dir, *archive, *dir;
    const char *index; /* --index: cache (default), beside, off */
};

/* CLI_OK, or the status to exit with (a usage error). */
static int parse_options(int argc, char **argv, struct mount_opts *o)
{
    int c;
    memset(o, 0, sizeof(*o));
    while ((c = cli_getopt(argc, argv, "hfo:c:rn")) != -1) {
        switch (c) {
        case 'h':
            o->help = 1;
            return CLI_OK;
        case 'f':
            o->foreground = 1;
            break;
        case 'o':
            if (strcmp(optarg, "allow_other"))
                return cli_fail("mount: unknown option -o %s (only allow_other)", optarg);
            o->allow_other = 1;
            break;
        case 'c':
            o->cache_dir = optarg;
            break;
        case 'r':
            o->flags |= VMA_IMAGE_REINDEX;
            break;
        case 'n':
            o->index = "off";
            break;
        case 'I':
            if (strcmp(optarg, "cache") && strcmp(optarg, "beside") && strcmp(optarg, "off"))
                return cli_fail("mount: unknown --index=%s (cache, beside or off)", optarg);
            o->index = optarg;
            break;
        case 'S':
            o->salvage = 1;
            break;
        case 'F':
            o->salvage_flags |= VMA_SALVAGE_FORCE_HEADER;
            break;
        default:
            return cli_usage(stderr);
        }
    }
    if (argc - optind != 2 || (o->salvage_flags && !o->salvage))
        return cli_usage(stderr);
    o->archive = argv[optind];
    o->dir = argv[optind + 1];
    return CLI_OK;
}

/* Open the image as the options say; prints the failure. */
static int open_image(struct mount_state *m, const struct mount_opts *o)
{
    m->img = vma_image_new();
    if (!m->img)
        return cli_fail("out of memory");
    vma_image_set_cache_notice(m->img, cache_notice, (void *)o->archive);
    vma_image_set_progress(m->img, stop_on_signal, NULL);
    m->salvage = o->salvage;
    int rc = vma_image_set_cache_dir(m->img, o->cache_dir);
    unsigned flags = o->flags;
    /* The index file: in the user's cache by default, so that nothing is
     * written to the backup storage; without one when it cannot be made. */
    if (o->index == NULL || !strcmp(o->index, "cache")) {
        char dir[4096];
        if (vma_index_cache_dir(dir, sizeof(dir)) == VMA_OK)
            rc = rc == VMA_OK ? vma_image_set_index_dir(m->img, dir, VMA_INDEX_CACHE_MAX_BYTES) : rc;
        else
            flags |= VMA_IMAGE_NO_INDEX_FILE;
    } else if (!strcmp(o->index, "off")) {
        flags |= VMA_IMAGE_NO_INDEX_FILE;
    }
    if (rc == VMA_OK && o->salvage)
        rc = vma_image_set_salvage(m->img, o->salvage_flags, salvage_log_event, &m->log);
    if (rc == VMA_OK)
        rc = vma_image_open(m->img, o->archive, flags);
    if (rc != VMA_OK)
        return cli_fail("%s%s", vma_image_error(m->img),
                        rc == VMA_ERR_HEADER_MD5 ? " (--force-header)" : "");
    m->ctime = (time_t)vma_reader_ctime(vma_image_reader(m->img));
    return CLI_OK;
}

int cmd_mount(int argc, char **argv)
{
    struct mount_opts o;
    int rc = parse_options(argc, argv, &o);
    if (rc != CLI_OK || o.help)
        return o.help ? cli_usage(stdout) : rc;
    struct stat st;
    if (stat(o.dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cli_fail("mount: %s is not a directory", o.dir);
    if (cli_catch_signals() != 0)
        return cli_fail("cannot catch signals: %s", strerror(errno));
    /* Absolute: fuse_daemonize() changes to /, also with -f, and the
     * unmount at the end names the mountpoint again. */
    char *mountpoint = realpath(o.dir, NULL);
    if (!mountpoint)
        return cli_fail("mount: %s: %s", o.dir, strerror(errno));

    struct mount_state m = { 0 };
    m.uid = getuid();
    m.gid = getgid();
    /* Never written: every byte of it is a hole, spliced as zero pages. */
    m.zero_fd = memfd_create("vma-zeros", MFD_CLOEXEC);
    if (m.zero_fd >= 0 && ftruncate(m.zero_fd, ZERO_SPAN) != 0) {
        close(m.zero_fd);
        m.zero_fd = -1;
    }
    rc = open_image(&m, &o);
    /* A salvage mount that loses data exits 3 once unmounted (-f). */
    int verdict = rc == CLI_OK && o.salvage ? salvage_reports(&m, o.archive) : rc;
    if (rc == CLI_OK)
        rc = verdict == CLI_FAIL ? CLI_FAIL : build_files(&m);
    if (rc == CLI_OK)
        rc = serve(&m, o.archive, mountpoint, o.foreground, o.allow_other);
    if (rc == CLI_OK)
        rc = verdict;
    free_files(&m);
    free(mountpoint);
    if (m.zero_fd >= 0)
        close(m.zero_fd);
    /* Also in a daemonized mount's forked child: vma_image_open() joined
     * the threads of its pass before the fork. */
    vma_image_free(m.img);
    return rc;
}

#endif
