/*
 * A live backup of a running QEMU VM over QMP, by image fleecing (pull):
 * for each disk a sparse qcow2 in the fleecing directory whose backing is
 * the disk's node; one QMP transaction of blockdev-backup sync=none jobs
 * (one point in time for all disks; from then on QEMU copies a cluster
 * into the fleecing image before the guest overwrites it); QEMU's NBD
 * server exports the fleecing nodes read-only, and the writer reads them
 * as NBD sources (block status: holes are never read). Then the jobs are
 * cancelled and everything made is removed again.
 *
 * The QMP socket is held only for set-up, the check at the end and the
 * tear-down (QMP serves one client at a time, and Proxmox's qm connects
 * for every command). Everything made in QEMU is named
 * "vma-backup-<pid>-...", so that vma_backup_cleanup() finds what a
 * killed process left. Fleecing files are unlinked as soon as QEMU has
 * opened them, and the NBD socket once we are connected: a killed process
 * leaves no file behind.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "qmp.h"
#include "writer_internal.h"

#define PREFIX "vma-backup-"
#define DEFAULT_TIMEOUT_MS 60000
#define AGENT_TIMEOUT_MS 10000       /* the agent answering at all */
#define FREEZE_TIMEOUT_MS 60000      /* guest-fsfreeze-freeze itself */
#define JOB_WAIT_MS 30000            /* a job or export to go away */
#define WATCH_NS 100000000ull        /* the fleecing directory, every 100 ms */
#define MIN_QEMU 50200u              /* block-export-add came with 5.2 */
#define NAMELEN 96                   /* prefix (48) + "fleece-" + an index */

struct bdisk {
    char *name;       /* in the archive, or NULL when none can be made */
    char *backend;    /* BlockBackend name, "" for none */
    char *qdev;       /* the device it is attached to */
    char *node;       /* the node backed up (the backend's root) */
    char *drv;        /* its driver: a job's filter while one runs */
    uint64_t size;    /* virtual size */
    bool selected;
    unsigned dev_id;  /* in the writer */
    vma_source *src;
};

