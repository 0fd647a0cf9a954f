"""The validating webhook's policy against the real control plane: what a user sees from the API
server (denials, `Warning:` headers), namespace overrides, the LoadBalancer cap under concurrency."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.controlplane import ControlPlane
from tests.support.expectations import own_manifest
from tests.support.podfactory import load_render, pod_from_statefulset, services, statefulsets
from tests.support.webhookcluster import Answer, RegisteredWebhook

pytestmark = pytest.mark.cluster

POLICY: dict[str, Any] = {
    "mode": "enforce",
    "allowedDomains": ["kafka.example.com"],
    "maxLoadBalancersPerNamespace": 3,
    "namespaceOverrides": {"allowedDomains": ["{namespace}.kafka.example.com"]},
}


def settings_text(**policy: Any) -> str:
    document = {
        "domain": "kafka.example.com",
        "listener": {"name": "EXTERNAL", "port": 9094},
        "loadBalancer": {"cloud": "gke"},
        "policy": {**POLICY, **policy},
    }
    return yaml.safe_dump(document)


ENFORCE = settings_text()
WARN = settings_text(mode="warn")
GKE_FIX = 'add annotation networking.gke.io/load-balancer-type: "Internal" (policy rule internalLoadBalancer)'
# The shipped Services mutating webhook makes a chart's public LoadBalancer internal before validation;
# here it only runs in namespaces carrying this label, so the other tests see the validating one alone.
MUTATE_SERVICES = {"kafka-expose.io/test-mutate-services": "on"}


@pytest.fixture(scope="module")
def webhook(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegisteredWebhook]:
    with RegisteredWebhook(
        control_plane.api_client(),
        ENFORCE,
        root=tmp_path_factory.mktemp("policy-webhook"),
        kubeconfig=control_plane.kubeconfig_path,
        workers=1,  # the LoadBalancer cap is exact within one process (webhook.namespaces.NamespaceCache)
        threads=8,
        isolated=True,
        namespace_labels={"services.mutate.kafka-expose.io": MUTATE_SERVICES},
    ) as hook:
        yield hook


def chart_load_balancers() -> list[dict[str, Any]]:
    found = [
        s
        for s in services(load_render("bitnami-kafka-32.4.4-external-lb"))
        if s["spec"].get("type") == "LoadBalancer"
    ]
    assert len(found) == 3
    for svc in found:  # the chart pins <pod>.kafka.example.com, not a name of the test's namespace
        svc["metadata"].get("annotations", {}).pop("external-dns.alpha.kubernetes.io/hostname", None)
    return found


def broker_pod(template: str = "bitnami-kafka-32.4.4-brokers3", name: str = "kafka-broker") -> dict[str, Any]:
    sts = next(s for s in statefulsets(load_render(template)) if s["metadata"]["name"] == name)
    pod = pod_from_statefulset(sts, 0, "x")
    del pod["metadata"]["ownerReferences"]  # no StatefulSet here: keep the garbage collector away
    return pod


def unknown_layout_pod() -> dict[str, Any]:
    pod = pod_from_statefulset(own_manifest("unknown-layout.yaml")[0], 0, "x")
    del pod["metadata"]["ownerReferences"]
    return pod


def lb_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        # internal: every LoadBalancer of an opted-in namespace is judged, this one only by the cap
        "metadata": {"name": name, "annotations": {"networking.gke.io/load-balancer-type": "Internal"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }


def denial(hook: str, answer: Answer) -> str:
    assert answer.status == 403, (answer.status, answer.body)
    prefix = f'admission webhook "{hook}" denied the request: '
    assert answer.message.startswith(prefix), answer.message
    return answer.message[len(prefix) :]


def test_chart_public_load_balancers_are_denied_in_enforce_mode(webhook: RegisteredWebhook) -> None:
    webhook.set_settings(ENFORCE)
    ns = webhook.namespace("enforce")
    before = webhook.policy_decisions("internalLoadBalancer", "denied")
    for svc in chart_load_balancers():
        name = svc["metadata"]["name"]
        answer = webhook.create(ns, svc)
        assert denial("services.validate.kafka-expose.io", answer) == (
            f"Service {name}: LoadBalancer in front of Kafka brokers must be internal: {GKE_FIX}"
        )
    names = [s["metadata"]["name"] for s in webhook.get(f"/api/v1/namespaces/{ns}/services")["items"]]
    assert names == []
    assert webhook.policy_decisions("internalLoadBalancer", "denied") == before + 3


def test_warn_mode_admits_them_with_a_warning(webhook: RegisteredWebhook) -> None:
    webhook.set_settings(WARN)
    ns = webhook.namespace("warn")
    for svc in chart_load_balancers():
        name = svc["metadata"]["name"]
        answer = webhook.create(ns, svc)
        assert answer.status == 201, answer.body
        assert answer.warnings == [
            f"kafka-expose: Service {name}: LoadBalancer in front of Kafka brokers must be internal: {GKE_FIX}"
        ]
        assert "networking.gke.io/load-balancer-type" not in answer.body["metadata"]["annotations"]
    assert webhook.policy_decisions("internalLoadBalancer", "warned") >= 3


def test_the_mutating_webhook_makes_them_internal_before_validation(webhook: RegisteredWebhook) -> None:
    """The validating webhook sees the final object: the chart's LB after the mutating webhook."""
    webhook.set_settings(ENFORCE)
    ns = webhook.namespace("mutated", labels=MUTATE_SERVICES)
    for svc in chart_load_balancers():
        answer = webhook.create(ns, svc)
        assert answer.status == 201, answer.body
        assert answer.body["metadata"]["annotations"]["networking.gke.io/load-balancer-type"] == "Internal"
        assert answer.warnings == []


