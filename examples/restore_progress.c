/*
 * Restore every device of an archive into a directory, with progress, and
 * a cancel from another thread.
 *   restore_progress ARCHIVE DIR [CANCEL_AT_PERCENT]
 * Disks become DIR/disk-<name>.raw (sparse), the VM state DIR/<name>.bin.
 * Ctrl-C cancels: vma_reader_cancel() is safe in a signal handler. With
 * CANCEL_AT_PERCENT, a second thread cancels once the progress callback
 * has passed that point: the restore then fails with VMA_ERR_CANCELED and
 * removes the files it created, as after any failure.
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L /* POSIX calls: plain -std=c11 hides them */
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <vma.h>

static vma_reader *r;
static int cancel_at = -1, last_percent = -10;
static sem_t reached, cancelled;

static void on_sigint(int sig)
{
    (void)sig;
    vma_reader_cancel(r);
}

/* The canceller: waits until the progress callback says "now", cancels,
 * and lets the callback go on. After vma_reader_cancel() returned, no
 * further cluster is read or written. */
static void *canceller(void *arg)
{
    (void)arg;
    sem_wait(&reached);
    vma_reader_cancel(r);
    sem_post(&cancelled);
    return NULL;
}

/* vma_progress_fn: after each cluster. The fraction is the clusters the
 * header declares, read so far. */
static int on_progress(void *opaque, uint64_t clusters, uint64_t bytes)
{
    int percent = (int)(vma_reader_progress(r) * 100);
    (void)opaque, (void)clusters, (void)bytes;
    if (percent / 10 != last_percent / 10) /* every 10% */
        fprintf(stderr, "progress %d%%\n", percent);
    last_percent = percent;
    if (cancel_at >= 0 && percent >= cancel_at) {
        cancel_at = -1;
        sem_post(&reached);
        sem_wait(&cancelled);
    }
    return 0; /* non-zero would stop the restore too (VMA_ERR_CALLBACK) */
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: restore_progress ARCHIVE DIR [CANCEL_AT_PERCENT]\n");
        return 2;
    }
    r = vma_reader_new();
    if (r == NULL)
        return 1;
    signal(SIGINT, on_sigint);
    pthread_t t;
    if (argc == 4) {
        cancel_at = atoi(argv[3]);
        sem_init(&reached, 0, 0);
        sem_init(&cancelled, 0, 0);
        pthread_create(&t, NULL, canceller, NULL);
    }
    int rc = vma_reader_open_path(r, argv[1]);
    /* One target per device: a new file each (never overwritten). */
    for (unsigned id = vma_reader_next_device(r, 0); rc == VMA_OK && id != 0;
         id = vma_reader_next_device(r, id)) {
        char path[4096];
        const char *name = vma_reader_device_name(r, id);
        if (vma_reader_device_is_vmstate(r, id))
            snprintf(path, sizeof(path), "%s/%s.bin", argv[2], name);
        else
            snprintf(path, sizeof(path), "%s/disk-%s.raw", argv[2], name);
        rc = vma_reader_target_create(r, id, path);
    }
    vma_reader_set_progress(r, on_progress, NULL);
    if (rc == VMA_OK)
        rc = vma_reader_restore(r);
    if (rc != VMA_OK)
        fprintf(stderr, "restore_progress: %s: %s\n", vma_status_name(rc), vma_reader_error(r));
    if (argc == 4) {
        if (cancel_at >= 0) /* never reached: let the canceller end */
            sem_post(&reached);
        pthread_join(t, NULL);
    }
    vma_reader_free(r);
    return rc == VMA_OK ? 0 : 1;
}
