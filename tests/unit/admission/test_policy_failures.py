"""Issue 15, item 7: each way the policy check inside /validate can fail, decided on purpose.

* the policy hook raises: a Service (or any other kind) is refused, a Pod is admitted with a warning;
* the LoadBalancer count for the cap cannot be read: the cap is not skipped (denied when enforced);
* that read's timeout is under the webhooks' own, so our answer arrives before the API server's
  timeout (and its failurePolicy) decides instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import podfactory
from tests.unit.core.test_policy import FakeReader, hook_request, make_settings, service
from webhook.admission.handlers import validate_review
from webhook.admission.wire import AdmissionRequest, parse_review
from webhook.core.settings import Settings
from webhook.server.hooks import PolicyHook
from webhook.server.namespaces import READ_TIMEOUT_SECONDS, NamespaceCache

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def broken_hook(request: AdmissionRequest, settings: Settings) -> tuple[bool, str, list[str]]:
    raise RuntimeError("policy bug")


def review_of(obj: dict[str, Any]) -> Any:
    import json

    return parse_review(json.dumps(podfactory.admission_review(obj, namespace="kafka")).encode())


def test_a_policy_exception_refuses_a_service() -> None:
    handled = validate_review(review_of(service()), make_settings(), broken_hook)
    assert handled.response["allowed"] is False
    assert handled.response["status"]["code"] == 500
    assert "policy not checked" in handled.response["status"]["message"]
    assert handled.outcome == "error" and isinstance(handled.error, RuntimeError)


def test_a_policy_exception_admits_a_pod_with_a_warning() -> None:
    pod = podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0]
    handled = validate_review(review_of(pod), make_settings(), broken_hook)
    assert handled.response["allowed"] is True
    assert any("policy not checked" in w for w in handled.response["warnings"])


@pytest.mark.parametrize(("mode", "allowed"), [("enforce", False), ("warn", True)])
def test_a_failed_cap_lookup_does_not_skip_the_cap(mode: str, allowed: bool) -> None:
    settings = make_settings(mode, maxLoadBalancersPerNamespace=5, top={"loadBalancer": {"cloud": "gke"}})
    internal = service(annotations={"networking.gke.io/load-balancer-type": "Internal"})
    reader = FakeReader({"kafka": {}})
    reader.fail_list = True
    failures: list[str] = []
    hook = PolicyHook(NamespaceCache(reader), on_failure=failures.append)
    ok, message, warnings = hook(hook_request(internal), settings)
    assert ok is allowed
    text = message if not allowed else " ".join(warnings)
    assert "could not be counted" in text and "loadBalancerCap" in text
    assert failures == ["cap_lookup"]
    reader.fail_list = False
    assert hook(hook_request(internal), settings)[0]  # the count reads again: allowed under the cap


def test_the_cap_lookup_times_out_before_the_webhook_does() -> None:
    timeouts = [
        webhook["timeoutSeconds"]
        for doc in yaml.safe_load_all((REPO / "manifests/base/webhooks.yaml").read_text())
        if doc
        for webhook in doc.get("webhooks", [])
    ]
    assert timeouts and min(timeouts) / 2 > READ_TIMEOUT_SECONDS