def test_namespaces_not_opted_in_are_never_affected(webhook: RegisteredWebhook) -> None:
    webhook.set_settings(ENFORCE)
    ns = webhook.namespace(
        "outside", opted_in=False, annotations={"kafka-expose.io/domain": "evil.example.org"}
    )
    for svc in [*chart_load_balancers(), lb_service("extra")]:
        answer = webhook.create(ns, svc)
        assert (answer.status, answer.warnings) == (201, []), answer.body
    answer = webhook.create(ns, unknown_layout_pod())
    assert (answer.status, answer.warnings) == (201, [])
    answer = webhook.create(ns, broker_pod())
    assert answer.status == 201 and answer.warnings == []
    assert "kafka-expose.io/advertised" not in (answer.body["metadata"].get("annotations") or {})


def test_a_disallowed_domain_requested_by_namespace_annotation_is_refused(webhook: RegisteredWebhook) -> None:
    webhook.set_settings(ENFORCE)
    ns = webhook.namespace("team-b", annotations={"kafka-expose.io/domain": "team-a.kafka.example.com"})
    answer = webhook.create(ns, broker_pod())
    assert answer.status == 201, answer.body
    annotations = answer.body["metadata"]["annotations"]
    assert (
        annotations["kafka-expose.io/advertised"] == f"EXTERNAL://kafka-broker-0.{ns}.kafka.example.com:9094"
    )
    refusal = (
        f"kafka-expose: namespace {ns}: kafka-expose.io/domain=team-a.kafka.example.com refused: this namespace "
        f"may only use {ns}.kafka.example.com or names below (policy.namespaceOverrides.allowedDomains); "
        "using kafka.example.com"
    )
    assert refusal in answer.warnings, answer.warnings


def test_a_namespace_gets_its_own_domain(webhook: RegisteredWebhook) -> None:
    webhook.set_settings(ENFORCE)
    ns = webhook.namespace("team-a")
    own = f"{ns}.kafka.example.com"
    patch = {"metadata": {"annotations": {"kafka-expose.io/domain": own}}}
    answer = webhook.request(
        "PATCH", f"/api/v1/namespaces/{ns}", patch, content_type="application/merge-patch+json"
    )
    assert answer.status == 200, answer.body
    answer = webhook.create(ns, broker_pod())
    assert answer.status == 201, answer.body
    assert answer.warnings == []
    advertised = answer.body["metadata"]["annotations"]["kafka-expose.io/advertised"]
    assert advertised == f"EXTERNAL://kafka-broker-0.{ns}.{own}:9094"


def test_the_cap_holds_under_concurrent_creates(webhook: RegisteredWebhook) -> None:
    webhook.set_settings(ENFORCE)
    ns = webhook.namespace("cap")
    answers: dict[str, Answer] = {}
    barrier = threading.Barrier(5)

    def create(name: str) -> None:
        barrier.wait()
        answers[name] = webhook.create(ns, lb_service(name))

    threads = [threading.Thread(target=create, args=(f"lb-{i}",)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = sorted(a.status for a in answers.values())
    assert statuses == [201, 201, 201, 403, 403], {n: (a.status, a.message) for n, a in answers.items()}
    hook = "services.validate.kafka-expose.io"
    for name, answer in answers.items():
        if answer.status == 403:
            assert (
                denial(hook, answer)
                == (
                    f"Service {name}: namespace {ns} already has 3 LoadBalancer Service(s), the cap is 3: "
                    "delete a LoadBalancer Service or use type ClusterIP"
                )
                + " (policy rule loadBalancerCap)"
            )
    stored = webhook.get(f"/api/v1/namespaces/{ns}/services")["items"]
    assert len([s for s in stored if s["spec"]["type"] == "LoadBalancer"]) == 3
    # a ClusterIP Service is not capped; a later LoadBalancer still is
    plain = copy.deepcopy(lb_service("plain"))
    plain["spec"]["type"] = "ClusterIP"
    assert webhook.create(ns, plain).status == 201
    assert webhook.create(ns, lb_service("late")).status == 403


def test_a_broker_that_cannot_be_exposed_is_denied_in_enforce_mode(webhook: RegisteredWebhook) -> None:
    webhook.set_settings(ENFORCE)
    ns = webhook.namespace("unknown")
    answer = webhook.create(ns, unknown_layout_pod())
    message = denial("pods.validate.kafka-expose.io", answer)
    assert message.startswith("Pod kafka-0: Kafka broker cannot be exposed: unknown layout for image")
    assert message.endswith("(policy rule exposureRequired)")
    webhook.set_settings(settings_text(rules={"exposureRequired": "warn"}))
    answer = webhook.create(ns, unknown_layout_pod())
    assert answer.status == 201
    assert any("(policy rule exposureRequired)" in w for w in answer.warnings), answer.warnings
