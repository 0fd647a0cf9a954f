"""The controller's failure modes (issue 15, item 7): each one decided, each one with a metric."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.controller.manager import failure_mode
from webhook.controller.metrics import FAILURE_MODES, Metrics
from webhook.core import policy
from webhook.core.actions import AuditViolation, NamespaceState
from webhook.core.audit import UNCHECKED
from webhook.core.reconcile import plan_namespace
from webhook.core.settings import parse_settings
from webhook.kube.client import ApiError

pytestmark = pytest.mark.unit

SETTINGS = parse_settings(
    {
        "loadBalancer": {"cloud": "aws"},
        "policy": {"mode": "enforce"},
        "controller": {"audit": {"repair": True}},
    }
)
PUBLIC = {
    "metadata": {"name": "public", "namespace": "team-a", "uid": "u1", "resourceVersion": "3"},
    "spec": {"type": "LoadBalancer", "selector": {"app": "kafka"}, "ports": [{"port": 9094}]},
}


def test_each_failure_has_its_mode_and_a_metric() -> None:
    assert failure_mode(ApiError(503, "ServiceUnavailable", "down")) == "api"
    assert failure_mode(ApiError(0, "Timeout", "no answer")) == "api"
    assert failure_mode(ApiError(409, "Conflict", "changed")) == "conflict"
    assert failure_mode(ApiError(0, "NotLeader", "lost the lease")) == "lost-lease"
    assert failure_mode(KeyError("spec")) == "unexpected"
    metrics = Metrics()
    for mode in FAILURE_MODES:  # every mode is exported from the start, at 0
        assert (
            metrics.registry.get_sample_value("kafka_expose_controller_failures_total", {"mode": mode}) == 0
        )


def test_a_policy_check_that_fails_is_reported_unchecked_and_never_repaired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> policy.Assessment:
        raise RuntimeError("bug in a rule")

    monkeypatch.setattr(policy, "assess", broken)
    state = NamespaceState("team-a", True, services=[PUBLIC])
    [found] = plan_namespace(state, SETTINGS).of(AuditViolation)
    assert found.rules == (UNCHECKED,) and found.repair == ()
    assert "could not be checked" in found.reason


def test_the_audit_repairs_the_same_service_without_the_failure() -> None:
    [found] = plan_namespace(NamespaceState("team-a", True, services=[PUBLIC]), SETTINGS).of(AuditViolation)
    assert found.rules == (policy.INTERNAL_LOAD_BALANCER,) and found.repair
