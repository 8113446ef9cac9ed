/*
 * The standard error of an exec: command: passed through line by line,
 * the last line held back for the caller (see childerr.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "childerr.h"
#include "io.h"

#define LINE_MAX_HELD 4096u /* a longer line goes through in pieces */

struct vmai_childerr {
    int rfd, wfd;
    struct vmai_cancel stop;
    pthread_t thread;
    bool running;
    char line[LINE_MAX_HELD];  /* the line being read */
    size_t len;
    char held[LINE_MAX_HELD];  /* the last whole line, not yet passed on */
    size_t held_len;
    bool have_held;
    char msg[VMAI_CHILDERR_LINE * 4 + 8];
};

static void emit(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* our stderr is gone: the command's lines with it */
        p += w;
        n -= (size_t)w;
    }
}

/* The line read so far is whole: pass on the held one, hold this one. */
static void line_done(struct vmai_childerr *c)
{
    if (c->have_held) {
        emit(c->held, c->held_len);
        emit("\n", 1);
    }
    memcpy(c->held, c->line, c->len);
    c->held_len = c->len;
    c->have_held = true;
    c->len = 0;
}

static void feed(struct vmai_childerr *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            line_done(c);
            continue;
        }
        if (c->len == sizeof(c->line)) { /* too long to hold: let it through */
            if (c->have_held) {
                emit(c->held, c->held_len);
                emit("\n", 1);
                c->have_held = false;
            }
            emit(c->line, c->len);
            c->len = 0;
        }
        c->line[c->len++] = p[i];
    }
}

static void *reader(void *arg)
{
    struct vmai_childerr *c = arg;
    char buf[4096];
    for (;;) {
        ssize_t n;
        while ((n = read(c->rfd, buf, sizeof(buf))) > 0)
            feed(c, buf, (size_t)n);
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            break; /* every writer is gone */
        if (vmai_cancelled(&c->stop))
            break; /* the command ended and its bytes are read */
        struct pollfd pf[2] = {{c->rfd, POLLIN, 0}, {c->stop.fd, POLLIN, 0}};
        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            break;
    }
    if (c->len > 0)
        line_done(c); /* a last line without its newline */
    return NULL;
}

int vmai_childerr_start(struct vmai_childerr **out, int *child_fd)
{
    struct vmai_childerr *c = calloc(1, sizeof(*c));
    *out = c;
    if (c == NULL)
        return -1;
    c->rfd = c->wfd = -1;
    c->stop.fd = -1;
    int p[2];
    if (vmai_cancel_open(&c->stop) != 0 || pipe2(p, O_CLOEXEC) != 0)
        return -1;
    c->rfd = p[0];
    c->wfd = p[1];
    /* Only our end waits in poll(2); the command's writes block as usual. */
    if (fcntl(c->rfd, F_SETFL, O_NONBLOCK) != 0 || vmai_thread_start(&c->thread, reader, c) != 0)
        return -1;
    c->running = true;
    *child_fd = c->wfd;
    return 0;
}

void vmai_childerr_spawned(struct vmai_childerr *c)
{
    if (c->wfd >= 0)
        close(c->wfd);
    c->wfd = -1;
}

const char *vmai_childerr_finish(struct vmai_childerr *c, bool pass_last)
{
    if (c->running) {
        vmai_cancel_fire(&c->stop);
        pthread_join(c->thread, NULL);
        c->running = false;
    }
    if (!c->have_held)
        return "";
    size_t n = c->held_len;
    if (n > 0 && c->held[n - 1] == '\r')
        n--;
    if (pass_last) {
        emit(c->held, c->held_len);
        emit("\n", 1);
        c->have_held = false;
    }
    /* Escaped: what a command prints must not reach a terminal as
     * control sequences inside our message. */
    size_t o = 0;
    for (size_t i = 0; i < n && i < VMAI_CHILDERR_LINE; i++) {
        unsigned char ch = (unsigned char)c->held[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\')
            c->msg[o++] = (char)ch;
        else
            o += (size_t)snprintf(c->msg + o, sizeof(c->msg) - o, ch == '\\' ? "\\\\" : "\\x%02x",
                                  ch);
    }
    if (n > VMAI_CHILDERR_LINE)
        o += (size_t)snprintf(c->msg + o, sizeof(c->msg) - o, "...");
    c->msg[o] = '\0';
    return c->msg;
}

void vmai_childerr_free(struct vmai_childerr *c)
{
    if (c == NULL)
        return;
    if (c->running)
        vmai_childerr_finish(c, true);
    if (c->rfd >= 0)
        close(c->rfd);
    if (c->wfd >= 0)
        close(c->wfd);
    if (c->stop.fd >= 0)
        vmai_cancel_close(&c->stop);
    free(c);
}
