"""Helpers for the controller's cluster tests: the controller as a real process, broker StatefulSets
whose pods come out exposed without a webhook, and small readers over the API.

The webhook is not needed: a stock render's broker StatefulSet is passed through the core in render
mode (`webhook.core.mutate`), so its pod template already carries what the webhook would add (the
`kafka-expose.io/exposed` label, the listener). Its pods, created by the real StatefulSet
controller, are then what the controller watches.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import requests
import yaml
from kubernetes.client import ApiException

from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.podfactory import load_render, statefulsets
from webhook.config import load_settings_text
from webhook.core import mutate
from webhook.core.settings import Settings

OPT_IN_LABEL = "kafka-expose.io/inject"
MANAGED_SELECTOR = "kafka-expose.io/managed-by=kafka-expose"
AWS_INTERNAL = "service.beta.kubernetes.io/aws-load-balancer-internal"
EXTERNAL_DNS = "external-dns.alpha.kubernetes.io/hostname"
STS_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
LB_ANNOTATION = "kafka-expose.io/load-balancer"
BROKER_RENDER = "bitnami-kafka-32.4.4-brokers3"

# Small timings, so the tests exercise resync and lease expiry in seconds.
LEASE_DURATION = 4.0
RENEW_DEADLINE = 3.0
RETRY_PERIOD = 0.5
RESYNC_SECONDS = 5

SETTINGS_TEXT = f"""\
domain: kafka.example.com
loadBalancer:
  cloud: aws
  sourceRanges: [10.0.0.0/8]
controller:
  resyncSeconds: {RESYNC_SECONDS}
policy:
  namespaceOverrides:
    allowedClouds: [gke]
