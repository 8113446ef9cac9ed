/*
 * The progress bar (see progress_bar.h). One bar per process: the
 * commands run one long operation each.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "progress_bar.h"

static struct {
    int mode;
    int active;
    uint64_t total, done;
    double start, last_draw;
} bar;

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void progress_bar_mode(int mode)
{
    bar.mode = mode;
}

void progress_bar_start(uint64_t total)
{
    if (total == 0 || bar.mode == PROGRESS_BAR_OFF || (bar.mode == PROGRESS_BAR_AUTO && !isatty(STDERR_FILENO)))
        return;
    bar.active = 1;
    bar.total = total;
    bar.done = 0;
    bar.start = now();
    bar.last_draw = 0;
}

/* "512 B", "3.5 MiB" */
static void human(char *out, size_t len, double v)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    unsigned u = 0;

    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0])
        v /= 1024, u++;
    snprintf(out, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static void draw(double t)
{
    double elapsed = t - bar.start, rate = elapsed > 0 ? (double)bar.done / elapsed : 0;
    double pct = bar.total ? 100.0 * (double)bar.done / (double)bar.total : 100.0;
    char done[32], total[32], speed[32], eta[32];

    if (pct > 100)
        pct = 100;
    human(done, sizeof done, (double)bar.done);
    human(total, sizeof total, (double)bar.total);
    human(speed, sizeof speed, rate);
    if (bar.done >= bar.total) {
        snprintf(eta, sizeof eta, "in %u:%02u:%02u", (unsigned)elapsed / 3600,
                 (unsigned)elapsed / 60 % 60, (unsigned)elapsed % 60);
    } else if (rate > 0 && elapsed >= 0.5) {
        double left = (double)(bar.total - bar.done) / rate;

        if (left > 359999) /* 99:59:59 */
            left = 359999;
        snprintf(eta, sizeof eta, "ETA %u:%02u:%02u", (unsigned)left / 3600,
                 (unsigned)left / 60 % 60, (unsigned)left % 60);
    } else {
        snprintf(eta, sizeof eta, "ETA --:--:--");
    }
    /* \r back to the line's start, \033[K erases what a longer line left. */
    fprintf(stderr, "\r%5.1f%% %s / %s  %s/s  %s\033[K", pct, done, total, speed, eta);
    fflush(stderr);
    bar.last_draw = t;
}

void progress_bar_update(uint64_t done)
{
    double t;

    if (!bar.active)
        return;
    bar.done = done;
    if (done >= bar.total) {
        progress_bar_end();
        return;
    }
    t = now();
    if (t - bar.last_draw >= 0.1)
        draw(t);
}

void progress_bar_clear(void)
{
    if (!bar.active || bar.last_draw == 0)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    bar.last_draw = 0; /* drawn again at the next update */
}

void progress_bar_end(void)
{
    if (!bar.active)
        return;
    draw(now());
    fputc('\n', stderr);
    fflush(stderr);
    bar.active = 0;
}
