#!/usr/bin/env bash
# Validates the Kubernetes manifests under k8s/ without a cluster and without
# network access beyond PyPI (for the first install only):
#
#   bash scripts/k8s-validate.sh
#
# Renders k8s/base, k8s/overlays/{dev,production} and k8s/monitoring (with
# `kubectl kustomize` when kubectl is installed, and always with the small
# renderer in k8s/validate.py; the two must agree), validates every object
# strictly against the Kubernetes JSON schemas that the PyPI package
# kubernetes-validate ships, and checks the project's own rules (probes,
# resources, restricted security context, PDBs, replicas, least privilege).
# Exits non-zero on any problem. See k8s/validate.py for the full list.
#
# Environment: K8S_VENV (default /tmp/twincert-k8s-venv), K8S_VERSIONS
# (Kubernetes versions to validate against, default "1.30.0 1.34.0").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned: the schema set (and so the verdict) changes with the version.
KV_VERSION="1.37.0"
PYYAML_VERSION="6.0.3"
VENV="${K8S_VENV:-/tmp/twincert-k8s-venv}"

die() { echo "scripts/k8s-validate.sh: $*" >&2; exit 1; }

if ! "$VENV/bin/python" -c "import kubernetes_validate, sys; \
sys.exit(kubernetes_validate.__version__ != '$KV_VERSION')" 2>/dev/null; then
    python3 -c 'import venv, ensurepip' 2>/dev/null \
        || die "python3 venv support missing (apt-get install python3-venv)"
    echo "scripts/k8s-validate.sh: installing kubernetes-validate==$KV_VERSION into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KV_VERSION" "PyYAML==$PYYAML_VERSION"
fi

exec "$VENV/bin/python" k8s/validate.py
