#!/usr/bin/env bash
# Development install of the webhook certificate for manifests/base (see certs/README.md):
# generate a CA + serving certificate (reusing an existing CA in $OUT), store them in Secret
# $SECRET and patch caBundle into the kafka-expose webhook configurations. Needs kubectl and
# kafka-expose (or `python -m webhook`) on PATH.
set -euo pipefail

OUT=${OUT:-certs/out}
NAMESPACE=${NAMESPACE:-kafka-expose}
SERVICE=${SERVICE:-kafka-expose}
SECRET=${SECRET:-kafka-expose-tls}
CONFIG=${CONFIG:-kafka-expose}
KAFKA_EXPOSE=${KAFKA_EXPOSE:-$(command -v kafka-expose || echo "python -m webhook")}

args=(certs generate --service "$SERVICE" --namespace "$NAMESPACE" --out "$OUT")
if [[ -f "$OUT/ca.crt" && -f "$OUT/ca.key" ]]; then
  # Keep the CA: only the serving certificate changes, caBundle stays valid.
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  cp "$OUT/ca.crt" "$OUT/ca.key" "$tmp/"
  args+=(--ca-cert "$tmp/ca.crt" --ca-key "$tmp/ca.key" --force)  # same CA: only tls.* change
fi
$KAFKA_EXPOSE "${args[@]}" >/dev/null

kubectl -n "$NAMESPACE" create secret tls "$SECRET" --cert "$OUT/tls.crt" --key "$OUT/tls.key" \
  --dry-run=client -o yaml | kubectl apply -f -

bundle=$(base64 < "$OUT/ca.crt" | tr -d '\n')
for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
  count=$(kubectl get "$kind" "$CONFIG" -o jsonpath='{range .webhooks[*]}x{end}' | wc -c)
  patch="["
  for ((i = 0; i < count; i++)); do
    ((i > 0)) && patch+=","
    patch+="{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$bundle\"}"
  done
  patch+="]"
  kubectl patch "$kind" "$CONFIG" --type=json -p "$patch"
done
echo "certificate installed: Secret $NAMESPACE/$SECRET, caBundle of $CONFIG webhooks" >&2
