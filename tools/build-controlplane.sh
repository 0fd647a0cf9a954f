#!/usr/bin/env bash
# Build the binaries of the test control plane from the Go module proxy:
#   kube-apiserver, kube-controller-manager  (k8s.io/kubernetes, module tools/k8s)
#   etcd                                     (go.etcd.io/etcd/server/v3, module tools/etcd)
#   helm v3                                  (helm.sh/helm/v3, `go install`, no module here)
#
# Versions are pinned by tools/k8s/go.mod (k8s.io/kubernetes), tools/etcd/go.mod
# (go.etcd.io/etcd/server/v3, the version k8s pins in hack/lib/etcd.sh) and
# HELM_VERSION below. Output goes OUTSIDE the repository, to
#   ${KAFKA_EXPOSE_CACHE:-$HOME/.cache/kafka-expose}/k8s-<kube version>/bin
# Idempotent: a binary that is present and reports the pinned version is kept,
# so a warm run takes a couple of seconds. The bin dir is the last line printed
# on stdout (progress goes to stderr).
#
# Usage: tools/build-controlplane.sh [--print-bin-dir] [--force]
#   --print-bin-dir  print the bin dir and exit (builds nothing)
#   --force          rebuild everything
set -euo pipefail

HELM_VERSION=v3.22.0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
K8S_MOD="$ROOT/tools/k8s"
ETCD_MOD="$ROOT/tools/etcd"

# Versions straight from the go.mod files (no `go` call, so --print-bin-dir and
# the warm path need no module cache).
modver() { awk -v m="$2" '$1==m && $2 ~ /^v/ {print $2; exit}' "$1/go.mod"; }
KUBE_VERSION=$(modver "$K8S_MOD" k8s.io/kubernetes)
ETCD_VERSION=$(modver "$ETCD_MOD" go.etcd.io/etcd/server/v3)
[[ -n "$KUBE_VERSION" && -n "$ETCD_VERSION" ]] || { echo "cannot read pinned versions from tools/*/go.mod" >&2; exit 1; }

CACHE="${KAFKA_EXPOSE_CACHE:-$HOME/.cache/kafka-expose}"
BIN="$CACHE/k8s-$KUBE_VERSION/bin"

FORCE=0
for a in "$@"; do
  case "$a" in
    --print-bin-dir) echo "$BIN"; exit 0 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done

log() { echo "[build-controlplane] $*" >&2; }

# version_ok <binary> <expected substring> <args...>
version_ok() {
  local b="$1" want="$2"; shift 2
  [[ -x "$BIN/$b" ]] || return 1
  local out
  out=$("$BIN/$b" "$@" 2>&1) || return 1
  [[ "$out" == *"$want"* ]]
}

mkdir -p "$BIN"
# One build at a time per cache dir (parallel CI jobs / sessions).
exec 9>"$BIN/.build.lock"
if command -v flock >/dev/null; then flock 9; fi

export CGO_ENABLED=0
# -mod=readonly: fail instead of silently editing go.mod/go.sum, proves go.sum is complete.
export GOFLAGS="-mod=readonly ${GOFLAGS:-}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

KMAJOR=${KUBE_VERSION#v}; KMAJOR=${KMAJOR%%.*}
KMINOR=${KUBE_VERSION#v*.}; KMINOR=${KMINOR%%.*}

# Same -X set as kubernetes hack/lib/version.sh (kube::version::ldflags).
kube_ldflags() {
  local l="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    l+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$KMAJOR -X $p.gitMinor=$KMINOR"
    l+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$l"
}

build_started=$(date +%s)
built=()

for b in kube-apiserver kube-controller-manager; do
  if [[ $FORCE == 0 ]] && version_ok "$b" "Kubernetes $KUBE_VERSION" --version; then continue; fi
  log "building $b $KUBE_VERSION (cold on 2 cores: kube-apiserver ~9 min, kube-controller-manager ~4 min)"
  t0=$(date +%s)
  (cd "$K8S_MOD" && go build -p 2 -trimpath -ldflags "$(kube_ldflags)" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b")
  mv -f "$BIN/$b.tmp" "$BIN/$b"
  version_ok "$b" "Kubernetes $KUBE_VERSION" --version || { log "$b does not report $KUBE_VERSION"; exit 1; }
  log "built $b in $(( $(date +%s) - t0 ))s"; built+=("$b")
done

if [[ $FORCE == 1 ]] || ! version_ok etcd "etcd Version: ${ETCD_VERSION#v}" --version; then
  log "building etcd $ETCD_VERSION"
  t0=$(date +%s)
  (cd "$ETCD_MOD" && go build -p 2 -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv -f "$BIN/etcd.tmp" "$BIN/etcd"
  version_ok etcd "etcd Version: ${ETCD_VERSION#v}" --version || { log "etcd does not report $ETCD_VERSION"; exit 1; }
  log "built etcd in $(( $(date +%s) - t0 ))s"; built+=(etcd)
fi

if [[ $FORCE == 1 ]] || ! version_ok helm "$HELM_VERSION" version --short; then
  log "building helm $HELM_VERSION"
  t0=$(date +%s)
  # `go install pkg@version` ignores any go.mod here; helm's own go.mod has no replaces.
  # helm v3 takes its default .Capabilities.KubeVersion (helm template) from
  # ldflags, like its Makefile does; otherwise it claims v1.20.0.
  hmod_dir=$(cd "$ROOT" && GOFLAGS= go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cg=$(awk '$1=="k8s.io/client-go"{print $2; exit}' "$hmod_dir/go.mod")   # v0.37.0
  cg=${cg#v0.}; hk_minor=${cg%%.*}
  H=helm.sh/helm/v3
  hl="-s -w -X $H/internal/version.version=$HELM_VERSION -X $H/internal/version.gitTreeState=clean"
  hl+=" -X $H/pkg/chartutil.k8sVersionMajor=1 -X $H/pkg/chartutil.k8sVersionMinor=$hk_minor"
  hl+=" -X $H/pkg/lint/rules.k8sVersionMajor=1 -X $H/pkg/lint/rules.k8sVersionMinor=$hk_minor"
  tmpbin=$(mktemp -d "$BIN/.helm.XXXXXX")
  (cd "$tmpbin" && GOFLAGS= GOBIN="$tmpbin" go install -trimpath -ldflags "$hl" "$H/cmd/helm@$HELM_VERSION")
  mv -f "$tmpbin/helm" "$BIN/helm"; rmdir "$tmpbin"
  version_ok helm "$HELM_VERSION" version --short || { log "helm does not report $HELM_VERSION"; exit 1; }
  log "built helm in $(( $(date +%s) - t0 ))s"; built+=(helm)
fi

if (( ${#built[@]} )); then
  log "built ${built[*]} in $(( $(date +%s) - build_started ))s"
else
  log "all binaries present and at the pinned versions"
fi
echo "$BIN"
