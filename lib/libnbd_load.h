/*
 * libnbd, loaded on first use with dlopen(3) instead of linked: it pulls
 * in 16 more shared libraries (GnuTLS, libxml2, ICU...), whose loading and
 * constructors cost every run of vma about 10 ms, though only restores
 * into QEMU storage and backups use NBD. Include this instead of
 * <libnbd.h>: each nbd_* function the library calls becomes a call
 * through a table filled by vmai_libnbd_load(), with libnbd's own
 * prototypes (__typeof__), so the compiler still checks every call.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMAI_LIBNBD_LOAD_H
#define VMAI_LIBNBD_LOAD_H

#include <stddef.h>

#include <libnbd.h>

/* Every libnbd function the library calls. */
#define VMAI_LIBNBD_FUNCTIONS(X)                                                                   \
    X(add_meta_context) X(aio_block_status) X(aio_command_completed) X(aio_connect_socket)        \
    X(aio_connect_uri) X(aio_disconnect) X(aio_flush) X(aio_get_direction) X(aio_get_fd)           \
    X(aio_in_flight) X(aio_is_closed) X(aio_is_connecting) X(aio_is_dead) X(aio_is_ready)          \
    X(aio_notify_read) X(aio_notify_write) X(aio_pread) X(aio_pwrite) X(aio_zero) X(can_flush)     \
    X(can_meta_context) X(can_zero) X(close) X(connect_systemd_socket_activation) X(create)        \
    X(get_block_size) X(get_errno) X(get_error) X(get_size) X(is_read_only)

struct vmai_libnbd {
#define VMAI_LIBNBD_MEMBER(name) __typeof__(nbd_##name) *name;
    VMAI_LIBNBD_FUNCTIONS(VMAI_LIBNBD_MEMBER)
#undef VMAI_LIBNBD_MEMBER
};

/* Filled by the first successful vmai_libnbd_load(); read-only after. */
extern struct vmai_libnbd vmai_libnbd;

/* Load libnbd.so.0 and resolve every function above, once per process
 * (thread-safe). Returns 0, or -1 with the reason in err (the library
 * missing or too old). Every code path calls it before nbd_create(). */
int vmai_libnbd_load(char *err, size_t errlen);

#ifndef VMAI_LIBNBD_LOADER
#define nbd_add_meta_context (*vmai_libnbd.add_meta_context)
#define nbd_aio_block_status (*vmai_libnbd.aio_block_status)
#define nbd_aio_command_completed (*vmai_libnbd.aio_command_completed)
#define nbd_aio_connect_socket (*vmai_libnbd.aio_connect_socket)
#define nbd_aio_connect_uri (*vmai_libnbd.aio_connect_uri)
#define nbd_aio_disconnect (*vmai_libnbd.aio_disconnect)
#define nbd_aio_flush (*vmai_libnbd.aio_flush)
#define nbd_aio_get_direction (*vmai_libnbd.aio_get_direction)
#define nbd_aio_get_fd (*vmai_libnbd.aio_get_fd)
#define nbd_aio_in_flight (*vmai_libnbd.aio_in_flight)
#define nbd_aio_is_closed (*vmai_libnbd.aio_is_closed)
#define nbd_aio_is_connecting (*vmai_libnbd.aio_is_connecting)
#define nbd_aio_is_dead (*vmai_libnbd.aio_is_dead)
#define nbd_aio_is_ready (*vmai_libnbd.aio_is_ready)
#define nbd_aio_notify_read (*vmai_libnbd.aio_notify_read)
#define nbd_aio_notify_write (*vmai_libnbd.aio_notify_write)
#define nbd_aio_pread (*vmai_libnbd.aio_pread)
#define nbd_aio_pwrite (*vmai_libnbd.aio_pwrite)
#define nbd_aio_zero (*vmai_libnbd.aio_zero)
#define nbd_can_flush (*vmai_libnbd.can_flush)
#define nbd_can_meta_context (*vmai_libnbd.can_meta_context)
#define nbd_can_zero (*vmai_libnbd.can_zero)
#define nbd_close (*vmai_libnbd.close)
#define nbd_connect_systemd_socket_activation (*vmai_libnbd.connect_systemd_socket_activation)
#define nbd_create (*vmai_libnbd.create)
#define nbd_get_block_size (*vmai_libnbd.get_block_size)
#define nbd_get_errno (*vmai_libnbd.get_errno)
#define nbd_get_error (*vmai_libnbd.get_error)
#define nbd_get_size (*vmai_libnbd.get_size)
#define nbd_is_read_only (*vmai_libnbd.is_read_only)
#endif

#endif
