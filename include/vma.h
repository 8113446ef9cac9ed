/*
 * libvma: read and write VMA ("Virtual Machine Archive") backups, the format
 * Proxmox VE writes for every QEMU VM backup.
 *
 * Conventions that hold for every function below:
 * - Functions returning int return VMA_OK (0) or a negative VMA_ERR_* code.
 *   After a failure, vma_reader_error() / vma_writer_error() give a one-line
 *   message that says what was wrong and where (byte offset, extent number,
 *   device name). The message stays valid until the next call on the handle.
 * - A handle that met a corrupt archive, an I/O error or a failed write
 *   stays failed: later calls that would read or write return the same
 *   status again and keep the first message.
 * - The library never prints, exits or aborts because of what a file
 *   contains, and keeps no global state. Handles are independent.
 * - *_free(NULL) is a no-op.
 * - Threads the library starts block every signal, so a caller's signal
 *   handlers run only in the caller's own threads.
 * - Strings and buffers returned by accessors are owned by the handle and
 *   stay valid until it is freed.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_VMA_H
#define LIBVMA_VMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Format constants                                                    */
/* ------------------------------------------------------------------ */

#define VMA_BLOCK_SIZE 4096u          /* unit of zero elision */
#define VMA_CLUSTER_SIZE 65536u       /* unit a writer receives */
#define VMA_BLOCKS_PER_CLUSTER 16u
#define VMA_MAX_CONFIGS 256u
#define VMA_MAX_CONFIG_SIZE 65535u    /* bytes of one config blob */
#define VMA_MAX_DEVICES 254u          /* dev_ids 1..254 */
#define VMA_MAX_NAME_LEN 1024u        /* bytes of a device or config name, without NUL */
/* Largest device: 2^32 clusters of 64 KiB (the cluster number is 32 bits). */
#define VMA_MAX_DEVICE_SIZE (((uint64_t)1 << 32) * VMA_CLUSTER_SIZE)
/* Name of the device that carries the VM's saved RAM state. */
#define VMA_VMSTATE_NAME "vmstate"

/* ------------------------------------------------------------------ */
/* Status codes (pinned: values never change)                          */
/* ------------------------------------------------------------------ */

enum vma_status {
    VMA_OK = 0,
    VMA_ERR_IO = -1,          /* a system call failed; the message has strerror */
    VMA_ERR_CORRUPT = -2,     /* the archive breaks a rule of the format */
    VMA_ERR_TRUNCATED = -3,   /* the archive ends early */
    VMA_ERR_NOMEM = -4,       /* out of memory */
    VMA_ERR_INVALID = -5,     /* bad argument, or call in the wrong state */
    VMA_ERR_EXISTS = -6,      /* output path already exists */
    VMA_ERR_LIMIT = -7,       /* too many configs/devices, name or size too large */
    VMA_ERR_NOT_FOUND = -8,   /* no such config or device */
    VMA_ERR_INCOMPLETE = -9,  /* writer: a device stream is open or short */
    VMA_ERR_CALLBACK = -10,   /* a caller's callback asked to stop */
    VMA_ERR_CANCELED = -11,   /* vma_reader_cancel() or vma_writer_cancel() */
};

/* Stable name of a status ("VMA_ERR_CORRUPT"), or "unknown" for other values. */
const char *vma_status_name(int status);

/* A name check shared by reader and writer: returns 1 if name may be used
 * as a device or config name (non-empty, at most VMA_MAX_NAME_LEN bytes,
 * no '/', not "." or ".."), else 0. */
int vma_name_is_valid(const char *name);

/* ------------------------------------------------------------------ */
/* Reader                                                              */
/* ------------------------------------------------------------------ */

typedef struct vma_reader vma_reader;

/* Allocate a reader. Returns NULL only when out of memory. */
vma_reader *vma_reader_new(void);

/* Free a reader, its buffers and the descriptors it opened itself. If
 * vma_reader_restore() did not succeed, files made by
 * vma_reader_target_create() are removed. */
void vma_reader_free(vma_reader *r);

/* Open an archive by path ("-" means standard input) and read and check its
 * header. Plain, zstd, gzip and lzop-compressed archives are read alike;
 * for a compressed one, two threads read and decompress ahead while the
 * caller works. May be called once per reader. On failure nothing is kept
 * open. */
int vma_reader_open_path(vma_reader *r, const char *path);

/* As vma_reader_open_path(), on a descriptor the caller owns and closes
 * after vma_reader_free(). The descriptor is read sequentially from its
 * current position (pipes work). */
