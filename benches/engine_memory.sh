#!/usr/bin/env bash
# Peak RSS of `holdfast backup` into a local repository, for the agent's memory limit
# (issue 10): large random files (2, 4, 8 GiB) and many ~200-byte files in a nested tree
# (initial and unchanged second backup). Run by hand, never by CI.
#
#   benches/engine_memory.sh HOLDFAST_BINARY SRC_DIR REPO_DIR [SMALL_COUNTS...]
#
# SRC_DIR should be a tmpfs (e.g. /dev/shm/x) so the source costs no disk: it holds up to
# 8 GiB of random data, then the small-file trees. REPO_DIR gets up to 8 GiB. Both are
# deleted at the end. Default SMALL_COUNTS: 100000 500000. SKIP_LARGE=1: small files only.
set -euo pipefail
HF=${1:?holdfast binary}
SRC=${2:?source dir (tmpfs)}
REPO=${3:?repository dir}
shift 3
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(100000 500000)
export HOLDFAST_PASSWORD=bench
mkdir -p "$SRC"

peak() { # label, then the command; prints label, wall time and peak RSS
  local label=$1; shift
  local log; log=$(mktemp)
  /usr/bin/time -v "$@" >/dev/null 2>"$log" || { cat "$log"; rm -f "$log"; return 1; }
  printf '%-40s wall %8s  peak RSS %7d KiB\n' "$label" \
    "$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$log")" \
    "$(awk -F': ' '/Maximum resident set size/{print $2}' "$log")"
  rm -f "$log"
}

fresh_repo() {
  rm -rf "$REPO"
  "$HF" -r "$REPO" init --kdf-memory-kib 8 --kdf-iterations 1 >/dev/null
}

# Large files: four random files of 2 GiB; backups of 1, 2 and 4 of them (2, 4, 8 GiB).
for i in 1 2 3 4; do
  [ "${SKIP_LARGE:-}" != 1 ] || break
  [ -f "$SRC/big$i" ] || head -c 2G /dev/urandom >"$SRC/big$i"
done
for n in 1 2 4; do
  [ "${SKIP_LARGE:-}" != 1 ] || break
  fresh_repo
  files=()
  for i in $(seq 1 $n); do files+=("$SRC/big$i"); done
  peak "large files: $((n * 2)) GiB ($n x 2 GiB)" "$HF" -r "$REPO" -q backup "${files[@]}"
done
rm -f "$SRC"/big*
rm -rf "$REPO"

# Small files: COUNT files of ~200 bytes, 100 per directory, 100 directories per parent.
for count in "${COUNTS[@]}"; do
  tree="$SRC/small-$count"
  python3 - "$tree" "$count" <<'EOF'
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
payload = os.urandom(150).hex()  # 300 hex chars; each file takes 200 of them, shifted
for i in range(count):
    d = os.path.join(root, f"a{i // 10000:04d}", f"b{(i // 100) % 100:02d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 100:02d}.txt"), "w") as f:
        f.write(f"{i:08d} " + payload[i % 91:i % 91 + 191])
EOF
  fresh_repo
  peak "small files: $count, initial" "$HF" -r "$REPO" -q backup "$tree"
  peak "small files: $count, unchanged again" "$HF" -r "$REPO" -q backup "$tree"
  rm -rf "$tree" "$REPO"
done
