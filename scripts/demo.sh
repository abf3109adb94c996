#!/usr/bin/env bash
# Builds holdfast and runs its main job on a sample directory: init a local repository,
# back up, change a file, back up again (incremental), restore, and compare with the source.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p holdfast-cli
bin="${CARGO_TARGET_DIR:-target}/release/holdfast"
work="$(mktemp -d "${TMPDIR:-/tmp}/holdfast-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# A small sample: some text, a binary file, a symlink, a nested directory.
mkdir -p "$work/sample/docs/nested"
printf 'hello from holdfast\n' > "$work/sample/docs/readme.txt"
head -c 3000000 /dev/urandom > "$work/sample/blob.bin"
seq 1 200000 > "$work/sample/docs/nested/numbers.txt"
ln -s docs/readme.txt "$work/sample/link"

export HOLDFAST_REPOSITORY="$work/repo" HOLDFAST_PASSWORD="demo password"
"$bin" init
"$bin" backup "$work/sample" --tag demo
echo "one more line" >> "$work/sample/docs/readme.txt"
"$bin" backup "$work/sample" --tag demo
"$bin" snapshots
"$bin" restore latest --target "$work/restored"
diff -r "$work/sample" "$work/restored$work/sample"
echo "demo OK: the restore is identical to the source"
