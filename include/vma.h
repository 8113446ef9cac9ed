/*
 * libvma: read and write VMA ("Virtual Machine Archive") backups, the format
 * Proxmox VE writes for every QEMU VM backup.
 *
 * Installed as <includedir>/vmarchive/vma.h with the library
 * libvmarchive.so.0: build with `pkg-config --cflags --libs vmarchive`.
 *
 * Programs to start from: examples/ in the source tree (list an archive,
 * create one from several threads, hash each device, restore with
 * progress and cancel), built and run by the tests.
 *
 * Conventions that hold for every function below:
 * - Functions returning int return VMA_OK (0) or a negative VMA_ERR_* code,
 *   unless their comment says they answer yes/no (1/0) or return an id.
 *   After a failure, vma_reader_error() / vma_writer_error() give a one-line
 *   message that says what was wrong and where (byte offset, extent number,
 *   device name); vma_last_error() gives the same message in the thread
 *   that made the failed call.
 * - Error strings (vma_reader_error(), vma_writer_error(), vma_last_error())
 *   stay valid and unchanged until the next call that fails on the same
 *   handle (or, for vma_last_error(), in the same thread), and at most
 *   until the handle is freed (the thread exits).
 * - Two kinds of failure, as libarchive's ARCHIVE_FAILED and ARCHIVE_FATAL:
 *   * Refused: a bad argument or a call in the wrong state (VMA_ERR_INVALID,
 *     VMA_ERR_NOT_FOUND, VMA_ERR_LIMIT), a name refused, an output or target
 *     path that exists or cannot be opened or created (VMA_ERR_EXISTS,
 *     VMA_ERR_IO from open), a command that cannot be started, and a failed
 *     vma_reader_open_*() (nothing is kept: another open may be tried). The
 *     call changed nothing; the handle stays usable, the caller may try
 *     again with something else. vma_*_status() stays VMA_OK.
 *   * Fatal: a corrupt or truncated archive met while reading, an I/O error
 *     once data flows, out of memory, a device closed short, a callback that
 *     asked to stop, a cancel. The handle is ended: vma_*_status() returns
 *     that status, and every later call that would read or write returns it
 *     again and keeps the first message. Only accessors and *_free() remain.
 * - A cancel is fatal for the whole handle, also for a later open.
 * - The library never prints, exits or aborts because of what a file
 *   contains, and keeps no global state (but a count of fork()s, see
 *   below). Handles are independent.
 * - *_free(NULL) is a no-op.
 * - Threads the library starts block every signal, so a caller's signal
 *   handlers run only in the caller's own threads.
 * - fork(): a handle belongs to the process that made it (vma_*_new()).
 *   The child of a fork() has a copy of its memory but none of its
 *   threads (read-ahead, compression, a command's error reader) and
 *   shares its descriptors. There, a reader's open, read, restore and
 *   target calls and every writer call that returns a status are refused
 *   at once with VMA_ERR_INVALID ("reader made in process N used in
 *   process M after fork() ..."; vma_writer_status() answers so too,
 *   without taking the writer's lock); vma_reader_cancel()
 *   and vma_writer_cancel() do nothing (the parent's handle goes on); and
 *   vma_reader_free() and vma_writer_free() join no thread, remove no
 *   file and stop no command there (those are the parent's): what they
 *   cannot release safely is left to the child's exit. Accessors of what
 *   is in memory (header, devices, counters, messages) still answer.
 *   A vma_source's and a vma_backup's calls that return a status are
 *   refused the same way, a cancel does nothing, and free leaves an
 *   opened one's connections, qemu-nbd and sockets alone (the parent's).
 *   A vma_image holds no thread once opened and may be used in a child
 *   (a daemonized `vma mount` does). The parent uses its handles as
 *   before. A pthread_atfork() handler, registered with the first
 *   handle, tells the library of a fork (a child of a raw clone(2) goes
 *   unnoticed).
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
/* Export and version                                                  */
/* ------------------------------------------------------------------ */

/* Marks the public functions: the library is built with hidden visibility,
 * so only what carries VMA_API is exported (lib/vmarchive.map lists it). */
#if defined(__GNUC__) || defined(__clang__)
#define VMA_API __attribute__((visibility("default")))
#else
#define VMA_API
#endif

/* Version of this header; meson.build's project version (a test checks
 * that they agree). VMA_VERSION_NUMBER is MAJOR * 10000 + MINOR * 100 +
 * PATCH, for #if comparisons. */
#define VMA_VERSION_MAJOR 0
#define VMA_VERSION_MINOR 2
#define VMA_VERSION_PATCH 0
#define VMA_VERSION_NUMBER \
    (VMA_VERSION_MAJOR * 10000 + VMA_VERSION_MINOR * 100 + VMA_VERSION_PATCH)
#define VMA_VERSION_STRING "0.2.0"

/* Version of the library actually loaded ("0.2.0"), which may be newer
 * than the header a program was built with. A static string. */
VMA_API const char *vma_version(void);

/* The same as a number (VMA_VERSION_NUMBER of the library's build). */
VMA_API unsigned vma_version_number(void);

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
/* The reader's memory follows what the archive holds, not the sizes its
 * device table declares: the sets of clusters read so far cost at most one
 * bit per cluster where clusters are dense (nothing for complete runs of
 * 64 Ki clusters) and 2 bytes where scattered,
 * and may never exceed VMA_READER_MAP_FLOOR bytes plus 1/VMA_READER_MAP_RATIO
 * of the archive bytes read (a 1 GiB archive: 24 MiB). Clusters scattered
 * beyond that (only a crafted archive does it: a real one ends with every
 * cluster named, one bit each, and each costs at least 8.7 archive bytes)
 * fail the read with VMA_ERR_LIMIT. Whole process for any archive under
 * 1 GiB decompressed: at most 64 MiB, whatever its devices declare. */
#define VMA_READER_MAP_FLOOR ((uint64_t)8 << 20)
#define VMA_READER_MAP_RATIO 64u

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
    VMA_ERR_HEADER_MD5 = -12, /* salvage: only the header's MD5 is wrong, the rest is
                               * consistent; VMA_SALVAGE_FORCE_HEADER takes it */
};

/* Stable name of a status ("VMA_ERR_CORRUPT"), or "unknown" for other values. */
VMA_API const char *vma_status_name(int status);

/* The message of the last call that failed in the calling thread, on any
 * handle, or "" if none did. Each thread has its own (thread-local
 * storage, as libnbd's nbd_get_error()): a worker thread of a writer reads
 * why its own vma_writer_write_cluster() failed while others go on. */
VMA_API const char *vma_last_error(void);

/* A name check shared by reader and writer: answers yes (1) if name may be used
 * as a device or config name (non-empty, at most VMA_MAX_NAME_LEN bytes,
 * no '/', no control character: 0x01-0x1f, 0x7f, or U+0080-U+009F as
 * UTF-8; not "." or ".."), else 0. Names a reader returns always pass it,
 * so they print as one line and drive no terminal. */
VMA_API int vma_name_is_valid(const char *name);

/* ------------------------------------------------------------------ */
/* Reader                                                              */
/* ------------------------------------------------------------------ */

typedef struct vma_reader vma_reader;

/* Allocate a reader. Returns NULL only when out of memory. */
VMA_API vma_reader *vma_reader_new(void);

