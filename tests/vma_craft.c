/*
 * vma_craft: makes archives for the CLI tests that no writer would make.
 *
 *   vma_craft rename-config IN OUT INDEX NAME   config INDEX renamed
 *   vma_craft rename-device IN OUT DEV_ID NAME  device DEV_ID renamed
 *   vma_craft vmstate OUT VMSTATE_BIN DISK_RAW  an archive with a disk and a
 *       vmstate stream (with zero blocks); also writes what `vma extract`
 *       must produce for them
 *   vma_craft scatter NDEV STEP  to stdout: NDEV devices of 2^48 bytes
 *       (256 TiB), each naming cluster 0, STEP, 2*STEP... as zero clusters,
 *       device after device (what a reader's cluster maps must survive)
 *   vma_craft vmstate-long OUT SIZE CLUSTERS MASK  a vmstate stream of
 *       SIZE bytes that carries CLUSTERS clusters with block mask MASK
 *       (0: zero clusters); the first SIZE bytes to stdout
 *   vma_craft reverse CLUSTERS [image]  to stdout: an archive of one disk
 *       of CLUSTERS clusters (the last cut 1000 bytes short) written last
 *       to first: every fifth cluster zero, one zero block in the others,
 *       the stored ones a constant pattern stamped with cluster and block
 *       numbers (it compresses to almost nothing); with `image`, the disk
 *       itself (what extract writes)
 *
 * The header is laid out again by tests/vmatest.h and re-signed (MD5), so
 * only the reader's semantic checks can refuse the result; the extents
 * are copied unchanged. Uses the internal format code only for parsing,
 * integer helpers and MD5. Exit 0 on success, 1 with a message otherwise.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "vmatest.h"

static int die(const char *msg, const char *arg)
{
    fprintf(stderr, "vma_craft: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 1;
}

/* Parse IN, let `edit` change names, write OUT with a re-signed header. */
static int rewrite(const char *in, const char *out, int is_config, unsigned index,
                   const char *name)
{
    struct vt_buf b = {0};
    if (vt_read_file(in, &b) != 0)
        return die("cannot read", in);
    static struct vmai_header h;
    char err[512];
    if (b.len < VMA_HEADER_FIXED_SIZE)
        return die("too short", in);
    uint32_t hs = vmai_get_be32(b.p + VMA_HOFF_HEADER_SIZE);
    if (vmai_header_parse(b.p, b.len, &h, err, sizeof(err)) != VMA_OK)
        return die(err, in);
    static struct vt_hdr d;
    memset(&d, 0, sizeof(d));
    memcpy(d.uuid, h.uuid, 16);
    d.ctime = h.ctime;
    d.nconf = h.config_count;
    for (unsigned i = 0; i < h.config_count; i++) {
        d.conf[i].name.str = h.configs[i].name;
        d.conf[i].data = h.configs[i].data;
        d.conf[i].len = h.configs[i].len;
    }
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++) {
        d.dev[i].name.str = h.devices[i].name;
        d.dev[i].size = h.devices[i].size;
    }
    if (is_config) {
        if (index >= h.config_count)
            return die("no such config index", NULL);
        d.conf[index].name.str = name;
    } else {
        if (index >= VMA_DEV_SLOTS || h.devices[index].name == NULL)
            return die("no such dev_id", NULL);
        d.dev[index].name.str = name;
    }
    struct vt_buf o = {0};
    vt_header_build(&o, &d);
    vt_append(&o, b.p + hs, b.len - hs);
    if (vt_write_file(out, o.p, o.len, 1) != 0)
        return die("cannot write", out);
    vt_free(&o);
    vt_free(&b);
    return 0;
}

/* Expected bytes of a device from builder extents: stored blocks carry the
 * builder pattern, zero blocks zeros. */
static void expect_cluster(unsigned char *dst, unsigned dev, uint32_t cluster, uint16_t mask)
{
    for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++) {
        if (mask & (1u << b))
            vt_block_fill(dst + b * VMA_BLOCK_SIZE, dev, cluster, b);
        else
            memset(dst + b * VMA_BLOCK_SIZE, 0, VMA_BLOCK_SIZE);
    }
}