struct vma_backup {
    char err[VMAI_ERRLEN];
    char *qmp_path, *qga_path, *fleecing_dir;
    int timeout_ms;
    struct vmai_cancel cancel;
    _Atomic(vma_writer *) writer;
    vma_backup_log_fn log;
    void *log_opaque;
    bool opened, ran;
    bool chosen;              /* vma_backup_select() was called */
    unsigned version;
    struct bdisk *disk;
    unsigned ndisk;
    char prefix[48];          /* "vma-backup-<pid>-" */
    double freeze_seconds;    /* -1: no freeze */
    bool frozen;              /* the agent froze and we did not thaw yet */
    char sockdir[PATH_MAX];   /* holds the NBD socket, or "" */
    bool nbd_started;
    /* The watch of the fleecing directory during the copy. */
    pthread_t watch;
    bool watching;
    struct vmai_cancel watch_stop;
    atomic_bool fleece_full;
    uint64_t fleece_free, reserve;
    struct vmai_owner owner;  /* the process that made it */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bfail(vma_backup *b, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bfail(vma_backup *b, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof(b->err), fmt, ap);
    va_end(ap);
    vmai_set_last_error(b->err);
    return status;
}

static void logf_(vma_backup *b, int warning, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(vma_backup *b, int warning, const char *fmt, ...)
{
    if (b->log == NULL)
        return;
    char line[VMAI_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    b->log(b->log_opaque, warning, line);
}

vma_backup *vma_backup_new(void)
{
    vma_backup *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->timeout_ms = DEFAULT_TIMEOUT_MS;
    b->freeze_seconds = -1;
    atomic_init(&b->writer, NULL);
    atomic_init(&b->fleece_full, false);
    vmai_cancel_open(&b->cancel); /* without it, a cancel only sets the flag */
    vmai_owner_set(&b->owner);
    snprintf(b->prefix, sizeof(b->prefix), PREFIX "%ld-", (long)getpid());
    return b;
}

/* In a child after fork(): refused, QEMU and the jobs untouched. */
static int bforked(vma_backup *b)
{
    if (!vmai_other_process(&b->owner, "backup", b->err))
        return VMA_OK;
    vmai_set_last_error(b->err);
    return VMA_ERR_INVALID;
}

static void free_disks(vma_backup *b)
{
    for (unsigned i = 0; i < b->ndisk; i++) {
        vma_source_free(b->disk[i].src);
        free(b->disk[i].name);
        free(b->disk[i].backend);
        free(b->disk[i].qdev);
        free(b->disk[i].node);
        free(b->disk[i].drv);
    }
    free(b->disk);
    b->disk = NULL;
    b->ndisk = 0;
}

void vma_backup_free(vma_backup *b)
{
    if (b == NULL)
        return;
    /* In a child after fork(): the sources' qemu-nbd and the NBD socket
     * directory are the parent's. Left alone. */
    if (!vmai_same_process(&b->owner) && b->opened)
        return;
    free_disks(b);
    free(b->qmp_path);
    free(b->qga_path);
    free(b->fleecing_dir);
    vmai_cancel_close(&b->cancel);
    free(b);
}

const char *vma_backup_error(const vma_backup *b) { return b->err; }

void vma_backup_cancel(vma_backup *b)
{
    if (!vmai_same_process(&b->owner)) /* the parent's backup goes on */
        return;
    vmai_cancel_fire(&b->cancel);
    vma_writer *w = atomic_load(&b->writer);
    if (w != NULL)
        vma_writer_cancel(w);
}

void vma_backup_set_log(vma_backup *b, vma_backup_log_fn fn, void *opaque)
{
    b->log = fn;
    b->log_opaque = opaque;
}

static int set_string(vma_backup *b, char **field, const char *value, const char *what)
{
    if (bforked(b) != VMA_OK)
        return VMA_ERR_INVALID;
    if (b->ran)
        return bfail(b, VMA_ERR_INVALID, "%s: the backup already ran", what);
    char *copy = NULL;
    if (value != NULL && (copy = strdup(value)) == NULL)
        return bfail(b, VMA_ERR_NOMEM, "out of memory");
    free(*field);
    *field = copy;
    return VMA_OK;
}

int vma_backup_set_qga(vma_backup *b, const char *path)
{
    return set_string(b, &b->qga_path, path, "set_qga");
}

int vma_backup_set_fleecing_dir(vma_backup *b, const char *dir)
{
    return set_string(b, &b->fleecing_dir, dir, "set_fleecing_dir");
}

int vma_backup_set_timeout(vma_backup *b, unsigned seconds)
{
    if (bforked(b) != VMA_OK)
        return VMA_ERR_INVALID;
    if (seconds == 0 || seconds > 86400)
        return bfail(b, VMA_ERR_INVALID, "timeout %u s is out of range (1 to 86400)", seconds);
    b->timeout_ms = (int)seconds * 1000;
    return VMA_OK;
}

/* ---- QMP helpers ---- */

static int connect_qmp(vma_backup *b, const char *path, const struct vmai_cancel *cancel,
                       struct vmai_qmp **q)
{
    char why[VMAI_ERRLEN];
    bool busy;
    if (vmai_qmp_connect(q, path, b->timeout_ms, cancel, why, &busy) != VMAI_QMP_OK) {
        if (vmai_cancelled(cancel))
            return bfail(b, VMA_ERR_CANCELED, "cancelled");
        return bfail(b, VMA_ERR_IO, "%s", why);
    }
    return VMA_OK;
}

/* A command whose failure fails the backup with the message "<what>: <why>". */
static int call(vma_backup *b, struct vmai_qmp *q, const char *cmd, json_t *args,
                json_t **ret, int status, const char *what)
{
    char why[VMAI_ERRLEN];
    int rc = vmai_qmp_call(q, cmd, args, ret, why);
    if (rc == VMAI_QMP_OK)
        return VMA_OK;
    if (vmai_cancelled(&b->cancel) && rc == VMAI_QMP_IO)
        return bfail(b, VMA_ERR_CANCELED, "cancelled");
    return bfail(b, rc == VMAI_QMP_IO ? VMA_ERR_IO : status, "%s: %s", what, why);
}

static const char *jstr(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Whether a name "vma-backup-<pid>-..." is of another process that still
 * runs here: a clean-up leaves a backup in progress alone. */
static bool of_live_process(const char *id)
{
    if (!has_prefix(id, PREFIX))
        return false;
    char *end;
    long pid = strtol(id + strlen(PREFIX), &end, 10);
    if (*end != '-' || pid <= 0 || pid == (long)getpid())
        return false;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* Wait until nothing that query lists has an id (field) with prefix. */
static int wait_gone(vma_backup *b, struct vmai_qmp *q, const char *query, const char *field,
                     const char *prefix)
{
    double end = now_s() + JOB_WAIT_MS / 1000.0;
    for (;;) {
        json_t *list = NULL;
        int rc = call(b, q, query, NULL, &list, VMA_ERR_IO, query);
        if (rc != VMA_OK)
            return rc;
        bool left = false;
        size_t k;
        json_t *j;
        json_array_foreach(list, k, j) left =
            left || (has_prefix(jstr(j, field), prefix) && !of_live_process(jstr(j, field)));
        json_decref(list);
        if (!left)
            return VMA_OK;
        if (now_s() > end)
            return bfail(b, VMA_ERR_IO, "%s still lists %s... after %d s", query, prefix,
                         JOB_WAIT_MS / 1000);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

/* Wait until no job of ours is left in query-jobs, dismissing those that
 * concluded. */
static int wait_job_none(vma_backup *b, struct vmai_qmp *q, const char *prefix)
{
    double end = now_s() + JOB_WAIT_MS / 1000.0;
    for (;;) {
        json_t *list = NULL;
        int rc = call(b, q, "query-jobs", NULL, &list, VMA_ERR_IO, "query-jobs");
        if (rc != VMA_OK)
            return rc;
        bool left = false;
        size_t k;
        json_t *j;
        json_array_foreach(list, k, j)
        {
            if (!has_prefix(jstr(j, "id"), prefix) || of_live_process(jstr(j, "id")))
                continue;
            if (strcmp(jstr(j, "status"), "concluded") == 0)
                call(b, q, "job-dismiss", json_pack("{s:s}", "id", jstr(j, "id")), NULL,
                     VMA_ERR_IO, "job-dismiss");
            else
                left = true;
        }
        json_decref(list);
        if (!left)
            return VMA_OK;
        if (now_s() > end)
            return bfail(b, VMA_ERR_IO, "query-jobs still lists %s... after %d s", prefix,
                         JOB_WAIT_MS / 1000);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

/* ---- the disks ---- */

/* "drive-<id>" from a qdev: an id, or a QOM path /machine/peripheral/<id>/... */
static char *name_from_qdev(const char *qdev)
{
    const char *id = qdev, *end;
    static const char periph[] = "/machine/peripheral/";
    if (*qdev == '/') {
        if (!has_prefix(qdev, periph))
            return NULL; /* an anonymous device */
        id = qdev + strlen(periph);
    }
    end = strchr(id, '/');
    size_t len = end ? (size_t)(end - id) : strlen(id);
    if (len == 0)
        return NULL;
    char *name = NULL;
    if (asprintf(&name, "drive-%.*s", (int)len, id) < 0)
        return NULL;
    return name;
}

static int add_disk(vma_backup *b, json_t *info)
{
    json_t *ins = json_object_get(info, "inserted");
    if (!json_is_object(ins) || json_is_true(json_object_get(ins, "ro")) ||
        json_is_true(json_object_get(info, "removable")))
        return VMA_OK; /* no medium, read-only, or a CD-ROM or other removable drive */
    struct bdisk *d = &b->disk[b->ndisk];
    memset(d, 0, sizeof(*d));
    d->backend = strdup(jstr(info, "device"));
    d->qdev = strdup(jstr(info, "qdev"));
    d->node = strdup(jstr(ins, "node-name"));
    d->drv = strdup(jstr(ins, "drv"));
    json_t *size = json_object_get(json_object_get(ins, "image"), "virtual-size");
    d->size = json_integer_value(size) > 0 ? (uint64_t)json_integer_value(size) : 0;
    if (d->backend == NULL || d->qdev == NULL || d->node == NULL || d->drv == NULL)
        return bfail(b, VMA_ERR_NOMEM, "out of memory");
    b->ndisk++;
    if (*d->backend != '\0')
        d->name = strdup(d->backend);
    else
        d->name = name_from_qdev(d->qdev);
    /* A device without an id (a -blockdev given to -machine pflash1=):
     * a node name of the user's own, never an automatic "#block123". */
    if (d->name == NULL && *d->node != '\0' && *d->node != '#' &&
        asprintf(&d->name, "%s%s", has_prefix(d->node, "drive-") ? "" : "drive-", d->node) < 0)
        d->name = NULL;
    return VMA_OK;
}

/* Commands the method needs; QEMU 5.2 has them all. */
static const char *const needed[] = {
    "transaction", "blockdev-backup", "blockdev-add", "blockdev-del", "blockdev-create",
    "block-export-add", "block-export-del", "query-block-exports", "nbd-server-start",
    "nbd-server-stop", "query-block-jobs", "block-job-cancel", "query-jobs", "job-dismiss",
    "query-named-block-nodes", "query-block",
};

static int check_qemu(vma_backup *b, struct vmai_qmp *q)
{
    unsigned v = vmai_qmp_version(q);
    b->version = v;
    if (v < MIN_QEMU)
        return bfail(b, VMA_ERR_INVALID, "QEMU %u.%u.%u at %s is too old for vma backup: it "
                     "needs QEMU 5.2 or newer (image fleecing exported with block-export-add)",
                     v / 10000, v / 100 % 100, v % 100, b->qmp_path);
    json_t *cmds = NULL;
    int rc = call(b, q, "query-commands", NULL, &cmds, VMA_ERR_IO, "query-commands");
    if (rc != VMA_OK)
        return rc;
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        bool found = false;
        size_t k;
        json_t *c;
        json_array_foreach(cmds, k, c) found = found || strcmp(jstr(c, "name"), needed[i]) == 0;
        if (!found) {
            json_decref(cmds);
            return bfail(b, VMA_ERR_INVALID, "QEMU %u.%u.%u at %s lacks the QMP command %s "
                         "that vma backup needs", v / 10000, v / 100 % 100, v % 100,
                         b->qmp_path, needed[i]);
        }
    }
    json_decref(cmds);
    return VMA_OK;
}

int vma_backup_open(vma_backup *b, const char *qmp_path)
{
    if (bforked(b) != VMA_OK)
        return VMA_ERR_INVALID;
    if (b->opened)
        return bfail(b, VMA_ERR_INVALID, "the backup is already open");
    if (qmp_path == NULL || *qmp_path == '\0')
        return bfail(b, VMA_ERR_INVALID, "no QMP socket given");
    int rc = set_string(b, &b->qmp_path, qmp_path, "open");
    if (rc != VMA_OK)
        return rc;
    struct vmai_qmp *q = NULL;
    json_t *blocks = NULL;
    if ((rc = connect_qmp(b, qmp_path, &b->cancel, &q)) != VMA_OK ||
        (rc = check_qemu(b, q)) != VMA_OK ||
        (rc = call(b, q, "query-block", NULL, &blocks, VMA_ERR_IO, "query-block")) != VMA_OK)
        goto out;
    free_disks(b);
    b->disk = calloc(json_array_size(blocks) + 1, sizeof(*b->disk));
    if (b->disk == NULL) {
        rc = bfail(b, VMA_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t i;
    json_t *info;
    json_array_foreach(blocks, i, info) if ((rc = add_disk(b, info)) != VMA_OK) goto out;
    b->opened = true;
out:
    json_decref(blocks);
    vmai_qmp_close(q);
    if (rc != VMA_OK)
        free_disks(b);
    return rc;
}

unsigned vma_backup_qemu_version(const vma_backup *b) { return b->version; }
unsigned vma_backup_device_count(const vma_backup *b) { return b->ndisk; }

const char *vma_backup_device_name(const vma_backup *b, unsigned index)
{
    return index < b->ndisk ? b->disk[index].name : NULL;
}

uint64_t vma_backup_device_size(const vma_backup *b, unsigned index)
{
    return index < b->ndisk ? b->disk[index].size : 0;
}

const char *vma_backup_device_node(const vma_backup *b, unsigned index)
{
    return index < b->ndisk ? b->disk[index].node : NULL;
}

unsigned vma_backup_device_id(const vma_backup *b, unsigned index)
{
    return index < b->ndisk ? b->disk[index].dev_id : 0;
}

int vma_backup_select(vma_backup *b, const char *name)
{
    if (bforked(b) != VMA_OK)
        return VMA_ERR_INVALID;
    if (!b->opened || b->ran)
        return bfail(b, VMA_ERR_INVALID, "select: open the backup first, before it runs");
    b->chosen = true;
    if (name == NULL)
        return VMA_OK; /* no disk, unless selected */
    bool found = false;
    for (unsigned i = 0; i < b->ndisk; i++)
        if (b->disk[i].name != NULL && strcmp(b->disk[i].name, name) == 0)
            found = b->disk[i].selected = true;
    if (!found)
        return bfail(b, VMA_ERR_NOT_FOUND, "no disk named '%s' (disks with a writable medium: "
                     "the BlockBackend name, else drive-<device id>, else the -blockdev "
                     "node-name)", name);
    return VMA_OK;
}

double vma_backup_freeze_seconds(const vma_backup *b) { return b->freeze_seconds; }

/* ---- checks before anything changes ---- */

/* Free bytes under the fleecing directory; the reserve below which the
 * backup stops: a tenth of the file system, at most 1 GiB, at least 1 MiB. */
static int fleece_space(vma_backup *b, uint64_t *avail, uint64_t *reserve)
{
    struct statvfs sv;
    if (statvfs(b->fleecing_dir, &sv) != 0)
        return bfail(b, VMA_ERR_IO, "fleecing directory %s: %s", b->fleecing_dir,
                     strerror(errno));
    uint64_t unit = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
    uint64_t total = (uint64_t)sv.f_blocks * unit;
    *avail = (uint64_t)sv.f_bavail * unit;
    *reserve = total / 10;
    if (*reserve > ((uint64_t)1 << 30))
        *reserve = (uint64_t)1 << 30;
    if (*reserve < ((uint64_t)1 << 20))
        *reserve = (uint64_t)1 << 20;
    return VMA_OK;
}

static int check_selection(vma_backup *b, unsigned *count)
{
    bool any = b->chosen;
    *count = 0;
    for (unsigned i = 0; i < b->ndisk; i++) {
        struct bdisk *d = &b->disk[i];
        if (!any)
            d->selected = true;
        if (!d->selected)
            continue;
        (*count)++;
        if (d->name == NULL)
            return bfail(b, VMA_ERR_INVALID, "the disk of %s (node %s) has no name: give its "
                         "-drive or its device an id=, or its -blockdev a node-name=, or "
                         "leave it out with -d", *d->qdev ? d->qdev : "no device", d->node);
        if (strlen(d->name) > VMA_MAX_NAME_LEN || !vma_name_is_valid(d->name))
            return bfail(b, VMA_ERR_LIMIT, "disk name '%.40s%s' (%zu bytes) is refused by the "
                         "format (at most %u bytes, no '/' or control characters)", d->name,
                         strlen(d->name) > 40 ? "..." : "", strlen(d->name), VMA_MAX_NAME_LEN);
        if (strcmp(d->name, VMA_VMSTATE_NAME) == 0)
            return bfail(b, VMA_ERR_INVALID, "a disk named '%s' would be read as the VM state",
                         d->name);
        if (d->size == 0)
            return bfail(b, VMA_ERR_INVALID, "disk '%s' has size 0", d->name);
        if (d->size > VMA_MAX_DEVICE_SIZE)
            return bfail(b, VMA_ERR_LIMIT, "disk '%s' has %" PRIu64 " bytes, more than the "
                         "format holds", d->name, d->size);
        for (unsigned k = 0; k < i; k++)
            if (b->disk[k].selected && b->disk[k].name &&
                strcmp(b->disk[k].name, d->name) == 0)
                return bfail(b, VMA_ERR_INVALID, "two disks are named '%s' (%s and %s): names "
                             "in an archive are unique", d->name,
                             *b->disk[k].qdev ? b->disk[k].qdev : b->disk[k].node,
                             *d->qdev ? d->qdev : d->node);
    }
    if (*count > VMA_MAX_DEVICES)
        return bfail(b, VMA_ERR_LIMIT, "%u disks selected: an archive holds at most %u", *count,
                     VMA_MAX_DEVICES);
    return VMA_OK;
}

/* Filters that block jobs put on top of a disk while they run. */
static const char *const job_filters[] = {"copy-before-write", "backup-top", "mirror_top",
                                          "commit_top"};

/*
 * A block job on a selected disk, found before anything is made: the
 * disk's node is a job's filter, or the job's id is the disk's backend or
 * node name; or another vma backup of this VM runs (its transaction
 * would wait for that backup's exports to be read, and so would QEMU's
 * monitor). QEMU itself refuses what this misses, in the transaction.
 */
static int check_jobs(vma_backup *b, struct vmai_qmp *q)
{
    json_t *jobs = NULL;
    int rc = call(b, q, "query-block-jobs", NULL, &jobs, VMA_ERR_IO, "query-block-jobs");
    size_t k;
    json_t *j;
    json_array_foreach(jobs, k, j)
    {
        const char *dev = jstr(j, "device");
        if (rc == VMA_OK && has_prefix(dev, PREFIX) && of_live_process(dev))
            rc = bfail(b, VMA_ERR_INVALID, "another vma backup of this VM is running (pid "
                       "%ld): wait for it to end", strtol(dev + strlen(PREFIX), NULL, 10));
        for (unsigned i = 0; rc == VMA_OK && i < b->ndisk; i++) {
            struct bdisk *d = &b->disk[i];
            if (d->selected && (strcmp(dev, d->node) == 0 ||
                                (*d->backend && strcmp(dev, d->backend) == 0)))
                rc = bfail(b, VMA_ERR_INVALID, "disk '%s' already has a block job (%s '%s'): "
                           "wait for it to end", d->name, jstr(j, "type"), dev);
        }
    }
    json_decref(jobs);
    if (rc != VMA_OK)
        return rc;
    for (unsigned i = 0; i < b->ndisk; i++) {
        struct bdisk *d = &b->disk[i];
        for (size_t f = 0; d->selected && f < sizeof(job_filters) / sizeof(*job_filters); f++)
            if (strcmp(d->drv, job_filters[f]) == 0)
                return bfail(b, VMA_ERR_INVALID, "disk '%s' already has a block job (its node "
                             "is a %s filter): wait for it to end", d->name, d->drv);
    }
    return VMA_OK;
}

/* ---- set-up ---- */

static int wait_job_concluded(vma_backup *b, struct vmai_qmp *q, const char *id)
{
    double end = now_s() + b->timeout_ms / 1000.0;
    for (;;) {
        json_t *jobs = NULL;
        int rc = call(b, q, "query-jobs", NULL, &jobs, VMA_ERR_IO, "query-jobs");
        if (rc != VMA_OK)
            return rc;
        size_t k;
        json_t *j, *found = NULL;
        json_array_foreach(jobs, k, j) if (strcmp(jstr(j, "id"), id) == 0) found = j;
        const char *status = found ? jstr(found, "status") : "";
        char error[VMAI_ERRLEN] = "";
        if (found && json_object_get(found, "error"))
            snprintf(error, sizeof(error), "%s", jstr(found, "error"));
        bool done = found == NULL || strcmp(status, "concluded") == 0 ||
                    strcmp(status, "null") == 0;
        json_decref(jobs);
        if (done && found != NULL) {
            call(b, q, "job-dismiss", json_pack("{s:s}", "id", id), NULL, VMA_ERR_IO,
                 "job-dismiss");
        }
        if (*error)
            return bfail(b, VMA_ERR_IO, "cannot make a fleecing image: %s", error);
        if (done)
            return VMA_OK;
        if (now_s() > end)
            return bfail(b, VMA_ERR_IO, "job %s did not end within %d s", id,
                         b->timeout_ms / 1000);
        if (vmai_cancel_sleep(&b->cancel, 2000000) != 0)
            return bfail(b, VMA_ERR_CANCELED, "cancelled");
    }
}

/* The fleecing image of disk i: a new file QEMU opens and we unlink at
 * once, made a qcow2 by blockdev-create, then a qcow2 node over it whose
 * backing is the disk's node. */
static int add_fleecing(vma_backup *b, struct vmai_qmp *q, unsigned i)
{
    struct bdisk *d = &b->disk[i];
    char path[PATH_MAX], file[NAMELEN], fleece[NAMELEN], job[NAMELEN];
    snprintf(file, sizeof(file), "%sfile-%u", b->prefix, i);
    snprintf(fleece, sizeof(fleece), "%sfleece-%u", b->prefix, i);
    snprintf(job, sizeof(job), "%screate-%u", b->prefix, i);
    if (snprintf(path, sizeof(path), "%s/%s%u.qcow2", b->fleecing_dir, b->prefix, i) >=
        (int)sizeof(path))
        return bfail(b, VMA_ERR_INVALID, "fleecing directory path is too long");
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return bfail(b, VMA_ERR_IO, "cannot make fleecing image %s: %s", path, strerror(errno));
    close(fd);
    int rc = call(b, q, "blockdev-add",
                  json_pack("{s:s, s:s, s:s}", "driver", "file", "node-name", file,
                            "filename", path),
                  NULL, VMA_ERR_IO, "cannot open the fleecing image in QEMU");
    unlink(path); /* QEMU holds it open; nothing is left on any exit */
    if (rc != VMA_OK)
        return rc;
    rc = call(b, q, "blockdev-create",
              json_pack("{s:s, s:{s:s, s:s, s:I}}", "job-id", job, "options", "driver", "qcow2",
                        "file", file, "size", (json_int_t)d->size),
              NULL, VMA_ERR_IO, "cannot make a fleecing image");
    if (rc == VMA_OK)
        rc = wait_job_concluded(b, q, job);
    if (rc != VMA_OK)
        return rc;
    return call(b, q, "blockdev-add",
                json_pack("{s:s, s:s, s:s, s:s}", "driver", "qcow2", "node-name", fleece, "file",
                          file, "backing", d->node),
                NULL, VMA_ERR_IO, "cannot set up fleecing");
}

/* Thaw the guest's file systems if we froze them; a warning on failure. */
static void thaw(vma_backup *b, struct vmai_qmp *agent, int timeout_ms)
{
    if (!b->frozen)
        return;
    char why[VMAI_ERRLEN];
    /* On the open agent first; when a cancel (a signal) cut that short, or
     * there is none, on a connection of its own that no cancel stops. */
    if (agent != NULL &&
        vmai_qmp_call(agent, "guest-fsfreeze-thaw", NULL, NULL, why) == VMAI_QMP_OK) {
        b->frozen = false;
        return;
    }
    if (agent != NULL && !vmai_cancelled(&b->cancel)) {
        logf_(b, 1, "cannot thaw the guest's file systems: %s", why);
        return;
    }
    struct vmai_qmp *own = NULL;
    if (vmai_qga_connect(&own, b->qga_path, timeout_ms, NULL, why) != VMAI_QMP_OK ||
        vmai_qmp_call(own, "guest-fsfreeze-thaw", NULL, NULL, why) != VMAI_QMP_OK)
        logf_(b, 1, "cannot thaw the guest's file systems: %s", why);
    else
        b->frozen = false;
    vmai_qmp_close(own);
}

/* Freeze the guest's file systems; an agent that does not answer gets a
 * warning and the backup goes on without. Returns the open agent or NULL. */
static struct vmai_qmp *freeze(vma_backup *b)
{
    char why[VMAI_ERRLEN];
    struct vmai_qmp *agent = NULL;
    if (vmai_qga_connect(&agent, b->qga_path, AGENT_TIMEOUT_MS, &b->cancel, why) !=
        VMAI_QMP_OK) {
        if (!vmai_cancelled(&b->cancel))
            logf_(b, 1, "guest agent: %s; backing up without freezing the guest's file "
                  "systems", why);
        return NULL;
    }
    vmai_qmp_set_timeout(agent, FREEZE_TIMEOUT_MS);
    double t0 = now_s();
    json_t *n = NULL;
    int rc = vmai_qmp_call(agent, "guest-fsfreeze-freeze", NULL, &n, why);
    if (rc == VMAI_QMP_OK) {
        b->frozen = true;
        b->freeze_seconds = t0; /* the start, until thawed */
        logf_(b, 0, "froze %lld file system(s) in the guest", json_integer_value(n));
        json_decref(n);
        vmai_qmp_set_timeout(agent, AGENT_TIMEOUT_MS);
        return agent;
    }
    if (rc == VMAI_QMP_IO && vmai_cancelled(&b->cancel)) {
        b->frozen = true; /* it may have happened: the caller thaws */
        vmai_qmp_close(agent);
        return NULL;
    }
    logf_(b, 1, "guest agent: %s; backing up without freezing the guest's file systems", why);
    if (rc == VMAI_QMP_IO) {
        /* A freeze that may still happen: queue a thaw behind it, and
         * wait for it as long as a freeze may take. */
        b->frozen = true;
        vmai_qmp_close(agent);
        thaw(b, NULL, FREEZE_TIMEOUT_MS);
        b->frozen = false;
        return NULL;
    }
    vmai_qmp_close(agent);
    return NULL;
}

static int transaction(vma_backup *b, struct vmai_qmp *q)
{
    json_t *actions = json_array();
    for (unsigned i = 0; actions && i < b->ndisk; i++) {
        if (!b->disk[i].selected)
            continue;
        char fleece[NAMELEN], job[NAMELEN];
        snprintf(fleece, sizeof(fleece), "%sfleece-%u", b->prefix, i);
        snprintf(job, sizeof(job), "%sjob-%u", b->prefix, i);
        json_array_append_new(actions,
                              json_pack("{s:s, s:{s:s, s:s, s:s, s:s}}", "type",
                                        "blockdev-backup", "data", "device", b->disk[i].node,
                                        "target", fleece, "sync", "none", "job-id", job));
    }
    int rc = call(b, q, "transaction", json_pack("{s:o}", "actions", actions), NULL,
                  VMA_ERR_INVALID, "QEMU refused the backup");
    /* QEMU names a node ("Node '#block469' is busy"): say which disk. */
    for (unsigned i = 0; rc != VMA_OK && rc != VMA_ERR_CANCELED && i < b->ndisk; i++) {
        char quoted[NAMELEN + 4];
        snprintf(quoted, sizeof(quoted), "'%s'", b->disk[i].node);
        if (b->disk[i].selected && strstr(b->err, quoted)) {
            char why[VMAI_ERRLEN];
            snprintf(why, sizeof(why), "%s", b->err);
            bfail(b, rc, "disk '%s': %s", b->disk[i].name, why);
            break;
        }
    }
    return rc;
}

static int export_all(vma_backup *b, struct vmai_qmp *q)
{
    /* In the fleecing directory, an absolute path QEMU can reach, unless
     * that is too long for a socket's address (108 bytes). */
    snprintf(b->sockdir, sizeof(b->sockdir), "%s/vma-backup-XXXXXX",
             strlen(b->fleecing_dir) < 80 ? b->fleecing_dir : "/tmp");
    if (mkdtemp(b->sockdir) == NULL) {
        int e = errno;
        b->sockdir[0] = '\0';
        return bfail(b, VMA_ERR_IO, "cannot make a directory for the NBD socket: %s",
                     strerror(e));
    }
    char sock[PATH_MAX + 16];
    snprintf(sock, sizeof(sock), "%s/nbd.sock", b->sockdir);
    int rc = call(b, q, "nbd-server-start",
                  json_pack("{s:{s:s, s:{s:s}}}", "addr", "type", "unix", "data", "path", sock), NULL,
                  VMA_ERR_INVALID, "cannot start QEMU's NBD server (is one already running, "
                  "for a migration or another backup?)");
    if (rc != VMA_OK)
        return rc;
    b->nbd_started = true;
    for (unsigned i = 0; rc == VMA_OK && i < b->ndisk; i++) {
        if (!b->disk[i].selected)
            continue;
        char id[NAMELEN], fleece[NAMELEN];
        snprintf(id, sizeof(id), "%sexport-%u", b->prefix, i);
        snprintf(fleece, sizeof(fleece), "%sfleece-%u", b->prefix, i);
        rc = call(b, q, "block-export-add",
                  json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "nbd", "id", id, "node-name",
                            fleece, "name", id, "writable", 0),
                  NULL, VMA_ERR_IO, "cannot export the fleecing image");
    }
    return rc;
}

/* One NBD connection per disk; then the socket and its directory go. */
static int connect_sources(vma_backup *b)
{
    int rc = VMA_OK;
    for (unsigned i = 0; rc == VMA_OK && i < b->ndisk; i++) {
        struct bdisk *d = &b->disk[i];
        if (!d->selected)
            continue;
        char uri[PATH_MAX + 128];
        snprintf(uri, sizeof(uri), "nbd+unix:///%sexport-%u?socket=%s/nbd.sock", b->prefix, i,
                 b->sockdir);
        if ((d->src = vma_source_new()) == NULL)
            return bfail(b, VMA_ERR_NOMEM, "out of memory");
        if (vmai_cancelled(&b->cancel))
            return bfail(b, VMA_ERR_CANCELED, "cancelled");
        if (vma_source_open(d->src, "raw", uri) != VMA_OK)
            rc = bfail(b, VMA_ERR_IO, "disk '%s': %s", d->name, vma_source_error(d->src));
        else if (vma_source_size(d->src) != d->size)
            rc = bfail(b, VMA_ERR_IO, "disk '%s': the export has %" PRIu64 " bytes, the disk "
                       "%" PRIu64, d->name, vma_source_size(d->src), d->size);
    }
    return rc;
}

static void remove_sockdir(vma_backup *b)
{
    if (!b->sockdir[0])
        return;
    char sock[PATH_MAX + 16];
    snprintf(sock, sizeof(sock), "%s/nbd.sock", b->sockdir);
    unlink(sock);
    rmdir(b->sockdir);
    b->sockdir[0] = '\0';
}

/* ---- the copy, and the watch of the fleecing directory ---- */

static void *watch_main(void *arg)
{
    vma_backup *b = arg;
    while (vmai_cancel_sleep(&b->watch_stop, WATCH_NS) == 0) {
        uint64_t avail, reserve;
        if (fleece_space(b, &avail, &reserve) != VMA_OK)
            continue;
        if (avail < reserve) {
            b->fleece_free = avail;
            b->reserve = reserve;
            atomic_store(&b->fleece_full, true);
            vma_writer *w = atomic_load(&b->writer);
            if (w != NULL)
                vma_writer_cancel(w);
            break;
        }
    }
    return NULL;
}

static void watch_start(vma_backup *b)
{
    if (vmai_cancel_open(&b->watch_stop) != 0)
        return;
    b->watching = vmai_thread_start(&b->watch, watch_main, b) == 0;
    if (!b->watching)
        vmai_cancel_close(&b->watch_stop);
}

static void watch_stop(vma_backup *b)
{
    if (!b->watching)
        return;
    vmai_cancel_fire(&b->watch_stop);
    pthread_join(b->watch, NULL);
    vmai_cancel_close(&b->watch_stop);
    b->watching = false;
}

static int fleece_full_error(vma_backup *b)
{
    return bfail(b, VMA_ERR_IO, "fleecing directory %s is nearly full (%" PRIu64 " KiB free, "
                 "under the %" PRIu64 " KiB reserve): the backup stopped so that the guest's "
                 "writes do not fail; give --fleecing-dir a larger file system",
                 b->fleecing_dir, b->fleece_free >> 10, b->reserve >> 10);
}

static int copy_all(vma_backup *b, vma_writer *w)
{
    watch_start(b);
    int rc = VMA_OK;
    for (unsigned i = 0; rc == VMA_OK && i < b->ndisk; i++) {
        struct bdisk *d = &b->disk[i];
        if (!d->selected)
            continue;
        rc = vma_writer_write_device_source(w, d->dev_id, d->src);
        if (rc != VMA_OK)
            bfail(b, rc, "%s", vma_writer_error(w));
        vma_source_free(d->src);
        d->src = NULL;
    }
    watch_stop(b);
    if (atomic_load(&b->fleece_full))
        rc = fleece_full_error(b);
    else if (rc != VMA_OK && vmai_cancelled(&b->cancel))
        rc = bfail(b, VMA_ERR_CANCELED, "cancelled");
    return rc;
}

/* After the copy: every job must still run, else the export read live
 * data from some point on and the archive is not of one instant. */
static int check_jobs_alive(vma_backup *b, struct vmai_qmp *q)
{
    json_t *jobs = NULL;
    int rc = call(b, q, "query-block-jobs", NULL, &jobs, VMA_ERR_IO, "query-block-jobs");
    for (unsigned i = 0; rc == VMA_OK && i < b->ndisk; i++) {
        if (!b->disk[i].selected)
            continue;
        char id[NAMELEN];
        snprintf(id, sizeof(id), "%sjob-%u", b->prefix, i);
        bool running = false;
        size_t k;
        json_t *j;
        json_array_foreach(jobs, k, j) if (strcmp(jstr(j, "device"), id) == 0) running =
            strcmp(jstr(j, "status"), "running") == 0 || strcmp(jstr(j, "status"), "ready") == 0;
        if (!running)
            rc = bfail(b, VMA_ERR_IO, "the backup job of disk '%s' ended during the copy "
                       "(cancelled or failed in QEMU): the archive would not hold one point "
                       "in time", b->disk[i].name);
    }
    json_decref(jobs);
    return rc;
}

/* ---- tear-down, shared with vma_backup_cleanup() ---- */

/* Run cmd with {key: id} for each entry of query whose field has prefix;
 * returns how many, or a negative status. */
static int for_each_ours(vma_backup *b, struct vmai_qmp *q, const char *query,
                         const char *field, const char *prefix, const char *infix,
                         const char *cmd, const char *key, const char *extra_key,
                         json_t *extra_value)
{
    json_t *list = NULL;
    int rc = call(b, q, query, NULL, &list, VMA_ERR_IO, query);
    int count = 0;
    size_t k;
    json_t *j;
    json_array_foreach(list, k, j)
    {
        const char *id = jstr(j, field);
        if (rc != VMA_OK || !has_prefix(id, prefix) || (infix && !strstr(id, infix)) ||
            of_live_process(id))
            continue;
        json_t *args = json_pack("{s:s}", key, id);
        if (args && extra_key)
            json_object_set(args, extra_key, extra_value);
        char what[128];
        snprintf(what, sizeof(what), "cannot remove %s", id);
        rc = call(b, q, cmd, args, NULL, VMA_ERR_IO, what);
        count++;
    }
    json_decref(list);
    json_decref(extra_value);
    return rc != VMA_OK ? rc : count;
}

/*
 * Remove what has prefix: jobs, exports, the NBD server (when we started
 * it, or in a clean-up when exports of ours were its only ones), nodes.
 * Returns VMA_OK or the first failure; goes on after failures.
 */
static int remove_ours(vma_backup *b, struct vmai_qmp *q, const char *prefix, bool cleanup,
                       unsigned *removed)
{
    int first = VMA_OK, n;
    unsigned count = 0;
#define STEP(expr)                                                                           \
    do {                                                                                     \
        n = (expr);                                                                          \
        if (n < 0 && first == VMA_OK)                                                        \
            first = n;                                                                       \
        if (n > 0)                                                                           \
            count += (unsigned)n;                                                            \
    } while (0)
    /* Backup jobs (sync=none never ends by itself), then blockdev-create
     * jobs a cancel interrupted. */
    STEP(for_each_ours(b, q, "query-block-jobs", "device", prefix, NULL, "block-job-cancel",
                       "device", "force", json_true()));
    STEP(wait_gone(b, q, "query-block-jobs", "device", prefix));
    STEP(for_each_ours(b, q, "query-jobs", "id", prefix, NULL, "job-cancel", "id", NULL, NULL));
    STEP(wait_job_none(b, q, prefix));
    int exports = 0;
    STEP(exports = for_each_ours(b, q, "query-block-exports", "id", prefix, NULL,
                                 "block-export-del", "id", "mode", json_string("hard")));
    STEP(wait_gone(b, q, "query-block-exports", "id", prefix));
    bool stop = b->nbd_started;
    if (cleanup && exports > 0) {
        json_t *list = NULL;
        if (call(b, q, "query-block-exports", NULL, &list, VMA_ERR_IO, "query") == VMA_OK)
            stop = json_array_size(list) == 0;
        json_decref(list);
    }
    if (stop) {
        char why[VMAI_ERRLEN];
        int rc = vmai_qmp_call(q, "nbd-server-stop", NULL, NULL, why);
        if (rc == VMAI_QMP_OK)
            count++;
        else if (!cleanup && first == VMA_OK)
            first = bfail(b, VMA_ERR_IO, "nbd-server-stop: %s", why);
        b->nbd_started = false;
    }
    /* Fleecing nodes before the file nodes under them. */
    STEP(for_each_ours(b, q, "query-named-block-nodes", "node-name", prefix, "-fleece-",
                       "blockdev-del", "node-name", NULL, NULL));
    STEP(for_each_ours(b, q, "query-named-block-nodes", "node-name", prefix, NULL,
                       "blockdev-del", "node-name", NULL, NULL));
#undef STEP
    if (removed)
        *removed = count;
    return first;
}

/* The tear-down of a run: a connection of its own (not cancellable: it
 * is what a cancel needs), then everything of this process's prefix. A
 * QEMU that is gone is said so in the message, after the first failure. */
static int teardown(vma_backup *b, struct vmai_qmp *q, int rc)
{
    char first[VMAI_ERRLEN];
    snprintf(first, sizeof(first), "%s", b->err);
    struct vmai_qmp *own = NULL;
    int trc = VMA_OK;
    if (q == NULL) {
        char why[VMAI_ERRLEN];
        bool busy;
        if (vmai_qmp_connect(&own, b->qmp_path, b->timeout_ms, NULL, why, &busy) !=
            VMAI_QMP_OK) {
            if (rc != VMA_OK && !busy)
                bfail(b, rc, "QEMU is gone (%s); the backup failed: %s", why, first);
            else if (rc != VMA_OK)
                bfail(b, rc, "%s; removing the backup's jobs and nodes from QEMU failed too: "
                      "%s (vma backup --cleanup removes them later)", first, why);
            remove_sockdir(b);
            if (rc == VMA_OK) {
                logf_(b, 1, "removing the backup's jobs and nodes from QEMU failed: %s (vma "
                      "backup --cleanup removes them later)", why);
                return VMA_OK;
            }
            return rc;
        }
        q = own;
    }
    trc = remove_ours(b, q, b->prefix, false, NULL);
    vmai_qmp_close(own);
    remove_sockdir(b);
    if (rc != VMA_OK) {
        snprintf(b->err, sizeof(b->err), "%s", first); /* the first failure wins */
        vmai_set_last_error(b->err);
        return rc;
    }
    /* The copy was checked to be of one instant: the archive stands. */
    if (trc != VMA_OK)
        logf_(b, 1, "removing the backup's jobs and nodes from QEMU failed: %s (vma backup "
              "--cleanup removes what is left)", b->err);
    b->err[0] = '\0';
    return VMA_OK;
}

static int setup(vma_backup *b, struct vmai_qmp *q)
{
    int rc = check_jobs(b, q);
    for (unsigned i = 0; rc == VMA_OK && i < b->ndisk; i++)
        if (b->disk[i].selected)
            rc = add_fleecing(b, q, i);
    if (rc != VMA_OK)
        return rc;
    if (vmai_cancelled(&b->cancel))
        return bfail(b, VMA_ERR_CANCELED, "cancelled");
    struct vmai_qmp *agent = b->qga_path ? freeze(b) : NULL;
    if (vmai_cancelled(&b->cancel)) {
        thaw(b, agent, AGENT_TIMEOUT_MS);
        vmai_qmp_close(agent);
        return bfail(b, VMA_ERR_CANCELED, "cancelled");
    }
    double t0 = b->freeze_seconds;
    rc = transaction(b, q);
    if (b->frozen) {
        thaw(b, agent, AGENT_TIMEOUT_MS);
        b->freeze_seconds = now_s() - t0;
        if (!b->frozen)
            logf_(b, 0, "guest file system freeze lasted %.3f s", b->freeze_seconds);
    }
    vmai_qmp_close(agent);
    if (rc == VMA_OK)
        logf_(b, 0, "point in time taken: %s", "one transaction of blockdev-backup sync=none");
    if (rc == VMA_OK)
        rc = export_all(b, q);
    return rc;
}

int vma_backup_run(vma_backup *b, vma_writer *w)
{
    if (bforked(b) != VMA_OK)
        return VMA_ERR_INVALID;
    if (!b->opened || b->ran)
        return bfail(b, VMA_ERR_INVALID, "run: open the backup first, and run it once");
    if (w == NULL)
        return bfail(b, VMA_ERR_INVALID, "run: no writer");
    b->ran = true;
    /* QEMU opens the fleecing files from its own working directory. */
    const char *tmp = getenv("TMPDIR");
    const char *dir = b->fleecing_dir ? b->fleecing_dir : tmp && *tmp ? tmp : "/tmp";
    char *abs = realpath(dir, NULL);
    if (abs == NULL)
        return bfail(b, errno == ENOMEM ? VMA_ERR_NOMEM : VMA_ERR_IO,
                     "fleecing directory %s: %s", dir, strerror(errno));
    free(b->fleecing_dir);
    b->fleecing_dir = abs;
    unsigned count;
    uint64_t avail, reserve;
    int rc = check_selection(b, &count);
    if (rc == VMA_OK && count > 0 && (rc = fleece_space(b, &avail, &reserve)) == VMA_OK &&
        avail < reserve)
        rc = bfail(b, VMA_ERR_IO, "fleecing directory %s has %" PRIu64 " KiB free, under the "
                   "%" PRIu64 " KiB reserve the backup keeps for the guest's writes",
                   b->fleecing_dir, avail >> 10, reserve >> 10);
    for (unsigned i = 0; rc == VMA_OK && i < b->ndisk; i++) {
        struct bdisk *d = &b->disk[i];
        if (!d->selected)
            continue;
        int id = vma_writer_add_device(w, d->name, d->size); /* rounded up to 512 */
        if (id < 0)
            rc = bfail(b, id, "%s", vma_writer_error(w));
        else
            d->dev_id = (unsigned)id;
    }
    if (rc != VMA_OK || count == 0)
        return rc; /* nothing changed in QEMU */

    atomic_store(&b->writer, w);
    if (vmai_cancelled(&b->cancel)) /* a cancel before the writer was known */
        vma_writer_cancel(w);
    struct vmai_qmp *q = NULL;
    rc = connect_qmp(b, b->qmp_path, &b->cancel, &q);
    if (rc != VMA_OK) {
        atomic_store(&b->writer, NULL);
        vmai_writer_fail(w, rc, b->err);
        return rc; /* nothing changed in QEMU */
    }
    rc = setup(b, q);
    vmai_qmp_close(q); /* not held during the copy */
    q = NULL;
    if (rc == VMA_OK)
        rc = connect_sources(b);
    remove_sockdir(b); /* connected: the socket is not needed any more */
    if (rc == VMA_OK)
        rc = copy_all(b, w);
    if (rc == VMA_OK && (rc = connect_qmp(b, b->qmp_path, NULL, &q)) == VMA_OK)
        rc = check_jobs_alive(b, q);
    for (unsigned i = 0; i < b->ndisk; i++) {
        vma_source_free(b->disk[i].src);
        b->disk[i].src = NULL;
    }
    /* A thaw that failed right after the transaction: once more, on
     * every path (a guest must never be left frozen by us). */
    if (b->frozen)
        thaw(b, NULL, AGENT_TIMEOUT_MS);
    rc = teardown(b, q, rc);
    vmai_qmp_close(q);
    atomic_store(&b->writer, NULL);
    if (rc != VMA_OK)
        vmai_writer_fail(w, rc, b->err);
    return rc;
}

/* A freeze a killed run left: thaw the guest if its agent says frozen. */
static int cleanup_freeze(vma_backup *b, unsigned *removed)
{
    char why[VMAI_ERRLEN];
    struct vmai_qmp *agent = NULL;
    json_t *status = NULL;
    if (vmai_qga_connect(&agent, b->qga_path, AGENT_TIMEOUT_MS, &b->cancel, why) !=
            VMAI_QMP_OK ||
        vmai_qmp_call(agent, "guest-fsfreeze-status", NULL, &status, why) != VMAI_QMP_OK) {
        vmai_qmp_close(agent);
        return bfail(b, VMA_ERR_IO, "guest agent: %s", why);
    }
    int rc = VMA_OK;
    if (strcmp(json_string_value(status) ? json_string_value(status) : "", "frozen") == 0) {
        if (vmai_qmp_call(agent, "guest-fsfreeze-thaw", NULL, NULL, why) != VMAI_QMP_OK)
            rc = bfail(b, VMA_ERR_IO, "cannot thaw the guest's file systems: %s", why);
        else if (removed)
            (*removed)++;
    }
    json_decref(status);
    vmai_qmp_close(agent);
    return rc;
}

int vma_backup_cleanup(vma_backup *b, const char *qmp_path, unsigned *removed)
{
    if (removed)
        *removed = 0;
    if (bforked(b) != VMA_OK)
        return VMA_ERR_INVALID;
    if (qmp_path == NULL || *qmp_path == '\0')
        return bfail(b, VMA_ERR_INVALID, "no QMP socket given");
    struct vmai_qmp *q = NULL;
    int rc = connect_qmp(b, qmp_path, &b->cancel, &q);
    if (rc != VMA_OK)
        return rc;
    rc = remove_ours(b, q, PREFIX, true, removed);
    vmai_qmp_close(q);
    if (rc == VMA_OK && b->qga_path != NULL)
        rc = cleanup_freeze(b, removed);
    return rc;
}
