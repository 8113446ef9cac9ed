/*
 * Bandwidth limits of restore targets: a budget of bytes per second,
 * private to one device or shared by a named group, whose waits a cancel
 * cuts short. The clock is a parameter so that tests can count the waits
 * on a fake one. Internal to libvma. SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_THROTTLE_H
#define LIBVMA_THROTTLE_H

#include <stdint.h>

#include "io.h"

/* Where a throttle reads the time and waits; NULL means the real
 * CLOCK_MONOTONIC and vmai_cancel_sleep(). */
struct vmai_clock {
    uint64_t (*now_ns)(void *opaque);
    /* Wait ns nanoseconds or until c is set: 0, or -1 with errno. */
    int (*sleep_ns)(void *opaque, const struct vmai_cancel *c, uint64_t ns);
    void *opaque;
};

/* Bandwidth budget: bytes allowed since the first write, at bps. */
struct vmai_throttle {
    struct vmai_throttle *next;
    char *group;            /* NULL: private to one device */
    uint64_t bps;           /* 0: no limit */
    uint64_t bytes;         /* accounted since start */
    uint64_t start_ns;
    int started;
};

/*
 * The throttle a device with this limit uses, added to *list: a new
 * private one when group is NULL, else the group's (made on first use).
 * A group keeps its rate when bps is 0. NULL when out of memory.
 */
struct vmai_throttle *vmai_throttle_get(struct vmai_throttle **list, const char *group,
                                        uint64_t bps);

/* Account bytes and wait until they are within the budget. Returns 0, or
 * -1 with errno ECANCELED once c is set (at once, also mid-wait). */
int vmai_throttle_wait(struct vmai_throttle *t, uint64_t bytes, const struct vmai_clock *clk,
                       const struct vmai_cancel *c);

void vmai_throttle_free_all(struct vmai_throttle **list);

#endif
