# A throw-away one-node Ceph cluster for the RBD tests: one ceph-mon, one
# ceph-mgr and one ceph-osd (memstore: objects live in the OSD's memory, no
# disk or LVM needed), one pool of size 1, all on 127.0.0.1 with msgr v2,
# everything (config, keyring, data, sockets, logs) in one temp dir. Nothing
# under /etc/ceph or /var/lib/ceph is read or written.
#
# Sourced by the tests (ceph_start / ceph_stop), or run by hand:
#   bash tests/ceph/cluster.sh check   start, write and read an image, stop
#   bash tests/ceph/cluster.sh shell   start, run $SHELL with CEPH_CONF set
#                                      (exit the shell to tear it down)
#
# After ceph_start: CEPH_DIR (the temp dir), CEPH_CONF (its ceph.conf),
# CEPH_KEYRING (the admin keyring), CEPH_POOL (an rbd-initialised pool).
# Every daemon runs in the foreground as a child of this shell (-f), so
# ceph_stop can kill exactly those pids; callers trap EXIT to call it.
# SPDX-License-Identifier: MIT

CEPH_POOL=vmatest
CEPH_DIR=
CEPH_CONF=
CEPH_KEYRING=
CEPH_PIDS=()

# ceph_log MSG: progress on stderr with the seconds since ceph_start.
ceph_log() {
    printf 'ceph: %6.1f s  %s\n' "$(awk -v a="$CEPH_T0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" "$*" >&2
}

