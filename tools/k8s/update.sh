#!/usr/bin/env bash
# Re-pin the control-plane binaries: regenerates tools/k8s/go.mod+go.sum for a
# Kubernetes release and tools/etcd/go.mod+go.sum for the etcd that release
# pins (hack/lib/etcd.sh ETCD_VERSION). Commit the four files afterwards and
# run tools/build-controlplane.sh.
#
# Usage: tools/k8s/update.sh v1.37.2
set -euo pipefail
KV=${1:?usage: $0 v1.<minor>.<patch>}
SV=v0.${KV#v1.}                        # staging modules: v1.37.2 -> v0.37.2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ETCD_DIR="$HERE/../etcd"
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local}

info=$(go mod download -json "k8s.io/kubernetes@$KV")
gomod=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])' <<<"$info")
kdir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <<<"$info")
goline=$(awk '$1=="go"{print $2; exit}' "$gomod")

# k8s.io/kubernetes maps every staging module to ./staging/src/k8s.io/*;
# map each one to its published tag instead (kubernetes/kubernetes#79384).
cd "$HERE"
rm -f go.mod go.sum
go mod init local.test/k8sbins
go mod edit -go="$goline"
for m in $(sed -n '/^replace (/,/^)/p' "$gomod" | awk '$2=="=>"{print $1}'); do
  go mod edit -replace="$m=$m@$SV"
done
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$KV" "k8s.io/kubernetes/cmd/kube-controller-manager@$KV"
go mod tidy
# Gather the replace lines into one commented block.
python3 - <<'EOF'
import re
t = open("go.mod").read()
reps = re.findall(r"^replace (\S+ => \S+ \S+)\n", t, re.M)
t = re.sub(r"^replace \S+ => \S+ \S+\n\n?", "", t, flags=re.M).rstrip() + "\n\n"
t += ("// k8s.io/kubernetes requires its staging modules at v0.0.0 and maps them to\n"
      "// ./staging/src/k8s.io/*; a module that imports it must map them to the\n"
      "// published v0.<minor>.<patch> tags (kubernetes/kubernetes#79384).\nreplace (\n")
t += "".join(f"\t{r}\n" for r in reps) + ")\n"
open("go.mod", "w").write(t)
EOF
go mod tidy
go mod verify

EV=v$(sed -n 's/^ETCD_VERSION=\${ETCD_VERSION:-\([^}]*\)}.*/\1/p' "$kdir/hack/lib/etcd.sh")
cd "$ETCD_DIR"
rm -f go.mod go.sum
go mod init local.test/etcdbin
go mod edit -go="$goline"
go get -tool "go.etcd.io/etcd/server/v3@$EV"
go mod tidy
go mod verify
echo "pinned kubernetes $KV (staging $SV), etcd $EV" >&2