int vma_reader_open_fd(vma_reader *r, int fd);

/* The last error message, or "" when there was none. */
const char *vma_reader_error(const vma_reader *r);

/*
 * Stop the reader's work: the open, read or restore in progress, or the
 * next one, fails with VMA_ERR_CANCELED, and so does every later call (the
 * failure is sticky). A call waiting for an idle pipe or FIFO wakes up at
 * once; a restore removes its new files as after any failure. Safe from a
 * signal handler and from any thread, at any time between
 * vma_reader_new() and vma_reader_free().
 */
void vma_reader_cancel(vma_reader *r);

/* How the archive is compressed, recognized by its magic bytes when opened:
 * "none", "zstd", "gzip" or "lzo" (the lzop file format). Every reader
 * function works the same on all of them. */
const char *vma_reader_compression(const vma_reader *r);

/* Header accessors: valid after a successful open. */
void vma_reader_uuid(const vma_reader *r, unsigned char uuid[16]);
int64_t vma_reader_ctime(const vma_reader *r);

/* Number of configs, and config index (0-based, in header slot order).
 * name, data and len may each be NULL. Returns VMA_ERR_NOT_FOUND for an
 * index out of range. */
unsigned vma_reader_config_count(const vma_reader *r);
int vma_reader_config(const vma_reader *r, unsigned index, const char **name,
                      const void **data, size_t *len);

/* Find a config by name. Returns VMA_OK or VMA_ERR_NOT_FOUND. */
int vma_reader_find_config(const vma_reader *r, const char *name,
                           const void **data, size_t *len);

/* Iterate over the devices: returns the first dev_id greater than `after`
 * that is in use, or 0 when there is none. Start with after = 0. */
unsigned vma_reader_next_device(const vma_reader *r, unsigned after);

/* Device accessors; for an unused dev_id: NULL, 0, 0. */
const char *vma_reader_device_name(const vma_reader *r, unsigned dev_id);
uint64_t vma_reader_device_size(const vma_reader *r, unsigned dev_id);
int vma_reader_device_is_vmstate(const vma_reader *r, unsigned dev_id);

/* dev_id of the device with this name, or 0. */
unsigned vma_reader_find_device(const vma_reader *r, const char *name);

/*
 * Called once per stored cluster, in archive order. `data` holds the
 * cluster's stored blocks (one per set bit of `mask`, 4096 bytes each, in
 * ascending block order); it is valid only during the call. For blocks of
 * the last cluster past the device end, only bytes before the end belong to
 * the device. Return 0 to go on, anything else to stop: the read then fails
 * with VMA_ERR_CALLBACK.
 */
typedef int (*vma_cluster_fn)(void *opaque, unsigned dev_id, uint32_t cluster_num,
                              uint16_t mask, const unsigned char *data);

/*
 * Called after each cluster: clusters read so far and archive bytes
 * consumed so far. The caller decides what to print. Return 0 to go on,
 * anything else to stop (the read or restore fails with VMA_ERR_CALLBACK):
 * this is how a signal handler's flag cancels a long restore.
 */
typedef int (*vma_progress_fn)(void *opaque, uint64_t clusters_read,
                               uint64_t bytes_consumed);

/* Set (or clear with fn = NULL) the progress callback. */
void vma_reader_set_progress(vma_reader *r, vma_progress_fn fn, void *opaque);

/*
 * Read every extent after the header, checking every rule of the format:
 * extent magic, reserved fields, uuid, MD5, block counts, known devices,
 * cluster ranges, no duplicate cluster, vmstate order, truncation, and at
 * the end that every cluster of every device was present. `fn` may be NULL
 * (verify). May be called once per reader, and not together with
 * vma_reader_restore().
 */
int vma_reader_read(vma_reader *r, vma_cluster_fn fn, void *opaque);

/*
 * Counters after (or during) a read: clusters read, bytes of clusters that
 * were stored all-zero (mask 0), and bytes of zero blocks inside partly
 * stored clusters. Any pointer may be NULL.
 */
void vma_reader_counters(const vma_reader *r, uint64_t *clusters,
                         uint64_t *zero_cluster_bytes, uint64_t *zero_block_bytes);

/* --- Restore: one target per device, then vma_reader_restore() --- */

/* Flags for vma_reader_target_open() and vma_reader_target_fd(). */
#define VMA_TARGET_WRITE_ZEROS 1u /* write zero blocks (map "1:"); else leave them */
#define VMA_TARGET_DIRECT 2u      /* O_DIRECT: bypass the page cache (cache=none) */
#define VMA_TARGET_SYNC 4u        /* O_DSYNC: each write is durable (cache=writethrough) */

