#!/usr/bin/env bash
# Changed-block backups of a real Ceph RBD image (issue 11): a full image backup, then an
# incremental one that reads only the extents `rbd diff --from-snap` reports. Not run in CI.
#
#   benches/rbd_changed_blocks.sh [WORKDIR]      (root; ceph, rbd, rbd-fuse, python3-rbd)
#
# Starts a throwaway single-node cluster (scripts/ceph-up.sh, memstore OSD, no mgr, no RGW,
# MON_PORT 42000), creates a 4 GiB image and fills it with incompressible data, snapshots
# it (s1), backs s1 up whole, then rewrites 1% of the image's 4 MiB objects (10 objects
# chosen uniformly at random, seed 11, each rewritten whole with new random data),
# snapshots s2 and backs s2 up with `--changed-extents` from
# `rbd diff --from-snap s1 img@s2 --format json`. A second variant rewrites 160 scattered
# 64 KiB blocks (uniformly random, 64 KiB-aligned offsets, seed 12: 10 MiB, 0.24%) as s3.
# Snapshots are read through clones (`rbd snap protect` + `rbd clone`), which rbd-fuse
# exposes as files (this kernel has no krbd/nbd). Prints bytes read and times, and checks
# that `holdfast dump` of each incremental equals `rbd export img@sN -` (sha256).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
W=$(realpath -m "${1:-/tmp/holdfast-rbd-bench}")
BIN=${HOLDFAST_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/holdfast}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p holdfast-cli (or set HOLDFAST_BIN)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (ceph-up.sh, rbd-fuse)" >&2; exit 2; }
SIZE_MIB=4096
OBJ=$((4 << 20))

mkdir -p "$W"
CLUSTER=$W/ceph FUSE=$W/fuse REPO=$W/repo
FUSE_PID=
cleanup() {
    set +e
    if mountpoint -q "$FUSE"; then fusermount3 -u "$FUSE" 2>/dev/null || fusermount -u "$FUSE"; fi
    [ -n "$FUSE_PID" ] && kill "$FUSE_PID" 2>/dev/null
    [ -e "$CLUSTER/ceph.conf" ] && "$ROOT/scripts/ceph-down.sh" "$CLUSTER" >/dev/null
    rm -rf "$REPO" "$W"/*.json
}
trap cleanup EXIT

avail=$(df --output=pcent "$W" | tail -1 | tr -dc 0-9)
[ "$avail" -lt 85 ] || { echo "disk at ${avail}%: the repository needs ~4.5 GiB and the mon 5% free" >&2; exit 2; }

MON_PORT=42000 RGW=0 MGR=0 OBJECTSTORE=memstore MEMSTORE_BYTES=$((7 << 30)) \
    "$ROOT/scripts/ceph-up.sh" "$CLUSTER" >/dev/null
export CEPH_CONF=$CLUSTER/ceph.conf
ceph osd pool create rbd 8 >/dev/null 2>&1
rbd pool init rbd
rbd create rbd/img --size ${SIZE_MIB}M

# Fill, snapshot; rewrite objects; snapshot (librbd writes; no FUSE in the way).
/usr/bin/python3 - "$CEPH_CONF" "$SIZE_MIB" <<'EOF'   # Debian's python3-rados/python3-rbd
import os, random, sys, rados, rbd
conf, size_mib = sys.argv[1], int(sys.argv[2])
obj = 4 << 20
c = rados.Rados(conffile=conf); c.connect(); io = c.open_ioctx("rbd")
with rbd.Image(io, "img") as im:
    for off in range(0, size_mib << 20, obj):
        im.write(os.urandom(obj), off)
    im.flush()
    im.create_snap("s1")
    objects = size_mib * (1 << 20) // obj
    r = random.Random(11)
    for o in sorted(r.sample(range(objects), objects // 100)):
        im.write(os.urandom(obj), o * obj)
    im.flush()
    im.create_snap("s2")
    r = random.Random(12)
    for _ in range(160):
        im.write(os.urandom(64 << 10), r.randrange(0, (size_mib << 20) // (64 << 10)) * (64 << 10))
    im.flush()
    im.create_snap("s3")
io.close(); c.shutdown()
EOF
for s in s1 s2 s3; do
    rbd snap protect rbd/img@$s
    rbd clone rbd/img@$s rbd/clone-$s
done
rbd diff --from-snap s1 rbd/img@s2 --format json > "$W/s1-s2.json"
rbd diff --from-snap s2 rbd/img@s3 --format json > "$W/s2-s3.json"

mkdir -p "$FUSE"
rbd-fuse -c "$CEPH_CONF" -p rbd "$FUSE" & FUSE_PID=$!
for _ in $(seq 1 100); do [ -e "$FUSE/clone-s3" ] && break; sleep 0.2; done
[ -e "$FUSE/clone-s3" ] || { echo "rbd-fuse did not show the clones" >&2; exit 1; }

export HOLDFAST_REPOSITORY=$REPO HOLDFAST_PASSWORD=bench
rm -rf "$REPO"; "$BIN" init >/dev/null
sync; echo 3 > /proc/sys/vm/drop_caches

# backup NAME ARGS...: runs a backup, prints a line, leaves its JSON in $W/NAME.out.json
backup() {
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$BIN" backup --json --device-name /rbd/img "$@" > "$W/$name.out.json"
    t1=$(date +%s.%N)
    python3 - "$W/$name.out.json" "$name" "$(echo "$t1 - $t0" | bc)" "$SIZE_MIB" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); s = d["summary"]; size = int(sys.argv[4]) << 20
print(f'{sys.argv[2]:<28} read {s["bytes_read"]/2**20:9.1f} MiB ({100*s["bytes_read"]/size:6.2f}% of the image)'
      f'  stored {s["bytes_added_stored"]/2**20:8.1f} MiB  wall {float(sys.argv[3]):6.1f} s'
      f'  notices {len(d["notices"])}')
EOF
}
id_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_id"])' "$W/$1.out.json"; }
check() { # check SNAPSHOT_ID RBD_SNAP
    local a b
    a=$("$BIN" dump "$1" /rbd/img | sha256sum | cut -c1-64)
    b=$(rbd export --no-progress rbd/img@"$2" - | sha256sum | cut -c1-64)
    [ "$a" = "$b" ] && echo "  restore of ${1:0:8} equals rbd export img@$2 (sha256 ${a:0:16})" \
        || { echo "  MISMATCH: holdfast ${a:0:16} vs rbd export img@$2 ${b:0:16}" >&2; exit 1; }
}
diff_stats() {
    python3 - "$W/$1-$2.json" "$1" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} -> {sys.argv[3]}: {len(d)} extents, {sum(e['length'] for e in d) / 2**20:.1f} MiB changed")
EOF
}
diff_stats s1 s2
diff_stats s2 s3

backup "full s1" --device "$FUSE/clone-s1"
FULL=$(id_of "full s1")
sync; echo 3 > /proc/sys/vm/drop_caches
backup "incremental s2 (1% objects)" --device "$FUSE/clone-s2" --changed-extents "$W/s1-s2.json" --parent "$FULL"
INC2=$(id_of "incremental s2 (1% objects)")
check "$INC2" s2
sync; echo 3 > /proc/sys/vm/drop_caches
backup "incremental s3 (64 KiB)" --device "$FUSE/clone-s3" --changed-extents "$W/s2-s3.json" --parent "$INC2"
check "$(id_of "incremental s3 (64 KiB)")" s3
sync; echo 3 > /proc/sys/vm/drop_caches
backup "full re-read s2" --device "$FUSE/clone-s2"
