/*
 * A small JSON writer for --output-format=json, and the JSON mode of the
 * command: documents go to stdout only when a command succeeds; on any
 * failure main() prints {"error": "<message>", "exit": <status>} instead,
 * so stdout is one valid JSON document on every path.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_JSON_H
#define VMA_CLI_JSON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 16

/* A writer on one stream; commas and nesting are tracked here. Named jw_:
 * json_* belongs to jansson, which the library links (an executable's
 * json_string would take the place of jansson's in the library). */
struct json {
    FILE *f;
    int depth;
    unsigned char has_items[JSON_MAX_DEPTH]; /* a value was written at this level */
    int after_key;
};

void jw_init(struct json *j, FILE *f);
void jw_begin_object(struct json *j);
void jw_end_object(struct json *j);
void jw_begin_array(struct json *j);
void jw_end_array(struct json *j);
/* The key of the next value inside an object. */
void jw_key(struct json *j, const char *key);
/* A string: '"' and '\' escaped, control characters as \u00XX, bytes that
 * are not valid UTF-8 replaced by U+FFFD (JSON text must be UTF-8). */
void jw_string(struct json *j, const char *s);
void jw_string_len(struct json *j, const char *s, size_t len);
void jw_uint(struct json *j, uint64_t v);
void jw_int(struct json *j, int64_t v);
void jw_bool(struct json *j, int v);
void jw_null(struct json *j);
/* A finite number with up to 6 significant digits after the point. */
void jw_double(struct json *j, double v);

/* --output-format=<arg>: "json" turns the JSON mode on, "text" off.
 * Returns 0, or -1 for another value. */
int cli_output_format(const char *arg);

/* 1 when --output-format=json was given. */
int cli_json(void);

/* The command's whole document is out (main() then prints no error
 * object); cli_json_printed() in util.c flushes it first. */
void cli_json_mark_printed(void);

/* Remember the message of a failure for the error object (cli_fail()
 * calls it); `fixed`, when not NULL, is used instead of the format. */
void cli_json_error(const char *fixed, const char *fmt, va_list ap);

/* At the end of main(): in JSON mode, after a failure that printed no
 * document, print the error object on stdout. Returns rc. */
int cli_json_finish(int rc);

#endif
