#!/usr/bin/env bash
# Build cert-manager's controller from the Go module proxy (module tools/cert-manager).
#
# Why v1.11.5: from v1.12 on cert-manager's commands live in their own modules
# (github.com/cert-manager/cert-manager/cmd/controller), which the module proxy
# does not serve; the root module v1.11.5 is the newest that still contains
# cmd/controller. Only the controller is built: the tests apply its CRDs straight
# from the fetched module (deploy/crds) and need neither its webhook nor cainjector.
#
# The version is pinned by tools/cert-manager/go.mod. Output goes OUTSIDE the
# repository, to ${KAFKA_EXPOSE_CACHE:-$HOME/.cache/kafka-expose}/cert-manager-<version>/
#   bin/cert-manager-controller
#   crds/*.yaml            (Helm-templated labels stripped: plain YAML the API server takes)
# Idempotent: a warm run takes a second. The directory is the last line on stdout.
# Cold on 2 cores: about 5 minutes (measured, see README "Encrypted external listeners").
#
# Usage: tools/build-cert-manager.sh [--print-dir] [--force]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD="$ROOT/tools/cert-manager"
CM=github.com/cert-manager/cert-manager
VERSION=$(awk -v m="$CM" '$1==m && $2 ~ /^v/ {print $2; exit}' "$MOD/go.mod")
[[ -n "$VERSION" ]] || { echo "cannot read the pinned $CM version from $MOD/go.mod" >&2; exit 1; }

CACHE="${KAFKA_EXPOSE_CACHE:-$HOME/.cache/kafka-expose}"
DIR="$CACHE/cert-manager-$VERSION"
EXE="$DIR/bin/cert-manager-controller"

FORCE=0
for a in "$@"; do
  case "$a" in
    --print-dir) echo "$DIR"; exit 0 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done

log() { echo "[build-cert-manager] $*" >&2; }

mkdir -p "$DIR/bin" "$DIR/crds"
exec 9>"$DIR/.build.lock"
if command -v flock >/dev/null; then flock 9; fi

export CGO_ENABLED=0
export GOFLAGS="-mod=readonly ${GOFLAGS:-}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

version_ok() { [[ -x "$EXE" ]] && [[ "$("$EXE" --version 2>&1 || true)" == *"$VERSION"* ]]; }

if [[ $FORCE == 1 ]] || ! version_ok; then
  log "building cert-manager controller $VERSION (cold on 2 cores: about 5 minutes)"
  t0=$(date +%s)
  V=$CM/pkg/util
  (cd "$MOD" && go build -p 2 -trimpath \
    -ldflags "-s -w -X $V.AppVersion=$VERSION -X $V.AppGitCommit=module-proxy" \
    -o "$EXE.tmp" "$CM/cmd/controller")
  mv -f "$EXE.tmp" "$EXE"
  version_ok || log "warning: the controller does not report $VERSION: $("$EXE" --version 2>&1 | head -1 || true)"
  log "built the cert-manager controller in $(( $(date +%s) - t0 ))s"
else
  log "cert-manager controller $VERSION present"
fi

if [[ $FORCE == 1 ]] || ! ls "$DIR/crds/"*.yaml >/dev/null 2>&1; then
  src=$(cd "$MOD" && go list -m -f '{{.Dir}}' "$CM")
  for f in "$src"/deploy/crds/crd-*.yaml; do
    # The CRDs are Helm templates only in their metadata (labels, conversion
    # webhook block under a {{- if }}): drop every line holding a template action.
    grep -v '{{' "$f" > "$DIR/crds/$(basename "$f")"
  done
  log "CRDs from $src/deploy/crds into $DIR/crds"
fi
echo "$DIR"