/* Free a reader, its buffers and the descriptors it opened itself. If
 * vma_reader_restore() did not succeed, files made by
 * vma_reader_target_create() are removed. */
VMA_API void vma_reader_free(vma_reader *r);

/* Open an archive by path ("-" means standard input) and read and check its
 * header. Plain, zstd, gzip and lzop-compressed archives are read alike;
 * for a compressed one, two threads read and decompress ahead while the
 * caller works. Succeeds once per reader. On failure nothing is kept (no
 * descriptor, no thread) and another open may be tried on the same reader
 * (not after a cancel). A file that does not start like a VMA archive
 * fails with VMA_ERR_CORRUPT "not a VMA archive", also when it is shorter
 * than a header. */
VMA_API int vma_reader_open_path(vma_reader *r, const char *path);

/* As vma_reader_open_path(), on a descriptor the caller owns and closes
 * after vma_reader_free() (the reader never closes it). The descriptor is
 * read sequentially from its current position (pipes work; O_NONBLOCK is
 * fine: reads wait in poll). A failed open also ends the read-ahead
 * threads it started before returning. */
VMA_API int vma_reader_open_fd(vma_reader *r, int fd);

/*
 * A source of archive bytes for vma_reader_open_callback(), as libarchive's
 * archive_read_open() takes one: copy up to len bytes into buf and return
 * how many (at least 1), 0 at the end of the archive, or -1 on an error
 * (set errno: its strerror() goes into the message). Plain and compressed
 * archives work alike; for a compressed one the callback runs on a
 * read-ahead thread of the reader, never two calls at once.
 */
typedef ptrdiff_t (*vma_read_fn)(void *opaque, void *buf, size_t len);

/* As vma_reader_open_path(), reading the archive through fn (the
 * embedder's own transport). A cancel takes effect when a call of fn
 * has returned (the library cannot interrupt it); vma_reader_free() waits
 * for a call in progress. */
VMA_API int vma_reader_open_callback(vma_reader *r, vma_read_fn fn, void *opaque);

/* As vma_reader_open_path(), on len bytes in memory (plain or
 * compressed). The buffer is not copied: it must stay valid and unchanged
 * until vma_reader_free(). No descriptor and no threads: a compressed
 * archive is decoded in the caller's thread as it reads, one chunk at a
 * time; a cancel takes effect at the next read. */
VMA_API int vma_reader_open_memory(vma_reader *r, const void *buf, size_t len);

/* The last error message, or "" when there was none. Not for a thread
 * other than the one using the reader (use vma_last_error() there). */
VMA_API const char *vma_reader_error(const vma_reader *r);

/* VMA_OK while the reader is usable, else the status that ended it (see
 * "Two kinds of failure" above). */
VMA_API int vma_reader_status(const vma_reader *r);

/*
 * Stop the reader's work: the open, read or restore in progress, or the
 * next one, fails with VMA_ERR_CANCELED, and so does every later call (the
 * failure is sticky); a restore removes its new files as after any
 * failure. Safe from a signal handler and from any thread, at any time
 * between vma_reader_new() and vma_reader_free().
 * Latency, once this call has returned:
 * - no cluster callback, progress callback or target write starts (a
 *   callback already running finishes first);
 * - every wait inside the library ends within 100 ms: reading an idle
 *   pipe or FIFO, opening a FIFO that no writer has opened yet, a
 *   bandwidth limit's wait (vma_reader_target_limit()), writing the
 *   vmstate into a pipe given to vma_reader_target_fd().
 * Not cut short: a read(2), write(2) or fsync(2) of a regular file or
 * block device that the kernel is already doing.
 */
VMA_API void vma_reader_cancel(vma_reader *r);

/* How the archive is compressed, recognized by its magic bytes when opened:
 * "none", "zstd", "gzip" or "lzo" (the lzop file format). Every reader
 * function works the same on all of them. Accepted framings, as the
 * reference tools accept them: zstd streams of several frames, with
 * skippable frames anywhere (also first, as pzstd writes); zstd windows up
 * to 128 MiB (a larger one, from --long=28 and up, fails with VMA_ERR_LIMIT
 * and a message that says its size and to decompress with
 * `zstd -dc --long=31`); gzip streams of several members, with zero bytes
 * after the last one (other bytes there fail); lzop files with a CRC-32
 * header checksum, an extra field or the multipart flag (a filter, unknown
 * flags, methods other than LZO1X or a newer format version fail). */
VMA_API const char *vma_reader_compression(const vma_reader *r);

/* Header accessors: valid after a successful open. ctime is the backup
 * time in seconds since the Unix epoch (UTC). */
VMA_API void vma_reader_uuid(const vma_reader *r, unsigned char uuid[16]);
VMA_API int64_t vma_reader_ctime(const vma_reader *r);

/* Number of configs, and config index (0-based, in header slot order).
 * name, data and len may each be NULL. Config data is `len` bytes as
 * stored, not NUL-terminated (names are). Returns VMA_ERR_NOT_FOUND for an
 * index out of range (the reader stays usable). */
VMA_API unsigned vma_reader_config_count(const vma_reader *r);
VMA_API int vma_reader_config(const vma_reader *r, unsigned index, const char **name,
                              const void **data, size_t *len);

/* Find a config by name. Returns VMA_OK or VMA_ERR_NOT_FOUND. */
VMA_API int vma_reader_find_config(const vma_reader *r, const char *name,
                                   const void **data, size_t *len);

/* Iterate over the devices: returns the first dev_id (an id, not a status)
 * greater than `after` that is in use, or 0 when there is none. Start
 * with after = 0. */
VMA_API unsigned vma_reader_next_device(const vma_reader *r, unsigned after);

/* Device accessors; for an unused dev_id: NULL, 0, 0. is_vmstate answers
 * yes (1) or no (0). */
VMA_API const char *vma_reader_device_name(const vma_reader *r, unsigned dev_id);
VMA_API uint64_t vma_reader_device_size(const vma_reader *r, unsigned dev_id);
VMA_API int vma_reader_device_is_vmstate(const vma_reader *r, unsigned dev_id);

/* dev_id of the device with this name (an id), or 0 if there is none. */
VMA_API unsigned vma_reader_find_device(const vma_reader *r, const char *name);

/*
 * Called once per cluster in the archive, in archive order, also for
 * clusters stored all-zero (mask 0, no data). `data` holds the cluster's
 * stored blocks (one per set bit of `mask`, 4096 bytes each, in ascending
 * block order); it is valid only during the call. For blocks of
 * the last cluster past the device end, only bytes before the end belong to
 * the device. Return 0 to go on, anything else to stop: the read then fails
 * with VMA_ERR_CALLBACK (message "stopped by the cluster callback ...").
 * Cluster numbers are uint32_t in the reader and the writer alike: the
 * format's cluster number is 32 bits.
 */
typedef int (*vma_cluster_fn)(void *opaque, unsigned dev_id, uint32_t cluster_num,
                              uint16_t mask, const unsigned char *data);

/*
 * Called after each cluster: clusters read so far and archive bytes
 * consumed so far. The caller decides what to print. Return 0 to go on,
 * anything else to stop (the read or restore fails with VMA_ERR_CALLBACK,
 * message "stopped by the progress callback ...").
 */
typedef int (*vma_progress_fn)(void *opaque, uint64_t clusters_read,
                               uint64_t bytes_consumed);

