"""Stock charts through the real API server: the StatefulSet controller creates the broker pods,
admission calls our webhook, and the pods AS STORED advertise their external listener."""

from __future__ import annotations

import copy
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from tests.support.controlplane import ControlPlane
from tests.support.expectations import assert_exposed
from tests.support.imagesim import evaluate
from tests.support.podfactory import load_render, pod_from_statefulset, render_names, statefulsets
from tests.support.webhookcluster import (
    RegisteredWebhook,
    apply_objects,
    ensure_namespace,
    probe_pod,
    wait_for,
)
from webhook.config import load_settings_text
from webhook.core import mutate

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def webhook(control_plane: ControlPlane) -> Iterator[RegisteredWebhook]:
    with RegisteredWebhook(control_plane.api_client()) as registered:
        yield registered


def stored_pods(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    core = kubernetes.client.CoreV1Api(api)
    pods = core.list_namespaced_pod(namespace, _preload_content=False)
    items = yaml.safe_load(pods.data)["items"]
    return {pod["metadata"]["name"]: pod for pod in items}


def broker_statefulsets(docs: list[dict[str, Any]], settings: Any) -> list[dict[str, Any]]:
    return [s for s in statefulsets(docs) if mutate(s, settings, "x").plans]


def namespace_for(render: str) -> str:
    return "t-" + render.replace(".", "-").replace("/", "-")[:50]


APPS_V1_RENDERS = [
    r
    for r in render_names("default", "brokers3")
    if statefulsets(load_render(r))[0]["apiVersion"] == "apps/v1"
]


@pytest.mark.parametrize("render", APPS_V1_RENDERS)
def test_stock_render_installed_unchanged_comes_out_exposed(
    render: str, control_plane: ControlPlane, webhook: RegisteredWebhook, node_agent: Any
) -> None:
    api = control_plane.api_client()
    settings = load_settings_text(webhook.settings_path.read_text())
    namespace = namespace_for(render)
    ensure_namespace(api, namespace)
    docs = load_render(render)
    created, skipped = apply_objects(api, docs, namespace)
    assert created, skipped
    brokers = broker_statefulsets(docs, settings)
    expected = {
        f"{s['metadata']['name']}-{i}": s for s in statefulsets(docs) for i in range(s["spec"]["replicas"])
    }
    pods = wait_for(
        lambda: (p := stored_pods(api, namespace)) and set(expected) <= set(p) and p,
        timeout=90,
        what=f"pods {sorted(expected)}",
    )
    for name, sts in expected.items():
        stored = pods[name]
        original = pod_from_statefulset(sts, int(name.rsplit("-", 1)[1]), namespace)
        if sts in brokers:
            assert stored["metadata"]["labels"].get("kafka-expose.io/exposed") == "true", name
            assert_exposed(original, stored, settings, docs, f"{name}.{namespace}.kafka.example.com")
        else:
            assert "kafka-expose.io/exposed" not in stored["metadata"].get("labels", {}), name


def core_in(
    control_plane: ControlPlane, namespace: str, opted_in: bool = True
) -> kubernetes.client.CoreV1Api:
    """A CoreV1Api client, once `namespace` exists (labelled for the webhook unless not `opted_in`)."""
    api = control_plane.api_client()
    ensure_namespace(api, namespace, opted_in=opted_in)
    return kubernetes.client.CoreV1Api(api)


def test_apps_v1beta1_chart_pods_created_directly(
    control_plane: ControlPlane, webhook: RegisteredWebhook
) -> None:
    """incubator/kafka 0.9.0's StatefulSet is apps/v1beta1, gone from the API: create its pods as the
    StatefulSet controller would."""
    api = control_plane.api_client()
    core = kubernetes.client.CoreV1Api(api)
    settings = load_settings_text(webhook.settings_path.read_text())
    namespace = "t-incubator-0-9-0"
    ensure_namespace(api, namespace)
    docs = load_render("incubator-kafka-0.9.0-brokers3")
    sts = next(s for s in statefulsets(docs) if s["metadata"]["name"] == "kafka")
    for ordinal in range(3):
        pod = pod_from_statefulset(sts, ordinal, namespace)
        pod["metadata"]["ownerReferences"] = []  # no such StatefulSet object exists
        stored = core.create_namespaced_pod(namespace, pod, _preload_content=False)
        stored_pod = yaml.safe_load(stored.data)
        assert_exposed(pod, stored_pod, settings, docs, f"kafka-{ordinal}.{namespace}.kafka.example.com")


def test_namespace_without_the_label_is_untouched(
    control_plane: ControlPlane, webhook: RegisteredWebhook
) -> None:
    core = core_in(control_plane, "t-not-opted-in", opted_in=False)
    pod = probe_pod("t-not-opted-in")
    stored = yaml.safe_load(core.create_namespaced_pod("t-not-opted-in", pod, _preload_content=False).data)
    assert "kafka-expose.io/exposed" not in stored["metadata"].get("labels", {})
    assert stored["spec"]["containers"][0]["env"] == pod["spec"]["containers"][0]["env"]
    assert not stored["spec"].get("initContainers")


def test_dry_run_create_is_mutated_and_stores_nothing(
    control_plane: ControlPlane, webhook: RegisteredWebhook
) -> None:
    core = core_in(control_plane, "t-dry-run")
    pod = probe_pod("t-dry-run")
    answer = yaml.safe_load(
        core.create_namespaced_pod("t-dry-run", pod, dry_run="All", _preload_content=False).data
    )
    assert answer["metadata"]["labels"]["kafka-expose.io/exposed"] == "true"
    assert "EXTERNAL://$(KAFKAEXPOSE_HOST):9094" in str(answer["spec"]["containers"][0]["env"])
    assert core.list_namespaced_pod("t-dry-run").items == []
    services = core.list_namespaced_service("t-dry-run").items
    assert services == []


def test_charts_own_public_lb_is_made_internal(
    control_plane: ControlPlane, webhook: RegisteredWebhook
) -> None:
    core = core_in(control_plane, "t-own-lb")
    docs = load_render("incubator-kafka-0.21.5-external-lb")
    service = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "kafka-0-external"))
    del service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-internal"]
    stored = core.create_namespaced_service("t-own-lb", service)
    assert stored.metadata.annotations["networking.gke.io/load-balancer-type"] == "Internal"