/*
 * Create a new file at `path` (must not exist) as the target of dev_id. For
 * a disk: a sparse file of exactly the device size, zero blocks left as
 * holes. For the vmstate device: a sequential file, zero blocks written as
 * zeros, cut to the recorded size. Removed again if the restore fails.
 */
int vma_reader_target_create(vma_reader *r, unsigned dev_id, const char *path);

/*
 * Open an existing file or block device as the target of a disk. Its size
 * must be at least the device size and at most 4 MiB more. Not for vmstate.
 */
int vma_reader_target_open(vma_reader *r, unsigned dev_id, const char *path,
                           unsigned flags);

/*
 * Whether vma_reader_target_nbd() is the way to (format, path): 1 for a
 * format other than "raw" (format may be NULL), for a QEMU protocol
 * filename ("rbd:", "iscsi:", "nbd:", "ssh:", "http:", "https:",
 * "gluster:", "nfs:", ...), and for an NBD URI ("nbd://", "nbd+unix://",
 * ...); 0 for a plain file or block device path (vma_reader_target_open()).
 */
int vma_target_is_nbd(const char *format, const char *path);

/*
 * Open an existing disk image as the target of a disk, through NBD:
 * - an NBD URI with format NULL or "raw": libnbd connects to that server;
 * - anything else (qcow2, vmdk, ... files; rbd:, iscsi://, ... paths; an
 *   NBD URI holding an image of another format): a private `qemu-nbd`
 *   (found in PATH; Debian qemu-utils, plus qemu-block-extra for rbd,
 *   iscsi, ssh, curl, gluster, nfs) serves it on a unix socket in a new
 *   temporary directory, started with --format=<format> (raw when NULL),
 *   --cache=writeback, or none / writethrough / directsync (with
 *   --aio=native) as VMA_TARGET_DIRECT / VMA_TARGET_SYNC ask, and with
 *   VMA_TARGET_WRITE_ZEROS --discard=unmap; its environment gets
 *   GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432 (its per-request
 *   buffers reused, not mapped afresh) unless GLIBC_TUNABLES is set. Its
 *   output is never printed:
 *   its error becomes the reader's message (with the Debian package to
 *   install when qemu-nbd or a block module is missing).
 * The export's size must be at least the device size and at most 4 MiB
 * more. Zero blocks are sent as NBD write-zeroes (zero clusters in qcow2,
 * not data) with VMA_TARGET_WRITE_ZEROS, else left alone. Writes go out
 * many at a time (at most 64 requests or 32 MiB in flight); the restore
 * ends with one flush and a clean disconnect. qemu-nbd is stopped and
 * reaped by vma_reader_restore() or vma_reader_free(), also after any
 * failure or cancel; the temporary directory is removed. Not for vmstate.
 * Without NBD support in the build (meson -Dnbd=disabled): VMA_ERR_INVALID.
 */
int vma_reader_target_nbd(vma_reader *r, unsigned dev_id, const char *format,
                          const char *path, unsigned flags);

/* Use a descriptor the caller owns (opened for writing, seekable for a
 * disk) as the target. Only VMA_TARGET_WRITE_ZEROS is honoured. */
int vma_reader_target_fd(vma_reader *r, unsigned dev_id, int fd, unsigned flags);

/* Read but do not write this device (its clusters are still checked). */
int vma_reader_target_skip(vma_reader *r, unsigned dev_id);

/*
 * Limit the write bandwidth of dev_id to bytes_per_second (0 = no limit).
 * Devices given the same non-NULL group share one limit, as QEMU's
 * throttling groups do; the group's limit is the last non-zero one set (a
 * device may join a group with 0 without resetting its rate).
 */
int vma_reader_target_limit(vma_reader *r, unsigned dev_id,
                            uint64_t bytes_per_second, const char *group);

/*
 * Read the whole archive (as vma_reader_read()) and write every device to
 * its target; every device needs a target or a skip. Targets are flushed
 * (fsync) at the end. On failure, files made by vma_reader_target_create()
 * are removed; existing targets may hold partial data.
 */
int vma_reader_restore(vma_reader *r);

/* ------------------------------------------------------------------ */
/* Writer                                                              */
/* ------------------------------------------------------------------ */

typedef struct vma_writer vma_writer;

/* Allocate a writer with a random uuid and the current time as ctime.
 * Returns NULL only when out of memory. */
vma_writer *vma_writer_new(void);

/* Free a writer. If vma_writer_finish() did not succeed, a file the writer
 * created itself is removed and an exec: command is waited for (after a
 * SIGTERM if the writer was cancelled). */
