#!/usr/bin/env bash
# Validates Kubernetes manifests against the API's JSON schemas with kubernetes-validate
# (PyPI; schemas bundled, no cluster or network needed once installed), in strict mode:
# an unknown field (a typo such as `mountPropogation`) is an error, not silently dropped
# as `kubectl apply` would. Then checks the validator itself: a manifest with such a typo
# must fail, or the run fails (a validator that accepts everything proves nothing).
#
# Usage: scripts/validate-manifests.sh [FILE...]   (default: deploy/holdfast-agent.yaml)
# Exit status: 0 valid; 1 invalid (or the typo check passed); 3 kubernetes-validate is
# missing and could not be installed (.ci/run fails on that only under CI).
#
# Knobs:
#   KV_VENV      where kubernetes-validate is installed when missing (default
#                /opt/holdfast-kv if writable, else ${XDG_CACHE_HOME:-$HOME/.cache}/holdfast-kv)
#   KV_VERSION   kubernetes-validate release (default 1.37.0, the newest when pinned)
#   K8S_VERSION  Kubernetes version validated against (default 1.33.0: k8s-openapi's
#                feature v1_33, the oldest API the manifests are written for)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KV_VERSION="${KV_VERSION:-1.37.0}"
K8S_VERSION="${K8S_VERSION:-1.33.0}"
if [[ -z "${KV_VENV:-}" ]]; then
    if [[ -w /opt || -d /opt/holdfast-kv ]]; then
        KV_VENV=/opt/holdfast-kv
    else
        KV_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/holdfast-kv"
    fi
fi
KV="$KV_VENV/bin/kubernetes-validate"

# The pinned release in $KV_VENV, installed when missing or another version.
ensure_validator() {
    if [[ -x "$KV" && "$("$KV" --version 2>/dev/null)" == "$KV_VERSION" ]]; then
        return 0
    fi
    echo "installing kubernetes-validate==$KV_VERSION into $KV_VENV"
    if ! command -v python3 >/dev/null 2>&1; then
        echo "python3 not found: cannot install kubernetes-validate" >&2
        return 1
    fi
    mkdir -p "$(dirname "$KV_VENV")" 2>/dev/null || true
    python3 -m venv "$KV_VENV" &&
        "$KV_VENV/bin/pip" install -q --disable-pip-version-check \
            "kubernetes-validate==$KV_VERSION" </dev/null &&
        [[ "$("$KV" --version 2>/dev/null)" == "$KV_VERSION" ]]
}

if ! ensure_validator; then
    echo "kubernetes-validate $KV_VERSION is not available (see above)" >&2
    exit 3
fi

files=("$@")
[[ ${#files[@]} -gt 0 ]] || files=("$ROOT/deploy/holdfast-agent.yaml")

rc=0
echo "validating against Kubernetes $K8S_VERSION (strict): ${files[*]}"
"$KV" --strict --quiet -k "$K8S_VERSION" "${files[@]}" || rc=1

# The typo check: the same validator must reject an unknown field.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/typo.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: typo
spec:
  containers:
  - name: c
    image: busybox
    volumeMounts:
    - name: v
      mountPath: /v
      mountPropogation: HostToContainer
  volumes:
  - name: v
    emptyDir: {}
EOF
if "$KV" --strict --quiet --no-warn -k "$K8S_VERSION" "$tmp/typo.yaml" >"$tmp/out" 2>&1; then
    echo "kubernetes-validate accepted a misspelt field (mountPropogation): not strict" >&2
    rc=1
elif ! grep -q mountPropogation "$tmp/out"; then
    echo "kubernetes-validate rejected the typo check for another reason:" >&2
    cat "$tmp/out" >&2
    rc=1
fi

if [[ $rc == 0 ]]; then
    echo "manifests valid (and a misspelt field is rejected)"
fi
exit "$rc"