CHART = {
    "Chart.yaml": "apiVersion: v2\nname: tiny-kafka\nversion: 0.1.0\n",
    "templates/statefulset.yaml": textwrap.dedent(
        """\
        apiVersion: apps/v1
        kind: StatefulSet
        metadata:
          name: {{ .Release.Name }}
        spec:
          serviceName: {{ .Release.Name }}-headless
          replicas: 2
          podManagementPolicy: Parallel
          selector: {matchLabels: {app: {{ .Release.Name }}}}
          template:
            metadata: {labels: {app: {{ .Release.Name }}}}
            spec:
              containers:
              - name: kafka
                image: apache/kafka:4.1.0
                ports: [{name: client, containerPort: 9092}]
                env:
                - {name: KAFKA_LISTENERS, value: "PLAINTEXT://:9092,CONTROLLER://:9093"}
                - {name: KAFKA_ADVERTISED_LISTENERS, value: "PLAINTEXT://{{ .Release.Name }}:9092"}
                - {name: KAFKA_CONTROLLER_LISTENER_NAMES, value: CONTROLLER}
                - {name: KAFKA_LISTENER_SECURITY_PROTOCOL_MAP, value: "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"}
        """
    ),
}


def write_chart(root: Path) -> Path:
    for name, text in CHART.items():
        path = root / "tiny-kafka" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "tiny-kafka"


@pytest.mark.parametrize("post_render", [False, True], ids=["webhook", "post-renderer"])
def test_helm_install_ends_with_exposed_brokers(
    post_render: bool, control_plane: ControlPlane, webhook: RegisteredWebhook, tmp_path: Path
) -> None:
    api = control_plane.api_client()
    namespace = "t-helm-post" if post_render else "t-helm"
    ensure_namespace(api, namespace, opted_in=not post_render)
    chart = write_chart(tmp_path)
    args = ["install", "tiny", str(chart), "-n", namespace]
    if post_render:
        wrapper = tmp_path / "post-render.sh"
        wrapper.write_text(
            f"#!/bin/sh\nexec {sys.executable} -m webhook render --config {webhook.settings_path} --namespace {namespace}\n"
        )
        wrapper.chmod(0o755)
        args += ["--post-renderer", str(wrapper)]
    control_plane.helm(*args)
    pods = wait_for(
        lambda: (p := stored_pods(api, namespace)) and len(p) == 2 and p, timeout=60, what="2 pods"
    )
    settings = load_settings_text(webhook.settings_path.read_text())
    for name, pod in pods.items():
        advertised = evaluate(pod, settings).advertised()
        assert advertised["EXTERNAL"] == f"EXTERNAL://{name}.{namespace}.kafka.example.com:9094"
    if post_render:
        services = kubernetes.client.CoreV1Api(api).list_namespaced_service(namespace).items
        assert sorted(s.metadata.name for s in services) == ["tiny-0-external", "tiny-1-external"]
