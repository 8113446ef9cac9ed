/*
 * Create an archive from raw disk images with four writing threads.
 *   create_threads OUT.vma NAME=IMAGE...
 * Each device is NAME, its content the file IMAGE. The threads take
 * clusters from one shared counter, read them with pread() and hand them
 * to vma_writer_write_cluster(), which may be called from several threads
 * at once: clusters of all devices are interleaved, in any order. A
 * worker whose write fails reads its own message with vma_last_error().
 * (vma_writer_write_device_fd() does the same for one device in one call.)
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L /* POSIX calls: plain -std=c11 hides them */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vma.h>

#define THREADS 4

struct device {
    unsigned id;
    int fd;
    uint64_t size, clusters, first; /* first: index over all devices */
};

static vma_writer *w;
static struct device dev[VMA_MAX_DEVICES];
static unsigned ndev;
static uint64_t total;             /* clusters of all devices */
static atomic_uint_fast64_t next;  /* the next cluster to take */

static void *worker(void *arg)
{
    unsigned char *buf = malloc(VMA_CLUSTER_SIZE);
    (void)arg;
    for (uint64_t k; buf != NULL && (k = atomic_fetch_add(&next, 1)) < total;) {
        unsigned i = 0;
        while (k >= dev[i].first + dev[i].clusters)
            i++;
        uint32_t n = (uint32_t)(k - dev[i].first);
        /* The last cluster may be short: the writer ignores bytes past
         * the device end, zero them anyway. */
        memset(buf, 0, VMA_CLUSTER_SIZE);
        if (pread(dev[i].fd, buf, VMA_CLUSTER_SIZE, (off_t)n * VMA_CLUSTER_SIZE) < 0) {
            perror("create_threads: read");
            break;
        }
        if (vma_writer_write_cluster(w, dev[i].id, n, buf) != VMA_OK) {
            fprintf(stderr, "create_threads: %s\n", vma_last_error());
            break;
        }
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc - 2 > (int)VMA_MAX_DEVICES) {
        fprintf(stderr, "usage: create_threads OUT.vma NAME=IMAGE...\n");
        return 2;
    }
    w = vma_writer_new();
    if (w == NULL)
        return 1;
    /* Setup first: output and devices, before any cluster. */
    if (vma_writer_open_path(w, argv[1]) != VMA_OK)
        goto fail;
    for (int a = 2; a < argc; a++) {
        struct device *d = &dev[ndev++];
        char *eq = strchr(argv[a], '=');
        struct stat st;
        if (eq == NULL) {
            fprintf(stderr, "create_threads: %s: want NAME=IMAGE\n", argv[a]);
            vma_writer_free(w);
            return 2;
        }
        *eq = '\0';
        d->fd = open(eq + 1, O_RDONLY);
        if (d->fd < 0 || fstat(d->fd, &st) != 0) {
            perror(eq + 1);
            vma_writer_free(w); /* removes the unfinished archive */
            return 1;
        }
        d->size = (uint64_t)st.st_size;
        d->clusters = (d->size + VMA_CLUSTER_SIZE - 1) / VMA_CLUSTER_SIZE;
        d->first = total;
        total += d->clusters;
        /* A dev_id or a status. The size is recorded rounded up to 512
         * bytes (vma_writer_device_size()); the padding reads as zeros. */
        int id = vma_writer_add_device(w, argv[a], d->size);
        if (id < 0)
            goto fail;
        d->id = (unsigned)id;
    }

    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    /* A device closed short, or a writer a worker saw fail, fails here. */
    for (unsigned i = 0; i < ndev; i++)
        if (vma_writer_close_device(w, dev[i].id) != VMA_OK)
            goto fail;
    if (vma_writer_finish(w) != VMA_OK)
        goto fail;
    vma_writer_free(w);
    for (unsigned i = 0; i < ndev; i++)
        close(dev[i].fd);
    return 0;
fail:
    fprintf(stderr, "create_threads: %s\n", vma_writer_error(w));
    vma_writer_free(w);
    return 1;
}
