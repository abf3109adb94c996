#!/usr/bin/env bash
# Stops a cluster made by scripts/ceph-up.sh: kills exactly the PIDs it recorded (TERM, then
# KILL after 5 s), then removes DIR unless --keep is given.
# usage: ceph-down.sh DIR [--keep]
DIR=$(realpath -m "${1:?usage: $0 DIR [--keep]}")
for f in "$DIR"/run/*.pid.bg; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null
done
for f in "$DIR"/run/*.pid.bg; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$f"
done
[ "${2:-}" = --keep ] || rm -rf "$DIR"
echo "stopped"