/* Set (or clear with fn = NULL) the progress callback. */
VMA_API void vma_reader_set_progress(vma_reader *r, vma_progress_fn fn, void *opaque);

/*
 * Read every extent after the header, checking every rule of the format:
 * extent magic, reserved fields, uuid, MD5, block counts, known devices,
 * cluster ranges, no duplicate cluster, vmstate order, truncation, and at
 * the end that every cluster of every device was present. The format's
 * MD5 sums cover the header and each extent's header only, never the image
 * data: a flipped byte inside a stored block is not detected (compare
 * checksums of the images for that). `fn` may be NULL (verify). May be
 * called once per reader, and not together with vma_reader_restore().
 */
VMA_API int vma_reader_read(vma_reader *r, vma_cluster_fn fn, void *opaque);

/*
 * Counters after (or during) a read: clusters read, bytes of clusters that
 * were stored all-zero (mask 0, whole 64 KiB clusters, padding past a
 * device end included), and bytes of the zero 4 KiB blocks of partly
 * stored clusters that begin inside the device (blocks wholly past a
 * device's end are padding and left out). These are the deployed tool's
 * `-v` counts: its "sparse bytes" are the two zero counts added, and its
 * "space reduction due to 4K zero blocks" is zero_block_bytes over the
 * bytes read less the sparse bytes. Unlike vma_writer_device_stats()
 * (bytes inside the device) they count whole blocks and clusters. Any
 * pointer may be NULL. Safe from any thread during a read (relaxed
 * atomics: each value is one the reader had, the three need not be from
 * one moment).
 */
VMA_API void vma_reader_counters(const vma_reader *r, uint64_t *clusters,
                                 uint64_t *zero_cluster_bytes,
                                 uint64_t *zero_block_bytes);

/*
 * Per-device counters after (or during) a read or restore: bytes inside
 * device dev_id (padding past its end left out, unlike
 * vma_reader_counters()) read so far that were stored, and that were zero
 * (blocks not stored, clusters stored all-zero). When the whole archive
 * was read, the two add up to the device's size. 0 for an unused dev_id;
 * either pointer may be NULL. Safe from any thread during a read.
 */
VMA_API void vma_reader_device_counters(const vma_reader *r, unsigned dev_id,
                                        uint64_t *stored_bytes, uint64_t *zero_bytes);

/* Expand a cluster as the cluster callback gives it (mask, packed
 * blocks) into VMA_CLUSTER_SIZE bytes at `out`: the stored blocks in
 * place, zeros where the mask bit is clear. `out` must not overlap
 * `data`. */
VMA_API void vma_cluster_expand(uint16_t mask, const unsigned char *data,
                                unsigned char *out);

/* Fraction of the archive's clusters read so far, 0.0 to 1.0 (the
 * clusters the device table declares; 1.0 once they are all read). Safe
 * from any thread during a read, like vma_reader_counters(). */
VMA_API double vma_reader_progress(const vma_reader *r);

/* --- Restore: one target per device, then vma_reader_restore() --- */

/* Flags for vma_reader_target_open() and vma_reader_target_fd(). */
#define VMA_TARGET_WRITE_ZEROS 1u /* write zero blocks (map "1:"); else leave them */
#define VMA_TARGET_DIRECT 2u      /* O_DIRECT: bypass the page cache (cache=none) */
#define VMA_TARGET_SYNC 4u        /* O_DSYNC: each write is durable (cache=writethrough) */

/*
 * Create a new file at `path` (must not exist) as the target of dev_id. For
 * a disk: a sparse file of exactly the device size, zero blocks left as
 * holes. For the vmstate device: the stream up to the recorded size, zero
 * blocks as holes; bytes past the size are never written (disk use stays
 * within the recorded sizes). Removed again if the restore fails.
 */
VMA_API int vma_reader_target_create(vma_reader *r, unsigned dev_id, const char *path);

/*
 * Open an existing file or block device as the target of a disk. Its size
 * must be at least the device size and at most 4 MiB more. Not for vmstate.
 */
VMA_API int vma_reader_target_open(vma_reader *r, unsigned dev_id, const char *path,
                                   unsigned flags);

/*
 * Whether a disk at (format, path) goes through NBD, as a restore target
 * (vma_reader_target_nbd()) or a backup source (vma_source_open()): 1 for
 * a format other than "raw" (format may be NULL, meaning raw), for a QEMU
 * protocol filename ("rbd:", "iscsi:", "nbd:", "ssh:", "http:", "https:",
 * "gluster:", "nfs:", ...), and for an NBD URI ("nbd://", "nbd+unix://",
 * ...); 0 for a plain file or block device path (vma_reader_target_open(),
 * vma_writer_write_device_fd()). The same answer with or without NBD
 * support in the build.
 */
VMA_API int vma_path_needs_nbd(const char *format, const char *path);

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
 * failure or cancel; the temporary directory is removed before qemu-nbd
 * starts (we connect first). qemu-nbd gets SIGKILL if this process dies
 * (PR_SET_PDEATHSIG); since the kernel sends that when the forking thread
 * ends, the library forks it from a thread of its own that lives until
 * qemu-nbd is reaped, so any thread may call this. Not for vmstate.
 * Without NBD support in the build (meson -Dnbd=disabled): VMA_ERR_INVALID.
 */
VMA_API int vma_reader_target_nbd(vma_reader *r, unsigned dev_id, const char *format,
                                  const char *path, unsigned flags);

/* Use a descriptor the caller owns (opened for writing, seekable for a
 * disk) as the target; the reader never closes it. A disk's target holds
 * the whole device: a regular file shorter than the device is extended
 * to the device size here (never shrunk; one that cannot grow is refused,
 * VMA_ERR_IO), a block device shorter than the device is refused
 * (VMA_ERR_INVALID); both messages name the device. Only
 * VMA_TARGET_WRITE_ZEROS is taken: VMA_TARGET_DIRECT and VMA_TARGET_SYNC
 * are refused (VMA_ERR_INVALID: open the descriptor with O_DIRECT or
 * O_DSYNC), so is a descriptor that is closed or read-only. For the
 * vmstate device the stream is written sequentially (zero blocks as
 * zeros, so pipes work) and stops at the recorded size.
 * Unknown flag bits are refused by target_open and target_fd alike. */
VMA_API int vma_reader_target_fd(vma_reader *r, unsigned dev_id, int fd, unsigned flags);

/* Read but do not write this device (its clusters are still checked). */
VMA_API int vma_reader_target_skip(vma_reader *r, unsigned dev_id);

/*
 * Limit the write bandwidth of dev_id to bytes_per_second (0 = no limit).
 * Without a group (NULL) the limit is the device's own. Devices given the
 * same non-NULL group share one limit, as QEMU's throttling groups do; the
 * group's limit is the last non-zero one set (a device may join a group
 * with 0 without resetting its rate). A cancel ends a limit's wait.
 */
VMA_API int vma_reader_target_limit(vma_reader *r, unsigned dev_id,
                                    uint64_t bytes_per_second, const char *group);

/*
 * Read the whole archive (as vma_reader_read()) and write every device to
 * its target; every device needs a target or a skip. Targets are flushed
 * (fsync) at the end. On failure, files made by vma_reader_target_create()
 * are removed; existing targets may hold partial data.
 */
