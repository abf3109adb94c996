#!/usr/bin/env bash
# Starts (or stops) the S3 servers holdfast's S3 tests run against, on loopback:
#   - a single-node Ceph cluster with a RADOS Gateway (scripts/ceph-up.sh), and
#   - a moto server (`pip install 'moto[server]'`), a second, independent S3 implementation.
#
# usage: s3-test-servers.sh start DIR   starts both, writes DIR/env.sh (source it)
#        s3-test-servers.sh stop DIR    stops exactly what `start DIR` started
#
# DIR/env.sh exports what crates/backend-s3/tests read:
#   HOLDFAST_TEST_RGW=http://127.0.0.1:$RGW_PORT    HOLDFAST_TEST_MOTO=http://127.0.0.1:$MOTO_PORT
#   HOLDFAST_TEST_RGW_LOG=<the RGW log file>        HOLDFAST_TEST_RGW_CEPH_CONF=<ceph.conf,
#     for radosgw-admin: tests/tests/s3_policy.rs makes its users with it>
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION
#   NEXTEST_PROFILE=s3 (.config/nextest.toml: `cargo nextest run` then includes the S3 tests)
#   HOLDFAST_TEST_CEPH_CONF=<ceph.conf> when ceph-mds is installed: the cluster then also
#   serves a CephFS (one MDS), which the agent's tests mount with ceph-fuse
# A server that cannot be started is left out of env.sh (and `start` exits non-zero); its
# tests then fail (a plain `cargo nextest run` without env.sh skips them, and says so).
#
# env: RGW_PORT (default 18000), MON_PORT (default 41000), MOTO_PORT (default 19000),
#      S3_AK / S3_SK (default test / testtest), SKIP_RGW=1, SKIP_MOTO=1
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ACTION=${1:?usage: $0 start|stop DIR}
DIR=$(realpath -m "${2:?usage: $0 start|stop DIR}")
RGW_PORT=${RGW_PORT:-18000}
MON_PORT=${MON_PORT:-41000}
MOTO_PORT=${MOTO_PORT:-19000}
S3_AK=${S3_AK:-test}
S3_SK=${S3_SK:-testtest}

wait_http() { # URL SECONDS
    local i
    for i in $(seq 1 $(($2 * 5))); do
        curl -s -o /dev/null --max-time 2 "$1" && return 0
        sleep 0.2
    done
    return 1
}

start() {
    mkdir -p "$DIR"
    local rc=0
    {
        echo "# written by scripts/s3-test-servers.sh; source it"
        echo "export AWS_ACCESS_KEY_ID=$S3_AK AWS_SECRET_ACCESS_KEY=$S3_SK AWS_REGION=us-east-1"
        echo "export NEXTEST_PROFILE=s3"
    } >"$DIR/env.sh"
    if [[ "${SKIP_RGW:-0}" != 1 ]]; then
        local mds=0
        command -v ceph-mds >/dev/null 2>&1 && mds=1
        echo "--- starting Ceph RGW on 127.0.0.1:$RGW_PORT (CephFS: MDS=$mds)"
        if MGR=0 MDS=$mds RGW=1 RGW_PORT=$RGW_PORT MON_PORT=$MON_PORT S3_AK=$S3_AK S3_SK=$S3_SK \
            setsid "$HERE/ceph-up.sh" "$DIR/ceph" </dev/null; then
            {
                echo "export HOLDFAST_TEST_RGW=http://127.0.0.1:$RGW_PORT"
                echo "export HOLDFAST_TEST_RGW_LOG=$DIR/ceph/log/client.rgw.x.log"
                echo "export HOLDFAST_TEST_RGW_CEPH_CONF=$DIR/ceph/ceph.conf"
                [[ $mds == 1 ]] && echo "export HOLDFAST_TEST_CEPH_CONF=$DIR/ceph/ceph.conf"
            } >>"$DIR/env.sh"
        else
            echo "Ceph RGW did not start" >&2
            rc=1
        fi
    fi
    if [[ "${SKIP_MOTO:-0}" != 1 ]]; then
        echo "--- starting moto on 127.0.0.1:$MOTO_PORT"
        if ! command -v moto_server >/dev/null 2>&1; then
            echo "moto_server not found (pip install 'moto[server]')" >&2
            rc=1
        elif (exec 3<>"/dev/tcp/127.0.0.1/$MOTO_PORT") 2>/dev/null; then
            echo "port $MOTO_PORT is already in use; set MOTO_PORT" >&2
            rc=1
        else
            setsid moto_server -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >"$DIR/moto.log" 2>&1 &
            echo $! >"$DIR/moto.pid"
            if wait_http "http://127.0.0.1:$MOTO_PORT/" 60; then
                echo "export HOLDFAST_TEST_MOTO=http://127.0.0.1:$MOTO_PORT" >>"$DIR/env.sh"
                echo "moto answering on http://127.0.0.1:$MOTO_PORT"
            else
                echo "moto did not answer within 60 s; log:" >&2
                tail -n 20 "$DIR/moto.log" >&2
                rc=1
            fi
        fi
    fi
    return "$rc"
}

stop() {
    if [[ -f "$DIR/moto.pid" ]]; then
        local pid i
        pid=$(cat "$DIR/moto.pid")
        kill "$pid" 2>/dev/null
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        rm -f "$DIR/moto.pid"
    fi
    if [[ -d "$DIR/ceph" ]]; then
        "$HERE/ceph-down.sh" "$DIR/ceph"
    fi
    rm -rf "$DIR"
}

case "$ACTION" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
