#!/usr/bin/env bash
# Regenerates deploy/holdfast-prometheusrule.yaml from deploy/prometheus/holdfast-rules.yaml
# (the plain rule file is the source; tests/tests/monitoring.rs checks they carry the same
# groups).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$ROOT/deploy/holdfast-prometheusrule.yaml"
{
    sed -n '1,/^spec:$/p' "$out"
    sed -n '/^groups:/,$p' "$ROOT/deploy/prometheus/holdfast-rules.yaml" | sed 's/^/  /'
} >"$out.new"
mv "$out.new" "$out"
