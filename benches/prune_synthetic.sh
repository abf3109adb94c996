#!/usr/bin/env bash
# Prune at scale (issue #4): a repository with millions of blobs, built from N tiny files
# with distinct contents (each file one data blob; 1000 files a directory). Backup 1 holds
# all N, then half the files are deleted and replaced by N/2 new ones, backup 2, forget
# backup 1; then the mark and the sweep prune (--safety-margin 0s) and check, each timed
# with peak RSS.
#
# usage: benches/prune_synthetic.sh WORKDIR [N]     (N default 2000000; WORKDIR on tmpfs
#        is fastest: /dev/shm/...)
# env:   HOLDFAST (binary; default target/release/holdfast)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK=$(realpath -m "${1:?usage: $0 WORKDIR [N]}")
N=${2:-2000000}
HF=${HOLDFAST:-$HERE/../target/release/holdfast}
[[ -x "$HF" ]] || { echo "no holdfast binary at $HF (cargo build --release, or set HOLDFAST)" >&2; exit 2; }
SRC=$WORK/src
rm -rf "$WORK"
mkdir -p "$SRC"

# File i holds 40-80 bytes unique to it: one blob each, below every chunk minimum.
gen() { # FROM TO
    python3 - "$SRC" "$1" "$2" <<'EOF'
import os, sys
root, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(lo, hi):
    d = os.path.join(root, f"d{i // 1000:05d}")
    if i % 1000 == 0 or i == lo:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:08d}"), "wb") as f:
        f.write((f"holdfast synthetic blob {i} " * (1 + i % 3)).encode())
EOF
}
gen 0 "$N"

export HOLDFAST_REPOSITORY=$WORK/repo HOLDFAST_PASSWORD=bench-password
"$HF" init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null

repo_mb() { du -sb "$HOLDFAST_REPOSITORY" | awk '{printf "%.1f", $1 / 1e6}'; }
step() { # NAME CMD...
    local name=$1 out
    shift
    /usr/bin/time -o "$WORK/$name.time" -f "%e %M" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" ||
        [[ $? == 3 ]] || { echo "$name failed:" >&2; tail -n 20 "$WORK/$name.err" >&2; exit 1; }
    out=$(tail -n1 "$WORK/$name.time")
    printf '%-12s %7.2f s %7.1f MiB  repo %s MB\n' "$name" "$(cut -d' ' -f1 <<<"$out")" \
        "$(awk '{print $2 / 1024}' <<<"$out")" "$(repo_mb)"
}

step backup-1 "$HF" backup --json "$SRC"
first=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_id"])' "$WORK/backup-1.out")
# Half of the directories go; as many new files come.
find "$SRC" -mindepth 1 -maxdepth 1 -name 'd*[13579]' -exec rm -rf {} +
gen "$N" $((N + N / 2))
step backup-2 "$HF" backup --json "$SRC"
step forget "$HF" forget "$first"
step stats "$HF" stats --json
step prune-mark "$HF" prune --json --safety-margin 0s
step prune-sweep "$HF" prune --json --safety-margin 0s
step check "$HF" check
echo "blobs in backup 1: $N; reports in $WORK/prune-{mark,sweep}.out"
