/*
 * Unit tests of the restore map line parser (cli/restore_map.c, compiled
 * into this test): every option and its value, options in any order, each
 * at most once, target paths that hold ':' and '=' (rbd:, nbd+unix://),
 * skip= lines, bad numbers and cache modes, missing device names and
 * paths, and restore_map_is_raw()'s rule. Each refusal is checked by its
 * whole message, which quotes the line.
 *
 * Usage: unit_restore_map
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "restore_map.h"
#include "vma.h"

/* Parse a line that must be accepted. */
static void parse_ok(const char *line, struct restore_map_entry *e)
{
    char *msg = NULL;

    if (restore_map_parse(line, e, &msg) != 0)
        fail_msg("refused '%s': %s", line, msg ? msg : "(no message)");
    assert_null(msg);
}

/* A line that must be refused with exactly "<what> ('<line>')", leaving
 * the entry empty. */
static void parse_fails(const char *line, const char *what)
{
    struct restore_map_entry e;
    char *msg = NULL, want[512];

    assert_int_equal(restore_map_parse(line, &e, &msg), -1);
    assert_non_null(msg);
    snprintf(want, sizeof want, "%s ('%s')", what, line);
    assert_string_equal(msg, want);
    assert_null(e.buf);
    assert_null(e.devname);
    free(msg);
}

static void plain_lines(void **state)
{
    struct restore_map_entry e;

    (void)state;
    parse_ok("0:drive-scsi0=/dev/pve/vm-100-disk-0", &e);
    assert_string_equal(e.devname, "drive-scsi0");
    assert_string_equal(e.path, "/dev/pve/vm-100-disk-0");
    assert_null(e.format);
    assert_null(e.group);
    assert_true(e.bps == 0);
    assert_int_equal(e.flags, 0);
    assert_int_equal(e.skip, 0);
    restore_map_entry_free(&e);
    assert_null(e.buf);
    assert_null(e.devname);

    parse_ok("1:drive-efidisk0=/tmp/efi.raw", &e);
    assert_string_equal(e.devname, "drive-efidisk0");
    assert_string_equal(e.path, "/tmp/efi.raw");
    assert_int_equal(e.flags, VMA_TARGET_WRITE_ZEROS);
    restore_map_entry_free(&e);
}

static void every_option(void **state)
{
    struct restore_map_entry e;

    (void)state;
    parse_ok("format=qcow2:throttling.bps=1048576:throttling.group=backup:cache=none:"
             "1:drive-scsi0=/var/lib/vz/images/100/vm-100-disk-0.qcow2", &e);
    assert_string_equal(e.format, "qcow2");
    assert_true(e.bps == 1048576);
    assert_string_equal(e.group, "backup");
    assert_int_equal(e.flags, VMA_TARGET_DIRECT | VMA_TARGET_WRITE_ZEROS);
    assert_string_equal(e.devname, "drive-scsi0");
    assert_string_equal(e.path, "/var/lib/vz/images/100/vm-100-disk-0.qcow2");
    restore_map_entry_free(&e);
}

/* The same options in another order give the same entry. */
static void any_order(void **state)
{
    static const char *const lines[] = {
        "cache=directsync:throttling.group=g:format=raw:throttling.bps=4096:0:d=/x",
        "throttling.bps=4096:cache=directsync:format=raw:throttling.group=g:0:d=/x",
        "format=raw:throttling.group=g:throttling.bps=4096:cache=directsync:0:d=/x",
    };
    struct restore_map_entry e;

    (void)state;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        parse_ok(lines[i], &e);
        assert_string_equal(e.format, "raw");
        assert_string_equal(e.group, "g");
        assert_true(e.bps == 4096);
        assert_int_equal(e.flags, VMA_TARGET_DIRECT | VMA_TARGET_SYNC);
        assert_string_equal(e.devname, "d");
        assert_string_equal(e.path, "/x");
        restore_map_entry_free(&e);
    }
}

static void cache_modes(void **state)
{
    static const struct {
        const char *mode;
        unsigned flags;
    } modes[] = {
        {"none", VMA_TARGET_DIRECT},
        {"directsync", VMA_TARGET_DIRECT | VMA_TARGET_SYNC},
        {"writethrough", VMA_TARGET_SYNC},
        {"writeback", 0},
        {"unsafe", 0},
    };
    struct restore_map_entry e;
    char line[128];

    (void)state;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        snprintf(line, sizeof line, "cache=%s:0:d=/x.raw", modes[i].mode);
        parse_ok(line, &e);
        assert_int_equal(e.flags, modes[i].flags);
        restore_map_entry_free(&e);
    }
    parse_fails("cache=bogus:0:d=/x", "invalid cache option: bogus");
    parse_fails("cache=:0:d=/x", "invalid cache option: ");
}

static void duplicates_refused(void **state)
{
    (void)state;
    parse_fails("format=raw:format=qcow2:0:d=/x", "duplicate value for option 'format'");
    parse_fails("throttling.bps=1:throttling.bps=1:0:d=/x",
                "duplicate value for option 'throttling.bps'");
    parse_fails("throttling.group=a:cache=none:throttling.group=b:0:d=/x",
                "duplicate value for option 'throttling.group'");
    parse_fails("cache=none:format=raw:cache=none:0:d=/x", "duplicate value for option 'cache'");
}

