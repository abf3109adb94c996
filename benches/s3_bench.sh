#!/usr/bin/env bash
# Backup and restore throughput to a Ceph RADOS Gateway on loopback against a local
# repository, and the S3 requests each step makes (counted in RGW's access log).
#
# usage: benches/s3_bench.sh CORPUS WORKDIR [RUNS]
#   CORPUS   a directory to back up (the standard one: make_corpus.sh DIR toolchain)
#   WORKDIR  scratch space: the local repository, the Ceph cluster's files, logs
#   RUNS     repetitions of every step (default 3); medians are printed
# env: HOLDFAST (default $CARGO_TARGET_DIR/release/holdfast or target/release/holdfast),
#      RGW_PORT (default 38000), MON_PORT (default 61000), MEMSTORE_BYTES (default 6 GiB),
#      RESTORE_DIR (default /dev/shm/holdfast-s3-bench: restores go to tmpfs)
#
# Steps, local and S3 alternating in every run: backup (into a new repository), backup again
# (nothing changed), restore; on S3 also a restore with read-ahead off
# (HOLDFAST_S3_READ_AHEAD_MIB=0), to show what the block reads buy.
#
# The cluster is scripts/ceph-up.sh's: one mon, one memstore OSD (data in RAM) and RGW, all
# on this machine's cores, so the S3 figures include the server's CPU time. The restores
# are compared with the corpus (diff -r) after each run. Each S3 step's lines of RGW's log
# are kept in WORKDIR/s3-STEP.rgw.log; requests are counted by operation, per GB of corpus.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CORPUS=$(realpath "${1:?usage: $0 CORPUS WORKDIR [RUNS]}")
WORK=$(realpath -m "${2:?usage: $0 CORPUS WORKDIR [RUNS]}")
RUNS=${3:-3}
HOLDFAST=${HOLDFAST:-${CARGO_TARGET_DIR:-$ROOT/target}/release/holdfast}
RGW_PORT=${RGW_PORT:-38000}
MON_PORT=${MON_PORT:-61000}
RESTORE_DIR=${RESTORE_DIR:-/dev/shm/holdfast-s3-bench}
[[ -x "$HOLDFAST" ]] || { echo "no holdfast binary at $HOLDFAST (cargo build --release -p holdfast-cli)" >&2; exit 2; }

mkdir -p "$WORK"
CEPH="$WORK/ceph"
stop() { "$ROOT/scripts/ceph-down.sh" "$CEPH" >/dev/null 2>&1 || true; rm -rf "$RESTORE_DIR"; }
trap stop EXIT
trap 'exit 130' INT TERM
MGR=0 RGW=1 RGW_PORT=$RGW_PORT MON_PORT=$MON_PORT MEMSTORE_BYTES=${MEMSTORE_BYTES:-6442450944} \
    "$ROOT/scripts/ceph-up.sh" "$CEPH" >"$WORK/ceph-up.log" 2>&1 ||
    { cat "$WORK/ceph-up.log" >&2; exit 1; }
RGW_LOG="$CEPH/log/client.rgw.x.log"

export HOLDFAST_PASSWORD=bench AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtest \
    AWS_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    AWS_EC2_METADATA_DISABLED=true
# The local cache of S3 repositories lives in WORKDIR and starts empty, so runs compare.
export HOLDFAST_CACHE_DIR="$WORK/cache"
rm -rf "$HOLDFAST_CACHE_DIR"
BYTES=$(du -sb "$CORPUS" | cut -f1)
FILES=$(find "$CORPUS" -type f | wc -l)
echo "corpus: $CORPUS, $BYTES bytes in $FILES files; holdfast: $HOLDFAST; $RUNS runs"
# Warm the page cache, as the other benchmarks do.
tar -cf - -C "$CORPUS" . | cat >/dev/null

# The RGW log's request lines ("beast: ...") after line $1, into file $2.
rgw_lines_since() { tail -n +"$(($1 + 1))" "$RGW_LOG" | grep ' beast: ' >"$2" || true; }
# Request counts by S3 operation (the SDK's x-id query parameter) in the lines of file $1,
# with the bytes the server sent for GETs, and the same per GB (10^9 bytes) of corpus.
requests() {
    sed -E 's/.*"([A-Z]+) [^ ?"]*(\?[^ "]*)? HTTP[^"]*" [0-9]+ ([0-9]+) .*/\1 \2 \3/' "$1" |
        awk -v gb="$(echo "scale=6; $BYTES / 1000000000" | bc)" '
            { op = $1; q = (NF == 3) ? $2 : ""; b = $NF
              if (match(q, /x-id=[A-Za-z]+/)) op = substr(q, RSTART + 5, RLENGTH - 5)
              else if (q ~ /uploads/) op = op "(uploads)"; else if (q ~ /list-type/) op = "ListObjectsV2"
              n[op]++; t++; if ($1 == "GET") gb_sent += b }
            END { for (o in n) printf "%s=%d ", o, n[o]; printf "total=%d", t
                  printf "; per GB:"; for (o in n) printf " %s=%.0f", o, n[o] / gb; printf " total=%.0f", t / gb
                  printf "; GET bytes sent=%.1f MB\n", gb_sent / 1e6 }'
}
log_lines() { wc -l <"$RGW_LOG"; }

