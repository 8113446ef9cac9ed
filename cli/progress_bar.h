/*
 * The live progress bar: one line on stderr, redrawn in place (percent,
 * bytes, rate, ETA), as `qemu-img convert -p` shows. On by default when
 * stderr is a terminal; -p/--progress forces it, --no-progress turns it
 * off. Separate from the -v lines, which stay as they are.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_PROGRESS_BAR_H
#define VMA_CLI_PROGRESS_BAR_H

#include <stdint.h>

enum { PROGRESS_BAR_AUTO, PROGRESS_BAR_ON, PROGRESS_BAR_OFF };

/* From the options: -p gives ON, --no-progress OFF. */
void progress_bar_mode(int mode);

/* Start a bar for `total` bytes (not for 0) if the mode (and for AUTO a
 * terminal on stderr) wants one. */
void progress_bar_start(uint64_t total);

/* `done` bytes so far: redrawn at most ten times a second; the bar ends
 * (final state and a newline) when done reaches the total. */
void progress_bar_update(uint64_t done);

/* Erase the bar before another line goes to the terminal; the next
 * update draws it again. */
void progress_bar_clear(void);

/* End the bar: its last state stays, followed by a newline. Does nothing
 * when no bar is shown. */
void progress_bar_end(void);

#endif
