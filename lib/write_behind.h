/*
 * Write-behind for restore targets that are files or block devices: the
 * page cache holds a few windows of a restore's dirty data, not all of a
 * multi-GB disk, and the disk starts writing early. A thread of its own
 * starts each window's writeback and waits for it, so the restore loop
 * keeps reading and writing meanwhile (done inline, sync_file_range() put
 * the loop to sleep for each window and extract lost to cp + sync).
 * Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_WRITE_BEHIND_H
#define LIBVMA_WRITE_BEHIND_H

#include <stdint.h>

struct vmai_write_behind;

/* Write-behind for fd (which stays the caller's); NULL when out of memory
 * or no thread could be started: then writes simply stay in the cache
 * until the caller's fsync(). */
struct vmai_write_behind *vmai_write_behind_new(int fd);

/* [off, off + len) was written: when the window is full, hand it to the
 * thread; waits while a window handed earlier is not yet taken up. */
void vmai_write_behind_add(struct vmai_write_behind *w, uint64_t off, uint64_t len);

/* Stop the thread (the windows not yet written are left to the caller's
 * fsync()) and free w. NULL is fine. */
void vmai_write_behind_free(struct vmai_write_behind *w);

#endif
