/*
 * JSON output (see json.h).
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

void jw_init(struct json *j, FILE *f)
{
    memset(j, 0, sizeof *j);
    j->f = f;
}

/* Before a value or a key: the comma after the previous item. */
static void item(struct json *j)
{
    if (j->after_key) {
        j->after_key = 0;
        return;
    }
    if (j->has_items[j->depth])
        fputs(", ", j->f);
    j->has_items[j->depth] = 1;
}

static void open_(struct json *j, char c)
{
    item(j);
    fputc(c, j->f);
    /* Nesting is fixed by the commands; deeper levels share the last slot. */
    if (j->depth + 1 < JSON_MAX_DEPTH)
        j->depth++;
    j->has_items[j->depth] = 0;
}

static void close_(struct json *j, char c)
{
    if (j->depth > 0)
        j->depth--;
    fputc(c, j->f);
    if (j->depth == 0)
        fputc('\n', j->f);
}

void jw_begin_object(struct json *j) { open_(j, '{'); }
void jw_end_object(struct json *j) { close_(j, '}'); }
void jw_begin_array(struct json *j) { open_(j, '['); }
void jw_end_array(struct json *j) { close_(j, ']'); }

void jw_key(struct json *j, const char *key)
{
    item(j);
    jw_string_len(j, key, strlen(key));
    fputs(": ", j->f);
    j->after_key = 1;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if it is not one:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    size_t n, i;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (avail < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

void jw_string_len(struct json *j, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    fputc('"', j->f);
    while (i < len) {
        size_t n = utf8_len(s + i, len - i);

        if (n == 0) {
            fputs("\xef\xbf\xbd", j->f); /* U+FFFD for one bad byte */
            i++;
        } else if (n > 1) {
            fwrite(s + i, 1, n, j->f);
            i += n;
        } else {
            if (s[i] == '"' || s[i] == '\\')
                fprintf(j->f, "\\%c", s[i]);
            else if (s[i] < 0x20 || s[i] == 0x7f)
                fprintf(j->f, "\\u%04x", s[i]);
            else
                fputc(s[i], j->f);
            i++;
        }
    }
    fputc('"', j->f);
}

void jw_string(struct json *j, const char *s)
{
    item(j);
    jw_string_len(j, s ? s : "", s ? strlen(s) : 0);
}

void jw_uint(struct json *j, uint64_t v)
{
    item(j);
    fprintf(j->f, "%llu", (unsigned long long)v);
}

void jw_int(struct json *j, int64_t v)
{
    item(j);
    fprintf(j->f, "%lld", (long long)v);
}

void jw_bool(struct json *j, int v)
{
    item(j);
    fputs(v ? "true" : "false", j->f);
}

void jw_null(struct json *j)
{
    item(j);
    fputs("null", j->f);
}

void jw_double(struct json *j, double v)
{
    item(j);
    if (!isfinite(v))
        v = 0; /* JSON has no NaN or infinity; callers never divide by 0 */
    fprintf(j->f, "%.6g", v);
}

/* --- the JSON mode of the command --- */

static int json_mode, json_printed;
static char *json_error_msg;

int cli_output_format(const char *arg)
{
    if (!strcmp(arg, "json"))
        json_mode = 1;
    else if (!strcmp(arg, "text"))
        json_mode = 0;
    else
        return -1;
    return 0;
}

int cli_json(void)
{
    return json_mode;
}

void cli_json_mark_printed(void)
{
    json_printed = 1;
}

void cli_json_error(const char *fixed, const char *fmt, va_list ap)
{
    char *msg = NULL;

    if (!json_mode || json_error_msg) /* the first failure is the cause */
        return;
    if (fixed)
        msg = strdup(fixed);
    else if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    json_error_msg = msg;
}

int cli_json_finish(int rc)
{
    struct json j;

    if (json_mode && rc != CLI_OK && !json_printed) {
        jw_init(&j, stdout);
        jw_begin_object(&j);
        jw_key(&j, "error");
        jw_string(&j, json_error_msg ? json_error_msg
                        : rc == CLI_USAGE ? "usage error" : "failed");
        jw_key(&j, "exit");
        jw_int(&j, rc);
        jw_end_object(&j);
        fflush(stdout);
    }
    free(json_error_msg);
    json_error_msg = NULL;
    return rc;
}
