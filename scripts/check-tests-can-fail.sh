#!/usr/bin/env bash
# Show that the cluster tier fails when the webhook is broken: a wrong caBundle, a webhook that is
# down, a patch that does not expose; and when external-dns publishes another zone. Exit 1 if any
# sabotaged run passes.
set -uo pipefail
cd "$(dirname "$0")/.."
S=tests/sabotage
TESTS=(tests/cluster/test_webhook_cluster.py -k "bitnami-kafka-32.4.4-default or incubator-kafka-0.21.5-default")
status=0
expect_failure() {
  local what=$1; shift
  if "$@" -q -p no:warnings "${TESTS[@]}" >/tmp/kafka-expose-sabotage.log 2>&1; then
    echo "NOT CAUGHT: $what (the tests passed)"; status=1
  else
    echo "caught: $what -> $(grep -E '^[0-9]+ (passed|failed)|errors? in' /tmp/kafka-expose-sabotage.log | tail -1)"
  fi
}
expect_failure "wrong caBundle" env PYTHONPATH=$S python3 -m pytest -p sabotage_cabundle
expect_failure "webhook down" env PYTHONPATH=$S python3 -m pytest -p sabotage_down
expect_failure "broken patch" env PYTHONPATH=$S/patch python3 -m pytest
TESTS=(tests/cluster/test_ecosystem.py -k "publishes and helm4")
expect_failure "external-dns on another zone" env PYTHONPATH=$S python3 -m pytest -p sabotage_external_dns
exit $status
