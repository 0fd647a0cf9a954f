"""The pure core over every shared chart render and our own small StatefulSets, judged by what the
broker will really advertise once its image has evaluated env, shell command and prepared files."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.support.expectations import assert_exposed, own_manifest
from tests.support.imagesim import evaluate
from tests.support.podfactory import load_render, pod_from_statefulset, render_names, statefulsets
from webhook.core import Decision, mutate
from webhook.core.podspec import literal_env, set_env_value
from webhook.core.services import broker_service
from webhook.core.settings import Settings, parse_settings

pytestmark = pytest.mark.unit

SETTINGS = parse_settings({"domain": "kafka.example.com", "loadBalancer": {"cloud": "gke"}})
BROKER_RENDERS = render_names("default", "brokers3")


def pod_of(sts: dict[str, Any], ordinal: int, namespace: str = "kafka") -> dict[str, Any]:
    return pod_from_statefulset(sts, ordinal, namespace)


def broker_statefulsets(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in statefulsets(docs) if mutate(s, SETTINGS, "kafka").plans]


def assert_left_alone(pod: dict[str, Any], decision: Decision, outcome: str, words: str) -> None:
    """The decision leaves the pod as it is, with `outcome` and `words` in its reason."""
    assert decision.outcome == outcome
    assert words in decision.reason
    assert decision.result == pod


@pytest.mark.parametrize("render", BROKER_RENDERS)
def test_webhook_exposes_every_broker_pod_of_stock_renders(render: str) -> None:
    docs = load_render(render)
    exposed = 0
    for sts in statefulsets(docs):
        for ordinal in range(sts["spec"].get("replicas", 1)):
            pod = pod_of(sts, ordinal)
            decision = mutate(pod, SETTINGS, "kafka")
            is_broker = sts in broker_statefulsets(docs)
            if not is_broker:
                assert decision.outcome == "skipped", decision.reason
                assert decision.result == pod
                continue
            assert decision.outcome == "mutated", decision.reason
            host = f"{pod['metadata']['name']}.kafka.kafka.example.com"
            assert_exposed(pod, decision.result, SETTINGS, docs, host)
            exposed += 1
    assert exposed == sum(s["spec"].get("replicas", 1) for s in broker_statefulsets(docs)) >= 1


@pytest.mark.parametrize("render", BROKER_RENDERS)
def test_render_exposes_templates_and_plans_one_internal_lb_per_broker(render: str) -> None:
    docs = load_render(render)
    for sts in broker_statefulsets(docs):
        decision = mutate(sts, SETTINGS, "kafka")
        replicas = sts["spec"]["replicas"]
        assert [p.ordinal for p in decision.plans] == list(range(replicas))
        for plan in decision.plans:
            pod = pod_of(decision.result, plan.ordinal or 0)
            original = pod_of(sts, plan.ordinal or 0)
            broker = assert_exposed(original, pod, SETTINGS, docs, plan.host)
            # The webhook, seeing a pod made from the rendered template, changes nothing in its spec.
            again = mutate(pod, SETTINGS, "kafka")
            assert again.result["spec"] == pod["spec"]
            service = broker_service(plan, SETTINGS)
            assert service["spec"]["type"] == "LoadBalancer"
            assert service["spec"]["selector"] == {"statefulset.kubernetes.io/pod-name": plan.pod}
            [port] = service["spec"]["ports"]
            assert port["port"] == 9094
            assert port["targetPort"] == int(broker.bound()["EXTERNAL"].rsplit(":", 1)[1])
            annotations = service["metadata"]["annotations"]
            assert annotations["networking.gke.io/load-balancer-type"] == "Internal"
            assert annotations["external-dns.alpha.kubernetes.io/hostname"] == plan.host
            assert service["metadata"]["name"] == f"{plan.pod}-external"


@pytest.mark.parametrize("render", render_names())
def test_engine_is_idempotent_on_every_object_of_every_render(render: str) -> None:
    for obj in load_render(render):
        if obj.get("kind") == "StatefulSet":
            obj = pod_of(obj, 0)
        first = mutate(obj, SETTINGS, "kafka")
        second = mutate(first.result, SETTINGS, "kafka")
        assert second.result == first.result
        assert second.outcome in ("unchanged", "skipped", "warned")


def _every_input() -> list[tuple[str, dict[str, Any]]]:
    """Every object of every render and of our own manifests, with the pods of every StatefulSet."""
    named = [(render, docs) for render in render_names() for docs in [load_render(render)]]
    named += [(manifest, own_manifest(manifest)) for manifest in OWN_MANIFESTS]
    inputs = []
    for name, docs in named:
        for obj in docs:
            inputs.append((f"{name} {obj.get('kind')} {obj['metadata'].get('name')}", obj))
            if obj.get("kind") == "StatefulSet":
                replicas = obj["spec"].get("replicas", 1)
                inputs += [(f"{name} pod {i}", pod_of(obj, i)) for i in range(replicas)]
    return inputs


OWN_MANIFESTS = [
    "apache-env-incluster-external.yaml",
    "start-command-override.yaml",
    "per-pod-file-init.yaml",
    "sidecar-first-digest.yaml",
    "wurstmeister-env.yaml",
    "bitnami-legacy-alias.yaml",
    "shell-start-no-exec.yaml",
    "not-brokers.yaml",
    "apache-kraft-env.yaml",
    "bitnami-legacy-env-sasl.yaml",
    "confluent-env-existing-external.yaml",
    "not-kafka.yaml",
    "unknown-layout.yaml",
]


@pytest.mark.parametrize(
    "settings",
    [SETTINGS, parse_settings({"onExistingListener": "keep", "listener": {"securityProtocol": "SSL"}})],
    ids=["default", "keep-ssl"],
)
def test_the_engine_never_edits_its_input(settings: Settings) -> None:
    """The result shares what did not change with the input (copy-on-write): the input, which the
    webhook diffs against, must come out exactly as it went in, and so must a result passed again."""
    mutated = 0
    for name, obj in _every_input():
        before = json.dumps(obj)
        decision = mutate(obj, settings, "kafka")
        assert json.dumps(obj) == before, f"{name}: the engine edited its input"
        after_first = json.dumps(decision.result)
        mutate(decision.result, settings, "kafka")
        assert json.dumps(decision.result) == after_first, f"{name}: the engine edited a result"
        mutated += decision.outcome == "mutated"
    assert mutated >= 20  # pods, templates and Services of every flavor went through a real edit


def test_an_env_var_set_twice_is_edited_where_kubernetes_reads_it() -> None:
    """Kubernetes lets the last entry of a duplicated env var win: that is the one to edit."""
    container = {
        "env": [{"name": "A", "value": "first"}, {"name": "B", "value": "b"}, {"name": "A", "value": "last"}]
    }
    original = json.dumps(container)
    edited = dict(container)
    set_env_value(edited, "A", "new")
    assert [e["value"] for e in edited["env"]] == ["first", "b", "new"]
    assert literal_env(edited, "A") == "new"
    assert json.dumps(container) == original  # copy-on-write


def test_external_lb_render_replaces_the_charts_own_external_listener() -> None:
    docs = load_render("bitnami-kafka-32.4.4-external-lb")
    [sts] = statefulsets(docs)
    pod = pod_of(sts, 1)
    decision = mutate(pod, SETTINGS, "kafka")
    broker = assert_exposed(
        pod, decision.result, SETTINGS, docs, "kafka-controller-1.kafka.kafka.example.com"
    )
    # The chart's own external container port (named "external") is reused, not a second one.
    assert broker.bound()["EXTERNAL"].endswith(":9095")


def test_shell_export_with_existing_external_listener_is_replaced_not_duplicated() -> None:
    docs = load_render("incubator-kafka-0.21.5-external-lb")
    sts = next(s for s in statefulsets(docs) if s["metadata"]["name"] == "kafka")
    pod = pod_of(sts, 2)
    decision = mutate(pod, SETTINGS, "kafka")
    assert_exposed(pod, decision.result, SETTINGS, None, "kafka-2.kafka.kafka.example.com")


def test_keep_mode_leaves_an_existing_external_listener_alone() -> None:
    keep = parse_settings({"onExistingListener": "keep"})
    [sts] = own_manifest("confluent-env-existing-external.yaml")
    pod = pod_of(sts, 0)
    assert_left_alone(pod, mutate(pod, keep, "kafka"), "warned", "keep")


@pytest.mark.parametrize(
    ("manifest", "host"),
    [
        ("apache-kraft-env.yaml", "kafka-1.kafka.kafka.example.com"),
        ("bitnami-legacy-env-sasl.yaml", "kafka-1.kafka.kafka.example.com"),
        ("confluent-env-existing-external.yaml", "kafka-0.kafka.kafka.example.com"),
    ],
)
def test_env_configured_images(manifest: str, host: str) -> None:
    [sts] = own_manifest(manifest)
    ordinal = int(host.split(".")[0].rsplit("-", 1)[1])
    pod = pod_of(sts, ordinal)
    decision = mutate(pod, SETTINGS, "kafka")
    assert decision.outcome == "mutated", decision.reason
    broker = assert_exposed(pod, decision.result, SETTINGS, None, host)
    if "sasl" in manifest:
        # SASL on the client listener: the external listener is SASL too, with the same mechanisms/JAAS.
        assert broker.protocol_map()["EXTERNAL"] == "SASL_PLAINTEXT"
        assert broker.properties["listener.name.external.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
        assert broker.properties["listener.name.external.scram-sha-512.sasl.jaas.config"].startswith(
            "from-kafka-jaas"
        )


def test_security_protocol_override() -> None:
    ssl = parse_settings({"listener": {"securityProtocol": "SASL_SSL"}})
    [sts] = own_manifest("apache-kraft-env.yaml")
    pod = pod_of(sts, 0)
    broker = evaluate(mutate(pod, ssl, "kafka").result, ssl)
    assert broker.protocol_map()["EXTERNAL"] == "SASL_SSL"
    docs = load_render("bitnami-kafka-32.4.4-default")
    pod = pod_of(statefulsets(docs)[0], 0)
    broker = evaluate(mutate(pod, ssl, "kafka").result, ssl, docs)
    assert broker.protocol_map()["EXTERNAL"] == "SASL_SSL"


@pytest.mark.parametrize(
    ("manifest", "outcome", "words"),
    [("unknown-layout.yaml", "warned", "unknown layout"), ("not-kafka.yaml", "skipped", "no Kafka")],
)
def test_pods_that_are_left_alone_say_why(manifest: str, outcome: str, words: str) -> None:
    [sts] = own_manifest(manifest)
    pod = pod_of(sts, 0)
    decision = mutate(pod, SETTINGS, "kafka")
    assert_left_alone(pod, decision, outcome, words)
    assert bool(decision.warnings) == (outcome == "warned")


def test_invalid_host_is_refused_with_a_reason() -> None:
    settings = parse_settings({"hostTemplate": "{pod}_{ordinal}.{domain}"})
    [sts] = own_manifest("apache-kraft-env.yaml")
    pod = pod_of(sts, 0)
    assert_left_alone(pod, mutate(pod, settings, "kafka"), "warned", "not a valid DNS name")


def test_host_template_placeholders() -> None:
    settings = parse_settings(
        {"hostTemplate": "b{ordinal}-{statefulset}.{namespace}.{domain}", "domain": "x.io"}
    )
    [sts] = own_manifest("apache-kraft-env.yaml")
    pod = pod_of(sts, 2, namespace="team-a")
    decision = mutate(pod, settings, "team-a")
    broker = evaluate(decision.result, settings)
    assert broker.advertised()["EXTERNAL"] == "EXTERNAL://b2-kafka.team-a.x.io:9094"


def test_non_statefulset_pod_is_skipped() -> None:
    [sts] = own_manifest("apache-kraft-env.yaml")
    pod = pod_of(sts, 0)
    pod["metadata"]["ownerReferences"] = []
    del pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"]
    assert mutate(pod, SETTINGS, "kafka").outcome == "skipped"


@pytest.mark.parametrize(
    "broken",
    [
        {"kind": "Pod", "metadata": {"name": "kafka-0", "labels": "x"}, "spec": {}},
        {"kind": "Pod", "metadata": {"name": "kafka-0"}, "spec": {"containers": "nope"}},
        {
            "kind": "Pod",
            "metadata": {"name": "kafka-0"},
            "spec": {"containers": [{"name": 3, "image": "apache/kafka"}]},
        },
        {"kind": "Service", "metadata": [], "spec": {"type": "LoadBalancer", "selector": {"app": "kafka"}}},
        {"kind": "StatefulSet", "metadata": {"name": "kafka"}, "spec": {"replicas": "3"}},
    ],
)
def test_malformed_objects_are_answered_unchanged(broken: dict[str, Any]) -> None:
    decision = mutate(copy.deepcopy(broken), SETTINGS, "kafka")
    assert decision.result == broken
    assert decision.outcome in ("warned", "skipped")


def test_charts_own_lb_gets_internal_annotation_and_hostname() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kafka-0-public"},
        "spec": {"type": "LoadBalancer", "selector": {"statefulset.kubernetes.io/pod-name": "kafka-0"}},
    }
    decision = mutate(service, SETTINGS, "kafka")
    annotations = decision.result["metadata"]["annotations"]
    assert annotations["networking.gke.io/load-balancer-type"] == "Internal"
    assert annotations["external-dns.alpha.kubernetes.io/hostname"] == "kafka-0.kafka.kafka.example.com"
    assert mutate(decision.result, SETTINGS, "kafka").outcome == "unchanged"
    cluster_ip = {**service, "spec": {"selector": {"app": "kafka"}}}
    assert mutate(cluster_ip, SETTINGS, "kafka").outcome == "skipped"


def _settings(**overrides: Any) -> Settings:
    return parse_settings(overrides)
