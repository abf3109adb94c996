#!/usr/bin/env bash
# `holdfast copy` local → local (BENCHMARKS.md, "Copy (issue 14)").
# usage: benches/copy_bench.sh BIN [WORKDIR] [CORPUS]
#   BIN     the holdfast binary (e.g. target/release/holdfast)
#   WORKDIR scratch space (default /tmp/copy-bench; removed at the end)
#   CORPUS  what the source repository backs up (default: the installed Rust 1.95.0
#           toolchain, the standard workload's input: ~1.4 GB in ~52,000 files)
# Backs CORPUS up into a source repository (not timed), then times with /usr/bin/time -v:
#   1. copy into a plain target (own keys: every blob read, ID translated, re-encrypted);
#   2. the same copy again (nothing to send);
#   3. copy into a target made with init --copy-chunker-params (shared IDs, re-sealed);
#   4. a backup of CORPUS straight into that target afterwards (what dedup it gets).
set -euo pipefail
BIN=$(realpath "${1:?usage: $0 BIN [WORKDIR] [CORPUS]}")
WORK=$(realpath -m "${2:-/tmp/copy-bench}")
CORPUS=$(readlink -f "${3:-$HOME/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu}")
rm -rf "$WORK"; mkdir -p "$WORK"
export HOLDFAST_PASSWORD=bench HOLDFAST_FROM_PASSWORD=bench HOLDFAST_CACHE_DIR=$WORK/cache
init() { "$BIN" -r "$WORK/$1" init --kdf-memory-kib 8 --kdf-iterations 1 -q "${@:2}"; }
timed() { # NAME CMD...: runs CMD with /usr/bin/time -v, prints NAME, wall s, peak RSS MiB, CPU s
  local name=$1; shift
  /usr/bin/time -v -o "$WORK/time.txt" "$@" >"$WORK/$name.json"
  awk -v n="$name" -F': ' '
    /Elapsed \(wall clock\)/ { split($2, t, ":"); w = (length(t) == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
    /Maximum resident set size/ { r = $2 / 1024 }
    /User time/ { u = $2 } /System time/ { s = $2 }
    END { printf "%-22s wall %7.1f s  peak RSS %6.0f MiB  CPU %7.1f s\n", n, w, r, u + s }' "$WORK/time.txt"
  echo "  $(cat "$WORK/$name.json" | head -c 600)"
}
echo "corpus: $CORPUS ($(du -sb "$CORPUS" | cut -f1) bytes, $(find "$CORPUS" -type f | wc -l) files)"
init src
"$BIN" -r "$WORK/src" backup "$CORPUS" -q
echo "source repository: $(du -sb "$WORK/src" | cut -f1) bytes"
init plain
timed copy-plain "$BIN" -r "$WORK/plain" copy --from-repo "$WORK/src" --json
timed copy-plain-again "$BIN" -r "$WORK/plain" copy --from-repo "$WORK/src" --json
init shared --copy-chunker-params --from-repo "$WORK/src"
timed copy-shared "$BIN" -r "$WORK/shared" copy --from-repo "$WORK/src" --json
timed backup-into-shared "$BIN" -r "$WORK/shared" backup "$CORPUS" --host direct --json
echo "target sizes: plain $(du -sb "$WORK/plain" | cut -f1), shared $(du -sb "$WORK/shared" | cut -f1) bytes"
rm -rf "$WORK"
