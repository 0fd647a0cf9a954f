"""Every config mechanism of issue 14 on our own small StatefulSets, judged by what the broker really
runs (imagesim runs the command lines, init containers and image rules), never by the patch's shape."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.expectations import assert_exposed, own_manifest
from tests.support.imagesim import evaluate
from tests.support.podfactory import pod_from_statefulset, statefulsets
from webhook.core import mutate
from webhook.core.images import container_family, image_family, repository
from webhook.core.names import LISTENER
from webhook.core.settings import parse_settings

pytestmark = pytest.mark.unit

SETTINGS = parse_settings({"domain": "kafka.example.com"})

MECHANISMS = {
    "apache-env-incluster-external.yaml": "env",
    "start-command-override.yaml": "start-command",
    "per-pod-file-init.yaml": "start-command",
    "sidecar-first-digest.yaml": "env",
    "wurstmeister-env.yaml": "env",
    "bitnami-legacy-alias.yaml": "env",
    "shell-start-no-exec.yaml": "start-command",
}


def _pods(manifest: str) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], int]]]:
    docs = own_manifest(manifest)
    return docs, [(sts, i) for sts in statefulsets(docs) for i in range(sts["spec"]["replicas"])]


@pytest.mark.parametrize(("manifest", "flavor"), MECHANISMS.items())
def test_each_mechanism_exposes_every_broker(manifest: str, flavor: str) -> None:
    docs, pods = _pods(manifest)
    for sts, ordinal in pods:
        pod = pod_from_statefulset(sts, ordinal, "kafka")
        decision = mutate(pod, SETTINGS, "kafka")
        assert decision.outcome == "mutated", decision.reason
        [plan] = decision.plans
        assert plan.flavor == flavor
        host = f"{pod['metadata']['name']}.kafka.kafka.example.com"
        assert_exposed(pod, decision.result, SETTINGS, docs, host)
        again = mutate(decision.result, SETTINGS, "kafka")
        assert again.result["spec"] == decision.result["spec"], "not idempotent"
        # the rendered template gives the same broker
        template = mutate(sts, SETTINGS, "kafka")
        assert_exposed(pod, pod_from_statefulset(template.result, ordinal, "kafka"), SETTINGS, docs, host)


def test_an_in_cluster_external_listener_stays_and_a_fallback_name_is_used() -> None:
    docs, [(sts, _), *_] = _pods("apache-env-incluster-external.yaml")
    pod = pod_from_statefulset(sts, 1, "kafka")
    decision = mutate(pod, SETTINGS, "kafka")
    before = evaluate(pod, SETTINGS, docs)
    after = evaluate(decision.result, SETTINGS, docs)
    assert after.advertised()["EXTERNAL"] == before.advertised()["EXTERNAL"]
    assert after.bound()["EXTERNAL"] == "EXTERNAL://:9094"
    assert after.advertised()["EXTERNAL_LB"] == "EXTERNAL_LB://kafka-1.kafka.kafka.example.com:9094"
    assert after.bound()["EXTERNAL_LB"] == "EXTERNAL_LB://:9095"  # 9094 is taken: a free port
    assert decision.plans[0].listener_name == "EXTERNAL_LB"
    assert decision.result["metadata"]["annotations"][LISTENER] == "EXTERNAL_LB"


def test_overrides_win_and_the_chart_overrides_are_kept() -> None:
    docs, _ = _pods("start-command-override.yaml")
    pod = pod_from_statefulset(statefulsets(docs)[0], 1, "kafka")
    after = evaluate(mutate(pod, SETTINGS, "kafka").result, SETTINGS, docs)
    assert after.properties["node.id"] == "1"
    assert (
        after.advertised()["PLAINTEXT"] == "PLAINTEXT://10.1.2.3:9092"
    )  # the chart's override, not the file
    assert after.bound()["EXTERNAL"] == "EXTERNAL://:9095"


@pytest.mark.parametrize(
    "image",
    [
        "apache/kafka:4.1.0",
        "docker.io/apache/kafka-native:3.9.0",
        "confluentinc/cp-kafka:7.7.0",
        "confluentinc/cp-server:7.7.0",
        "bitnami/kafka:3.9",
        "bitnamilegacy/kafka:3.7.0",
        "bitnamisecure/kafka:latest",
        "wurstmeister/kafka:2.13-2.8.1",
        "solsson/kafka:2.8",
        "registry.example.com:5000/mirror/bitnami/kafka:3.9@sha256:" + "a" * 64,
        "apache/kafka@sha256:" + "b" * 64,
        "localhost/library/apache/kafka",
    ],
)
def test_well_known_images_are_recognised(image: str) -> None:
    assert image_family(image, SETTINGS) is not None, repository(image)


@pytest.mark.parametrize(
    "image",
    [
        "danielqsj/kafka-exporter:v1.7.0",
        "confluentinc/cp-zookeeper:7.7.0",
        "bitnami/kafka:3.6-zookeeper",
        "solsson/kafka-prometheus-jmx-exporter@sha256:" + "c" * 64,
        "provectuslabs/kafka-ui:latest",
        "busybox:kafka",
    ],
)
def test_companions_are_not_brokers(image: str) -> None:
    assert container_family({"name": "x", "image": image}, SETTINGS) is None


def test_a_kafka_server_start_command_is_a_broker_whatever_the_image() -> None:
    container = {
        "name": "k",
        "image": "corp/streaming:1",
        "command": ["/opt/kafka/bin/kafka-server-start.sh", "/c"],
    }
    family = container_family(container, SETTINGS)
    assert family is not None and family.name == "distribution"


def test_settings_declare_a_family_for_any_image() -> None:
    settings = parse_settings({"match": {"images": [{"pattern": "corp/kafka*", "family": "wurstmeister"}]}})
    family = image_family("registry.corp/corp/kafka-broker:2", settings)
    assert family is not None and family.name == "wurstmeister"


def test_not_brokers_are_skipped() -> None:
    for sts in own_manifest("not-brokers.yaml"):
        pod = pod_from_statefulset(sts, 0, "kafka")
        decision = mutate(pod, SETTINGS, "kafka")
        assert decision.outcome == "skipped", (sts["metadata"]["name"], decision.reason)
        assert decision.result == pod


def test_pod_labels_pick_the_kafka_looking_container_not_the_first() -> None:
    settings = parse_settings({"match": {"podLabels": {"app": "kafka"}, "podLabelsFamily": "apache"}})
    [sts] = own_manifest("sidecar-first-digest.yaml")
    pod = pod_from_statefulset(sts, 0, "kafka")
    pod["spec"]["containers"][1]["image"] = "corp/kafka-broker:1"  # unknown image, broker by labels
    decision = mutate(pod, settings, "kafka")
    assert decision.outcome == "mutated", decision.reason
    exporter, broker = decision.result["spec"]["containers"]
    assert exporter == pod["spec"]["containers"][0]
    assert any(
        e["name"] == "KAFKA_ADVERTISED_LISTENERS" and "EXTERNAL://" in e["value"] for e in broker["env"]
    )


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            [
                {"name": "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "value": "INSIDE:PLAINTEXT"},
                {"name": "KAFKA_ADVERTISED_PORT", "value": "9092"},
                {"name": "KAFKA_ADVERTISED_PROTOCOL_NAME", "value": "INSIDE"},
                {"name": "KAFKA_ADVERTISED_LISTENERS", "value": "INSIDE://x:9092"},
            ],
            "rebuilds KAFKA_ADVERTISED_LISTENERS",
        ),
        ([{"name": "KAFKA_ADVERTISED_HOST_NAME", "value": "x"}], "legacy variables"),
    ],
)
def test_wurstmeister_legacy_layouts_are_left_alone_with_what_to_do(
    env: list[dict[str, str]], words: str
) -> None:
    [sts] = own_manifest("wurstmeister-env.yaml")
    pod = pod_from_statefulset(sts, 0, "kafka")
    pod["spec"]["containers"][0]["env"] = env
    decision = mutate(pod, SETTINGS, "kafka")
    assert decision.outcome == "warned" and words in decision.reason, decision.reason
    assert decision.result == pod