VMA_API int vma_reader_restore(vma_reader *r);

/* --- Salvage: read what a damaged archive still holds --- */

/* Flags for vma_reader_set_salvage(). */
#define VMA_SALVAGE_FORCE_HEADER 1u /* read on past a header whose MD5 is wrong */

/* What a salvage read met (the `event` of vma_salvage_fn). Pinned values. */
enum vma_salvage_event {
    VMA_SALVAGE_HEADER_MD5 = 1, /* the header's MD5 is wrong; read on (FORCE_HEADER) */
    VMA_SALVAGE_BAD_EXTENT = 2, /* an extent header failed a check: skipped up to the
                                   next extent header that passes every check */
    VMA_SALVAGE_BAD_RULES = 3,  /* an intact extent header names an unknown device, a
                                   cluster past the end, a duplicate or an old vmstate
                                   cluster: skipped as above */
    VMA_SALVAGE_TRUNCATED = 4,  /* the archive ends inside this extent: it is lost */
    VMA_SALVAGE_STREAM = 5,     /* reading or decompressing failed: the stream ends
                                   here, or goes on after a skipped lzop block or
                                   zstd frame */
    VMA_SALVAGE_VMSTATE_GAP = 6 /* a vmstate cluster is missing: the rest of that
                                   stream is dropped (it can only be written in order) */
};

/* Stable name of an event ("bad-extent", "truncated", ...), or "unknown". */
VMA_API const char *vma_salvage_event_name(int event);

/*
 * Called once per event of a salvage read, in archive order. `offset` is
 * the byte offset in the (decompressed) archive where it happened and
 * `length` the archive bytes it covers: for BAD_EXTENT and BAD_RULES every
 * byte skipped up to the next good extent header or the end; for
 * TRUNCATED the bytes of the extent that arrived. `message` says what was
 * wrong (valid during the call only).
 */
typedef void (*vma_salvage_fn)(void *opaque, int event, uint64_t offset, uint64_t length,
                               const char *message);

/*
 * Turn on salvage mode, before vma_reader_open_*(): the reader then gets
 * out everything that is intact instead of failing at the first damage.
 * - vma_reader_read() and vma_reader_restore() skip an extent whose header
 *   or rules fail, and resume at the next extent header found by scanning
 *   forward for its magic that passes the MD5 and every rule (bytes that
 *   merely hold the magic are never taken); they keep every extent that
 *   arrived whole when the archive or a compressed stream ends early or
 *   breaks. A bad lzop block (checksum or decompression) is skipped, a
 *   broken zstd frame is skipped up to the next frame's magic, and an
 *   extent that runs into the skipped bytes is lost (offsets after that
 *   count only the bytes decoded); a gzip error ends the stream. They return
 *   VMA_OK at the end however much was lost; the scan uses a bounded 1 MiB
 *   window. Restored files keep their full size, lost ranges left as holes.
 * - Every cluster handed out comes from an extent whose header passed
 *   every check. Data blocks carry no checksum in the format: a flipped
 *   bit inside stored data is handed out as it is. lzop checks each block
 *   before its bytes are used; zstd and gzip check a frame or member only
 *   at its end, so bytes of a damaged frame may be handed out before the
 *   STREAM event says the stream broke (the event says so).
 * - A header whose MD5 is wrong fails the open unless flags has
 *   VMA_SALVAGE_FORCE_HEADER and the rest of its structure is consistent;
 *   the device table and configs are then taken as they are. Without the
 *   flag, such a header fails with VMA_ERR_HEADER_MD5 (forcing would take
 *   it), any other broken header with VMA_ERR_CORRUPT.
 * Fatal still: out of memory, VMA_ERR_LIMIT, a cancel, a callback's stop,
 * a target write error. fn (may be NULL) reports each event. Refused
 * (VMA_ERR_INVALID, the reader stays usable): unknown flags, or a call
 * after the open.
 */
VMA_API int vma_reader_set_salvage(vma_reader *r, unsigned flags, vma_salvage_fn fn,
                                   void *opaque);

/*
 * After (or during) a read or restore: the length of the run of clusters
 * of dev_id that starts at cluster `first` and are all read (*present = 1)
 * or all not read (*present = 0), up to the device's last cluster. Returns
 * 0 when first is past the end or dev_id is unused. A vmstate device
 * counts its clusters up to the recorded size, read in order from 0.
 * Costs by the runs, not the clusters: a walk over a device is as long
 * as its list of runs.
 */
VMA_API uint64_t vma_reader_cluster_run(const vma_reader *r, unsigned dev_id, uint64_t first,
                                        int *present);

/* ------------------------------------------------------------------ */
/* Random access (lib/image.c, lib/index_file.c)                       */
/* ------------------------------------------------------------------ */

/*
 * An archive opened for reading any byte range of any device. Opening
 * reads the whole archive once, checking it as vma_reader_read() does, and
 * builds an index: 12 bytes per cluster that holds data (offset and zero
 * mask, sorted per device), nothing for clusters stored all-zero. After
 * that, reads never change the handle, so any number of threads may call
 * vma_image_pread() and vma_image_next_data() at once.
 *
 * A plain archive is read in place (pread on its descriptor), and so is a
 * .vma.lzo: lzop's blocks (256 KiB) are independent, so a read decompresses
 * only the blocks it needs and checks their checksums (a damaged block
 * fails the reads that need it with VMA_ERR_CORRUPT, nothing else). A
 * .vma.gz is read in place too, through access points (zlib's zran way):
 * a second inflate pass records one every MiB of archive, with the 32 KiB
 * window before it kept in an unlinked file of the cache directory (3% of
 * the archive's size); a read inflates at most 1 MiB before its first byte.
 * gzip has no checksum below a whole member, so damage after the open is
 * caught only when inflate finds the stream invalid. A .vma.zst in zstd's
 * seekable format (independent frames and a seek table in a skippable
 * frame at the end) is read in place by frames (for lzop blocks, zstd
 * frames and gzip's spans between access points, the last four read in
 * part stay decoded: up to 16 MiB for the 4 MiB frames our writer makes,
 * about 4 MiB for gzip); one in a single frame, as
 * Proxmox writes it, is decompressed once into a sparse cache file (only
 * stored blocks are written). Cache and window files go to the directory set by
 * vma_image_set_cache_dir(), else $TMPDIR, else /tmp, and are unlinked at
 * once, so nothing is left.
 *
 * The index of an archive read in place by offsets (plain, .vma.lzo, seekable
 * .vma.zst: not a .vma.gz, whose access points each open builds, nor a
 * cached one) is saved next to it as "<archive>.vmaidx"
 * (written to a temporary file, then renamed) and loaded by the next open
 * instead of the pass. It records the archive's size, inode change time
 * (ctime, which nobody can set back) and uuid; an index that does not
 * match them, that is not a regular file of the caller's (effective uid)
 * or root's, that group or others may write, or that breaks any of its own
 * rules, is refused (the open fails with VMA_ERR_CORRUPT and says why). An
 * index file is input all the same (its owner can forge one that passes
 * those checks): before a loaded entry serves data, the
 * extent header it lies in (read once per extent) must be valid and name
 * its device and cluster, with its zero mask, at that offset. If one does
 * not, the read fails with VMA_ERR_CORRUPT ("index ... is stale or
 * forged", with the archive offset and extent), so does every later read
 * of the handle, and the index file is removed: the next open builds a
 * new one. Clusters the index says are all zero read as zeros unchecked.
 */