# ceph_missing: the Ceph and QEMU tools the tests need that are not
# installed, one Debian package per word (empty: all there).
ceph_missing() {
    local m=() t
    for t in ceph-mon:ceph-mon ceph-mgr:ceph-mgr ceph-osd:ceph-osd ceph:ceph-common \
        rbd:ceph-common ceph-authtool:ceph-common monmaptool:ceph-common \
        qemu-img:qemu-utils qemu-nbd:qemu-utils; do
        command -v "${t%%:*}" >/dev/null || m+=("${t#*:}")
    done
    # QEMU's rbd driver is a module of qemu-block-extra
    [ -n "$(find /usr/lib/*/qemu /usr/lib/qemu -name 'block-rbd.so' 2>/dev/null | head -n 1)" ] ||
        m+=(qemu-block-extra)
    [ ${#m[@]} -gt 0 ] || return 0
    printf '%s\n' "${m[@]}" | sort -u | tr '\n' ' '
}

# ceph_free_port: a TCP port free on 127.0.0.1 right now, below the
# kernel's ephemeral range (32768 and up on Debian), so that no outgoing
# connection takes it before the monitor binds it a moment later.
ceph_free_port() {
    /usr/bin/python3 -c '
import random, socket
for _ in range(100):
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
else:
    raise SystemExit("no free port")'
}

# ceph_cli ARGS...: the ceph command against this cluster, never waiting
# more than 30 s for the monitor.
ceph_cli() { timeout 60 ceph -c "$CEPH_CONF" --connect-timeout 30 "$@"; }

# ceph_daemon NAME CMD...: start a daemon in the foreground, in the
# background of this shell; its stderr (startup errors) goes to log/NAME.err.
# setpriv --pdeathsig: the kernel kills it if this shell dies without
# running its traps (SIGKILL).
ceph_daemon() {
    local name=$1
    shift
    setpriv --pdeathsig KILL -- "$@" -f -c "$CEPH_CONF" </dev/null \
        >"$CEPH_DIR/log/$name.out" 2>"$CEPH_DIR/log/$name.err" &
    CEPH_PIDS+=($!)
}

# ceph_fail MSG: say why the start failed, with the tail of every log.
ceph_fail() {
    local f
    ceph_log "FAILED: $*"
    for f in "$CEPH_DIR"/log/*; do
        [ -s "$f" ] || continue
        echo "---- $f (last lines)" >&2
        tail -n 15 "$f" >&2
    done
    return 1
}

# ceph_wait SECONDS WHAT CMD...: retry CMD (quietly) every 0.2 s until it
# succeeds; fail after SECONDS, or at once if a daemon has died.
ceph_wait() {
    local limit=$1 what=$2 end p
    shift 2
    end=$(($(date +%s) + limit))
    until "$@" >/dev/null 2>&1; do
        for p in "${CEPH_PIDS[@]}"; do
            kill -0 "$p" 2>/dev/null || { ceph_fail "a daemon (pid $p) exited while waiting for $what"; return 1; }
        done
        [ "$(date +%s)" -lt "$end" ] || { ceph_fail "no $what after $limit s"; return 1; }
        sleep 0.2
    done
}

ceph_osd_up() { [ "$(ceph_cli osd stat -f json | jq -r .num_up_osds)" = 1 ]; }

# ceph_start: make and start the cluster; returns non-zero (after printing
# the daemons' logs) if it is not usable within a minute or two.
ceph_start() {
    local fsid port osd_uuid
    CEPH_T0=$EPOCHREALTIME
    CEPH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vma-ceph.XXXXXX") || return 1
    CEPH_CONF=$CEPH_DIR/ceph.conf
    CEPH_KEYRING=$CEPH_DIR/keyring
    mkdir -p "$CEPH_DIR"/{mon/a,mgr/x,osd/0,run,log,crash} || return 1
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    port=$(ceph_free_port) || return 1

    # Every path the daemons would default to under /var or /etc is set
    # here. The pool, crush and health settings make a single OSD enough:
    # size-1 pools allowed, replicas chosen among OSDs rather than hosts,
    # no autoscaler resizing the pool while the test writes.
    cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $CEPH_KEYRING
run dir = $CEPH_DIR/run
admin socket = $CEPH_DIR/run/\$name.asok
pid file = $CEPH_DIR/run/\$name.pid
log file = $CEPH_DIR/log/\$name.log
log to stderr = false
err to stderr = true
crash dir = $CEPH_DIR/crash
mon cluster log file = $CEPH_DIR/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
client mount timeout = 30
rados osd op timeout = 60
rados mon op timeout = 30
; paxos: propose at once rather than each second (pool and PG creation
; went from 3.9 s to 0.4 s)
paxos propose interval = 0.1
paxos min wait = 0.01

[mon]
mon data = $CEPH_DIR/mon/a
; the mgr modules enabled at mon mkfs (default restful iostat nfs; restful
; would listen on every address): none is needed beyond the always-on ones
mgr initial modules = iostat
auth allow insecure global id reclaim = false

[mgr]
mgr data = $CEPH_DIR/mgr/x

[osd]
osd data = $CEPH_DIR/osd/0
osd objectstore = memstore
memstore device bytes = 536870912
osd op num shards = 1
osd op num threads per shard = 2
EOF

    # One keyring for every entity: ceph-mon --mkfs imports all of its keys
    # into the monitor's auth database, and every daemon reads it.
    ceph-authtool --create-keyring "$CEPH_KEYRING" --gen-key -n mon. --cap mon 'allow *' >/dev/null &&
        ceph-authtool "$CEPH_KEYRING" --gen-key -n client.admin \
            --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null &&
        ceph-authtool "$CEPH_KEYRING" --gen-key -n mgr.x \
            --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null &&
        ceph-authtool "$CEPH_KEYRING" --gen-key -n osd.0 \
            --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null ||
        { ceph_fail "ceph-authtool"; return 1; }

    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$CEPH_DIR/monmap" >/dev/null &&
        ceph-mon -c "$CEPH_CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" --keyring "$CEPH_KEYRING" \
            2>"$CEPH_DIR/log/mon-mkfs.err" ||
        { ceph_fail "ceph-mon --mkfs"; return 1; }
    ceph_daemon mon.a ceph-mon -i a
    ceph_wait 30 "monitor quorum" ceph_cli mon stat || return 1
    ceph_log "mon.a up on 127.0.0.1:$port"

    ceph_daemon mgr.x ceph-mgr -i x

    # The OSD id and its uuid in the osdmap, then its (memory) store.
    [ "$(ceph_cli osd new "$osd_uuid" 0 2>"$CEPH_DIR/log/osd-new.err")" = 0 ] ||
        { ceph_fail "ceph osd new"; return 1; }
    ceph-osd -c "$CEPH_CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" \
        >"$CEPH_DIR/log/osd-mkfs.out" 2>&1 || { ceph_fail "ceph-osd --mkfs"; return 1; }
    ceph_daemon osd.0 ceph-osd -i 0
    ceph_wait 60 "OSD up" ceph_osd_up || return 1
    ceph_log "osd.0 up"

    ceph_cli osd pool create "$CEPH_POOL" 8 8 >/dev/null 2>"$CEPH_DIR/log/pool.err" && ceph_log "pool $CEPH_POOL created" &&
        timeout 60 rbd -c "$CEPH_CONF" pool init "$CEPH_POOL" 2>>"$CEPH_DIR/log/pool.err" ||
        { ceph_fail "pool $CEPH_POOL"; return 1; }
    ceph_log "pool $CEPH_POOL ready"
}

# ceph_stop: kill the daemons, reap them, remove the dir. SIGKILL at once:
# the data is thrown away, and on SIGTERM the OSD waits seconds for the
# monitor to acknowledge its shutdown. Safe to call twice and after a
# partial start.
ceph_stop() {
    local p
    for p in "${CEPH_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${CEPH_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    CEPH_PIDS=()
    if [ -n "$CEPH_DIR" ] && [ -d "$CEPH_DIR" ]; then rm -rf "$CEPH_DIR"; fi
    CEPH_DIR=
}

# ---- run by hand ------------------------------------------------------------
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    export LC_ALL=C
    trap ceph_stop EXIT
    trap 'exit 143' TERM INT
    missing=$(ceph_missing)
    if [ -n "$missing" ]; then
        echo "ceph: missing packages: $missing(bash scripts/deps.sh installs them)" >&2
        exit 1
    fi
    ceph_start || exit 1
    case ${1:-check} in
    check)
        # a 6 MiB image through QEMU's rbd driver, read back with rbd export
        head -c $((6 << 20)) /dev/urandom >"$CEPH_DIR/check.raw"
        qemu-img convert -O raw "$CEPH_DIR/check.raw" \
            "rbd:$CEPH_POOL/check:conf=$CEPH_CONF:id=admin:keyring=$CEPH_KEYRING" &&
            rbd -c "$CEPH_CONF" export --no-progress "$CEPH_POOL/check" "$CEPH_DIR/check.out" &&
            cmp "$CEPH_DIR/check.raw" "$CEPH_DIR/check.out" || { ceph_log "check FAILED"; exit 1; }
        ceph_log "check passed: qemu-img convert into rbd:, rbd export gives the same bytes"
        ;;
    shell)
        echo "CEPH_CONF=$CEPH_CONF  pool: $CEPH_POOL  keyring: $CEPH_KEYRING" >&2
        CEPH_CONF=$CEPH_CONF "${SHELL:-bash}" || true
        ;;
    *)
        echo "usage: $0 [check|shell]" >&2
        exit 2
        ;;
    esac
fi
