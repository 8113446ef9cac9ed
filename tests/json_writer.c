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

    json_init(&j, stdout);
    json_begin_object(&j);
    json_key(&j, "strings");
    json_begin_array(&j);
    for (int i = 1; i < argc; i++)
        json_string(&j, argv[i]);
    json_end_array(&j);
    json_key(&j, "numbers");
    json_begin_array(&j);
    json_uint(&j, 0);
    json_uint(&j, UINT64_MAX);
    json_int(&j, -1);
    json_double(&j, 0.25);
    json_end_array(&j);
    json_key(&j, "empty");
    json_begin_object(&j);
    json_end_object(&j);
    json_key(&j, "nested");
    json_begin_array(&j);
    json_begin_array(&j);
    json_end_array(&j);
    json_begin_array(&j);
    json_begin_object(&j);
    json_end_object(&j);
    json_end_array(&j);
    json_end_array(&j);
    json_end_object(&j);
    return cli_flush_stdout();
}