typedef struct vma_image vma_image;

/* Allocate an image handle. NULL only when out of memory. */
VMA_API vma_image *vma_image_new(void);

/* Free the handle, its descriptors and its cache file. */
VMA_API void vma_image_free(vma_image *img);

/* The last error message of the handle, or "" when there was none. Safe
 * from any thread: a copy (taken under the handle's lock) that stays valid
 * until the same thread calls vma_image_error() again. With several
 * threads reading, it is the message of one of the latest failures: a
 * thread gets its own failure's message from vma_last_error(), which
 * every failing vma_image_*() call sets. */
VMA_API const char *vma_image_error(const vma_image *img);

/* Directory for the cache of a compressed archive (before the open; the
 * string is copied). NULL: $TMPDIR or /tmp. */
VMA_API int vma_image_set_cache_dir(vma_image *img, const char *dir);

/*
 * Where the index file goes (before the open; the string is copied).
 * NULL or "" (the default): beside the archive, as <archive>.vmaidx. A
 * directory: <dir>/<uuid in hex>-<size>-<device>-<inode>.vmaidx, so that a
 * backup storage (read-only, shared, or pruned by its own rules) holds
 * nothing of ours; there, an index refused as stale, foreign or damaged is
 * rebuilt and replaced instead of failing the open, a loaded file is
 * marked used (its mtime), and after a save the least recently used index
 * files of that directory are removed until they take at most max_bytes
 * (0: no bound). The directory must exist (vma_index_cache_dir() makes the
 * usual one). Refused after the open.
 */
VMA_API int vma_image_set_index_dir(vma_image *img, const char *dir, uint64_t max_bytes);

/*
 * The user's cache directory for index files, made (mode 0700, with its
 * parents) when missing: /var/cache/vmarchive for root, else
 * $XDG_CACHE_HOME/vmarchive, else $HOME/.cache/vmarchive. Writes its path
 * into buf (len bytes). VMA_OK, or an error (also as vma_last_error()):
 * VMA_ERR_NOT_FOUND when neither variable is an absolute path,
 * VMA_ERR_INVALID when buf is too short, VMA_ERR_IO when it cannot be made.
 */
VMA_API int vma_index_cache_dir(char *buf, size_t len);

/* The bound `vma mount` and the nbdkit plugin give their index cache
 * directory: 1 GiB of index files (12 bytes per stored cluster, so about
 * 80 TiB of fully used disks). */
#define VMA_INDEX_CACHE_MAX_BYTES (1ull << 30)

/* Progress of the index pass, as for vma_reader_set_progress(); a non-zero
 * return stops the open with VMA_ERR_CALLBACK. Before the open. */
VMA_API void vma_image_set_progress(vma_image *img, vma_progress_fn fn, void *opaque);

/* Called once, before a compressed archive is decompressed into the cache:
 * the cache directory and an upper bound of the bytes it may take (the sum
 * of the device sizes), so that the caller can say so. */
typedef void (*vma_cache_fn)(void *opaque, const char *dir, uint64_t max_bytes);
VMA_API void vma_image_set_cache_notice(vma_image *img, vma_cache_fn fn, void *opaque);

/*
 * Open in salvage mode (before vma_image_open(); flags, fn and opaque as
 * for vma_reader_set_salvage()): the index pass reads past damage as a
 * salvage read does, and the image serves what it got out. A read that
 * touches a lost cluster of a disk (damaged or missing in the archive)
 * fails with VMA_ERR_CORRUPT and says which; the rest reads as usual.
 * vma_image_next_data() counts lost clusters as data, so a copy that
 * skips holes still meets the error instead of writing zeros. A vmstate
 * device ends at its first lost cluster. The index file is neither loaded
 * nor saved, and a compressed archive's stored blocks always go to the
 * cache (its block maps no longer match once a block was skipped). What
 * was lost: vma_reader_cluster_run() on vma_image_reader(). Refused
 * (VMA_ERR_INVALID) after the open or with unknown flags.
 */
VMA_API int vma_image_set_salvage(vma_image *img, unsigned flags, vma_salvage_fn fn,
                                  void *opaque);

/* Flags of vma_image_open(). */
#define VMA_IMAGE_NO_INDEX_FILE 1u /* neither load nor save <archive>.vmaidx */
#define VMA_IMAGE_REINDEX 2u       /* ignore an existing index file, build and save anew */

/* Open the archive at path (a file; not "-"): load its index file or read
 * the whole archive once. Once per handle. Stops with VMA_ERR_CANCELED
 * after vma_image_cancel(). */
VMA_API int vma_image_open(vma_image *img, const char *path, unsigned flags);

/* Stop a running vma_image_open(). Safe from a signal handler. */
VMA_API void vma_image_cancel(vma_image *img);

/* How the index was obtained by the open. */
#define VMA_IMAGE_INDEX_BUILT 0  /* built by the pass, not saved */
#define VMA_IMAGE_INDEX_SAVED 1  /* built by the pass and saved */
#define VMA_IMAGE_INDEX_LOADED 2 /* loaded from <archive>.vmaidx */
VMA_API int vma_image_index_state(const vma_image *img);

/* The reader behind the image, for the header accessors (uuid, ctime,
 * configs, devices, compression). Its extent stream is already consumed:
 * use it for those accessors only. */
VMA_API const vma_reader *vma_image_reader(const vma_image *img);

/* Readable size of a device: its recorded size for a disk; for the vmstate
 * device, the stored stream cut to the recorded size (as extract writes
 * it). 0 for an unused dev_id. */
VMA_API uint64_t vma_image_device_size(const vma_image *img, unsigned dev_id);

/*
 * Read up to len bytes of dev_id from offset into buf: fewer only at the
 * device end (0 at or past it). Zero blocks and clusters stored all-zero
 * read as zeros. Returns the count or a negative status (VMA_ERR_NOT_FOUND
 * for an unused dev_id, VMA_ERR_IO or VMA_ERR_TRUNCATED when the archive
 * or cache file cannot be read, VMA_ERR_CORRUPT for a damaged lzop block
 * or a stale or forged index file). The message ("read of device '...' at
 * byte N: ...") goes to vma_last_error() of the calling thread. A failed
 * read does not fail the handle, except one that found the index file
 * stale or forged.
 * Thread-safe.
 */
VMA_API int64_t vma_image_pread(vma_image *img, unsigned dev_id, void *buf, size_t len,
                                uint64_t offset);

/*
 * The first run of stored data at or after offset: blocks the archive
 * stores, as opposed to zero blocks and all-zero clusters, which are holes.
 * Sets *data_off (>= offset) and *data_len (> 0, up to the device end); when
 * no data follows, *data_off is the device size and *data_len 0. Returns
 * VMA_OK or VMA_ERR_NOT_FOUND for an unused dev_id. Thread-safe.
 */
VMA_API int vma_image_next_data(const vma_image *img, unsigned dev_id, uint64_t offset,
                                uint64_t *data_off, uint64_t *data_len);

/*
 * For a caller that moves bytes itself (splice, sendfile, copy_file_range):
 * the file that holds a plain archive's data (its own descriptor) or a
 * single-frame .vma.zst's cache, or -1 when reads go through decompression
 * (.vma.lzo, .vma.gz, seekable .vma.zst) or before the open. Owned by the
 * image; use pread-style calls only (its position is not ours to move).
 */
