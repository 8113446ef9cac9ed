/*
 * vma checksum <archive> [-d <dev,...>]: the SHA-256 of every device image
 * as sha256sum prints it for the files extract would write
 * (disk-<devname>.raw, vmstate.bin), computed while reading; nothing is
 * written. The archive is checked as by verify.
 *
 * The reading thread hands each cluster (its stored blocks, copied) to a
 * worker; a device always goes to the same worker, so its clusters stay
 * in archive order there. A device hashes in offset order: a worker keeps
 * each device's next cluster number, hashes a cluster that is next at
 * once (then any pending ones that follow it), and keeps one that came
 * ahead in a min-heap until its turn. Memory: the queues (WORKER_QUEUE
 * clusters per worker) plus at most HOLD_BUDGET bytes of clusters that
 * came ahead of their device's next one (all devices together; zero blocks
 * cost only the job's overhead). Past that budget, the device that would
 * exceed it spills: its waiting clusters and every later one go into an
 * unlinked sparse file in $TMPDIR at their offset from the device's next
 * cluster (zero blocks stay holes), and once the reader has checked that
 * every cluster came, its worker hashes that file from the start. An
 * archive written in reverse order thus costs disk (its stored blocks),
 * not memory. Clusters of one device in order, as `vma create` writes
 * them, never wait, and never touch the file.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "print_json.h"
#include "progress.h"
#include "progress_bar.h"
#include "sha256.h"

#define WORKER_QUEUE 64 /* clusters waiting per worker: at most 4 MiB */
#define MAX_WORKERS 64
#define HOLD_BUDGET ((size_t)64 << 20) /* waiting clusters kept in memory */
#define JOB_OVERHEAD 64 /* a waiting job beside its blocks: malloc, heap slot */
#define SPILL_CHUNK ((size_t)1 << 20) /* read back from a spill file at once */

/* One cluster in flight: the stored blocks of `mask`, 4 KiB each. */
struct job {
    unsigned dev_id;
    uint32_t cluster;
    uint16_t mask;
    unsigned char data[];
};

struct device {
    int selected;
    uint64_t size;
    EVP_MD_CTX *md;
    uint32_t next;        /* cluster number to hash next */
    struct job **pending; /* min-heap by cluster number */
    size_t npending, cap;
    int spill_fd;         /* >= 0: every cluster from `next` on is there */
    unsigned char digest[32];
};

struct worker {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct job *queue[WORKER_QUEUE];
    size_t head, count;
    int closing; /* no more jobs will come */
    struct checksum *cs;
};

struct checksum {
    vma_reader *r;
    struct device dev[CLI_DEV_SLOTS];
    struct worker workers[MAX_WORKERS];
    unsigned nworkers;
    unsigned char worker_of[CLI_DEV_SLOTS];
    atomic_size_t held; /* bytes of waiting jobs in memory (job_cost) */
    int complete;       /* every cluster was read and checked: hash spills */
    atomic_int failed;  /* a worker failed; the first says why */
    char why[256];
};

static const unsigned char zeros[VMA_CLUSTER_SIZE];