"""


def settings_of(text: str = SETTINGS_TEXT) -> Settings:
    return load_settings_text(text)


# ------------------------------------------------------------------------------------- the process


class Controller:
    """`python -m webhook controller` against the control plane; its log in a file."""

    def __init__(
        self,
        plane: ControlPlane,
        settings_path: Path,
        lease_namespace: str,
        log_dir: Path,
        *,
        identity: str | None = None,
        lease_name: str = "kafka-expose-controller",
        metrics_port: int = 0,
    ) -> None:
        self.identity = identity or f"ctl-{uuid.uuid4().hex[:6]}"
        self.metrics_port = metrics_port
        self.log_path = log_dir / f"{self.identity}.log"
        self.command = [
            sys.executable, "-m", "webhook", "controller",
            "--config", str(settings_path),
            "--kubeconfig", str(plane.kubeconfig_path),
            "--lease-namespace", lease_namespace,
            "--lease-name", lease_name,
            "--identity", self.identity,
            "--lease-duration", str(LEASE_DURATION),
            "--renew-deadline", str(RENEW_DEADLINE),
            "--retry-period", str(RETRY_PERIOD),
            "--metrics-port", str(metrics_port),
            "--metrics-bind", "127.0.0.1",
            "--reload-interval", "0.5",
            "--log-level", "debug",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Controller:
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "POD_NAMESPACE")}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (the controller releases its Lease), wait; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no release, the Lease has to expire."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log(self, tail: int = 80) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def metrics(self) -> dict[str, float]:
        """The scraped samples, `name{labels}` -> value (empty if the server does not answer)."""
        try:
            text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except requests.RequestException:
            return {}
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples


@contextlib.contextmanager
def running(*controllers: Controller) -> Iterator[tuple[Controller, ...]]:
    for controller in controllers:
        controller.start()
    try:
        yield controllers
    finally:
        for controller in controllers:
            controller.terminate()


def lease_holder(api: kubernetes.client.ApiClient, namespace: str, name: str) -> str | None:
    try:
        lease = kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return lease.spec.holder_identity if lease.spec else None


# ----------------------------------------------------------------------------------------- objects


def create_namespace(api: kubernetes.client.ApiClient, prefix: str, opted_in: bool = True) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    labels = {OPT_IN_LABEL: "enabled"} if opted_in else {}
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": labels}})
    return name


def delete_namespaces(api: kubernetes.client.ApiClient, names: Iterable[str]) -> None:
    core = kubernetes.client.CoreV1Api(api)
    for name in names:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name)


def broker_statefulset(
    namespace: str, replicas: int = 3, name: str | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """The bitnami 32.4.4 broker StatefulSet, its template exposed as the webhook would expose it."""
    sts = next(s for s in statefulsets(load_render(BROKER_RENDER)) if s["metadata"]["name"] == "kafka-broker")
    sts = copy.deepcopy(sts)
    if name:  # another StatefulSet beside it: its own name, and a selector of its own
        sts["metadata"]["name"] = name
        sts["spec"]["serviceName"] = f"{name}-headless"
        sts["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] = name
        sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] = name
    sts["metadata"]["namespace"] = namespace
    sts["spec"]["replicas"] = replicas
    exposed = mutate(sts, settings or settings_of(), namespace).result
    assert exposed["spec"]["template"]["metadata"]["labels"]["kafka-expose.io/exposed"] == "true"
    return exposed


def render_objects(render: str, namespace: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """A stock render's objects for `namespace`: StatefulSets exposed in render mode, hooks and test
    pods left out, the rest unchanged."""
    result = []
    for obj in load_render(render):
        if obj.get("kind") == "Pod" or (obj.get("metadata") or {}).get("annotations", {}).get("helm.sh/hook"):
            continue
        obj = copy.deepcopy(obj)
        if obj.get("kind") == "StatefulSet":
            obj = mutate(obj, settings or settings_of(), namespace).result
        obj["metadata"]["namespace"] = namespace
        result.append(obj)
    return result


_PLURALS = {
    "Service": "services",
    "StatefulSet": "statefulsets",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "ServiceAccount": "serviceaccounts",
    "NetworkPolicy": "networkpolicies",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Pod": "pods",
}


def create_objects(plane: ControlPlane, objects: Iterable[dict[str, Any]], dry_run: bool = False) -> None:
    """POST each object as it is (raw JSON, as `kubectl create` would)."""
    session = plane.requests_session()
    for obj in objects:
        group_version = obj["apiVersion"]
        base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        path = f"{base}/namespaces/{obj['metadata']['namespace']}/{_PLURALS[obj['kind']]}"
        params = {"dryRun": "All"} if dry_run else {}
        answer = session.post(plane.api_url + path, json=obj, params=params, timeout=30)
        assert answer.status_code == 201, f"{obj['kind']} {obj['metadata']['name']}: {answer.text[:500]}"


def raw(api: kubernetes.client.ApiClient, call: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """A client call's answer as the raw JSON dict."""
    answer = call(*args, _preload_content=False)
    decoded: dict[str, Any] = json.loads(answer.data)
    return decoded


def managed_services(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    core = kubernetes.client.CoreV1Api(api)
    answer = core.list_namespaced_service(namespace, label_selector=MANAGED_SELECTOR, _preload_content=False)
    return {s["metadata"]["name"]: s for s in json.loads(answer.data)["items"]}


def all_services(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    answer = kubernetes.client.CoreV1Api(api).list_namespaced_service(namespace, _preload_content=False)
    return {s["metadata"]["name"]: s for s in json.loads(answer.data)["items"]}


def pods(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    answer = kubernetes.client.CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False)
    return {
        p["metadata"]["name"]: p
        for p in json.loads(answer.data)["items"]
        if not p["metadata"].get("deletionTimestamp")
    }


def events(api: kubernetes.client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    answer = kubernetes.client.CoreV1Api(api).list_namespaced_event(namespace, _preload_content=False)
    items: list[dict[str, Any]] = json.loads(answer.data)["items"]
    return items


def event_reasons(api: kubernetes.client.ApiClient, namespace: str, kind: str = "StatefulSet") -> list[str]:
    return [e["reason"] for e in events(api, namespace) if e["involvedObject"]["kind"] == kind]


def scale(api: kubernetes.client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    kubernetes.client.AppsV1Api(api).patch_namespaced_stateful_set_scale(
        name, namespace, {"spec": {"replicas": replicas}}
    )


def selected_pods(services: dict[str, dict[str, Any]]) -> list[str]:
    """The broker pod each Service pins, sorted (a duplicate shows up twice)."""
    return sorted(s["spec"]["selector"][STS_POD_NAME_LABEL] for s in services.values())


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)
