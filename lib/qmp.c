/*
 * QMP and guest agent clients: one JSON object per line over a unix
 * socket. Waits poll(2) the socket together with the cancel switch and
 * end at a deadline. SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qmp.h"

#define LINE_MAX_BYTES ((size_t)64 << 20) /* query-named-block-nodes of 254 disks fits */

struct vmai_qmp {
    int fd;
    char *buf;             /* bytes read, not yet consumed */
    size_t len, cap;
    int timeout_ms;
    const struct vmai_cancel *cancel;
    bool agent;            /* a guest agent: no greeting, 0xff delimiters */
    unsigned version;
    long long next_id;
    char path[108];
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for `events` on the socket until the deadline: 0, or -1 with errno
 * ETIMEDOUT or ECANCELED. */
static int wait_fd(const struct vmai_qmp *q, short events, long long deadline)
{
    int cfd = q->cancel != NULL ? q->cancel->fd : -1;
    for (;;) {
        if (vmai_cancelled(q->cancel)) {
            errno = ECANCELED;
            return -1;
        }
        long long left = deadline - now_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p[2] = {{.fd = q->fd, .events = events}, {.fd = cfd, .events = POLLIN}};
        int n = poll(p, cfd >= 0 ? 2 : 1, left > 100 ? 100 : (int)left);
        if (n < 0 && errno != EINTR)
            return -1;
        if (n > 0 && p[0].revents != 0)
            return 0;
    }
}

static int send_all(struct vmai_qmp *q, const char *s, size_t len, long long deadline)
{
    while (len > 0) {
        ssize_t n = send(q->fd, s, len, MSG_NOSIGNAL);
        if (n > 0) {
            s += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        if (wait_fd(q, POLLOUT, deadline) != 0)
            return -1;
    }
    return 0;
}

/* The next line (NUL-terminated in place, without the newline), valid
 * until the next read: 0, or -1 with errno (ECONNRESET at end of stream). */
static int read_line(struct vmai_qmp *q, long long deadline, char **line, size_t *line_len)
{
    for (;;) {
        char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
        if (nl != NULL) {
            *nl = '\0';
            *line = q->buf;
            *line_len = (size_t)(nl - q->buf);
            return 0;
        }
        if (q->len == q->cap) {
            if (q->cap >= LINE_MAX_BYTES) {
                errno = EMSGSIZE;
                return -1;
            }
            size_t cap = q->cap ? 2 * q->cap : 65536;
            char *b = realloc(q->buf, cap);
            if (b == NULL)
                return -1;
            q->buf = b;
            q->cap = cap;
        }
        ssize_t n = recv(q->fd, q->buf + q->len, q->cap - q->len, 0);
        if (n > 0) {
            q->len += (size_t)n;
            continue;
        }
        if (n == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (errno != EAGAIN && errno != EINTR)
            return -1;
        if (wait_fd(q, POLLIN, deadline) != 0)
            return -1;
    }
}

/* Drop the line read_line() returned. */
static void consume_line(struct vmai_qmp *q, size_t line_len)
{
    size_t used = line_len + 1;
    memmove(q->buf, q->buf + used, q->len - used);
    q->len -= used;
}

/* The next JSON object (an agent's 0xff delimiters skipped); NULL with
 * errno, EPROTO for a line that is not a JSON object. */
static json_t *read_object(struct vmai_qmp *q, long long deadline)
{
    for (;;) {
        char *line;
        size_t len;
        if (read_line(q, deadline, &line, &len) != 0)
            return NULL;
        char *start = line;
        while (start < line + len && ((unsigned char)*start == 0xff || *start == ' ' ||
                                      *start == '\r' || *start == '\t'))
            start++;
        if (start == line + len) {
            consume_line(q, len);
            continue;
        }
        json_t *obj = json_loadb(start, (size_t)(line + len - start), 0, NULL);
        consume_line(q, len);
        if (obj == NULL || !json_is_object(obj)) {
            json_decref(obj);
            errno = EPROTO;
            return NULL;
        }
        return obj;
    }
}

static const char *io_why(int e)
{
    switch (e) {
    case ETIMEDOUT: return "no answer in time";
    case ECANCELED: return "cancelled";
    case ECONNRESET: return "connection closed";
    case EPROTO: return "not a JSON answer";
    default: return strerror(e);
    }
}

static int open_socket(struct vmai_qmp *q, const char *path, long long deadline, char *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        vmai_errorf(err, "socket path %s is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    snprintf(q->path, sizeof(q->path), "%s", path);
    q->fd = vmai_fd_above_std(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (q->fd < 0) {
        vmai_errorf(err, "%s: socket: %s", path, strerror(errno));
        return -1;
    }
    /* A unix socket's connect() does not wait: EAGAIN says the listen
     * backlog is full, so try again until the deadline. */
    for (;;) {
        if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return 0;
        if (errno == EAGAIN && now_ms() < deadline &&
            vmai_cancel_sleep(q->cancel, 10000000) == 0)
            continue;
        if (errno != EINTR) {
            vmai_errorf(err, "cannot connect to %s: %s", path,
                        errno == ECONNREFUSED ? "nothing listens there (is QEMU running?)"
                        : errno == EAGAIN     ? "its listen queue stayed full"
                                              : strerror(errno));
            return -1;
        }
    }
}

static struct vmai_qmp *qmp_new(int timeout_ms, const struct vmai_cancel *cancel)
{
    struct vmai_qmp *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->fd = -1;
    q->timeout_ms = timeout_ms;
    q->cancel = cancel;
    q->next_id = 1;
    return q;
}

int vmai_qmp_connect(struct vmai_qmp **out, const char *path, int timeout_ms,
                     const struct vmai_cancel *cancel, char *err, bool *busy)
{
    *out = NULL;
    *busy = false;
    struct vmai_qmp *q = qmp_new(timeout_ms, cancel);
    if (q == NULL) {
        vmai_errorf(err, "out of memory");
        return VMAI_QMP_IO;
    }
    long long deadline = now_ms() + timeout_ms;
    if (open_socket(q, path, deadline, err) != 0) {
        vmai_qmp_close(q);
        return VMAI_QMP_IO;
    }
    json_t *g = read_object(q, deadline);
    if (g == NULL) {
        int e = errno;
        if (e == ETIMEDOUT) {
            *busy = true;
            vmai_errorf(err, "%s: no QMP greeting within %d s: another client holds the "
                        "monitor (QMP serves one at a time), or it is not a QMP socket",
                        path, timeout_ms / 1000);
        } else if (e == EPROTO || e == EMSGSIZE) {
            vmai_errorf(err, "%s is not a QMP socket (its greeting is not QMP's)", path);
        } else {
            vmai_errorf(err, "%s: %s", path, io_why(e));
        }
        vmai_qmp_close(q);
        return VMAI_QMP_IO;
    }
    json_t *v = json_object_get(json_object_get(g, "QMP"), "version");
    json_t *qv = json_object_get(v, "qemu");
    if (!json_is_object(qv)) {
        json_decref(g);
        vmai_errorf(err, "%s is not a QMP socket (its greeting is not QMP's)", path);
        vmai_qmp_close(q);
        return VMAI_QMP_IO;
    }
    q->version = (unsigned)(json_integer_value(json_object_get(qv, "major")) * 10000 +
                            json_integer_value(json_object_get(qv, "minor")) * 100 +
                            json_integer_value(json_object_get(qv, "micro")));
    json_decref(g);
    if (vmai_qmp_call(q, "qmp_capabilities", NULL, NULL, err) != VMAI_QMP_OK) {
        vmai_qmp_close(q);
        return VMAI_QMP_IO;
    }
    *out = q;
    return VMAI_QMP_OK;
}

int vmai_qga_connect(struct vmai_qmp **out, const char *path, int timeout_ms,
                     const struct vmai_cancel *cancel, char *err)
{
    *out = NULL;
    struct vmai_qmp *q = qmp_new(timeout_ms, cancel);
    if (q == NULL) {
        vmai_errorf(err, "out of memory");
        return VMAI_QMP_IO;
    }
    q->agent = true;
    long long deadline = now_ms() + timeout_ms;
    if (open_socket(q, path, deadline, err) != 0) {
        vmai_qmp_close(q);
        return VMAI_QMP_IO;
    }
    /* A token the agent echoes, so that answers an earlier client left
     * unread are skipped; 0xff first resets the agent's parser. */
    long long token = (long long)(now_ms() % 1000000000) * 1000 + (getpid() % 1000);
    char msg[128];
    int n = snprintf(msg, sizeof(msg),
                     "\xff{\"execute\": \"guest-sync-delimited\", \"arguments\": {\"id\": %lld}}\n",
                     token);
    if (send_all(q, msg, (size_t)n, deadline) != 0) {
        vmai_errorf(err, "guest agent %s: %s", path, io_why(errno));
        vmai_qmp_close(q);
        return VMAI_QMP_IO;
    }
    for (;;) {
        json_t *r = read_object(q, deadline);
        if (r == NULL && errno == EPROTO)
            continue; /* a half line an earlier client left */
        if (r == NULL) {
            vmai_errorf(err, "guest agent %s: %s", path,
                        errno == ETIMEDOUT ? "no answer in time (is the agent running in the "
                                             "guest?)"
                                           : io_why(errno));
            vmai_qmp_close(q);
            return VMAI_QMP_IO;
        }
        json_t *ret = json_object_get(r, "return");
        bool match = json_is_integer(ret) && json_integer_value(ret) == token;
        json_decref(r);
        if (match)
            break;
    }
    *out = q;
    return VMAI_QMP_OK;
}

int vmai_qmp_call(struct vmai_qmp *q, const char *command, json_t *args, json_t **ret,
                  char *err)
{
    if (ret != NULL)
        *ret = NULL;
    long long id = q->next_id++;
    json_t *msg = json_pack("{s:s}", "execute", command);
    if (msg != NULL && args != NULL)
        json_object_set(msg, "arguments", args);
    if (msg != NULL && !q->agent)
        json_object_set_new(msg, "id", json_integer(id));
    json_decref(args);
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (text == NULL) {
        vmai_errorf(err, "%s: out of memory", command);
        return VMAI_QMP_IO;
    }
    long long deadline = now_ms() + q->timeout_ms;
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps' NUL becomes the line end */
    int rc = send_all(q, text, len + 1, deadline);
    free(text);
    if (rc != 0) {
        vmai_errorf(err, "%s: %s", command, io_why(errno));
        return VMAI_QMP_IO;
    }
    for (;;) {
        json_t *r = read_object(q, deadline);
        if (r == NULL) {
            vmai_errorf(err, "%s: %s", command, io_why(errno));
            return VMAI_QMP_IO;
        }
        if (json_object_get(r, "event") != NULL ||
            (!q->agent && json_integer_value(json_object_get(r, "id")) != id)) {
            json_decref(r);
            continue;
        }
        json_t *e = json_object_get(r, "error");
        if (e != NULL) {
            const char *desc = json_string_value(json_object_get(e, "desc"));
            vmai_errorf(err, "%s: %s", command, desc ? desc : "error");
            json_decref(r);
            return VMAI_QMP_ERROR;
        }
        if (ret != NULL) {
            *ret = json_object_get(r, "return");
            json_incref(*ret);
        }
        json_decref(r);
        return VMAI_QMP_OK;
    }
}

void vmai_qmp_set_timeout(struct vmai_qmp *q, int timeout_ms) { q->timeout_ms = timeout_ms; }

unsigned vmai_qmp_version(const struct vmai_qmp *q) { return q->version; }

void vmai_qmp_close(struct vmai_qmp *q)
{
    if (q == NULL)
        return;
    if (q->fd >= 0)
        close(q->fd);
    free(q->buf);
    free(q);
}