VMA_API int vma_image_data_fd(const vma_image *img);

/* Offset of a piece that reads as zeros (vma_image_piece_fn). */
#define VMA_IMAGE_ZEROS UINT64_MAX

/* One piece of a located read: len bytes at file_off of
 * vma_image_data_fd(), or zeros when file_off is VMA_IMAGE_ZEROS. Non-zero
 * stops vma_image_locate(). */
typedef int (*vma_image_piece_fn)(void *opaque, uint64_t len, uint64_t file_off);

/*
 * Where the bytes that vma_image_pread() would return lie: fn gets the
 * pieces of [offset, offset + len) in order, adjacent ones merged, up to
 * the device end (nothing at or past it). Returns VMA_OK; VMA_ERR_INVALID
 * when vma_image_data_fd() is -1; VMA_ERR_NOT_FOUND for an unused dev_id;
 * VMA_ERR_CORRUPT for a lost cluster in salvage mode (the pieces before it
 * were given); VMA_ERR_CALLBACK when fn stopped. Thread-safe.
 */
VMA_API int vma_image_locate(vma_image *img, unsigned dev_id, uint64_t offset, size_t len,
                             vma_image_piece_fn fn, void *opaque);

/* ------------------------------------------------------------------ */
/* Writer                                                              */
/* ------------------------------------------------------------------ */

typedef struct vma_writer vma_writer;

/* Allocate a writer with a random uuid and the current time as ctime.
 * Returns NULL only when out of memory. */
VMA_API vma_writer *vma_writer_new(void);

/* Free a writer. If vma_writer_finish() did not succeed, a file the writer
 * created itself is removed and a command (open_command) is waited for; if the
 * writer was cancelled, the command is ended first as vma_writer_cancel()
 * says (so cancel before freeing a failed writer whose command may never
 * exit). */
VMA_API void vma_writer_free(vma_writer *w);

/* The last error message, or "" when there was none. Read it only when no
 * other thread uses the writer: a worker thread reads its own failure with
 * vma_last_error() instead. */
VMA_API const char *vma_writer_error(const vma_writer *w);

/* VMA_OK while the writer is usable, else the status that ended it (see
 * "Two kinds of failure" above). Safe from any thread. */
VMA_API int vma_writer_status(vma_writer *w);

/*
 * Stop the writer's work: the open_path, write_cluster, write_device_fd or
 * finish in progress, or the next one, fails with VMA_ERR_CANCELED, and
 * the archive is then never finished (vma_writer_free() removes a file it
 * created). Safe from a signal handler and from any thread, at any time
 * between vma_writer_new() and vma_writer_free().
 * Latency, once this call has returned:
 * - no write_cluster is accepted (each fails with VMA_ERR_CANCELED);
 * - every wait inside the library ends within 100 ms: a write into a pipe
 *   or FIFO whose reader is idle, open_path of a FIFO that no reader has
 *   opened yet, finish waiting for a command (open_command, open_shell)
 *   to exit. The command's process group then gets SIGTERM, SIGKILL 50 ms
 *   later if it is still there, and is reaped.
 * The command's pipe and FIFOs from open_path are non-blocking, so their
 * writes wait in poll(2), where the cancel ends them. A descriptor given
 * to vma_writer_open_fd() is used as it is: a write(2) already blocked in
 * the kernel on a blocking pipe ends only when the reader makes room or a
 * signal interrupts it (a handler's cancel then takes effect); give it
 * O_NONBLOCK to have the library wait in poll(2) instead.
 */
VMA_API void vma_writer_cancel(vma_writer *w);

/* Set uuid and ctime (seconds since the Unix epoch); only before the
 * first cluster is written. */
VMA_API int vma_writer_set_uuid(vma_writer *w, const unsigned char uuid[16]);
VMA_API int vma_writer_set_ctime(vma_writer *w, int64_t ctime);

/*
 * Output, once per writer, before the first cluster (one of open_path,
 * open_fd, open_command, open_shell). A path is always a path ("exec:..."
 * is a file name here; the vma command maps its exec: to open_shell):
 * - an existing FIFO: opened for writing once a reader has opened it
 *   (a cancel ends that wait).
 * - otherwise a new file (VMA_ERR_EXISTS if the path exists).
 * The caller should ignore SIGPIPE so that a reader that goes away gives
 * VMA_ERR_IO (EPIPE) instead of killing the process.
 */
VMA_API int vma_writer_open_path(vma_writer *w, const char *path);

/*
 * Run a command and write the archive to its standard input: argv[0] is
 * found as execvp(3) finds it, argv ends with NULL; no shell is involved.
 * The command runs in its own process group; finish waits for it and
 * fails if it exits non-zero, and so does a write it stopped reading (even
 * when it exits with 0), with its exit status or signal in the message.
 * The library reads the command's standard error: its lines go through to
 * the process's standard error as they come, except the last, which is
 * held until the command ends and then either goes through too (success)
 * or ends the one-line message (failure; control characters escaped, at
 * most 200 bytes). A command that cannot be started is refused (VMA_ERR_IO;
 * the writer stays usable).
 */
VMA_API int vma_writer_open_command(vma_writer *w, char *const argv[]);

/* As vma_writer_open_command() with { "/bin/sh", "-c", command }: the
 * form of the vma command's "exec:<command>" output. Only for commands
 * the caller wrote itself, never for a string from a configuration. */
VMA_API int vma_writer_open_shell(vma_writer *w, const char *command);

/*
 * Compress the archive as it is written (before the first cluster):
 * "zstd" or "zstd:LEVEL" (1-22, default 3), "gzip" or "gzip:LEVEL" (1-9,
 * default 6), "lzo" (the lzop file format), "none". The result is what
 * `zstd -dc`, `gzip -dc` or `lzop -dc` turn back into the plain archive,
 * and what vma_reader_open_*() reads directly.
 * zstd output is in zstd's seekable format: frames of 4 MiB of archive,
 * each compressed on its own, then the seek table in a skippable frame
 * (vma_image_open() reads it in place).
 * zstd compresses in worker threads, one per core but at most 4 (levels
 * 1-9) or 2 (levels 10-22), in jobs of 1 MiB (2 MiB from level 17), so
 * that the workers share each frame and a cancel, which waits for the
 * jobs under way, is quick;
 * levels 20-22 keep level 19's 8 MiB window (no --long needed to read
 * them). Its memory is thus bounded whatever the core count: at most
 * about 256 MB at any level (measured peaks: about 40 MB at level 1 and
 * 110 MB at level 3 with four workers, 195 MB at levels 15-22 with two;
 * figures per level in the README).
 */
VMA_API int vma_writer_set_compression(vma_writer *w, const char *spec);

/* Write to a descriptor the caller owns (file, pipe, stdout): finish
 * flushes it but never closes it, nor does vma_writer_free(). A closed or
 * read-only descriptor is refused. */
VMA_API int vma_writer_open_fd(vma_writer *w, int fd);

/* Add a config (before the first cluster). The name and data are copied.
 * Only the base name of `name` is stored; at most VMA_MAX_CONFIGS, each at most VMA_MAX_CONFIG_SIZE bytes,
 * names valid (vma_name_is_valid()) and unique. */
