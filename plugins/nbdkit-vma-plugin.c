/*
 * nbdkit plugin: one device of a VMA archive as a read-only NBD export,
 * through the library's random access (vma_image_*): parallel reads, and
 * block status where zero blocks and all-zero clusters are holes.
 *   nbdkit nbdkit-vma-plugin.so archive=<path> device=<name> [cachedir=<dir>]
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "vma.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static char *archive, *device, *cache_dir;
static vma_image *img;
static unsigned dev_id;
static char *index_mode; /* index=: cache (default), beside, off */

static void vma_unload(void)
{
    vma_image_free(img);
    free(archive);
    free(device);
    free(cache_dir);
    free(index_mode);
}

static int vma_config(const char *key, const char *value)
{
    char **slot = !strcmp(key, "archive")    ? &archive
                  : !strcmp(key, "device")   ? &device
                  : !strcmp(key, "cachedir") ? &cache_dir
                  : !strcmp(key, "index")    ? &index_mode
                                             : NULL;
    if (!slot) {
        nbdkit_error("unknown parameter '%s' (archive=, device=, cachedir=, index=)", key);
        return -1;
    }
    if (slot == &index_mode && strcmp(value, "cache") && strcmp(value, "beside") &&
        strcmp(value, "off")) {
        nbdkit_error("index=%s: say cache, beside or off", value);
        return -1;
    }
    free(*slot);
    /* Paths made absolute now: nbdkit changes to / when it forks. */
    *slot = slot == &device || slot == &index_mode ? strdup(value) : nbdkit_realpath(value);
    return *slot ? 0 : -1;
}

static int vma_config_complete(void)
{
    if (!archive || !device) {
        nbdkit_error("archive=<path> and device=<name> are required");
        return -1;
    }
    return 0;
}

/* Open and index before nbdkit serves (and before it forks). */
static int vma_get_ready(void)
{
    unsigned flags = 0;
    char dir[4096];
    img = vma_image_new();
    if (!img || vma_image_set_cache_dir(img, cache_dir) != VMA_OK) {
        nbdkit_error("%s", img ? vma_image_error(img) : "out of memory");
        return -1;
    }
    /* The index file: in the user's cache by default (nothing written to
     * the backup storage); none when that cannot be made. */
    if (index_mode == NULL || !strcmp(index_mode, "cache")) {
        if (vma_index_cache_dir(dir, sizeof(dir)) != VMA_OK) {
            nbdkit_debug("no index cache: %s", vma_last_error());
            flags = VMA_IMAGE_NO_INDEX_FILE;
        } else if (vma_image_set_index_dir(img, dir, VMA_INDEX_CACHE_MAX_BYTES) != VMA_OK) {
            nbdkit_error("%s", vma_image_error(img));
            return -1;
        }
    } else if (!strcmp(index_mode, "off")) {
        flags = VMA_IMAGE_NO_INDEX_FILE;
    }
    if (vma_image_open(img, archive, flags) != VMA_OK) {
        nbdkit_error("%s", img ? vma_image_error(img) : "out of memory");
        return -1;
    }
    const vma_reader *r = vma_image_reader(img);
    dev_id = vma_reader_find_device(r, device);
    if (!dev_id) {
        nbdkit_error("%s has no device '%s'", archive, device);
        return -1;
    }
    return 0;
}

static void *vma_open(int readonly)
{
    (void)readonly;
    return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t vma_get_size(void *handle)
{
    (void)handle;
    return (int64_t)vma_image_device_size(img, dev_id);
}

static int vma_can_multi_conn(void *handle)
{
    (void)handle;
    return 1; /* read-only: every connection sees the same bytes */
}

static int vma_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    (void)handle;
    (void)flags;
    int64_t n = vma_image_pread(img, dev_id, buf, count, offset);
    if (n != (int64_t)count) {
        /* This thread's own failure: reads run in parallel threads. */
        nbdkit_error("%s", n < 0 ? vma_last_error() : "read past the device end");
        errno = EIO;
        return -1;
    }
    return 0;
}

static int vma_can_extents(void *handle)
{
    (void)handle;
    return 1;
}

static int vma_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                       struct nbdkit_extents *extents)
{
    (void)handle;
    uint64_t pos = offset, end = offset + count, size = vma_image_device_size(img, dev_id);
    while (pos < end && pos < size) {
        uint64_t data_off, data_len;
        vma_image_next_data(img, dev_id, pos, &data_off, &data_len);
        if (data_off > pos) {
            if (nbdkit_add_extent(extents, pos, data_off - pos,
                                  NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) != 0)
                return -1;
        }
        if (data_len > 0 && nbdkit_add_extent(extents, data_off, data_len, 0) != 0)
            return -1;
        pos = data_off + data_len;
        if (flags & NBDKIT_FLAG_REQ_ONE)
            break;
    }
    return 0;
}

static struct nbdkit_plugin plugin = {
    .name = "vma",
    .longname = "libvma: a disk of a Proxmox VE VMA backup, read-only",
    .version = VMA_VERSION_STRING,
    .description = "Serves one device of a VMA archive. Parameters: archive=<path> "
                   "device=<name> [cachedir=<dir> for compressed archives]",
    .magic_config_key = "archive",
    .unload = vma_unload,
    .config = vma_config,
    .config_complete = vma_config_complete,
    .config_help = "archive=<PATH>   the archive (plain, .zst, .gz or .lzo)\n"
                   "device=<NAME>    the device to serve, e.g. drive-scsi0\n"
                   "cachedir=<DIR>   where a compressed archive is decompressed",
    .get_ready = vma_get_ready,
    .open = vma_open,
    .get_size = vma_get_size,
    .can_multi_conn = vma_can_multi_conn,
    .pread = vma_pread,
    .can_extents = vma_can_extents,
    .extents = vma_extents,
};

NBDKIT_REGISTER_PLUGIN(plugin)
