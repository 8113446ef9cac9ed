/*
 * On-disk structures of the VMA format: decode and check, encode.
 * Everything here works on memory buffers only (no I/O), so unit tests and
 * fuzzers can drive it directly. Internal to libvma.
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_FORMAT_H
#define LIBVMA_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vma.h"

#define VMA_HEADER_FIXED_SIZE 12288u
#define VMA_EXTENT_HEADER_SIZE 512u
#define VMA_BLOCKINFO_PER_EXTENT 59u
#define VMA_MAX_EXTENT_SIZE (VMA_EXTENT_HEADER_SIZE + VMA_BLOCKINFO_PER_EXTENT * VMA_CLUSTER_SIZE)
/* The reader refuses headers larger than this (256 configs of 64 KiB fit). */
#define VMA_MAX_HEADER_SIZE (32u * 1024 * 1024)
/* The deployed writer's header buffer: 8 clusters. Ours keeps to it too. */
#define VMA_WRITER_MAX_HEADER_SIZE (8u * VMA_CLUSTER_SIZE)
#define VMA_DEV_SLOTS 256u

/* Field offsets inside the fixed header. */
#define VMA_HOFF_MAGIC 0
#define VMA_HOFF_VERSION 4
#define VMA_HOFF_UUID 8
#define VMA_HOFF_CTIME 24
#define VMA_HOFF_MD5 32
#define VMA_HOFF_BLOB_OFFSET 48
#define VMA_HOFF_BLOB_SIZE 52
#define VMA_HOFF_HEADER_SIZE 56
#define VMA_HOFF_CONFIG_NAMES 2044
#define VMA_HOFF_CONFIG_DATA 3068
#define VMA_HOFF_DEV_INFO 4096
#define VMA_DEV_INFO_SIZE 32

/* Field offsets inside an extent header. */
#define VMA_EOFF_MAGIC 0
#define VMA_EOFF_RESERVED 4
#define VMA_EOFF_BLOCK_COUNT 6
#define VMA_EOFF_UUID 8
#define VMA_EOFF_MD5 24
#define VMA_EOFF_BLOCKINFO 40

/* Big-endian and little-endian helpers. */
uint16_t vmai_get_be16(const unsigned char *p);
uint32_t vmai_get_be32(const unsigned char *p);
uint64_t vmai_get_be64(const unsigned char *p);
uint16_t vmai_get_le16(const unsigned char *p);
uint32_t vmai_get_le32(const unsigned char *p);
uint64_t vmai_get_le64(const unsigned char *p);
void vmai_put_be16(unsigned char *p, uint16_t v);
void vmai_put_be32(unsigned char *p, uint32_t v);
void vmai_put_be64(unsigned char *p, uint64_t v);
void vmai_put_le16(unsigned char *p, uint16_t v);
void vmai_put_le32(unsigned char *p, uint32_t v);
void vmai_put_le64(unsigned char *p, uint64_t v);

/* MD5 of buf[0..len) with the 16 bytes at md5_off taken as zero. */
void vmai_md5_zeroed(const unsigned char *buf, size_t len, size_t md5_off,
                     unsigned char out[16]);

/* A decoded config: pointers into the header buffer. */
struct vmai_config {
    const char *name;
    const unsigned char *data;
    size_t len;
};

/* A decoded device slot. */
struct vmai_device {
    const char *name; /* NULL: slot unused */
    uint64_t size;
    bool is_vmstate;
};

/* A parsed, checked header. Pointers point into the caller's buffer. */
struct vmai_header {
    unsigned char uuid[16];
    int64_t ctime;
    uint32_t header_size;
    uint32_t blob_offset;
    uint32_t blob_size;
    unsigned config_count;
    struct vmai_config configs[VMA_MAX_CONFIGS];
    struct vmai_device devices[VMA_DEV_SLOTS];
};

/*
 * Check the first 60 bytes of a header (magic, version, header_size,
 * blob bounds) and return the header_size through *header_size. Needs at
 * least VMA_HEADER_FIXED_SIZE bytes. On failure returns a negative status
 * and writes a message to err.
 */
int vmai_header_prefix(const unsigned char *buf, size_t len, uint32_t *header_size,
                       char *err, size_t errlen);

/*
 * Parse and check a whole header of exactly header_size bytes: MD5, blob
 * chain, configs, devices, names. On success *h points into buf.
 */
int vmai_header_parse(const unsigned char *buf, size_t len, struct vmai_header *h,
                      char *err, size_t errlen);

/* As vmai_header_parse() without the MD5 comparison: every other rule of
 * the header's structure still holds. Only for salvage (--force-header). */
int vmai_header_parse_unverified(const unsigned char *buf, size_t len, struct vmai_header *h,
                                 char *err, size_t errlen);

/* A decoded blockinfo entry. */
struct vmai_blockinfo {
    uint16_t mask;
    uint8_t reserved;
    uint8_t dev_id;
    uint32_t cluster_num;
};

void vmai_blockinfo_decode(uint64_t v, struct vmai_blockinfo *bi);
uint64_t vmai_blockinfo_encode(const struct vmai_blockinfo *bi);

/* A decoded extent header. */
struct vmai_extent {
    unsigned block_count;
    struct vmai_blockinfo info[VMA_BLOCKINFO_PER_EXTENT];
};

/*
 * Check a 512-byte extent header against the archive uuid: magic, reserved
 * field, uuid, MD5, reserved blockinfo bits, and block_count equal to the
 * number of set mask bits. Device and cluster rules are the reader's.
 */
int vmai_extent_parse(const unsigned char buf[VMA_EXTENT_HEADER_SIZE],
                      const unsigned char uuid[16], struct vmai_extent *e,
                      char *err, size_t errlen);

/* Encode an extent header (computes block_count and MD5). */
void vmai_extent_encode(unsigned char buf[VMA_EXTENT_HEADER_SIZE],
                        const unsigned char uuid[16], const struct vmai_extent *e);

/* Number of set bits in a mask. Inline bit arithmetic: without -mpopcnt,
 * __builtin_popcount is a libgcc call, and this runs once per cluster. */
static inline unsigned vmai_popcount16(uint16_t mask)
{
    unsigned v = mask;
    v = v - ((v >> 1) & 0x5555u);
    v = (v & 0x3333u) + ((v >> 2) & 0x3333u);
    v = (v + (v >> 4)) & 0x0f0fu;
    return (v + (v >> 8)) & 0x1fu;
}

/* 1 if the buffer is all zero bytes. Fast for 4 KiB blocks. */
bool vmai_is_zero(const void *buf, size_t len);

/* Clusters of a device of this size (rounded up). */
uint64_t vmai_cluster_count(uint64_t size);



/*
 * Encode a header from h's uuid, ctime, configs and devices (header_size
 * and blob fields are computed). Blobs go out in the deployed writer's
 * order: each config's name then data, then device names by dev_id. The
 * blob table is at least 512 bytes. *out is malloc'ed.
 */
int vmai_header_encode(const struct vmai_header *h, unsigned char **out,
                       size_t *out_len, char *err, size_t errlen);

/* Copy at most max bytes of s into dst (dstlen > 0, always terminated) in
 * a form safe to print on one line: control characters, DEL and '\' as C
 * escapes (\n, \x1b, \\), "..." after a cut. Returns dst. Used to quote
 * names that were refused. */
const char *vmai_escape(char *dst, size_t dstlen, const char *s, size_t max);

#endif