VMA_API int vma_writer_add_config(vma_writer *w, const char *name, const void *data,
                                  size_t len);

/*
 * Register a device (before the first cluster): returns its dev_id (1..254,
 * positive) on success, or a negative VMA_ERR_* status (never 0). `size` is in bytes, 1..VMA_MAX_DEVICE_SIZE. A disk's size is
 * recorded rounded up to a multiple of 512 (the bytes added read as
 * zeros), as `vma create` and QEMU record it: Proxmox's reader works in
 * 512-byte sectors and fails on, or restores wrongly, a last partial
 * sector. The device named "vmstate" is the VM state stream: its size is
 * recorded as given, its clusters must come in order 0, 1, 2, ... and its
 * size is not a bound.
 */
VMA_API int vma_writer_add_device(vma_writer *w, const char *name, uint64_t size);

/* The size recorded for dev_id (a disk's rounded up to 512 bytes), or 0
 * for an unknown dev_id. */
VMA_API uint64_t vma_writer_device_size(const vma_writer *w, unsigned dev_id);

/*
 * Write one 64 KiB cluster of a device. `data` is VMA_CLUSTER_SIZE bytes,
 * or NULL for a cluster that is all zeros. All-zero 4 KiB blocks and blocks
 * past the device end are dropped; bytes past the end are stored as zeros.
 * Each cluster of a disk may be written once, in any order and interleaved
 * with other devices, once the writer has an output (before: refused).
 * Thread safety: this function, vma_writer_close_device()
 * and vma_writer_device_stats() may be called from several threads at once
 * on one writer; everything else must not run concurrently with them.
 */
VMA_API int vma_writer_write_cluster(vma_writer *w, unsigned dev_id,
                                     uint32_t cluster_num, const void *data);

/* Close a device stream. A disk must have had all its clusters written
 * (else VMA_ERR_INCOMPLETE); no cluster may follow. */
VMA_API int vma_writer_close_device(vma_writer *w, unsigned dev_id);

/*
 * Finish the archive: every device must be closed (else refused with
 * VMA_ERR_INCOMPLETE: close it and call again) and the writer must have
 * an output. Writes the header if
 * nothing was written yet, flushes the last extent and closes an output
 * the writer opened itself (a descriptor from vma_writer_open_fd() stays
 * open), waiting for a command. On success the archive is complete.
 */
VMA_API int vma_writer_finish(vma_writer *w);

/*
 * Write a whole disk from a raw source (regular file or block device) and
 * close its stream: reads `source_size` bytes from offset 0 with pread(),
 * skipping holes of sparse files (SEEK_DATA/SEEK_HOLE) without reading
 * them; the rest of the device, up to its recorded size
 * (vma_writer_device_size()), is written as zeros. `source_size` larger
 * than the device, a descriptor not open for reading, and a device that is
 * unknown, closed or already has clusters are refused (VMA_ERR_INVALID:
 * nothing written, the writer stays usable); a read error or a source
 * shorter than `source_size` fails with VMA_ERR_IO (fatal).
 */
