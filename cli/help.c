/*
 * `vma <command> --help` and `vma help <command>`: one command's usage.
 * The whole list (cli_usage() on a usage error, `vma --help`) keeps the
 * deployed tool's text in util.c.
 * SPDX-License-Identifier: MIT
 */
#include <stdbool.h>
#include <string.h>

#include "cli.h"
#include "help.h"

#define ARCHIVE_NOTE \
    "<filename> may be \"-\" (standard input); plain, zstd, gzip and lzop-compressed\n" \
    "archives are read alike.\n"
#define FORMAT_OPT \
    "  --output-format=text|json  text (default) or one JSON document on stdout,\n" \
    "                        also on failure: {\"error\": \"...\", \"exit\": N}\n"
/* extract and verify: salvage mode (cmd_salvage.c). */
#define SALVAGE_OPTS                                                           \
    "  --salvage             read past damage: keep every intact extent, write\n" \
    "                        salvaged-disk-<devname>.raw and salvage-report.txt\n" \
    "                        and .json (verify: print the report); exit 3:\n"   \
    "                        partial, some data lost\n"                          \
    "  --force-header        with --salvage: read on past a header MD5 mismatch\n"

#define PROGRESS_OPTS \
    "  -p, --progress        show a progress bar on stderr even if it is no terminal\n" \
    "  --no-progress         no progress bar (default: one when stderr is a terminal)\n"
#define HELP_OPT "  -h, --help            this text\n"

