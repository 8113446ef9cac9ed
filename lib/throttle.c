/* Bandwidth budgets of restore targets (see throttle.h).
 * SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "throttle.h"

struct vmai_throttle *vmai_throttle_get(struct vmai_throttle **list, const char *group,
                                        uint64_t bps)
{
    struct vmai_throttle *t = NULL;
    /* Only a group is looked up; a private limit always gets its own. */
    if (group != NULL)
        for (t = *list; t != NULL; t = t->next)
            if (t->group != NULL && strcmp(t->group, group) == 0)
                break;
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL || (group != NULL && (t->group = strdup(group)) == NULL)) {
            free(t);
            return NULL;
        }
        t->next = *list;
        *list = t;
    }
    if (bps != 0 || t->bps == 0)
        t->bps = bps;
    return t;
}

static uint64_t real_now_ns(void *opaque)
{
    (void)opaque;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int real_sleep_ns(void *opaque, const struct vmai_cancel *c, uint64_t ns)
{
    (void)opaque;
    return vmai_cancel_sleep(c, ns);
}

static const struct vmai_clock real_clock = {real_now_ns, real_sleep_ns, NULL};

int vmai_throttle_wait(struct vmai_throttle *t, uint64_t bytes, const struct vmai_clock *clk,
                       const struct vmai_cancel *c)
{
    if (t == NULL || t->bps == 0)
        return 0;
    if (clk == NULL)
        clk = &real_clock;
    uint64_t now = clk->now_ns(clk->opaque);
    if (!t->started) {
        t->start_ns = now;
        t->started = 1;
    }
    t->bytes += bytes;
    /* t->bytes are allowed at start + bytes / bps (long double: no
     * overflow of bytes * 1e9). */
    long double due = (long double)t->bytes * 1e9L / (long double)t->bps;
    uint64_t elapsed = now - t->start_ns;
    if (due <= (long double)elapsed)
        return 0;
    long double wait = due - (long double)elapsed;
    return clk->sleep_ns(clk->opaque, c, wait > 1e18L ? (uint64_t)1e18 : (uint64_t)wait);
}

void vmai_throttle_free_all(struct vmai_throttle **list)
{
    while (*list != NULL) {
        struct vmai_throttle *t = *list;
        *list = t->next;
        free(t->group);
        free(t);
    }
}
