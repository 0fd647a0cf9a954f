"""Issue 15, item 4 (pod admission): a broker whose LoadBalancer the cap would never allow is refused
(enforce) or warned (warn), so no broker advertises a name that will never resolve."""

from __future__ import annotations

import pytest

from tests.support import podfactory
from tests.unit.core.test_policy import FakeReader, hook_request, make_settings, service
from webhook.core import mutate
from webhook.server.hooks import PolicyHook
from webhook.server.namespaces import NamespaceCache

pytestmark = pytest.mark.unit

INTERNAL = {"networking.gke.io/load-balancer-type": "Internal"}


def broker() -> dict[str, object]:
    return podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0]


def own_service_name(settings: object) -> str:
    return mutate(broker(), settings, "kafka").plans[0].service_name  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "allowed"), [("enforce", False), ("warn", True)])
def test_a_broker_over_the_cap_is_refused_or_warned(mode: str, allowed: bool) -> None:
    settings = make_settings(mode, maxLoadBalancersPerNamespace=2)
    reader = FakeReader({"kafka": {}})
    for name in ("web-a", "web-b"):
        reader.add_service("kafka", service(name, selector={"app": "web"}, annotations=INTERNAL))
    failures: list[str] = []
    ok, message, warnings = PolicyHook(NamespaceCache(reader), on_failure=failures.append)(
        hook_request(broker()), settings
    )
    assert ok is allowed
    text = message if not allowed else " ".join(warnings)
    assert "already has 2 LoadBalancer Service(s), the cap is 2" in text and "would not resolve" in text
    assert failures == []


def test_a_broker_under_the_cap_or_with_its_service_already_there_passes() -> None:
    settings = make_settings(maxLoadBalancersPerNamespace=2)
    reader = FakeReader({"kafka": {}})
    hook = PolicyHook(NamespaceCache(reader))
    reader.add_service("kafka", service("web-a", selector={"app": "web"}, annotations=INTERNAL))
    assert hook(hook_request(broker()), settings)[0]
    reader.add_service("kafka", service(own_service_name(settings), annotations=INTERNAL))  # re-created pod
    assert hook(hook_request(broker()), settings)[0]


def test_a_failed_count_only_warns_for_a_broker() -> None:
    settings = make_settings(maxLoadBalancersPerNamespace=2)
    reader = FakeReader({"kafka": {}})
    reader.fail_list = True
    failures: list[str] = []
    ok, _, warnings = PolicyHook(NamespaceCache(reader), on_failure=failures.append)(
        hook_request(broker()), settings
    )
    assert ok and any("could not be counted" in w for w in warnings)
    assert failures == ["cap_lookup"]
