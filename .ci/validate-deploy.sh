#!/usr/bin/env bash
# Validates deploy/: every manifest against the Kubernetes schemas, the references between them,
# and every ringway flag they use against the binary. Called from .ci/run; runs on its own too.
#
#   .ci/validate-deploy.sh
#
# 1. Schemas: kubernetes-validate (PyPI, installed into a venv under target/ if missing), strict
#    (an unknown field is an error, so a misspelt securityContext key fails), against the oldest
#    and a recent Kubernetes version the manifests are for (KUBERNETES_VERSIONS, default
#    "1.30.0 1.34.0"; 1.30 is the first with the native `preStop: sleep` action they use).
#    GKE's, Gateway API's and cert-manager's CRDs (BackendConfig, HealthCheckPolicy,
#    GCPBackendPolicy, Gateway, HTTPRoute, Certificate) have no schema there: kubernetes-validate
#    warns and passes them, which is this tool's --ignore-missing-schemas. Step 2 still checks
#    their shape and references.
# 2. Shape and references (.ci/deploy_checks.py): YAML parses, every document has apiVersion,
#    kind, metadata.name and labels; Service selectors match some pod template; named
#    targetPorts, probe ports, HPA/PDB targets, HTTPRoute backends and policy targetRefs exist;
#    volumeMounts name declared volumes, --tls-cert-file/--tls-key-file lie under a mount, and a
#    Certificate's secretName is mounted by some pod;
#    the seccomp profile is valid JSON and allows the io_uring syscalls.
# 3. Flags: every `--flag` in the args (and command) of a container that runs ringway or
#    ringway-load, and every RINGWAY_* / RINGWAY_LOAD_* env name, must appear in that binary's
#    --help (the Dockerfile's CMD too). Uses the newer of target/release and target/debug, and
#    builds target/debug (`cargo build -p ringway -p ringway-load`) if neither exists; set
#    RINGWAY_BIN_DIR to use other binaries.
# Exit status: 0 when all three pass.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-"1.30.0 1.34.0"}
VENV=${RINGWAY_CI_VENV:-target/ci-venv}
KUBERNETES_VALIDATE_VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}

step() { printf '\n==> %s\n' "$*"; }
status=0

step "validate-deploy: kubernetes-validate $KUBERNETES_VALIDATE_VERSION in $VENV"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

mapfile -t manifests < <(find deploy -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
echo "${#manifests[@]} manifests"

for version in $KUBERNETES_VERSIONS; do
  step "validate-deploy: schemas, Kubernetes $version (strict; CRDs without a schema are warned and skipped)"
  if ! "$VENV/bin/kubernetes-validate" --strict -k "$version" "${manifests[@]}"; then
    status=1
  fi
done

bin_dir=${RINGWAY_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  for dir in target/release target/debug; do
    [ -x "$dir/ringway" ] && [ -x "$dir/ringway-load" ] || continue
    if [ -z "$bin_dir" ] || [ "$dir/ringway" -nt "$bin_dir/ringway" ]; then bin_dir=$dir; fi
  done
fi
if [ -z "$bin_dir" ]; then
  step "validate-deploy: building ringway and ringway-load (debug) for their --help"
  cargo build -p ringway -p ringway-load
  bin_dir=target/debug
fi

step "validate-deploy: shape, references, and flags against $bin_dir/ringway --help"
if ! "$VENV/bin/python" .ci/deploy_checks.py --bin-dir "$bin_dir" "${manifests[@]}"; then
  status=1
fi

if [ $status = 0 ]; then step "validate-deploy: ok"; else step "validate-deploy: FAILED"; fi
exit $status
