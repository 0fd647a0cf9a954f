#!/usr/bin/env bash
# Build kustomize from the Go module proxy into a versioned cache dir (idempotent).
# Prints the path of the kustomize binary as the last line on stdout (progress goes to stderr).
#
# Usage: tools/build-kustomize.sh [--print-path] [--force]
#   --print-path  print where the binary lives and exit (builds nothing)
#   --force       rebuild even when the cached binary reports the pinned version
set -euo pipefail

# v5.8.3 needs go 1.27; v5.8.2 is the newest that builds with the local go 1.26.
KUSTOMIZE_VERSION=v5.8.2

CACHE="${KAFKA_EXPOSE_CACHE:-$HOME/.cache/kafka-expose}"
BIN="$CACHE/tools/kustomize-$KUSTOMIZE_VERSION/bin"
EXE="$BIN/kustomize"

FORCE=0
for a in "$@"; do
  case "$a" in
    --print-path) echo "$EXE"; exit 0 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done

log() { echo "[build-kustomize] $*" >&2; }

version_ok() { [[ -x "$EXE" ]] && [[ "$("$EXE" version 2>&1)" == *"${KUSTOMIZE_VERSION}"* ]]; }

mkdir -p "$BIN"
exec 9>"$BIN/.build.lock"
if command -v flock >/dev/null; then flock 9; fi

if [[ $FORCE == 1 ]] || ! version_ok; then
  log "building kustomize $KUSTOMIZE_VERSION"
  t0=$(date +%s)
  tmpbin=$(mktemp -d "$BIN/.kustomize.XXXXXX")
  # `go install pkg@version` ignores any go.mod in the working dir; run it from the temp dir.
  # The -X flag stamps the version that `kustomize version` prints (as its release build does).
  (cd "$tmpbin" && CGO_ENABLED=0 GOFLAGS= GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOBIN="$tmpbin" \
    go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kustomize/api/provenance.version=$KUSTOMIZE_VERSION" \
    "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION")
  mv -f "$tmpbin/kustomize" "$EXE"; rmdir "$tmpbin"
  if ! version_ok; then
    # Older/newer kustomize may not honour the -X stamp; the binary still works.
    log "warning: kustomize does not report $KUSTOMIZE_VERSION: $("$EXE" version 2>&1 || true)"
  fi
  log "built kustomize in $(( $(date +%s) - t0 ))s"
else
  log "kustomize $KUSTOMIZE_VERSION present"
fi
echo "$EXE"
