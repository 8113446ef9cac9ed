/*
 * The standard error of an exec: command, read by the library: its lines
 * go through to our standard error as they come, except the last one,
 * which is held until the command has ended. The caller then either lets
 * it through too (the command succeeded) or folds it into its one-line
 * message (the command failed), so that a failing command does not add a
 * second line of its own. Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_CHILDERR_H
#define LIBVMA_CHILDERR_H

#include <stdbool.h>
#include <stddef.h>

#define VMAI_CHILDERR_LINE 200 /* bytes of the held line kept for a message */

struct vmai_childerr;

/* Make the pipe and start the thread that reads it. *child_fd is the
 * write end, for the command's descriptor 2; close it once the command
 * is started (vmai_childerr_spawned). Returns 0, or -1 with errno. */
int vmai_childerr_start(struct vmai_childerr **out, int *child_fd);

/* The command is started (or failed to start): drop our copy of its end. */
void vmai_childerr_spawned(struct vmai_childerr *c);

/* After the command has ended: read what it left in the pipe, stop the
 * thread (descendants that keep the pipe open are not waited for), and
 * write the held line through when pass_last. Returns the held line,
 * escaped (control characters as \xNN) and bounded; "" when none. Valid
 * until vmai_childerr_free(). */
const char *vmai_childerr_finish(struct vmai_childerr *c, bool pass_last);

/* Stops the thread if still running (lets the held line through). NULL is
 * a no-op. */
void vmai_childerr_free(struct vmai_childerr *c);

#endif
