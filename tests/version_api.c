/*
 * The version, three ways that must agree: meson.build's project version
 * (argv[1]), the header's VMA_VERSION_* macros, and what the loaded shared
 * library says (vma_version(), vma_version_number()). Linked against the
 * shared library, so it also proves that a program using only vma.h links
 * against the exported symbols alone.
 *
 * Usage: version_api <meson-project-version>
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "vma.h"

static const char *g_project_version;

static void header_macros_match_meson(void **state)
{
    char buf[64];

    (void)state;
    snprintf(buf, sizeof buf, "%d.%d.%d", VMA_VERSION_MAJOR, VMA_VERSION_MINOR,
             VMA_VERSION_PATCH);
    assert_string_equal(buf, g_project_version);
    assert_string_equal(VMA_VERSION_STRING, g_project_version);
    assert_int_equal(VMA_VERSION_NUMBER, VMA_VERSION_MAJOR * 10000 +
                     VMA_VERSION_MINOR * 100 + VMA_VERSION_PATCH);
    /* The number must order like the version: minor and patch < 100. */
    assert_true(VMA_VERSION_MINOR < 100 && VMA_VERSION_PATCH < 100);
}

static void library_matches_header(void **state)
{
    (void)state;
    assert_string_equal(vma_version(), VMA_VERSION_STRING);
    assert_int_equal(vma_version_number(), VMA_VERSION_NUMBER);
    /* A static string: the same pointer each time. */
    assert_ptr_equal(vma_version(), vma_version());
}

/* Some of the rest of the API through the shared library: an exported
 * function with a result to check, and a handle's life cycle. */
static void exported_api_works(void **state)
{
    vma_reader *r = vma_reader_new();

    (void)state;
    assert_string_equal(vma_status_name(VMA_ERR_CORRUPT), "VMA_ERR_CORRUPT");
    assert_int_equal(vma_name_is_valid(".."), 0);
    assert_non_null(r);
    assert_int_equal(vma_reader_open_path(r, "/nonexistent/x.vma"), VMA_ERR_IO);
    assert_non_null(strstr(vma_reader_error(r), "/nonexistent/x.vma"));
    vma_reader_free(r);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_macros_match_meson),
        cmocka_unit_test(library_matches_header),
        cmocka_unit_test(exported_api_works),
    };

    if (argc != 2) {
        fprintf(stderr, "usage: %s <meson-project-version>\n", argv[0]);
        return 2;
    }
    g_project_version = argv[1];
    return cmocka_run_group_tests(tests, NULL, NULL);
}