static const struct {
    const char *name;
    const char *text;
} help[] = {
    { "list",
      "usage: vma list <filename> [--output-format=text|json]\n"
      "\n"
      "Print the configs, devices and creation time of an archive.\n"
      ARCHIVE_NOTE
      "\n"
      FORMAT_OPT
      HELP_OPT },
    { "config",
      "usage: vma config <filename> [-c <config>]\n"
      "\n"
      "Write one config of the archive to stdout, as stored.\n"
      ARCHIVE_NOTE
      "\n"
      "  -c <config>           the config's name (default qemu-server.conf)\n"
      HELP_OPT },
    { "create",
      "usage: vma create <filename> [options] -d format=raw:<devname>=<path> [-d ...]\n"
      "       vma create <filename> [options] <devname>=<path>|<path>...\n"
      "\n"
      "Write a new archive (never over an existing file; a FIFO or\n"
      "exec:<command> is written to) from config files and raw images or\n"
      "block devices.\n"
      "\n"
      "  -c <file>             add a config file (repeatable)\n"
      "  -d format=raw:<devname>=<path>  add a device (repeatable)\n"
      "  --compress=<c>        zstd[:1-22], gzip[:1-9], lzo or none\n"
      "  --uuid=<uuid>         the archive's uuid (default: random)\n"
      "  --ctime=<epoch>       the creation time in seconds since 1970\n"
      "                        (default: $SOURCE_DATE_EPOCH, else now)\n"
      "  -v                    progress and per-device lines on stderr\n"
      PROGRESS_OPTS
      HELP_OPT },
    { "extract",
      "usage: vma extract <filename> [-v] [-d <drive-list>] [-r <fifo>] <targetdir>\n"
      "       vma extract <filename> [-v] [-d <drive-list>] --format=<fmt> <targetdir>\n"
      "       vma extract <filename> [-d <drive-list>] --output-format=json <targetdir>\n"
      "       vma extract --salvage [--force-header] <filename> <targetdir>\n"
      "\n"
      "Restore configs, disks (disk-<devname>.raw) and the VM state\n"
      "(vmstate.bin) into a new directory, or the disks into the targets a\n"
      "restore map names.\n"
      ARCHIVE_NOTE
      "\n"
      "  -d <dev,...>          restore only these disks\n"
      "  -r <fifo>             read the restore map from this FIFO or file\n"
      "  --format=<fmt>        write the disks as disk-<devname>.<fmt>: raw\n"
      "                        (default), qcow2, vmdk, vdi or vhdx (qemu-img and\n"
      "                        qemu-nbd); not with -r or --salvage\n"
      "  -v                    progress and totals on stdout\n"
      "  --output-format=text|json  text (default), or instead of the DEVINFO and\n"
      "                        -v lines one JSON document (files, statistics) on\n"
      "                        stdout, also on failure; not with -r\n"
      SALVAGE_OPTS
      PROGRESS_OPTS
      HELP_OPT },
    { "verify",
      "usage: vma verify <filename> [-v] [--output-format=text|json]\n"
      "       vma verify --salvage [--force-header] [--output-format=text|json] <filename>\n"
      "\n"
      "Read the whole archive and check every rule of the format.\n"
      ARCHIVE_NOTE
      "\n"
      "  -v                    the list lines, progress and totals on stdout\n"
      SALVAGE_OPTS
      FORMAT_OPT
      "                        (with per-device statistics and the verdict)\n"
      PROGRESS_OPTS
      HELP_OPT },
    { "checksum",
      "usage: vma checksum <filename> [-d <drive-list>] [--output-format=text|json]\n"
      "\n"
      "Print the SHA-256 of every device image as sha256sum prints it for the\n"
      "files extract writes (<hex>  disk-<devname>.raw, vmstate.bin),\n"
      "computed while reading: nothing is written. Checks the archive as\n"
      "verify does.\n"
      ARCHIVE_NOTE
      "\n"
      "  -d <dev,...>          only these devices\n"
      FORMAT_OPT
      HELP_OPT },
    { "backup",
      "usage: vma backup --qmp <socket> [--qga <socket>] [-d <dev,...>]\n"
      "                  [-c [<name>=]<file>]... [--compress=zstd[:N]|gzip[:N]|lzo]\n"
      "                  [--fleecing-dir <dir>] [--qmp-timeout=<s>] [-v]\n"
      "                  [-p|--no-progress] [--output-format=json] <filename>|-\n"
      "       vma backup --cleanup --qmp <socket> [--qga <socket>]\n"
      "\n"
      "Back up a running QEMU VM through its QMP socket, every disk at one point\n"
      "in time (image fleecing: QEMU keeps what the guest overwrites in sparse\n"
      "qcow2 images until each disk is read). The archive appears under its name\n"
      "only when complete; \"-\" writes it to stdout.\n"
      "\n"
      "  --qmp <socket>        QEMU's QMP socket (Proxmox VE: /var/run/qemu-server/<vmid>.qmp)\n"
      "  --qga <socket>        the guest agent's socket: freeze the guest's file\n"
      "                        systems for the instant of the backup\n"
      "  -d <dev,...>          only these disks (BlockBackend name, else\n"
      "                        drive-<device id>, else the -blockdev node-name)\n"
      "  -c [<name>=]<file>    store a config file (under <name>, else its base name);\n"
      "                        qemu-server.conf gets vzdump's #qmdump#map lines, and\n"
      "                        without -d its backup=0 disks are left out\n"
      "  --compress=<c>        zstd[:N], gzip[:N] or lzo, as create does\n"
      "  --fleecing-dir <dir>  where the fleecing images go (default $TMPDIR, else /tmp)\n"
      "  --qmp-timeout=<s>     wait this long for a QMP socket another client holds\n"
      "                        (default 60)\n"
      "  --cleanup             remove what a killed vma backup left in QEMU (with\n"
      "                        --qga: also thaw the guest if it is left frozen)\n"
      "  -v                    steps, freeze time, progress lines and per-disk totals\n"
      "                        on stderr\n"
      PROGRESS_OPTS
      FORMAT_OPT
      HELP_OPT },
    { "mount",
      "usage: vma mount [-f] [-o allow_other] [-c <cachedir>] [-r] [-n]\n"
      "                 [--index=cache|beside|off] [--salvage [--force-header]]\n"
      "                 <filename> <mountpoint>\n"
      "\n"
      "Serve the archive read-only through FUSE: its configs, <devname>.raw per\n"
      "disk and vmstate.bin, after one checked pass (its index is saved for the\n"
      "next mount). Unmount with fusermount3 -u <mountpoint>.\n"
      "\n"
      "  -f                    stay in the foreground (Ctrl-C unmounts)\n"
      "  -o allow_other        let other users read the files\n"
      "  -c <cachedir>         where a single-frame .vma.zst is decompressed\n"
      "                        and a .vma.gz keeps its windows (default $TMPDIR)\n"
      "  -r                    build the index anew (after a refused one)\n"
      "  -n                    neither read nor write an index file\n"
      "  --index=cache|beside|off  where the index file goes: the user's cache\n"
      "                        (default: ~/.cache/vmarchive, for root\n"
      "                        /var/cache/vmarchive), <filename>.vmaidx, or none\n"
      "  --salvage             serve what a damaged archive still holds, named as\n"
      "                        extract --salvage names it, with its reports; reads\n"
      "                        of lost ranges fail with EIO (exit 3 after -f if lost)\n"
      "  --force-header        with --salvage: take a header whose MD5 is wrong\n"
      HELP_OPT },
};

static const char *current;
static const char *name_invoked = "vma";

void cli_set_name(const char *argv0)
{
    const char *slash = argv0 != NULL ? strrchr(argv0, '/') : NULL;
    const char *base = slash != NULL ? slash + 1 : argv0;
    if (base != NULL && *base != '\0')
        name_invoked = base;
}

const char *cli_name(void)
{
    return name_invoked;
}

void cli_put_usage(const char *text, FILE *f)
{
    bool blank = true; /* only spaces so far on this line */
    for (const char *p = text; *p != '\0'; p++) {
        bool starts = blank || p[-1] == '(' ||
                      (p - text >= 7 && strncmp(p - 7, "usage: ", 7) == 0);
        if (starts && strncmp(p, "vma ", 4) == 0) {
            fputs(name_invoked, f);
            p += 2; /* the space is written by the next turn */
            blank = false;
            continue;
        }
        fputc(*p, f);
        blank = *p == '\n' || (blank && *p == ' ');
    }
}

void cli_set_command(const char *name)
{
    current = name;
}

int cli_help(const char *name, FILE *f)
{
    for (size_t i = 0; name && i < sizeof help / sizeof help[0]; i++) {
        if (!strcmp(help[i].name, name)) {
            cli_put_usage(help[i].text, f);
            return 0;
        }
    }
    return -1;
}

int cli_help_current(FILE *f)
{
    return cli_help(current, f);
}
