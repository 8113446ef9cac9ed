#!/usr/bin/env bash
# Install the Debian 12 packages libvma needs to build, test, demo and bench.
# Installs only what is missing; as non-root it lists what is missing and fails.
set -euo pipefail

packages=(
    build-essential gcc   # C compiler and libc headers
    clang                 # second compiler build in scripts/test.sh
    libclang-rt-14-dev    # clang's sanitizer and libFuzzer runtimes (fuzz/run.sh)
    meson ninja-build pkg-config
    libmd-dev             # libmd: MD5 of headers, SHA-256 of index files
    libssl-dev            # libcrypto: SHA-256 of vma checksum (loaded on first use)
    libjansson-dev        # jansson: the JSON of QMP and the guest agent (vma backup)
    uuid-dev              # libuuid: archive uuids
    libzstd-dev zlib1g-dev liblzo2-dev  # .vma.zst, .vma.gz, .vma.lzo in and out
    zstd lzop             # CLI tests decompress golden archives and build framings (pzstd is in zstd)
    libcmocka-dev         # unit tests
    e2fsprogs             # mkfs.ext4 -d, e2fsck, debugfs (demo)
    openssl               # deterministic data generator (demo, bench)
    time                  # /usr/bin/time (bench; peak memory in tests/cli/limits.sh)
    valgrind              # the CLI tests once under memcheck (scripts/test.sh)
    procps                # pgrep in tests/cli/failing.sh (exec: commands stopped)
    man-db groff-base     # man --warnings renders the man pages (tests/man.sh)
    binutils              # nm -D: the exported symbols (tests/symbols.sh)
    dpkg-dev debhelper lintian  # build and check the Debian packages (scripts/debian-check.sh)
    jq                    # parses --output-format=json in tests/cli/json.sh and checksum.sh
    bsdutils              # script(1): a pty for the progress bar test (tests/cli/progress.sh)
    libnbd-dev            # NBD targets and sources: qcow2, vmdk, rbd:, iscsi://, nbd://
    qemu-utils            # qemu-nbd (started by vma for such targets and sources), qemu-img/qemu-io (tests)
    qemu-block-extra      # qemu-nbd's rbd/iscsi/ssh/curl/gluster/nfs modules
    nbdkit                # NBD exports in tests/cli/nbd.sh, nbd_create.sh (memory, log, delay, error)
    libnbd-bin            # nbdcopy: tests/cli/nbd.sh; the NBD read limit in bench/bench-qcow2.sh
    libfuse3-dev fuse3    # vma mount (libfuse3 >= 3.8 for lseek), fusermount3 (tests/cli/mount.sh)
    nbdkit-plugin-dev     # nbdkit-vma-plugin.so: the plugin API (nbdkit itself: above)
    python3-minimal       # /usr/bin/python3: tests/cli/seekmap.py (SEEK_DATA/SEEK_HOLE)
    # tests/ceph: a one-node Ceph cluster (monitor, manager, one OSD) to
    # restore into rbd: images through qemu-nbd's rbd driver
    ceph-mon ceph-mgr ceph-osd
    ceph-common           # ceph, rbd, rados, ceph-authtool, monmaptool
    # tests/backup: live backups of a running QEMU (TCG), and a real guest:
    # Debian's kernel booted with a busybox and qemu-guest-agent initramfs
    qemu-system-x86 linux-image-cloud-amd64 busybox-static qemu-guest-agent
    cpio                  # packs that initramfs
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages: ${missing[*]}" >&2
    echo "deps.sh: install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi

echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