static int vmstate(const char *out, const char *vms_out, const char *disk_out)
{
    static const unsigned char uuid[16] = {0x76, 0x6d, 0x73, 0x74, 0x61, 0x74, 0x65, 0x21,
                                           0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    const uint64_t disk_size = 3 * VMA_CLUSTER_SIZE + 512; /* 4 clusters */
    const uint64_t vms_size = 2 * VMA_CLUSTER_SIZE + 1000; /* 3 clusters, cut */
    static struct vt_hdr d;
    memset(&d, 0, sizeof(d));
    memcpy(d.uuid, uuid, 16);
    d.ctime = 1700000000;
    d.nconf = 1;
    d.conf[0].name.str = "qemu-server.conf";
    d.conf[0].data = "memory: 2048\nvmstate: local:state-100\n";
    d.conf[0].len = strlen(d.conf[0].data);
    d.dev[1].name.str = "drive-scsi0";
    d.dev[1].size = disk_size;
    d.dev[2].name.str = "vmstate";
    d.dev[2].size = vms_size;
    struct vt_buf o = {0};
    vt_header_build(&o, &d);
    /* the vmstate in order 0, 1, 2 between the disk clusters in any order;
     * vmstate cluster 1 is all zero, the others have zero blocks */
    static const struct vt_ent e0[] = {{1, 3, 0x0001}, {2, 0, 0x8f0f}, {1, 0, 0xffff}};
    static const struct vt_ent e1[] = {{2, 1, 0x0000}, {1, 2, 0x0000}, {2, 2, 0x0003},
                                       {1, 1, 0x1234}};
    vt_extent(&o, uuid, e0, 3);
    vt_extent(&o, uuid, e1, 4);
    if (vt_write_file(out, o.p, o.len, 1) != 0)
        return die("cannot write", out);
    vt_free(&o);

    unsigned char *disk = calloc(4, VMA_CLUSTER_SIZE);
    unsigned char *vms = calloc(3, VMA_CLUSTER_SIZE);
    if (disk == NULL || vms == NULL)
        return die("out of memory", NULL);
    const struct vt_ent *all[] = {&e0[0], &e0[1], &e0[2], &e1[0], &e1[1], &e1[2], &e1[3]};
    for (unsigned i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        const struct vt_ent *e = all[i];
        unsigned char *base = e->dev == 1 ? disk : vms;
        expect_cluster(base + (size_t)e->cluster * VMA_CLUSTER_SIZE, e->dev, e->cluster, e->mask);
    }
    if (vt_write_file(vms_out, vms, vms_size, 1) != 0 ||
        vt_write_file(disk_out, disk, disk_size, 1) != 0)
        return die("cannot write the expected files", NULL);
    free(disk);
    free(vms);
    return 0;
}

static const unsigned char craft_uuid[16] = {0x63, 0x72, 0x61, 0x66, 0x74, 0x65, 0x64, 0x21,
                                             0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18};

/* Append n entries of dev from cluster first by step, all with mask. */
static void run_of(struct vt_buf *o, unsigned dev, uint64_t first, uint64_t step, uint64_t n,
                   uint16_t mask)
{
    struct vt_ent ents[VMA_BLOCKINFO_PER_EXTENT];
    unsigned k = 0;
    for (uint64_t i = 0; i < n; i++) {
        ents[k].dev = dev;
        ents[k].cluster = (uint32_t)(first + i * step);
        ents[k].mask = mask;
        if (++k == VMA_BLOCKINFO_PER_EXTENT || i + 1 == n) {
            vt_extent(o, craft_uuid, ents, k);
            k = 0;
        }
    }
}

static int scatter(unsigned ndev, uint64_t step)
{
    if (ndev == 0 || ndev > VMA_MAX_DEVICES || step == 0)
        return die("bad device count or step", NULL);
    static struct vt_hdr d;
    memset(&d, 0, sizeof(d));
    memcpy(d.uuid, craft_uuid, 16);
    d.ctime = 1700000000;
    static char names[VMA_DEV_SLOTS][16];
    for (unsigned i = 1; i <= ndev; i++) {
        snprintf(names[i], sizeof(names[i]), "drive-%u", i);
        d.dev[i].name.str = names[i];
        d.dev[i].size = VMA_MAX_DEVICE_SIZE;
    }
    struct vt_buf o = {0};
    vt_header_build(&o, &d);
    uint64_t per_dev = (((uint64_t)1 << 32) + step - 1) / step;
    for (unsigned i = 1; i <= ndev; i++) {
        /* a device at a time, written out in pieces of 1024 clusters */
        for (uint64_t c = 0; c < per_dev; c += 1024) {
            run_of(&o, i, c * step, step, per_dev - c < 1024 ? per_dev - c : 1024, 0);
            if (vt_write_fd(1, o.p, o.len) != 0)
                return die("cannot write to standard output", NULL);
            o.len = 0;
        }
    }
    vt_free(&o);
    return 0;
}

static int vmstate_long(const char *out, uint64_t size, uint64_t clusters, uint16_t mask)
{
    static struct vt_hdr d;
    memset(&d, 0, sizeof(d));
    memcpy(d.uuid, craft_uuid, 16);
    d.ctime = 1700000000;
    d.dev[1].name.str = "vmstate";
    d.dev[1].size = size;
    struct vt_buf o = {0};
    vt_header_build(&o, &d);
    run_of(&o, 1, 0, 1, clusters, mask);
    if (vt_write_file(out, o.p, o.len, 1) != 0)
        return die("cannot write", out);
    vt_free(&o);
    /* what extract must make of it: the stream cut to SIZE */
    unsigned char *c = malloc(VMA_CLUSTER_SIZE);
    if (c == NULL)
        return die("out of memory", NULL);
    for (uint64_t i = 0, left = size; i < clusters && left > 0; i++) {
        expect_cluster(c, 1, (uint32_t)i, mask);
        size_t n = left < VMA_CLUSTER_SIZE ? (size_t)left : VMA_CLUSTER_SIZE;
        if (vt_write_fd(1, c, n) != 0)
            return die("cannot write to standard output", NULL);
        left -= n;
    }
    free(c);
    return 0;
}

/* Cluster c of the `reverse` disk: which blocks are stored, and block b. */
static uint16_t reverse_mask(uint32_t c)
{
    return c % 5 == 0 ? 0 : (uint16_t)(0xffffu & ~(1u << (c % 16)));
}

static void reverse_block(unsigned char *p, uint32_t c, unsigned b)
{
    if (!(reverse_mask(c) & (1u << b))) {
        memset(p, 0, VMA_BLOCK_SIZE);
        return;
    }
    memset(p, 0x40 + (int)b, VMA_BLOCK_SIZE);
    memcpy(p, &c, sizeof(c));
}

static int reverse(uint32_t clusters, int image)
{
    static struct vt_hdr d;
    memset(&d, 0, sizeof(d));
    memcpy(d.uuid, craft_uuid, 16);
    d.ctime = 1700000000;
    d.dev[1].name.str = "drive-scsi0";
    if (clusters == 0)
        return die("no clusters", NULL);
    d.dev[1].size = (uint64_t)clusters * VMA_CLUSTER_SIZE - 1000;
    struct vt_buf o = {0};
    unsigned char block[VMA_BLOCK_SIZE];
    if (image) {
        uint64_t left = d.dev[1].size;
        for (uint32_t c = 0; c < clusters; c++)
            for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER && left > 0; b++) {
                size_t n = left < VMA_BLOCK_SIZE ? (size_t)left : VMA_BLOCK_SIZE;
                reverse_block(block, c, b);
                if (vt_write_fd(1, block, n) != 0)
                    return die("cannot write to standard output", NULL);
                left -= n;
            }
        return 0;
    }
    vt_header_build(&o, &d);
    for (uint32_t left = clusters; left > 0;) {
        struct vmai_extent e;
        unsigned n = left < VMA_BLOCKINFO_PER_EXTENT ? left : VMA_BLOCKINFO_PER_EXTENT;
        memset(&e, 0, sizeof(e));
        for (unsigned i = 0; i < n; i++) {
            e.info[i].dev_id = 1;
            e.info[i].cluster_num = left - 1 - i;
            e.info[i].mask = reverse_mask(left - 1 - i);
        }
        unsigned char head[VMA_EXTENT_HEADER_SIZE];
        vmai_extent_encode(head, craft_uuid, &e);
        vt_append(&o, head, sizeof(head));
        for (unsigned i = 0; i < n; i++)
            for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++)
                if (e.info[i].mask & (1u << b)) {
                    reverse_block(block, left - 1 - i, b);
                    vt_append(&o, block, sizeof(block));
                }
        left -= n;
        if (vt_write_fd(1, o.p, o.len) != 0)
            return die("cannot write to standard output", NULL);
        o.len = 0;
    }
    vt_free(&o);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "rename-config") == 0)
        return rewrite(argv[2], argv[3], 1, (unsigned)strtoul(argv[4], NULL, 10), argv[5]);
    if (argc == 6 && strcmp(argv[1], "rename-device") == 0)
        return rewrite(argv[2], argv[3], 0, (unsigned)strtoul(argv[4], NULL, 10), argv[5]);
    if (argc == 5 && strcmp(argv[1], "vmstate") == 0)
        return vmstate(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(argv[1], "scatter") == 0)
        return scatter((unsigned)strtoul(argv[2], NULL, 10), strtoull(argv[3], NULL, 10));
    if (argc == 6 && strcmp(argv[1], "vmstate-long") == 0)
        return vmstate_long(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10),
                            (uint16_t)strtoul(argv[5], NULL, 0));
    if ((argc == 3 || (argc == 4 && strcmp(argv[3], "image") == 0)) &&
        strcmp(argv[1], "reverse") == 0)
        return reverse((uint32_t)strtoul(argv[2], NULL, 10), argc == 4);
    fprintf(stderr,
            "usage: vma_craft rename-config IN OUT INDEX NAME\n"
            "       vma_craft rename-device IN OUT DEV_ID NAME\n"
            "       vma_craft vmstate OUT VMSTATE_BIN DISK_RAW\n"
            "       vma_craft scatter NDEV STEP\n"
            "       vma_craft vmstate-long OUT SIZE CLUSTERS MASK\n"
            "       vma_craft reverse CLUSTERS [image]\n");
    return 1;
}