/* The first failure's reason wins; later ones only stop the work. */
__attribute__((format(printf, 2, 3))) static int failure(struct checksum *cs,
                                                         const char *fmt, ...)
{
    if (atomic_exchange(&cs->failed, 1) == 0) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(cs->why, sizeof cs->why, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static size_t stored_len(uint16_t mask)
{
    return (size_t)__builtin_popcount(mask) * VMA_BLOCK_SIZE;
}

static size_t job_cost(const struct job *jb)
{
    return JOB_OVERHEAD + stored_len(jb->mask);
}

/* Hash the bytes of one cluster that lie inside the device. */
static int hash_cluster(struct device *d, const struct job *jb)
{
    uint64_t off = (uint64_t)jb->cluster * VMA_CLUSTER_SIZE;
    const unsigned char *data = jb->data;

    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER && off < d->size; b++) {
        size_t len = d->size - off < VMA_BLOCK_SIZE ? (size_t)(d->size - off) : VMA_BLOCK_SIZE;
        const unsigned char *src = zeros;

        if (jb->mask & (1u << b)) {
            src = data;
            data += VMA_BLOCK_SIZE;
        }
        if (cli_crypto.digest_update(d->md, src, len) != 1)
            return -1;
        off += VMA_BLOCK_SIZE;
    }
    return 0;
}

static int heap_less(const struct job *a, const struct job *b)
{
    return a->cluster < b->cluster;
}

static int heap_push(struct device *d, struct job *jb)
{
    size_t i;

    if (d->npending == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 64;
        struct job **p = realloc(d->pending, cap * sizeof *p);

        if (!p)
            return -1;
        d->pending = p;
        d->cap = cap;
    }
    for (i = d->npending++; i > 0 && heap_less(jb, d->pending[(i - 1) / 2]); i = (i - 1) / 2)
        d->pending[i] = d->pending[(i - 1) / 2];
    d->pending[i] = jb;
    return 0;
}

static struct job *heap_pop(struct device *d)
{
    struct job *top = d->pending[0], *last = d->pending[--d->npending];
    size_t i = 0, c;

    while ((c = 2 * i + 1) < d->npending) {
        if (c + 1 < d->npending && heap_less(d->pending[c + 1], d->pending[c]))
            c++;
        if (!heap_less(d->pending[c], last))
            break;
        d->pending[i] = d->pending[c];
        i = c;
    }
    if (d->npending)
        d->pending[i] = last;
    return top;
}

/* The directory for spill files: $TMPDIR, else /tmp. */
static const char *spill_dir(void)
{
    const char *dir = getenv("TMPDIR");

    return dir && *dir ? dir : "/tmp";
}

/* An unlinked file for d's clusters: O_TMPFILE, else mkstemp + unlink. */
static int spill_open(struct checksum *cs, struct device *d)
{
    const char *dir = spill_dir();
    char *tmpl = NULL;

    d->spill_fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (d->spill_fd < 0 && asprintf(&tmpl, "%s/vma-checksum.XXXXXX", dir) >= 0) {
        d->spill_fd = mkostemp(tmpl, O_CLOEXEC);
        if (d->spill_fd >= 0)
            unlink(tmpl);
    }
    free(tmpl);
    if (d->spill_fd < 0)
        return failure(cs, "cannot make a file in %s for clusters out of order - %s", dir,
                       strerror(errno));
    return 0;
}

static int pwrite_all(int fd, const unsigned char *p, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = ENOSPC;
            return -1;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

/* Write jb's stored blocks into d's spill file, runs of them at once,
 * at their place counted from d->next; free jb. */
static int spill_job(struct checksum *cs, struct device *d, struct job *jb)
{
    uint64_t base = ((uint64_t)jb->cluster - d->next) * VMA_CLUSTER_SIZE;
    const unsigned char *data = jb->data;
    int rc = 0;

    if (jb->cluster < d->next) { /* the reader refuses duplicates */
        rc = failure(cs, "cluster %u came twice", jb->cluster);
        free(jb);
        return rc;
    }
    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER && rc == 0;) {
        unsigned n = 0;

        while (b + n < VMA_BLOCKS_PER_CLUSTER && (jb->mask & (1u << (b + n))))
            n++;
        if (n == 0) {
            b++;
            continue;
        }
        if (pwrite_all(d->spill_fd, data, (size_t)n * VMA_BLOCK_SIZE,
                       base + (uint64_t)b * VMA_BLOCK_SIZE) != 0)
            rc = failure(cs, "cannot write clusters out of order to %s - %s", spill_dir(),
                         strerror(errno));
        data += (size_t)n * VMA_BLOCK_SIZE;
        b += n;
    }
    free(jb);
    return rc;
}

/* Past the memory budget: d's waiting clusters and jb go to a new spill
 * file, and so will every later cluster of d. */
static int spill_start(struct checksum *cs, struct device *d, struct job *jb)
{
    int rc = spill_open(cs, d);

    while (d->npending) {
        struct job *p = heap_pop(d);

        atomic_fetch_sub(&cs->held, job_cost(p));
        if (rc == 0)
            rc = spill_job(cs, d, p);
        else
            free(p);
    }
    free(d->pending);
    d->pending = NULL;
    d->cap = 0;
    if (rc != 0) {
        free(jb);
        return -1;
    }
    return spill_job(cs, d, jb);
}

/* Hash d's spill file: the device from cluster d->next to its end; the
 * holes (zero blocks, and zero clusters past the file's end) read as
 * zeros. */
static int spill_hash(struct checksum *cs, struct device *d)
{
    uint64_t off = 0, left = d->size - (uint64_t)d->next * VMA_CLUSTER_SIZE;
    unsigned char *buf = malloc(SPILL_CHUNK);

    if (!buf)
        return failure(cs, "out of memory");
    while (left > 0) {
        size_t want = left < SPILL_CHUNK ? (size_t)left : SPILL_CHUNK;
        ssize_t n = pread(d->spill_fd, buf, want, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return failure(cs, "cannot read back clusters out of order from %s - %s",
                           spill_dir(), strerror(errno));
        }
        if ((size_t)n < want) /* past the end of the file: zeros */
            memset(buf + n, 0, want - (size_t)n);
        if (cli_crypto.digest_update(d->md, buf, want) != 1) {
            free(buf);
            return failure(cs, "SHA-256 error");
        }
        off += want;
        left -= want;
    }
    free(buf);
    return 0;
}

/* Hash jb if it is the device's next cluster (and what follows it), keep
 * it in memory for later within the budget, else spill. Takes ownership
 * of jb. */
static int consume(struct checksum *cs, struct device *d, struct job *jb)
{
    if (d->spill_fd >= 0)
        return spill_job(cs, d, jb);
    if (jb->cluster != d->next) {
        size_t cost = job_cost(jb);

        if (atomic_fetch_add(&cs->held, cost) + cost > HOLD_BUDGET) {
            atomic_fetch_sub(&cs->held, cost);
            return spill_start(cs, d, jb);
        }
        if (heap_push(d, jb) == 0)
            return 0;
        atomic_fetch_sub(&cs->held, cost);
        free(jb);
        return failure(cs, "out of memory");
    }
    for (;;) {
        int rc = hash_cluster(d, jb);

        free(jb);
        if (rc < 0)
            return failure(cs, "SHA-256 error");
        d->next++;
        if (!d->npending || d->pending[0]->cluster != d->next)
            return 0;
        jb = heap_pop(d);
        atomic_fetch_sub(&cs->held, job_cost(jb));
    }
}

/* At the end of a good read: hash the spill files of w's devices. */
static void finish_spills(struct worker *w)
{
    struct checksum *cs = w->cs;
    unsigned me = (unsigned)(w - cs->workers);

    for (unsigned id = 1; id < CLI_DEV_SLOTS && !atomic_load(&cs->failed); id++)
        if (cs->dev[id].selected && cs->dev[id].spill_fd >= 0 && cs->worker_of[id] == me)
            spill_hash(cs, &cs->dev[id]);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (;;) {
        struct job *jb;

        pthread_mutex_lock(&w->lock);
        while (w->count == 0 && !w->closing)
            pthread_cond_wait(&w->changed, &w->lock);
        if (w->count == 0) {
            int complete = w->cs->complete;

            pthread_mutex_unlock(&w->lock);
            if (complete)
                finish_spills(w);
            return NULL;
        }
        jb = w->queue[w->head];
        w->head = (w->head + 1) % WORKER_QUEUE;
        w->count--;
        pthread_cond_broadcast(&w->changed);
        pthread_mutex_unlock(&w->lock);
        if (atomic_load(&w->cs->failed))
            free(jb);
        else
            consume(w->cs, &w->cs->dev[jb->dev_id], jb);
    }
}

/* vma_cluster_fn on the reading thread: copy the stored blocks and queue. */
static int on_cluster(void *opaque, unsigned dev_id, uint32_t cluster, uint16_t mask,
                      const unsigned char *data)
{
    struct checksum *cs = opaque;
    struct worker *w;
    struct job *jb;
    size_t len;

    if (cli_signal || atomic_load(&cs->failed))
        return 1;
    if (!cs->dev[dev_id].selected)
        return 0;
    len = stored_len(mask);
    jb = malloc(sizeof *jb + len);
    if (!jb) {
        failure(cs, "out of memory");
        return 1;
    }
    jb->dev_id = dev_id;
    jb->cluster = cluster;
    jb->mask = mask;
    memcpy(jb->data, data, len);
    w = &cs->workers[cs->worker_of[dev_id]];
    pthread_mutex_lock(&w->lock);
    while (w->count == WORKER_QUEUE)
        pthread_cond_wait(&w->changed, &w->lock);
    w->queue[(w->head + w->count) % WORKER_QUEUE] = jb;
    w->count++;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

/* Mark the devices of the -d list (NULL: all); an unknown name fails. */
static int select_devices(struct checksum *cs, const char *list, unsigned *count)
{
    unsigned id;

    *count = 0;
    if (!list) {
        for (id = vma_reader_next_device(cs->r, 0); id; id = vma_reader_next_device(cs->r, id))
            cs->dev[id].selected = 1, ++*count;
        return CLI_OK;
    }
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *name = strndup(p, len);

        if (!name)
            return cli_fail("out of memory");
        id = vma_reader_find_device(cs->r, name);
        if (!id) {
            int rc = cli_fail("no device '%s' in the archive", name);

            free(name);
            return rc;
        }
        free(name);
        if (!cs->dev[id].selected)
            cs->dev[id].selected = 1, ++*count;
        p += len;
        if (*p == ',')
            p++;
    }
    return CLI_OK;
}

static int start_workers(struct checksum *cs, unsigned ndev)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned id, i = 0, n;

    n = cores > 0 ? (unsigned)cores : 1;
    n = ndev < n ? ndev : n;
    n = n > MAX_WORKERS ? MAX_WORKERS : n ? n : 1;
    if (cli_libcrypto_load() != 0)
        return CLI_FAIL;
    /* cs->nworkers counts the threads started (what stop_workers joins). */
    for (id = 1; id < CLI_DEV_SLOTS; id++) {
        struct device *d = &cs->dev[id];

        if (!d->selected)
            continue;
        d->size = vma_reader_device_size(cs->r, id);
        d->md = cli_crypto.md_ctx_new();
        if (!d->md || cli_crypto.digest_init(d->md, cli_crypto.sha256(), NULL) != 1)
            return cli_fail("cannot start SHA-256 (OpenSSL)");
        cs->worker_of[id] = (unsigned char)(i++ % n);
    }
    for (i = 0; i < n; i++) {
        struct worker *w = &cs->workers[i];
        int err;

        w->cs = cs;
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->changed, NULL);
        err = pthread_create(&w->thread, NULL, worker_main, w);
        if (err) {
            pthread_mutex_destroy(&w->lock);
            pthread_cond_destroy(&w->changed);
            return cli_fail("cannot start a thread - %s", strerror(err));
        }
        cs->nworkers = i + 1;
    }
    return CLI_OK;
}

