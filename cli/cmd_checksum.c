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
 * clusters per worker) plus the stored blocks of the clusters that came
 * ahead of their device's next one; zero blocks cost nothing while they
 * wait (only the mask is kept). Clusters of one device in order, as
 * Proxmox and `vma create` write them, never wait.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
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
#define DEV_SLOTS 256

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
    struct device dev[DEV_SLOTS];
    struct worker workers[MAX_WORKERS];
    unsigned nworkers;
    unsigned char worker_of[DEV_SLOTS];
    atomic_int failed; /* a worker ran out of memory or OpenSSL failed */
};

static const unsigned char zeros[VMA_CLUSTER_SIZE];

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

/* Hash jb if it is the device's next cluster (and what follows it), else
 * keep it for later. Takes ownership of jb. */
static int consume(struct device *d, struct job *jb)
{
    if (jb->cluster != d->next) {
        if (heap_push(d, jb) == 0)
            return 0;
        free(jb);
        return -1;
    }
    for (;;) {
        int rc = hash_cluster(d, jb);

        free(jb);
        if (rc < 0)
            return -1;
        d->next++;
        if (!d->npending || d->pending[0]->cluster != d->next)
            return 0;
        jb = heap_pop(d);
    }
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
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        jb = w->queue[w->head];
        w->head = (w->head + 1) % WORKER_QUEUE;
        w->count--;
        pthread_cond_broadcast(&w->changed);
        pthread_mutex_unlock(&w->lock);
        if (atomic_load(&w->cs->failed))
            free(jb);
        else if (consume(&w->cs->dev[jb->dev_id], jb) < 0)
            atomic_store(&w->cs->failed, 1);
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
    len = (size_t)__builtin_popcount(mask) * VMA_BLOCK_SIZE;
    jb = malloc(sizeof *jb + len);
    if (!jb) {
        atomic_store(&cs->failed, 1);
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
    for (id = 1; id < DEV_SLOTS; id++) {
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
    for (id = 1; id < DEV_SLOTS; id++) {
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
    stop_workers(cs);
    if (st != VMA_OK && !atomic_load(&cs->failed))
        return cli_fail("checksum failed - %s", vma_reader_error(cs->r));
    if (atomic_load(&cs->failed))
        return cli_fail("checksum failed - out of memory or SHA-256 error");
    for (id = 1; id < DEV_SLOTS; id++) {
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
    rc = run(cs, o.drives);
    stop_workers(cs);
    for (unsigned id = 1; id < DEV_SLOTS; id++) {
        struct device *d = &cs->dev[id];

        while (d->npending)
            free(heap_pop(d));
        free(d->pending);
        if (d->md != NULL)
            cli_crypto.md_ctx_free(d->md);
    }
    free(cs);
    cli_close_archive(r);
    return rc;
}
