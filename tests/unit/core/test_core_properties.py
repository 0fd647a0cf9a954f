"""Property-based: for any listener layout a chart may have, the engine is idempotent and every
original listener survives unchanged, both for env-configured images (edited at admission) and for
the run-time edit (the awk program, run for real by `sh`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.expectations import assert_exposed
from tests.support.podfactory import pod_from_statefulset
from webhook.core import mutate
from webhook.core.settings import parse_settings

pytestmark = pytest.mark.unit

SETTINGS = parse_settings({})
NAMES = st.sampled_from(["PLAINTEXT", "CLIENT", "INTERNAL", "REPLICATION", "SASL_PLAINTEXT", "EXTERNAL"])
HOSTS = st.sampled_from(["", "0.0.0.0", "$(POD_IP)", "kafka.svc", "[::1]", "b-1.example.org"])
PROTOCOLS = st.sampled_from(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    ports = draw(st.lists(st.integers(9090, 9099), min_size=len(names), max_size=len(names), unique=True))
    hosts = [draw(HOSTS) for _ in names]
    protocols = {n: draw(PROTOCOLS) for n in names}
    return {
        "advertised": ",".join(
            f"{n}://{h or 'adv.example'}:{p}" for n, h, p in zip(names, hosts, ports, strict=True)
        ),
        "listeners": ",".join(f"{n}://{h}:{p}" for n, h, p in zip(names, hosts, ports, strict=True))
        if draw(st.booleans())
        else None,
        # Without a map Kafka only accepts listeners named after a protocol; keep inputs Kafka accepts.
        "map": ",".join(f"{n}:{protocols[n]}" for n in names)
        if draw(st.booleans()) or not set(names) <= {"PLAINTEXT", "SASL_PLAINTEXT"}
        else None,
        "shell": draw(st.booleans()),
        "ports": ports,
    }


def statefulset(layout: dict[str, Any]) -> dict[str, Any]:
    env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    if layout["listeners"] is not None:
        env.append({"name": "KAFKA_LISTENERS", "value": layout["listeners"]})
    if layout["map"] is not None:
        env.append({"name": "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "value": layout["map"]})
    container: dict[str, Any] = {
        "name": "kafka",
        "image": "confluentinc/cp-kafka:7.7.0",
        "ports": [{"containerPort": p} for p in layout["ports"]],
        "env": env,
    }
    if layout["shell"]:
        container["command"] = [
            "sh",
            "-exc",
            f"export KAFKA_ADVERTISED_LISTENERS={layout['advertised']} && exec /etc/confluent/docker/run",
        ]
        env.append({"name": "KAFKA_ADVERTISED_LISTENERS", "value": "PLAINTEXT://ignored:1"})
    else:
        env.append({"name": "KAFKA_ADVERTISED_LISTENERS", "value": layout["advertised"]})
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "kafka", "namespace": "kafka"},
        "spec": {
            "replicas": 1,
            "serviceName": "h",
            "template": {"metadata": {}, "spec": {"containers": [container]}},
        },
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_any_layout_keeps_its_listeners_and_is_idempotent(layout: dict[str, Any]) -> None:
    pod = pod_from_statefulset(statefulset(layout), 0, "kafka")
    before = json.dumps(pod)
    first = mutate(pod, SETTINGS, "kafka")
    assert json.dumps(pod) == before  # copy-on-write: the input is never edited
    assert first.outcome in ("mutated", "warned"), first.reason
    if first.outcome == "warned":
        assert first.result == pod
        return
    assert mutate(first.result, SETTINGS, "kafka").result == first.result
    assert_exposed(pod, first.result, SETTINGS, None, "kafka-0.kafka.kafka.example.com")
