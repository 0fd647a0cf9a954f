#!/usr/bin/env bash
# Build the ecosystem the tests run beside kafka-expose, from the Go module proxy:
#   external-dns  sigs.k8s.io/external-dns (its one command; `go install`, no module here)
#   coredns       github.com/coredns/coredns with the bind/errors/log/etcd plugins only
#                 (module tools/coredns: the version is pinned by its go.mod/go.sum)
#   helm4         helm.sh/helm/v4/cmd/helm (`go install`, no module here), beside the v3
#                 that build-controlplane.sh builds
# Same conventions as build-controlplane.sh: the machine's one Go module cache and build
# cache (GOMODCACHE/GOCACHE are not overridden, so every build shares them), CGO off,
# GOTOOLCHAIN=local, output OUTSIDE the repository in a directory keyed by version:
#   ${KAFKA_EXPOSE_CACHE:-$HOME/.cache/kafka-expose}/tools/<tool>-<version>/bin/<exe>
# Idempotent: a binary that reports the pinned version is kept. Each cold build's wall time is
# written next to it (build-seconds). The paths of the binaries are printed on stdout, one a
# line, in the order asked (progress goes to stderr).
#
# Usage: tools/build-ecosystem.sh [--print-path] [--force] [external-dns|coredns|helm4 ...]
#   (no tool named: all three)
#   --print-path  print where the binaries live and exit (builds nothing)
#   --force       rebuild even when the cached binary reports the pinned version
set -euo pipefail

# v0.20.x: newer external-dns needs go 1.27 and pins an openshift/api pseudo-version the proxy refuses.
EXTERNAL_DNS_VERSION=v0.20.0
HELM4_VERSION=v4.3.1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COREDNS_MOD="$ROOT/tools/coredns"
COREDNS_VERSION=$(awk '$1=="require" && $2=="github.com/coredns/coredns" {print $3; exit}' "$COREDNS_MOD/go.mod")
[[ -n "$COREDNS_VERSION" ]] || { echo "cannot read the coredns version from tools/coredns/go.mod" >&2; exit 1; }

CACHE="${KAFKA_EXPOSE_CACHE:-$HOME/.cache/kafka-expose}"

FORCE=0 PRINT=0 TOOLS=()
for a in "$@"; do
  case "$a" in
    --print-path) PRINT=1 ;;
    --force) FORCE=1 ;;
    external-dns|coredns|helm4) TOOLS+=("$a") ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
(( ${#TOOLS[@]} )) || TOOLS=(external-dns coredns helm4)

version_of() {
  case "$1" in external-dns) echo "$EXTERNAL_DNS_VERSION" ;; coredns) echo "$COREDNS_VERSION" ;; helm4) echo "$HELM4_VERSION" ;; esac
}
exe_of() {
  local name=$1; [[ $name == helm4 ]] && name=helm
  echo "$CACHE/tools/$1-$(version_of "$1")/bin/$name"
}

if [[ $PRINT == 1 ]]; then
  for t in "${TOOLS[@]}"; do exe_of "$t"; done
  exit 0
fi

log() { echo "[build-ecosystem] $*" >&2; }

# version_ok <tool>: the cached binary runs and names the pinned version.
version_ok() {
  local exe want out
  exe=$(exe_of "$1"); want=$(version_of "$1")
  [[ -x "$exe" ]] || return 1
  case "$1" in
    external-dns) out=$("$exe" --version 2>&1) ;;
    coredns) out=$("$exe" -version 2>&1); want="CoreDNS-${want#v}" ;;
    helm4) out=$("$exe" version --short 2>&1) ;;
  esac || return 1
  [[ "$out" == *"$want"* ]]
}

export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

build_one() {
  local t=$1 exe bin v tmpbin t0
  exe=$(exe_of "$t"); bin=$(dirname "$exe"); v=$(version_of "$t")
  mkdir -p "$bin"
  exec 9>"$bin/.build.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if [[ $FORCE == 0 ]] && version_ok "$t"; then log "$t $v present"; return; fi
  log "building $t $v"
  t0=$(date +%s)
  tmpbin=$(mktemp -d "$bin/.build.XXXXXX")
  case "$t" in
    external-dns)
      # `go install pkg@version` ignores any go.mod in the working dir; external-dns's has no replaces.
      (cd "$tmpbin" && GOFLAGS= GOBIN="$tmpbin" go install -p 2 -trimpath \
        -ldflags "-s -w -X sigs.k8s.io/external-dns/pkg/apis/externaldns.Version=$v" \
        "sigs.k8s.io/external-dns@$v") ;;
    coredns)
      # -mod=readonly: fail instead of editing go.mod/go.sum, proves go.sum is complete.
      (cd "$COREDNS_MOD" && GOFLAGS="-mod=readonly" go build -p 2 -trimpath -ldflags "-s -w" \
        -o "$tmpbin/coredns" .) ;;
    helm4)
      (cd "$tmpbin" && GOFLAGS= GOBIN="$tmpbin" go install -p 2 -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$v -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
        "helm.sh/helm/v4/cmd/helm@$v") ;;
  esac
  mv -f "$tmpbin/$(basename "$exe")" "$exe"; rmdir "$tmpbin"
  version_ok "$t" || { log "$t does not report $v"; exit 1; }
  echo "$(( $(date +%s) - t0 ))" > "$bin/build-seconds"
  log "built $t $v in $(( $(date +%s) - t0 ))s"
  exec 9>&-
}

for t in "${TOOLS[@]}"; do build_one "$t"; done
for t in "${TOOLS[@]}"; do exe_of "$t"; done