# run NAME CMD...: wall seconds and peak RSS (KiB) into $WALL/$RSS; output in WORK/NAME.log.
run() {
    local name=$1
    shift
    /usr/bin/time -f '%e %M %U %S' -o "$WORK/$name.time" "$@" >"$WORK/$name.log" 2>&1 ||
        { echo "$name failed:" >&2; tail -n 20 "$WORK/$name.log" >&2; exit 1; }
    read -r WALL RSS USR SYS <"$WORK/$name.time"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A R
# step WHERE NAME CMD...: runs a timed step; on S3, keeps its RGW log lines.
step() {
    local where=$1 name=$2 l0
    shift 2
    l0=$(log_lines)
    run "$where-$name" "$@"
    R[$where-$name]+="$WALL "
    R[$where-$name-rss]+="$((RSS / 1024)) "
    R[$where-$name-cpu]+="$(awk -v u="$USR" -v s="$SYS" 'BEGIN { printf "%.2f", u + s }') "
    if [[ $where == s3 ]]; then
        rgw_lines_since "$l0" "$WORK/s3-$name.rgw.log"
    fi
}
restore_checked() { # WHERE NAME [VAR=VALUE...]: restore latest into RESTORE_DIR, compare
    local where=$1 name=$2
    shift 2
    rm -rf "$RESTORE_DIR"
    mkdir -p "$RESTORE_DIR"
    step "$where" "$name" env "$@" "$HOLDFAST" restore -q latest --target "$RESTORE_DIR"
    diff -r "$CORPUS" "$RESTORE_DIR/${CORPUS#/}" >/dev/null ||
        { echo "$where $name: the restore differs from the corpus" >&2; exit 1; }
    rm -rf "$RESTORE_DIR"
}
for run_no in $(seq 1 "$RUNS"); do
    for where in local s3; do
        if [[ $where == local ]]; then
            repo="$WORK/local-repo"
            rm -rf "$repo"
        else
            repo="s3:http://127.0.0.1:$RGW_PORT/bench/run$run_no"
        fi
        export HOLDFAST_REPOSITORY=$repo
        "$HOLDFAST" init -q >/dev/null
        step "$where" backup "$HOLDFAST" backup -q "$CORPUS"
        step "$where" rebackup "$HOLDFAST" backup -q "$CORPUS"
        restore_checked "$where" restore
        if [[ $where == s3 ]]; then
            restore_checked s3 restore-no-read-ahead HOLDFAST_S3_READ_AHEAD_MIB=0
        else
            R[repo-bytes]=$(du -sb "$repo" | cut -f1)
        fi
    done
    echo "run $run_no done"
done

mb() { echo "scale=1; $BYTES / 1000000 / $1" | bc; }
med() { tr ' ' '\n' <<<"${R[$1]:-}" | grep . | median; }
# cell KEY UNIT [mb]: the median of KEY with UNIT, "-" when not measured.
cell() {
    [[ -n "${R[$1]:-}" ]] || { echo -; return; }
    local v
    v=$(med "$1")
    [[ ${3:-} == mb ]] && v=$(mb "$v")
    echo "$v $2"
}
printf '\n%-38s %14s %14s\n' "median of $RUNS" local "S3 (RGW)"
for name in backup rebackup restore restore-no-read-ahead; do
    row() { printf '%-38s %14s %14s\n' "$name $1" "$(cell "local-$name$2" "$3" "${4:-}")" "$(cell "s3-$name$2" "$3" "${4:-}")"; }
    row wall "" s
    [[ $name == rebackup ]] || row throughput "" MB/s mb
    row "peak RSS" -rss MiB
    row "CPU (user+sys)" -cpu s
done
echo
echo "all walls (s): $(for k in "${!R[@]}"; do [[ $k == *-rss || $k == *-cpu || $k == repo-bytes ]] || echo "$k=[${R[$k]% }]"; done | sort | tr '\n' ' ')"
echo "repository: $(echo "scale=1; ${R[repo-bytes]} / 1000000" | bc) MB (local)"
for name in backup rebackup restore restore-no-read-ahead; do
    echo "S3 requests, $name (last run): $(requests "$WORK/s3-$name.rgw.log")"
done
