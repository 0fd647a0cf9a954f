"""The webhook as the real API server sees it: `kafka-expose serve` under gunicorn with a test CA,
registered with the SAME webhook configurations the manifests ship (manifests/base/webhooks.yaml),
only their clientConfig switched from the in-cluster Service to a loopback URL + caBundle.
"""

from __future__ import annotations

import base64
import copy
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from tests.server.harness import WebhookServer, free_port
from tests.tlsutil import CA

REPO = Path(__file__).resolve().parents[1]
WEBHOOKS = REPO / "manifests" / "base" / "webhooks.yaml"
OPT_IN = {"kafka-expose.io/inject": "enabled"}
SETTINGS = """\
domain: kafka.example.com
loadBalancer:
  cloud: gke
controller:
  resyncSeconds: 5
"""


def webhook_configurations(url: str, ca_pem: bytes, name_suffix: str = "") -> list[dict[str, Any]]:
    """The shipped Mutating/ValidatingWebhookConfigurations, pointed at `url`."""
    with WEBHOOKS.open(encoding="utf-8") as handle:
        configs = [doc for doc in yaml.safe_load_all(handle) if doc]
    bundle = base64.b64encode(ca_pem).decode()
    for config in configs:
        config["metadata"]["name"] += name_suffix
        for hook in config["webhooks"]:
            path = hook["clientConfig"]["service"].get("path", "/")
            hook["clientConfig"] = {"url": url + path, "caBundle": bundle}
    return configs


def apply_webhook_configurations(api: kubernetes.client.ApiClient, configs: Iterable[dict[str, Any]]) -> None:
    admission = kubernetes.client.AdmissionregistrationV1Api(api)
    for config in configs:
        kind, name = config["kind"], config["metadata"]["name"]
        create, delete = {
            "MutatingWebhookConfiguration": (
                admission.create_mutating_webhook_configuration,
                admission.delete_mutating_webhook_configuration,
            ),
            "ValidatingWebhookConfiguration": (
                admission.create_validating_webhook_configuration,
                admission.delete_validating_webhook_configuration,
            ),
        }[kind]
        try:
            create(config)
        except ApiException as err:
            if err.status != 409:
                raise
            delete(name)
            create(config)


def ensure_namespace(api: kubernetes.client.ApiClient, name: str, opted_in: bool = True) -> None:
    core = kubernetes.client.CoreV1Api(api)
    body = {"metadata": {"name": name, "labels": dict(OPT_IN) if opted_in else {}}}
    try:
        core.create_namespace(body)
    except ApiException as err:
        if err.status != 409:
            raise


def probe_pod(namespace: str) -> dict[str, Any]:
    """A minimal broker pod (apache/kafka, env-configured) of a StatefulSet `probe`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "probe-0",
            "namespace": namespace,
            "labels": {"statefulset.kubernetes.io/pod-name": "probe-0", "apps.kubernetes.io/pod-index": "0"},
        },
        "spec": {
            "containers": [
                {
                    "name": "kafka",
                    "image": "apache/kafka:4.1.0",
                    "env": [{"name": "KAFKA_ADVERTISED_LISTENERS", "value": "PLAINTEXT://probe:9092"}],
                }
            ]
        },
    }


def wait_until_called(api: kubernetes.client.ApiClient, namespace: str, timeout: float = 60) -> None:
    """The API server loads webhook configurations asynchronously: dry-run a broker pod until it
    comes back mutated, so tests never race the registration."""
    core = kubernetes.client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            pod = core.create_namespaced_pod(namespace, probe_pod(namespace), dry_run="All")
            labels = pod.metadata.labels or {}
            if labels.get("kafka-expose.io/exposed") == "true":
                return
            last = "pod came back unmutated"
        except ApiException as err:
            last = f"{err.status} {err.reason}"
        time.sleep(0.3)
    raise AssertionError(f"the API server never called the webhook within {timeout}s: {last}")


class RegisteredWebhook:
    """`kafka-expose serve` (real gunicorn, real TLS) registered with the real API server."""

    def __init__(self, api: kubernetes.client.ApiClient, settings_text: str = SETTINGS) -> None:
        self.api = api
        self.root = Path(tempfile.mkdtemp(prefix="kafka-expose-webhook-"))
        self.ca = CA()
        self.server = WebhookServer(
            root=self.root,
            ca=self.ca,
            leaf=self.ca.issue(),
            port=free_port(),
            settings_text=settings_text,
        )
        self.url = f"https://127.0.0.1:{self.server.port}"
        self.configs = webhook_configurations(self.url, self.ca.cert_pem)

    @property
    def settings_path(self) -> Path:
        return self.server.config_dir / "settings.yaml"

    def start(self, probe_namespace: str = "kafka-expose-probe") -> RegisteredWebhook:
        self.server.start()
        apply_webhook_configurations(self.api, self.configs)
        ensure_namespace(self.api, probe_namespace)
        wait_until_called(self.api, probe_namespace)
        return self

    def stop(self) -> None:
        admission = kubernetes.client.AdmissionregistrationV1Api(self.api)
        for config in self.configs:
            name = config["metadata"]["name"]
            try:
                if config["kind"] == "MutatingWebhookConfiguration":
                    admission.delete_mutating_webhook_configuration(name)
                else:
                    admission.delete_validating_webhook_configuration(name)
            except ApiException:
                pass
        self.server.stop()


class ControllerProcess:
    """`kafka-expose controller` as a real process against the control plane."""

    def __init__(
        self, kubeconfig: Path, settings_path: Path, log_dir: Path, identity: str | None = None
    ) -> None:
        self.identity = identity or f"controller-{uuid.uuid4().hex[:6]}"
        self.log_path = log_dir / f"{self.identity}.log"
        self.command = [
            sys.executable, "-m", "webhook", "controller",
            "--config", str(settings_path), "--kubeconfig", str(kubeconfig),
            "--lease-namespace", "kube-system", "--identity", self.identity,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def apply_objects(
    api: kubernetes.client.ApiClient, objects: Iterable[dict[str, Any]], namespace: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Create objects unchanged (as `helm install` would send them); return the created ones and
    the kinds the server no longer serves (e.g. policy/v1beta1), which are skipped."""
    dynamic = DynamicClient(api)
    created, skipped = [], []
    for obj in objects:
        if (obj.get("metadata") or {}).get("annotations", {}).get("helm.sh/hook"):
            continue  # test hooks are not installed by `helm install`
        try:
            resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError:
            skipped.append(f"{obj['apiVersion']}/{obj['kind']}")
            continue
        body = copy.deepcopy(obj)
        body["metadata"].pop("namespace", None)
        kwargs = {"namespace": namespace} if resource.namespaced else {}
        created.append(resource.create(body=body, **kwargs).to_dict())
    return created, skipped


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