VMA_API int vma_writer_write_device_fd(vma_writer *w, unsigned dev_id, int fd,
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
VMA_API const char *vma_detect_image_format(int fd);

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

/* Allocate a source. Returns NULL only when out of memory. */
VMA_API vma_source *vma_source_new(void);

/* Disconnect, stop and reap the qemu-nbd the source started, free it. */
VMA_API void vma_source_free(vma_source *s);

/* The last error message, or "" when there was none. */
VMA_API const char *vma_source_error(const vma_source *s);

/*
 * Open `path` as an image of `format` (a qemu-nbd format name: "qcow2",
 * "vmdk", "raw", ...), for a (format, path) that vma_path_needs_nbd().
 * The image is never written, and is opened with QEMU's image locking, so
 * an image a running VM writes is refused. Fails with VMA_ERR_NOT_FOUND
 * when qemu-nbd is not installed, VMA_ERR_IO when it cannot open the
 * image (the message has qemu-nbd's reason), VMA_ERR_CANCELED after
 * vma_source_cancel(). Once per source.
 */
VMA_API int vma_source_open(vma_source *s, const char *format, const char *path);

/* Virtual size of the opened image in bytes (0 before a successful open). */
VMA_API uint64_t vma_source_size(const vma_source *s);

/* Stop an open in progress (or the next one). Safe from a signal handler
 * and from any thread between vma_source_new() and vma_source_free(). */
VMA_API void vma_source_cancel(vma_source *s);

/*
 * Write a whole disk from an opened source and close its stream, as
 * vma_writer_write_device_fd() does from a descriptor: the size of the
 * device must be at least the source's. Extents the server reports as
 * zero (block status, "base:allocation") become all-zero clusters without
 * being read; the rest is read with many requests in flight, so clusters
 * reach the writer out of order. vma_writer_cancel() stops it at once.
 * Errors go to the writer's message, naming the device and offset.
 * Refused as vma_writer_write_device_fd() is (nothing read, the source
 * stays open): a source that is not open or larger than the device, an
 * unknown, closed or partly written device. Otherwise the connection
 * ends here, on success (qemu-nbd's exit is checked) and on failure
 * alike; vma_source_free() is still needed.
 */
VMA_API int vma_writer_write_device_source(vma_writer *w, unsigned dev_id, vma_source *s);

/* Called after clusters the writer accepts, with the totals over all
 * devices: bytes accepted and zero bytes among them. Calls never overlap
 * and their totals only grow (with several writing threads, a total older
 * than one already reported is skipped). Return 0 to go on, anything else
 * to stop: the write fails with VMA_ERR_CALLBACK ("stopped by the progress
 * callback ...") and the writer is ended. */
typedef int (*vma_write_progress_fn)(void *opaque, uint64_t bytes_written,
                                     uint64_t zero_bytes);

/* Set (or clear with fn = NULL) the progress callback; not while clusters
 * are being written. The callback runs on a writing thread, outside the
 * writer's lock: it may call vma_writer_device_stats() and
 * vma_writer_status(), and must not write clusters itself. */
VMA_API void vma_writer_set_progress(vma_writer *w, vma_write_progress_fn fn,
                                     void *opaque);

/* Statistics of one device: bytes of clusters accepted so far (counted up
 * to the device end) and how many of them were zero. Returns VMA_OK or
 * VMA_ERR_NOT_FOUND for an unknown dev_id. Safe from any thread and from
 * the progress callback. */
VMA_API int vma_writer_device_stats(vma_writer *w, unsigned dev_id,
                                    uint64_t *bytes_written, uint64_t *zero_bytes);

/* ------------------------------------------------------------------ */
/* Live backup of a running QEMU VM (QMP, image fleecing)              */
/* ------------------------------------------------------------------ */

/*
 * Back up the disks of a running QEMU VM into a writer, all of them at one
 * point in time, while the guest runs on. Through QEMU's QMP socket: a
 * sparse qcow2 fleecing image per disk (in the fleecing directory; QEMU
 * copies a cluster there before the guest overwrites it), one QMP
 * `transaction` of `blockdev-backup sync=none` jobs for all disks, QEMU's
 * NBD server exporting the fleecing images, read with libnbd (block
 * status: holes are never read). Needs QEMU 5.2 or newer (tested: 7.2).
 *
 * The QMP socket is held only to set up, to check at the end that every
 * job still ran, and to tear down (QMP serves one client at a time, and
 * Proxmox VE's qm connects for each command); a socket another client
 * holds is waited for, up to the timeout. Everything made in QEMU (jobs,
 * nodes, exports) is named "vma-backup-<pid>-..." and removed again on
 * success and on every failure, with the NBD server if this backup
 * started it; fleecing files are unlinked as soon as QEMU opened them.
 * What a killed process leaves inside QEMU, vma_backup_cleanup() removes.
 *
 * Use: vma_backup_new(), options, vma_backup_open() (lists the disks,
 * changes nothing), optionally vma_backup_select(), then with a writer
 * that has its output and configs: vma_backup_run(), vma_writer_finish().
 */
typedef struct vma_backup vma_backup;

/* Allocate a backup. Returns NULL only when out of memory. */
VMA_API vma_backup *vma_backup_new(void);

/* Free it (a run has cleaned up already). NULL is a no-op. */
VMA_API void vma_backup_free(vma_backup *b);

/* The last error message, or "" when there was none. */
VMA_API const char *vma_backup_error(const vma_backup *b);

/* The QEMU guest agent's socket (a VM's virtio-serial chardev): the run
 * freezes the guest's file systems (guest-fsfreeze-freeze) just before
 * the transaction and thaws them right after it, and on every failure
 * path. An agent that does not answer within 10 s (or a freeze within
 * 60 s) gets a warning through the log callback, and the backup goes on
 * without the freeze. NULL: no freeze. Before the run. */
VMA_API int vma_backup_set_qga(vma_backup *b, const char *path);

/* Where the fleecing images go (default: TMPDIR, else /tmp). They hold
 * what the guest overwrites during the backup. When the directory's
 * free space falls under a reserve (a tenth of its file system, at most
 * 1 GiB, at least 1 MiB; looked at every 100 ms), the run stops with
 * VMA_ERR_IO so that the guest's writes do not fail; it does not start
 * with less. Before the run. */
VMA_API int vma_backup_set_fleecing_dir(vma_backup *b, const char *dir);

/* How long to wait for a QMP socket another client holds, and for each
 * QMP answer (default 60 s; 1 to 86400). */
VMA_API int vma_backup_set_timeout(vma_backup *b, unsigned seconds);

/* Called with each line worth telling: warning = 1 for a warning (an
 * agent that did not answer, a thaw that failed), 0 for steps (file
 * systems frozen, for how long, the point in time taken). On the
 * thread that calls vma_backup_run(). */
typedef void (*vma_backup_log_fn)(void *opaque, int warning, const char *line);
VMA_API void vma_backup_set_log(vma_backup *b, vma_backup_log_fn fn, void *opaque);

/*
 * Connect to the QMP socket, check QEMU's version and commands, list the
 * disks, disconnect. Changes nothing in QEMU. Disks: every block device
 * with a medium that is writable and not removable (CD-ROMs, empty and
 * read-only drives are left out), named after its BlockBackend name
 * ("drive-scsi0"), else "drive-<id>" of the device it is attached to,
 * else its -blockdev node-name (with "drive-" put in front unless it
 * starts so; an automatic "#block..." name gives none).
 * VMA_ERR_IO: no socket, not QMP, busy past the timeout; VMA_ERR_INVALID:
 * QEMU too old. Once per backup.
 */
VMA_API int vma_backup_open(vma_backup *b, const char *qmp_path);

/* QEMU's version as major * 10000 + minor * 100 + micro (after open). */
VMA_API unsigned vma_backup_qemu_version(const vma_backup *b);

/* The disks found by open, index 0 .. count-1: name in the archive (NULL
 * when the disk has neither a backend name nor a device id), virtual size
 * in bytes (recorded rounded up to 512, as vma create does), the QEMU node
 * backed up, and the dev_id the run gave it in the writer (0 before, or
 * when not selected). Out of range: NULL or 0. */
VMA_API unsigned vma_backup_device_count(const vma_backup *b);
VMA_API const char *vma_backup_device_name(const vma_backup *b, unsigned index);
VMA_API uint64_t vma_backup_device_size(const vma_backup *b, unsigned index);
VMA_API const char *vma_backup_device_node(const vma_backup *b, unsigned index);
VMA_API unsigned vma_backup_device_id(const vma_backup *b, unsigned index);

/* Back up only the disks selected (by name; call once per disk); without
 * any call, all. name NULL selects none by itself (a run of no selected
 * disk writes an archive of configs only). VMA_ERR_NOT_FOUND for a name no
 * disk has. After open. */
VMA_API int vma_backup_select(vma_backup *b, const char *name);

/*
 * Run the backup into w: registers the selected disks on w (with
 * vma_writer_add_device(); add configs, set compression and open the
 * output before), freezes (vma_backup_set_qga), takes the point in time,
 * thaws, copies every disk (vma_writer_write_device_source(): clusters
 * out of order, zero extents unread), checks that QEMU's jobs still run,
 * and removes everything it made in QEMU. Does not finish w: on success
 * call vma_writer_finish(). Progress: vma_writer_set_progress() and
 * vma_writer_device_stats() with vma_backup_device_id().
 * Refused with nothing changed in QEMU (and nothing written): a selected
 * disk of size 0 (VMA_ERR_INVALID), more than VMA_MAX_DEVICES disks
 * (VMA_ERR_LIMIT), a name the format refuses or two disks of one name,
 * a disk that already has a block job, a fleecing directory under its
 * reserve. On any failure after that, everything made in QEMU has been
 * removed when this returns (unless QEMU is gone or unreachable: the
 * message says so) and w has failed with the same status and message:
 * free it, which removes a file it created. A tear-down that fails after
 * a complete copy whose jobs were checked is a warning through the log
 * callback, not a failure: the archive stands (vma_backup_cleanup() later
 * removes what is left). Once per backup.
 */
VMA_API int vma_backup_run(vma_backup *b, vma_writer *w);

/* Seconds the guest's file systems were frozen, or -1 when they were not
 * (no agent given, or it did not answer). After the run. */
VMA_API double vma_backup_freeze_seconds(const vma_backup *b);

/*
 * Stop the open or run in progress (or the next one): it fails with
 * VMA_ERR_CANCELED after removing what it made in QEMU and thawing the
 * guest. Safe from a signal handler and from any thread. The run returns
 * once QEMU has answered the tear-down's commands (a few ms on a
 * responsive QEMU; a copy in progress stops within 100 ms, as
 * vma_writer_cancel() says).
 */
VMA_API void vma_backup_cancel(vma_backup *b);

/*
 * Remove what killed backups left inside the QEMU at qmp_path: block jobs,
 * jobs, exports and nodes whose names start with "vma-backup-<pid>-" of a
 * process that no longer runs on this machine (a backup in progress is
 * left alone), and QEMU's
 * NBD server when exports of ours were all it served; with an agent set
 * (vma_backup_set_qga()), also thaws the guest's file systems if they are
 * frozen (a run killed during its freeze). *removed (may be NULL) counts
 * what was removed or thawed. A fresh handle or one that ran.
 */
VMA_API int vma_backup_cleanup(vma_backup *b, const char *qmp_path, unsigned *removed);

#ifdef __cplusplus
}
#endif

#endif /* LIBVMA_VMA_H */
