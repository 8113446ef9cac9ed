/*
 * json_writer: cli/json.c's writer on strings from the command line, for
 * tests/cli/json.sh to parse with jq: prints
 * {"strings": [<argv[1]>, ...], "numbers": [0, 18446744073709551615, -1, 0.25], "empty": {}, "nested": [[], [{}]]}
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "cli.h"
#include "json.h"

/* json.c's mode functions call this (util.c is not linked here). */
int cli_flush_stdout(void)
{
    return fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
}

int main(int argc, char **argv)
{
    struct json j;

    jw_init(&j, stdout);
    jw_begin_object(&j);
    jw_key(&j, "strings");
    jw_begin_array(&j);
    for (int i = 1; i < argc; i++)
        jw_string(&j, argv[i]);
    jw_end_array(&j);
    jw_key(&j, "numbers");
    jw_begin_array(&j);
    jw_uint(&j, 0);
    jw_uint(&j, UINT64_MAX);
    jw_int(&j, -1);
    jw_double(&j, 0.25);
    jw_end_array(&j);
    jw_key(&j, "empty");
    jw_begin_object(&j);
    jw_end_object(&j);
    jw_key(&j, "nested");
    jw_begin_array(&j);
    jw_begin_array(&j);
    jw_end_array(&j);
    jw_begin_array(&j);
    jw_begin_object(&j);
    jw_end_object(&j);
    jw_end_array(&j);
    jw_end_array(&j);
    jw_end_object(&j);
    return cli_flush_stdout();
}