/* Let the workers drain their queues and end; free what is left. */
static void stop_workers(struct checksum *cs)
{
    for (unsigned i = 0; i < cs->nworkers; i++) {
        struct worker *w = &cs->workers[i];

        pthread_mutex_lock(&w->lock);
        w->closing = 1;
        pthread_cond_broadcast(&w->changed);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
        while (w->count) { /* after a failure the worker stops early */
            free(w->queue[w->head]);
            w->head = (w->head + 1) % WORKER_QUEUE;
            w->count--;
        }
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->changed);
    }
    cs->nworkers = 0;
}

/* The file name sha256sum prints; names with '\' or a newline get its
 * escaped form (a leading backslash on the line). */
static void print_line(const unsigned char digest[32], const char *prefix, const char *name,
                       const char *suffix)
{
    int escape = strpbrk(name, "\\\n") != NULL;

    if (escape)
        putchar('\\');
    for (int i = 0; i < 32; i++)
        printf("%02x", digest[i]);
    printf("  %s", prefix);
    for (const char *p = name; *p; p++) {
        if (escape && *p == '\\')
            fputs("\\\\", stdout);
        else if (escape && *p == '\n')
            fputs("\\n", stdout);
        else
            putchar(*p);
    }
    printf("%s\n", suffix);
}

