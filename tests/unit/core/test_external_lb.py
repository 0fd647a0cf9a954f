"""Charts that expose each broker themselves (the `external-lb` renders): with `replace`, the name
the broker advertises resolves (external-dns on the chart's LB, which the controller adopts) to an LB
whose port leads to the container port the broker listens on with that listener."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.expectations import kafka_container
from tests.support.imagesim import evaluate
from tests.support.podfactory import load_render, pod_from_statefulset, render_names, services, statefulsets
from webhook.core import mutate
from webhook.core.names import EXTERNAL_DNS
from webhook.core.services import selected_broker
from webhook.core.settings import parse_settings

pytestmark = pytest.mark.unit

SETTINGS = parse_settings({"domain": "kafka.example.com", "loadBalancer": {"cloud": "aws"}})
RENDERS = render_names("external-lb", "external-lb-autodiscovery")


def _target(pod: dict[str, Any], target: Any) -> int:
    if isinstance(target, int):
        return target
    declared = {p.get("name"): p["containerPort"] for p in kafka_container(pod, SETTINGS).get("ports", [])}
    return int(declared[target])


@pytest.mark.parametrize("render", RENDERS)
def test_replace_makes_the_charts_own_lb_lead_to_the_new_listener(render: str) -> None:
    assert RENDERS
    docs = load_render(render)
    checked = 0
    for sts in statefulsets(docs):
        for ordinal in range(sts["spec"].get("replicas", 1)):
            pod = pod_from_statefulset(sts, ordinal, "kafka")
            decision = mutate(pod, SETTINGS, "kafka")
            if not decision.plans:
                continue
            name = pod["metadata"]["name"]
            [chart_lb] = [s for s in services(docs) if selected_broker(s) == name]
            lb = mutate(chart_lb, SETTINGS, "kafka").result
            broker = evaluate(decision.result, SETTINGS, docs)
            [plan] = decision.plans
            advertised = broker.advertised()[plan.listener_name]
            host, port = advertised.split("://", 1)[1].rsplit(":", 1)
            assert lb["metadata"]["annotations"][EXTERNAL_DNS] == host
            [entry] = [p for p in lb["spec"]["ports"] if p["port"] == int(port)]
            listens = int(broker.bound()[plan.listener_name].rsplit(":", 1)[1])
            assert _target(decision.result, entry["targetPort"]) == listens
            checked += 1
    assert checked


def test_keep_leaves_the_charts_access_as_built() -> None:
    keep = parse_settings({"domain": "kafka.example.com", "onExistingListener": "keep"})
    docs = load_render("incubator-kafka-0.21.5-external-lb")
    [chart_lb] = [s for s in services(docs) if selected_broker(s) == "kafka-0"]
    lb = mutate(chart_lb, keep, "kafka").result
    assert lb["spec"]["ports"] == chart_lb["spec"]["ports"]
    assert lb["metadata"]["annotations"][EXTERNAL_DNS] == "kafka-0.kafka.example.com"
