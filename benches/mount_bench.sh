#!/usr/bin/env bash
# `holdfast mount` against `restic mount` (issue 13: restic's mount is slow on many small
# files). Builds a corpus of one directory of 100,000 small files (flat/, 64 bytes each)
# and a tree of 10,000 files of 4 KiB (tree/, 100 directories of 100), backs it up with
# holdfast and with restic into local repositories, mounts each, and times:
#   ls -l of flat/ on a fresh mount (cold), then again (warm); find | wc -l of the whole
#   snapshot; tar cf - tree/ | wc -c (every small file read);
# and the peak RSS of the mount process (/usr/bin/time -v). Run by hand, never by CI.
#
#   cargo build --release -p holdfast-cli
#   benches/mount_bench.sh TARGET_PROFILE_DIR     # e.g. $CARGO_TARGET_DIR/release
#
# Needs restic, fusermount3 (fuse3) and /usr/bin/time. Everything lives in a temporary
# directory (under $TMPDIR), deleted on exit.
set -euo pipefail
BIN=${1:?target profile dir, e.g. target/release}
HF=$BIN/holdfast
W=$(mktemp -d)
MOUNT_PID=
cleanup() {
  if [ -n "$MOUNT_PID" ]; then kill "$MOUNT_PID" 2>/dev/null || true; wait 2>/dev/null || true; fi
  for m in "$W"/mnt-*; do mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m"; done
  rm -rf "$W"
}
trap cleanup EXIT

echo "== corpus in $W/corpus"
python3 - "$W/corpus" <<'PY'
import os, sys
root = sys.argv[1]
flat = os.path.join(root, "flat")
os.makedirs(flat)
for i in range(100_000):
    with open(os.path.join(flat, f"f{i:06d}"), "wb") as f:
        f.write(b"%063d\n" % i)
for d in range(100):
    p = os.path.join(root, "tree", f"d{d:03d}")
    os.makedirs(p)
    for i in range(100):
        with open(os.path.join(p, f"f{i:03d}"), "wb") as f:
            f.write(os.urandom(4096))
PY
C=$W/corpus

export HOLDFAST_PASSWORD=bench HOLDFAST_REPOSITORY=$W/hf-repo HOLDFAST_CACHE_DIR=$W/hf-cache
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$W/restic-repo RESTIC_CACHE_DIR=$W/restic-cache
"$HF" init --kdf-memory-kib 8 --kdf-iterations 1 >/dev/null
"$HF" backup --quiet "$C"
restic init >/dev/null
restic backup --quiet "$C"

# t CMD...: wall seconds of CMD (its output discarded).
t() {
  local s e
  s=$(date +%s.%N)
  "$@" >/dev/null
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}

# bench NAME MOUNT-CMD...: mounts with MOUNT-CMD under /usr/bin/time, runs the timings,
# unmounts (SIGINT) and prints the row.
bench() {
  local name=$1; shift
  local mnt=$W/mnt-$name
  mkdir -p "$mnt"
  /usr/bin/time -v -o "$W/time-$name-1" "$@" "$mnt" >"$W/log-$name" 2>&1 &
  MOUNT_PID=$!
  for _ in $(seq 600); do mountpoint -q "$mnt" && break; sleep 0.1; done
  mountpoint -q "$mnt" || { echo "$name did not mount:"; cat "$W/log-$name"; exit 1; }
  local snap=$mnt/snapshots/latest
  for _ in $(seq 100); do [ -d "$snap$C" ] && break; sleep 0.1; done
  local base=$snap$C
  local cold warm find tar n bytes
  cold=$(t sh -c "ls -l '$base/flat' | wc -l")
  warm=$(t sh -c "ls -l '$base/flat' | wc -l")
  n=$(find "$base" | wc -l)
  find=$(t sh -c "find '$base' | wc -l")
  bytes=$(cd "$base" && tar cf - tree | wc -c)
  # Unmount and remount for a cold read of the small files.
  fusermount3 -u "$mnt"; wait "$MOUNT_PID" || true
  /usr/bin/time -v -o "$W/time-$name-2" "$@" "$mnt" >>"$W/log-$name" 2>&1 &
  MOUNT_PID=$!
  for _ in $(seq 600); do mountpoint -q "$mnt" && break; sleep 0.1; done
  for _ in $(seq 100); do [ -d "$snap$C" ] && break; sleep 0.1; done
  tar=$(t sh -c "cd '$base' && tar cf - tree | wc -c")
  fusermount3 -u "$mnt"; wait "$MOUNT_PID" || true
  MOUNT_PID=
  local rss
  # The larger peak of the two mounts (listing, reading).
  rss=$(awk -F: '/Maximum resident/{gsub(/ /,"",$2); if ($2 > m) m = $2} END {print m}' "$W/time-$name-1" "$W/time-$name-2")
  printf '%-9s %10.2f %10.2f %10.2f %12.2f %12s   (find saw %s entries, tar %s bytes)\n' \
    "$name" "$cold" "$warm" "$find" "$tar" "$((rss / 1024)) MiB" "$n" "$bytes"
}

echo "== $(nproc) CPUs, $(awk '/MemTotal/{print int($2/1024)" MiB"}' /proc/meminfo), $(uname -r); $("$HF" --version); $(restic version | cut -d' ' -f1-2)"
printf '%-9s %10s %10s %10s %12s %12s\n' tool "ls-l cold" "ls-l warm" "find|wc" "tar 10k (s)" "peak RSS"
bench holdfast "$HF" mount
bench restic restic mount