/* The device name ends at the first '='; the path runs to the end of the
 * line, ':' and '=' included. */
static void paths_with_colons(void **state)
{
    struct restore_map_entry e;

    (void)state;
    parse_ok("format=raw:0:drive-scsi0=rbd:pool/img:conf=/etc/ceph/ceph.conf:id=admin", &e);
    assert_string_equal(e.devname, "drive-scsi0");
    assert_string_equal(e.path, "rbd:pool/img:conf=/etc/ceph/ceph.conf:id=admin");
    assert_string_equal(e.format, "raw");
    restore_map_entry_free(&e);

    parse_ok("format=qcow2:1:drive-virtio0=nbd+unix:///?socket=/x", &e);
    assert_string_equal(e.devname, "drive-virtio0");
    assert_string_equal(e.path, "nbd+unix:///?socket=/x");
    restore_map_entry_free(&e);

    /* an option name later in the line is part of the path */
    parse_ok("0:d=/images/format=raw:cache=none", &e);
    assert_null(e.format);
    assert_int_equal(e.flags, 0);
    assert_string_equal(e.path, "/images/format=raw:cache=none");
    restore_map_entry_free(&e);
}

static void skip_lines(void **state)
{
    struct restore_map_entry e;

    (void)state;
    parse_ok("skip=drive-scsi1", &e);
    assert_int_equal(e.skip, 1);
    assert_string_equal(e.devname, "drive-scsi1");
    assert_null(e.path);
    assert_int_equal(restore_map_is_raw(&e), 0);
    restore_map_entry_free(&e);

    parse_fails("skip=", "option 'skip' has no value");
    parse_fails("skip", "option 'skip' has no value");
    parse_fails("skipped=d", "option 'skip' has no value");
}

static void numbers(void **state)
{
    struct restore_map_entry e;

    (void)state;
    parse_ok("throttling.bps=0x10:0:d=/x", &e); /* hex and octal, as QEMU takes them */
    assert_true(e.bps == 16);
    restore_map_entry_free(&e);
    parse_ok("throttling.bps=010:0:d=/x", &e);
    assert_true(e.bps == 8);
    restore_map_entry_free(&e);
    parse_ok("throttling.bps=18446744073709551615:0:d=/x", &e);
    assert_true(e.bps == UINT64_MAX);
    restore_map_entry_free(&e);

    parse_fails("throttling.bps=abc:0:d=/x", "not a number: abc");
    parse_fails("throttling.bps=-1:0:d=/x", "not a number: -1");
    parse_fails("throttling.bps= 5:0:d=/x", "not a number:  5");
    parse_fails("throttling.bps=12k:0:d=/x", "not a number: 12k");
    parse_fails("throttling.bps=:0:d=/x", "not a number: ");
    parse_fails("throttling.bps=18446744073709551616:0:d=/x",
                "not a number: 18446744073709551616");
    parse_fails("throttling.bps=09:0:d=/x", "not a number: 09");
}

static void missing_parts(void **state)
{
    (void)state;
    parse_fails("0:=/x", "no dev name specified");
    parse_fails("1:drive-scsi0", "no dev name specified");
    parse_fails("0:", "no dev name specified");
    parse_fails("0:d=", "no target path specified");
    parse_fails("format=raw", "option 'format' not terminated");
    parse_fails("throttling.group=g", "option 'throttling.group' not terminated");
    parse_fails("", "parse error");
    parse_fails("2:d=/x", "parse error");
    parse_fails("0d=/x", "parse error");
    parse_fails("format=raw:d=/x", "parse error");
    parse_fails("aio=native:0:d=/x", "parse error"); /* not an option we know */
}

static void is_raw(void **state)
{
    static const struct {
        const char *line;
        int raw;
    } cases[] = {
        {"format=raw:0:d=/x.qcow2", 1},
        {"format=qcow2:0:d=/x.raw", 0},
        {"0:d=/var/tmp/disk.raw", 1},
        {"0:d=/dev/pve/vm-100-disk-0", 1},
        {"0:d=/x.qcow2", 0},
        {"0:d=.raw", 0}, /* nothing before the suffix */
        {"0:d=rbd:pool/img", 0},
    };
    struct restore_map_entry e;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parse_ok(cases[i].line, &e);
        if (restore_map_is_raw(&e) != cases[i].raw)
            fail_msg("restore_map_is_raw('%s') is not %d", cases[i].line, cases[i].raw);
        restore_map_entry_free(&e);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_lines),
        cmocka_unit_test(every_option),
        cmocka_unit_test(any_order),
        cmocka_unit_test(cache_modes),
        cmocka_unit_test(duplicates_refused),
        cmocka_unit_test(paths_with_colons),
        cmocka_unit_test(skip_lines),
        cmocka_unit_test(numbers),
        cmocka_unit_test(missing_parts),
        cmocka_unit_test(is_raw),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