static void hex(const unsigned char digest[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static int print_result(struct checksum *cs)
{
    struct json j;
    unsigned id;

    if (cli_json()) {
        jw_init(&j, stdout);
        jw_begin_object(&j);
        json_header(&j, cs->r);
        jw_key(&j, "devices");
        jw_begin_array(&j);
    }
    for (id = 1; id < CLI_DEV_SLOTS; id++) {
        struct device *d = &cs->dev[id];
        int vmstate = vma_reader_device_is_vmstate(cs->r, id);
        const char *name = vma_reader_device_name(cs->r, id);
        char text[65];

        if (!d->selected)
            continue;
        if (!cli_json()) {
            print_line(d->digest, vmstate ? "" : "disk-", vmstate ? "vmstate.bin" : name,
                       vmstate ? "" : ".raw");
            continue;
        }
        hex(d->digest, text);
        jw_begin_object(&j);
        json_device_fields(&j, cs->r, id);
        jw_key(&j, "file");
        if (vmstate) {
            jw_string(&j, "vmstate.bin");
        } else {
            char *file = cli_path(".", "disk-", name, ".raw");

            jw_string(&j, file ? file + 2 : "");
            free(file);
        }
        jw_key(&j, "sha256");
        jw_string(&j, text);
        jw_end_object(&j);
    }
    if (!cli_json())
        return cli_flush_stdout();
    jw_end_array(&j);
    jw_end_object(&j);
    return cli_json_printed();
}

static int run(struct checksum *cs, const char *drives)
{
    struct read_progress progress;
    unsigned ndev, id;
    int st;

    if (select_devices(cs, drives, &ndev) != CLI_OK || start_workers(cs, ndev) != CLI_OK)
        return CLI_FAIL;
    read_progress_start(&progress, cs->r, 0); /* the bar only */
    st = vma_reader_read(cs->r, on_cluster, cs);
    cs->complete = st == VMA_OK; /* seen by the workers under their lock */
    stop_workers(cs);
    if (st != VMA_OK && !atomic_load(&cs->failed))
        return cli_fail("checksum failed - %s", vma_reader_error(cs->r));
    if (atomic_load(&cs->failed))
        return cli_fail("checksum failed - %s", cs->why);
    for (id = 1; id < CLI_DEV_SLOTS; id++) {
        struct device *d = &cs->dev[id];

        /* The reader checked that every cluster came: nothing is pending. */
        if (d->selected && (d->npending || cli_crypto.digest_final(d->md, d->digest, NULL) != 1))
            return cli_fail("checksum failed - device '%s' incomplete",
                            vma_reader_device_name(cs->r, id));
    }
    return print_result(cs);
}

struct checksum_opts {
    const char *drives;
};

static int checksum_option(int c, void *ctx)
{
    struct checksum_opts *o = ctx;

    if (c == 'd')
        o->drives = optarg;
    else if (c == 'p' || c == 'P')
        progress_bar_mode(c == 'p' ? PROGRESS_BAR_ON : PROGRESS_BAR_OFF);
    else if (c == 'J')
        return cli_output_format(optarg);
    else
        return -1;
    return 0;
}

int cmd_checksum(int argc, char **argv)
{
    struct checksum_opts o = { NULL };
    struct checksum *cs;
    int rc;
    vma_reader *r = cli_archive_args(argc, argv, "hpd:", checksum_option, &o, &rc);

    if (!r)
        return rc;
    cs = calloc(1, sizeof *cs);
    if (!cs) {
        cli_close_archive(r);
        return cli_fail("out of memory");
    }
    cs->r = r;
    for (unsigned id = 0; id < CLI_DEV_SLOTS; id++)
        cs->dev[id].spill_fd = -1;
    rc = run(cs, o.drives);
    stop_workers(cs);
    for (unsigned id = 1; id < CLI_DEV_SLOTS; id++) {
        struct device *d = &cs->dev[id];

        while (d->npending)
            free(heap_pop(d));
        free(d->pending);
        if (d->spill_fd >= 0)
            close(d->spill_fd);
        if (d->md != NULL)
            cli_crypto.md_ctx_free(d->md);
    }
    free(cs);
    cli_close_archive(r);
    return rc;
}