void vma_writer_free(vma_writer *w);

/* The last error message, or "" when there was none. */
const char *vma_writer_error(const vma_writer *w);

/*
 * Stop the writer's work: the write_cluster, write_device_fd or finish in
 * progress, or the next one, fails with VMA_ERR_CANCELED, and the archive
 * is then never finished (vma_writer_free() removes a file it created). A
 * write waiting for an idle pipe reader wakes up at once (from another
 * thread, only between two write(2) calls; a signal handler's cancel also
 * cuts a blocked write(2) short, as its EINTR does). Safe from a signal
 * handler and from any thread, at any time between vma_writer_new() and
 * vma_writer_free().
 */
void vma_writer_cancel(vma_writer *w);

/* Set uuid and ctime; only before the first cluster is written. */
int vma_writer_set_uuid(vma_writer *w, const unsigned char uuid[16]);
int vma_writer_set_ctime(vma_writer *w, int64_t ctime);

/*
 * Output, once per writer, before the first cluster:
 * - "exec:<command>": run the command with /bin/sh -c and write the archive
 *   to its standard input; finish fails if it exits non-zero.
 * - an existing FIFO: opened for writing.
 * - otherwise a new file (VMA_ERR_EXISTS if the path exists).
 * The caller should ignore SIGPIPE so that a reader that goes away gives
 * VMA_ERR_IO (EPIPE) instead of killing the process.
 */
int vma_writer_open_path(vma_writer *w, const char *path);

/*
 * Compress the archive as it is written (before the first cluster):
 * "zstd" or "zstd:LEVEL" (1-22, default 3, using every core), "gzip" or
 * "gzip:LEVEL" (1-9, default 6), "lzo" (the lzop file format), "none".
 * The result is what `zstd -dc`, `gzip -dc` or `lzop -dc` turn back into
 * the plain archive, and what vma_reader_open_*() reads directly.
 */
int vma_writer_set_compression(vma_writer *w, const char *spec);

/* Write to a descriptor the caller owns (file, pipe, stdout). */
int vma_writer_open_fd(vma_writer *w, int fd);

/* Add a config (before the first cluster). The name and data are copied.
 * Only the base name of `name` is stored; at most VMA_MAX_CONFIGS, each at most VMA_MAX_CONFIG_SIZE bytes,
 * names valid (vma_name_is_valid()) and unique. */
int vma_writer_add_config(vma_writer *w, const char *name, const void *data,
                          size_t len);

/*
 * Register a device (before the first cluster): returns its dev_id (1..254)
 * or a negative status. `size` is in bytes, 1..VMA_MAX_DEVICE_SIZE, and is
 * recorded as given. The device named "vmstate" is the VM state stream: its
 * clusters must come in order 0, 1, 2, ... and its size is not a bound.
 */
int vma_writer_add_device(vma_writer *w, const char *name, uint64_t size);

/*
 * Write one 64 KiB cluster of a device. `data` is VMA_CLUSTER_SIZE bytes,
 * or NULL for a cluster that is all zeros. All-zero 4 KiB blocks and blocks
 * past the device end are dropped; bytes past the end are stored as zeros.
 * Each cluster of a disk may be written once, in any order and interleaved
 * with other devices. Thread safety: this function, vma_writer_close_device()
 * and vma_writer_device_stats() may be called from several threads at once
 * on one writer; everything else must not run concurrently with them.
 */
int vma_writer_write_cluster(vma_writer *w, unsigned dev_id, uint64_t cluster_num,
                             const void *data);

/* Close a device stream. A disk must have had all its clusters written
 * (else VMA_ERR_INCOMPLETE); no cluster may follow. */
int vma_writer_close_device(vma_writer *w, unsigned dev_id);

/*
 * Finish the archive: every device must be closed. Writes the header if
 * nothing was written yet, flushes the last extent and closes the output
 * (waiting for an exec: command). On success the archive is complete.
 */
int vma_writer_finish(vma_writer *w);

/*
 * Write a whole disk from a raw source (regular file or block device) and
 * close its stream: reads `size` bytes from offset 0 with pread(), skipping
 * holes of sparse files (SEEK_DATA/SEEK_HOLE) without reading them. A read
 * error or a source shorter than `size` fails with VMA_ERR_IO; bytes past
 * the end of a source whose size is not a multiple of 512 read as zeros up
 * to `size` (the caller may round the size up, as the deployed tool does).
 */
int vma_writer_write_device_fd(vma_writer *w, unsigned dev_id, int fd,
                               uint64_t source_size);

