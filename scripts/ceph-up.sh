#!/usr/bin/env bash
# Throwaway single-node Ceph cluster for holdfast's S3 tests: 1 mon, 1 osd, 1 RADOS Gateway
# (real S3 on 127.0.0.1), optionally a mgr and an mds. Runs as root, no systemd, everything
# under one directory; Debian bookworm ceph 16.2 (pacific). Ready in 15-30 s.
#
#   apt-get install -y --no-install-recommends ceph ceph-mon ceph-mgr ceph-osd radosgw \
#       ceph-common uuid-runtime curl bc        (+ ceph-mds ceph-fuse for MDS=1)
#
# usage: ceph-up.sh DIR
#   env: OBJECTSTORE=memstore|bluestore (default memstore: data in the OSD's RAM)
#        MEMSTORE_BYTES=2147483648      capacity of the memstore OSD
#        MGR=1 (default 0: saves ~300 MB; RGW works without it), MDS=1, RGW=0
#        RGW_PORT=8000, MON_PORT=40000 (MON_PORT+1 is used too), S3_AK/S3_SK (test/testtest)
# then:  export CEPH_CONF=DIR/ceph.conf ; ceph -s ; rados/radosgw-admin ...
# stop:  scripts/ceph-down.sh DIR   (kills exactly the daemons this script started)
#
# If startup fails, the daemons already started are stopped again and DIR (with its logs) is
# kept for inspection.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR=$(realpath -m "${1:?usage: $0 DIR}")
OBJECTSTORE=${OBJECTSTORE:-memstore}
MEMSTORE_BYTES=${MEMSTORE_BYTES:-2147483648}
MON_PORT=${MON_PORT:-40000}
RGW_PORT=${RGW_PORT:-8000}
MGR=${MGR:-0}
MDS=${MDS:-0}
RGW=${RGW:-1}
S3_AK=${S3_AK:-test}
S3_SK=${S3_SK:-testtest}
T0=$(date +%s.%N)
ts() { printf '[%6.2fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }

[ -e "$DIR/ceph.conf" ] && { echo "$DIR already has a cluster; run ceph-down.sh first"; exit 1; }
for bin in ceph-mon ceph-osd ceph-authtool monmaptool ceph uuidgen curl bc; do
    command -v "$bin" >/dev/null || { echo "ceph-up.sh: $bin not found (install the packages above)" >&2; exit 2; }
done
if [ "$RGW" = 1 ]; then command -v radosgw >/dev/null || { echo "ceph-up.sh: radosgw not found" >&2; exit 2; }; fi
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$MON_PORT" "$((MON_PORT+1))" "$RGW_PORT"; do
    if port_busy "$p"; then echo "ceph-up.sh: port $p on 127.0.0.1 is already in use; set MON_PORT/RGW_PORT" >&2; exit 2; fi
done
on_error() {
    echo "ceph-up.sh: startup failed; stopping what was started (logs kept in $DIR/log)" >&2
    for f in "$DIR"/log/*.log; do [ -e "$f" ] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }; done
    "$HERE/ceph-down.sh" "$DIR" --keep >&2 || true
}
trap on_error ERR
mkdir -p "$DIR"/{run,log,mon.a,mgr.x,osd.0,mds.a,rgw.x,crash}
FSID=$(uuidgen)
export CEPH_CONF="$DIR/ceph.conf"

cat > "$CEPH_CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$((MON_PORT+1))]
public addr = 127.0.0.1
ms bind ipv6 = false
run dir = $DIR/run
crash dir = $DIR/crash
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
keyring = $DIR/keyring
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0
osd failsafe full ratio = .99
mon osd full ratio = .99
mon osd nearfull ratio = .99
mon osd backfillfull ratio = .99
mon data avail warn = 1
mon data avail crit = 0

[mon]
mon data = $DIR/mon.\$id
keyring = $DIR/mon.\$id/keyring
mon cluster log file = $DIR/log/cluster.log

[mgr]
mgr data = $DIR/mgr.\$id
keyring = $DIR/mgr.\$id/keyring
mgr initial modules = ""

[osd]
osd data = $DIR/osd.\$id
keyring = $DIR/osd.\$id/keyring
osd objectstore = $OBJECTSTORE
memstore device bytes = $MEMSTORE_BYTES
bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mount = false
bluestore fsck on mkfs = false
osd memory target = 1073741824
bluestore cache autotune = true
osd op num shards = 1
osd op num threads per shard = 2

[mds]
mds data = $DIR/mds.\$id
keyring = $DIR/mds.\$id/keyring

[client]
admin socket = $DIR/run/\$name.\$pid.asok
log file = $DIR/log/client.log

[client.rgw.x]
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
keyring = $DIR/rgw.x/keyring
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw data = $DIR/rgw.x
rgw thread pool size = 64
EOF

# --- keys + monmap + mon -----------------------------------------------------
ceph-authtool --create-keyring --gen-key -n mon. --cap mon 'allow *' "$DIR/keyring" >/dev/null
ceph-authtool --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mds 'allow *' --cap mgr 'allow *' "$DIR/keyring" >/dev/null
monmaptool --create --clobber --fsid "$FSID" \
    --addv a "[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$((MON_PORT+1))]" "$DIR/monmap" >/dev/null
ceph-mon --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring"
ceph-mon -f -i a >"$DIR/log/mon.a.stdout" 2>&1 & echo $! > "$DIR/run/mon.a.pid.bg"
up=0; for i in $(seq 1 100); do timeout 5 ceph -s >/dev/null 2>&1 && { up=1; break; }; sleep 0.2; done
[ $up = 1 ] || { echo "mon did not come up; see $DIR/log/mon.a.log"; false; }
ts "mon up"

# --- mgr ---------------------------------------------------------------------
if [ "$MGR" = 1 ]; then   # MGR=0 saves ~300 MB RSS; RGW/RBD/CephFS I/O work without it,
                               # but `ceph -s` warns "no active mgr" and PG stats read unknown
ceph auth get-or-create mgr.x mon 'allow profile mgr' mds 'allow *' osd 'allow *' \
    -o "$DIR/mgr.x/keyring"
ceph-mgr -f -i x >"$DIR/log/mgr.x.stdout" 2>&1 & echo $! > "$DIR/run/mgr.x.pid.bg"
ts "mgr started"
fi

# --- osd ---------------------------------------------------------------------
OSD_UUID=$(uuidgen)
OSD_SECRET=$(ceph-authtool --gen-print-key)
echo "{\"cephx_secret\": \"$OSD_SECRET\"}" > "$DIR/osd.0/new.json"
OSD_ID=$(ceph osd new "$OSD_UUID" -i "$DIR/osd.0/new.json")
rm "$DIR/osd.0/new.json"
printf '[osd.%s]\n\tkey = %s\n' "$OSD_ID" "$OSD_SECRET" > "$DIR/osd.0/keyring"
ceph-osd -i "$OSD_ID" --mkfs --key "$OSD_SECRET" --osd-uuid "$OSD_UUID" \
    >"$DIR/log/osd.0.mkfs" 2>&1 || { cat "$DIR/log/osd.0.mkfs"; false; }
ts "osd mkfs done ($OBJECTSTORE)"
ceph-osd -f -i "$OSD_ID" >"$DIR/log/osd.0.stdout" 2>&1 & echo $! > "$DIR/run/osd.0.pid.bg"
up=0; for i in $(seq 1 240); do
    timeout 5 ceph osd dump 2>/dev/null | grep -q "^osd.$OSD_ID up" && { up=1; break; }; sleep 0.5; done
[ $up = 1 ] || { echo "osd did not come up; see $DIR/log/osd.0.log"; false; }
ts "osd up"

# --- mds (CephFS) ------------------------------------------------------------
if [ "$MDS" = 1 ]; then
    ceph osd pool create cephfs_metadata 8 >/dev/null
    ceph osd pool create cephfs_data 8 >/dev/null
    ceph fs new cephfs cephfs_metadata cephfs_data >/dev/null
    ceph auth get-or-create mds.a mon 'allow profile mds' osd 'allow rw tag cephfs *=*' \
        mds 'allow' mgr 'allow profile mds' -o "$DIR/mds.a/keyring"
    ceph-mds -f -i a >"$DIR/log/mds.a.stdout" 2>&1 & echo $! > "$DIR/run/mds.a.pid.bg"
    up=0; for i in $(seq 1 240); do
        timeout 5 ceph mds stat 2>/dev/null | grep -q 'up:active' && { up=1; break; }; sleep 0.5; done
    [ $up = 1 ] || { echo "mds did not become active; see $DIR/log/mds.a.log"; false; }
    ts "mds active"
fi

# --- rgw ---------------------------------------------------------------------
if [ "$RGW" = 1 ]; then
    ceph auth get-or-create client.rgw.x mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
        -o "$DIR/rgw.x/keyring"
    radosgw -f -n client.rgw.x --keyring "$DIR/rgw.x/keyring" \
        >"$DIR/log/rgw.x.stdout" 2>&1 & echo $! > "$DIR/run/rgw.x.pid.bg"
    up=0; for i in $(seq 1 600); do
        curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/" && { up=1; break; }; sleep 0.2; done
    [ $up = 1 ] || { echo "rgw not answering; see $DIR/log/client.rgw.x.log"; false; }
    ts "rgw answering on http://127.0.0.1:$RGW_PORT"
    radosgw-admin user create --uid=test --display-name=test \
        --access-key="$S3_AK" --secret-key="$S3_SK" >/dev/null
    ts "rgw user test ($S3_AK/$S3_SK) created"
fi
trap - ERR
timeout 20 ceph -s || true
ts "cluster ready: export CEPH_CONF=$CEPH_CONF"
