/*
 * Print the SHA-256 of each device image, as sha256sum prints it for the
 * files `vma extract` writes ("<hex>  disk-<name>.raw"), without writing
 * anything.
 *   hash_devices ARCHIVE
 * Clusters come in archive order, which need not be the order inside a
 * device (a writer with several threads interleaves them): a hash wants
 * the bytes in order, so clusters that come early wait in memory until
 * the ones before them arrived. Needs libcrypto (OpenSSL).
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <vma.h>

struct device {
    EVP_MD_CTX *sha;
    uint64_t size, clusters, next; /* next: the cluster the hash wants */
    unsigned char **early;         /* clusters that came before their turn */
};

static struct device dev[VMA_MAX_DEVICES + 1];

/* Hash one expanded cluster: only the bytes inside the device. */
static void hash_cluster(struct device *d, uint64_t n, const unsigned char *buf)
{
    uint64_t left = d->size - n * VMA_CLUSTER_SIZE;
    EVP_DigestUpdate(d->sha, buf, left < VMA_CLUSTER_SIZE ? left : VMA_CLUSTER_SIZE);
}

/* vma_cluster_fn: expand, then hash or keep for later. */
static int on_cluster(void *opaque, unsigned dev_id, uint32_t n, uint16_t mask,
                      const unsigned char *data)
{
    struct device *d = &dev[dev_id];
    (void)opaque;
    if (d->sha == NULL)
        return 0; /* the vmstate stream */
    unsigned char *buf = malloc(VMA_CLUSTER_SIZE);
    if (buf == NULL)
        return 1; /* stops the read: VMA_ERR_CALLBACK */
    vma_cluster_expand(mask, data, buf);
    if (n != d->next) {
        d->early[n] = buf;
        return 0;
    }
    hash_cluster(d, d->next++, buf);
    free(buf);
    /* Whatever waited for this one can go now. */
    while (d->next < d->clusters && d->early[d->next] != NULL) {
        hash_cluster(d, d->next, d->early[d->next]);
        free(d->early[d->next]);
        d->early[d->next++] = NULL;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: hash_devices ARCHIVE\n");
        return 2;
    }
    vma_reader *r = vma_reader_new();
    if (r == NULL || vma_reader_open_path(r, argv[1]) != VMA_OK) {
        fprintf(stderr, "hash_devices: %s\n", r ? vma_reader_error(r) : "out of memory");
        vma_reader_free(r);
        return 1;
    }
    for (unsigned id = vma_reader_next_device(r, 0); id != 0; id = vma_reader_next_device(r, id)) {
        if (vma_reader_device_is_vmstate(r, id))
            continue; /* a stream, not an image: its clusters are skipped below */
        struct device *d = &dev[id];
        d->size = vma_reader_device_size(r, id);
        d->clusters = (d->size + VMA_CLUSTER_SIZE - 1) / VMA_CLUSTER_SIZE;
        d->early = calloc(d->clusters, sizeof(*d->early));
        d->sha = EVP_MD_CTX_new();
        if (d->early == NULL || d->sha == NULL || !EVP_DigestInit_ex(d->sha, EVP_sha256(), NULL)) {
            fprintf(stderr, "hash_devices: out of memory\n");
            return 1;
        }
    }
    /* The read checks every rule of the format on the way. */
    int rc = vma_reader_read(r, on_cluster, NULL);
    for (unsigned id = vma_reader_next_device(r, 0); rc == VMA_OK && id != 0;
         id = vma_reader_next_device(r, id)) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        if (dev[id].sha == NULL)
            continue;
        EVP_DigestFinal_ex(dev[id].sha, md, &len);
        for (unsigned i = 0; i < len; i++)
            printf("%02x", md[i]);
        printf("  disk-%s.raw\n", vma_reader_device_name(r, id));
    }
    if (rc != VMA_OK)
        fprintf(stderr, "hash_devices: %s\n", vma_reader_error(r));
    for (unsigned id = 1; id <= VMA_MAX_DEVICES; id++) {
        for (uint64_t n = 0; dev[id].early != NULL && n < dev[id].clusters; n++)
            free(dev[id].early[n]);
        free(dev[id].early);
        EVP_MD_CTX_free(dev[id].sha);
    }
    vma_reader_free(r);
    return rc == VMA_OK ? 0 : 1;
}