/* ------------------------------------------------------------------ */
/* Disk images: format signatures, and sources read through NBD        */
/* ------------------------------------------------------------------ */

/*
 * The disk image format whose signature the source starts with (or, for a
 * fixed VHD, ends with): "qcow2", "qcow", "vmdk" (sparse extent or
 * descriptor file), "vdi", "vhdx", "qed" or "vpc"; NULL when there is none
 * or the descriptor cannot be read at an offset (a pipe). Reads with
 * pread() only and leaves the file offset where it was. A raw disk that
 * starts with such bytes is rare; an image backed up as raw bytes is a
 * useless backup, so callers refuse such a source unless told it is raw.
 */
const char *vma_image_format_guess(int fd);

/*
 * A disk image read through NBD (libnbd): any format and QEMU protocol
 * path that qemu-nbd opens (qcow2 with its backing chain, vmdk, vdi, vhdx,
 * qed, raw, "rbd:pool/image", "iscsi://...", ...), served by a qemu-nbd
 * that the source starts read-only over socket activation and stops again;
 * or a raw NBD export given as an "nbd://", "nbds://", "nbd+unix://" URI,
 * connected to directly. Built without libnbd (meson -Dnbd=disabled),
 * vma_source_open() fails with VMA_ERR_INVALID.
 */
typedef struct vma_source vma_source;

/* Whether (format, path) must be read through a vma_source (1): a format
 * other than "raw" (NULL means raw), a QEMU protocol filename or an NBD
 * URI; else (0) it is a raw file or block device for
 * vma_writer_write_device_fd(). The same rule as vma_target_is_nbd(). */
int vma_source_needed(const char *format, const char *path);

/* Allocate a source. Returns NULL only when out of memory. */
vma_source *vma_source_new(void);

/* Disconnect, stop and reap the qemu-nbd the source started, free it. */
void vma_source_free(vma_source *s);

/* The last error message, or "" when there was none. */
const char *vma_source_error(const vma_source *s);

/*
 * Open `path` as an image of `format` (a qemu-nbd format name: "qcow2",
 * "vmdk", "raw", ...), for a (format, path) that vma_source_needed().
 * The image is never written, and is opened with QEMU's image locking, so
 * an image a running VM writes is refused. Fails with VMA_ERR_NOT_FOUND
 * when qemu-nbd is not installed, VMA_ERR_IO when it cannot open the
 * image (the message has qemu-nbd's reason), VMA_ERR_CANCELED after
 * vma_source_cancel(). Once per source.
 */
int vma_source_open(vma_source *s, const char *format, const char *path);

/* Virtual size of the opened image in bytes (0 before a successful open). */
uint64_t vma_source_size(const vma_source *s);

/* Stop an open in progress (or the next one). Safe from a signal handler
 * and from any thread between vma_source_new() and vma_source_free(). */
void vma_source_cancel(vma_source *s);

/*
 * Write a whole disk from an opened source and close its stream, as
 * vma_writer_write_device_fd() does from a descriptor: the size of the
 * device must be at least the source's. Extents the server reports as
 * zero (block status, "base:allocation") become all-zero clusters without
 * being read; the rest is read with many requests in flight, so clusters
 * reach the writer out of order. vma_writer_cancel() stops it at once.
 * Errors go to the writer's message, naming the device and offset. The
 * connection ends here, on success (qemu-nbd's exit is checked) and on
 * failure alike; vma_source_free() is still needed.
 */
int vma_writer_write_device_source(vma_writer *w, unsigned dev_id, vma_source *s);

/* Called after each cluster the writer accepts, with the totals over all
 * devices: bytes accepted and zero bytes among them. Return 0 to go on,
 * anything else to stop: the write fails with VMA_ERR_CALLBACK and the
 * writer stays failed (so a signal can cancel a long create). */
typedef int (*vma_write_progress_fn)(void *opaque, uint64_t bytes_written,
                                     uint64_t zero_bytes);

/* Set (or clear with fn = NULL) the progress callback; not while clusters
 * are being written. The callback runs on the writing thread, under the
 * writer's lock. */
void vma_writer_set_progress(vma_writer *w, vma_write_progress_fn fn, void *opaque);

/* Statistics of one device: bytes of clusters accepted so far (counted up
 * to the device end) and how many of them were zero. */
int vma_writer_device_stats(vma_writer *w, unsigned dev_id, uint64_t *bytes_written,
                            uint64_t *zero_bytes);

#ifdef __cplusplus
}
#endif

#endif /* LIBVMA_VMA_H */
