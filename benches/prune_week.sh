#!/usr/bin/env bash
# Prune figures on the standard workload (issue #4): a repository holding a week of
# nightly backups of the toolchain corpus (day 0, then seven "day two" mutations with
# seeds SEED+1..SEED+7), then `forget --keep-last KEEP` and the two prunes of the mark
# and sweep cycle (--safety-margin 0s), each timed with its peak RSS; then `check` and a
# restore of the newest snapshot compared with the source.
#
# usage: benches/prune_week.sh WORKDIR [KEEP]      (KEEP default 3)
# env:   HOLDFAST (binary; default target/release/holdfast), SEED (default 20260522)
# Needs ~3 GB in WORKDIR. Prints one line per step: step, wall s, peak RSS MiB, repo MB.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK=$(realpath -m "${1:?usage: $0 WORKDIR [KEEP]}")
KEEP=${2:-3}
SEED=${SEED:-20260522}
HF=${HOLDFAST:-$HERE/../target/release/holdfast}
[[ -x "$HF" ]] || { echo "no holdfast binary at $HF (cargo build --release, or set HOLDFAST)" >&2; exit 2; }

mkdir -p "$WORK"
SRC=$WORK/toolchain
# A pristine corpus beside the one the week mutates.
if [[ ! -d "$WORK/pristine/toolchain" ]]; then
    bash "$HERE/workload/make_corpus.sh" "$WORK/pristine" toolchain >/dev/null
fi
rm -rf "$SRC"
cp -a "$WORK/pristine/toolchain" "$SRC"
export HOLDFAST_REPOSITORY=$WORK/repo HOLDFAST_PASSWORD=bench-password
rm -rf "$HOLDFAST_REPOSITORY"
"$HF" init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null

repo_mb() { du -sb "$HOLDFAST_REPOSITORY" | awk '{printf "%.1f", $1 / 1e6}'; }
step() { # NAME CMD...
    local name=$1 out
    shift
    /usr/bin/time -o "$WORK/$name.time" -f "%e %M" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" ||
        [[ $? == 3 ]] || { echo "$name failed:" >&2; tail -n 20 "$WORK/$name.err" >&2; exit 1; }
    out=$(tail -n1 "$WORK/$name.time")
    printf '%-14s %6.2f s %6.1f MiB  repo %s MB\n' "$name" "$(cut -d' ' -f1 <<<"$out")" \
        "$(awk '{print $2 / 1024}' <<<"$out")" "$(repo_mb)"
}

step backup-day0 "$HF" backup --host bench "$SRC"
for day in 1 2 3 4 5 6 7; do
    python3 "$HERE/workload/mutate.py" "$SRC" $((SEED + day)) >/dev/null
    step "backup-day$day" "$HF" backup --host bench "$SRC"
done
step forget "$HF" forget --keep-last "$KEEP"
step prune-mark "$HF" prune --json --safety-margin 0s
step prune-sweep "$HF" prune --json --safety-margin 0s
step repack-mark "$HF" prune --json --safety-margin 0s --max-unused 0
step repack-sweep "$HF" prune --json --safety-margin 0s --max-unused 0
echo "prune reports: $WORK/{prune,repack}-{mark,sweep}.out"
step check "$HF" check
rm -rf "$WORK/restore"
step restore "$HF" restore latest --target "$WORK/restore"
diff -r "$SRC" "$WORK/restore$SRC" >/dev/null && echo "restore of latest: identical to the source"
