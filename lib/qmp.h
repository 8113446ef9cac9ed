/*
 * A QMP client (QEMU's monitor protocol) and a QEMU guest agent client on
 * unix sockets: JSON lines, parsed with jansson. Every wait has a bound,
 * and with a cancel switch also ends when the switch is set. Internal to
 * libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_QMP_H
#define LIBVMA_QMP_H

#include <jansson.h>
#include <stdbool.h>

#include "io.h"

struct vmai_qmp;

/* Why a call failed: VMAI_QMP_IO (the connection: refused, closed, timed
 * out, cancelled, not QMP), VMAI_QMP_ERROR (QEMU answered with an error). */
enum { VMAI_QMP_OK = 0, VMAI_QMP_IO = -1, VMAI_QMP_ERROR = -2 };

/*
 * Connect to a QMP socket, wait for the greeting (up to timeout_ms: a
 * monitor serves one client at a time and greets the next one only when
 * the first has left) and negotiate capabilities. Returns VMAI_QMP_OK or
 * VMAI_QMP_IO with a message in err; *busy says the wait for the greeting
 * timed out (another client holds the monitor). cancel may be NULL.
 */
int vmai_qmp_connect(struct vmai_qmp **out, const char *path, int timeout_ms,
                     const struct vmai_cancel *cancel, char *err, bool *busy);

/* Connect to a guest agent socket and synchronize (guest-sync-delimited),
 * waiting up to timeout_ms for the agent. */
int vmai_qga_connect(struct vmai_qmp **out, const char *path, int timeout_ms,
                     const struct vmai_cancel *cancel, char *err);

/*
 * Run a command: args (may be NULL) is stolen. On VMAI_QMP_OK *ret (if
 * ret is not NULL) is the new reference to the "return" value; on failure
 * err says "<command>: <why>". Events that arrive meanwhile are dropped.
 * Waits up to the connection's timeout (vmai_qmp_set_timeout).
 */
int vmai_qmp_call(struct vmai_qmp *q, const char *command, json_t *args, json_t **ret,
                  char *err);

/* The bound of each later wait for an answer, in ms. */
void vmai_qmp_set_timeout(struct vmai_qmp *q, int timeout_ms);

/* The greeting's QEMU version as major * 10000 + minor * 100 + micro. */
unsigned vmai_qmp_version(const struct vmai_qmp *q);

/* Close and free; NULL is a no-op. */
void vmai_qmp_close(struct vmai_qmp *q);

#endif
