"""The webhook as the real API server sees it: `kafka-expose serve` (gunicorn, a test CA, and
`--kubeconfig` so the policy's namespace overrides and LoadBalancer cap are wired in as in a cluster),
registered with the SAME webhook configurations the manifests ship (manifests/base/webhooks.yaml),
only their clientConfig switched from the in-cluster Service to a loopback URL + caBundle.

`RegisteredWebhook(api)` registers them as shipped. For tests that must not see (nor be seen by)
other tests' namespaces, `RegisteredWebhook(api, isolated=True)` suffixes the configurations' names
and adds a `kafka-expose.io/test-hook=<id>` label to every namespaceSelector (`namespace()` creates
namespaces carrying it); `only` keeps a subset of the shipped webhooks and `namespace_labels` narrows
one webhook to namespaces with more labels. Its API helpers (`create`, `get`) show what a user sees:
the status, the body and the `Warning:` headers.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import kubernetes.client
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from tests.support import controlplane
from tests.support.harness import WebhookServer, free_port
from tests.support.tlsutil import CA

REPO = Path(__file__).resolve().parents[2]
WEBHOOKS = REPO / "manifests" / "base" / "webhooks.yaml"
OPT_IN = {"kafka-expose.io/inject": "enabled"}
HOOK_LABEL = "kafka-expose.io/test-hook"
SETTINGS = """\
domain: kafka.example.com
loadBalancer:
  cloud: gke
controller:
  resyncSeconds: 5
"""
ADMISSION_METRIC = "kafka_expose_admission_requests_total"
POLICY_METRIC = "kafka_expose_policy_decisions_total"
RELOAD_METRIC = "kafka_expose_settings_reloads_total"
_WARNING_RE = re.compile(r'^\s*\d{3} \S+ "((?:[^"\\]|\\.)*)"')


def webhook_configurations(
    url: str,
    ca_pem: bytes,
    name_suffix: str = "",
    *,
    only: Collection[str] | None = None,
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """The shipped Mutating/ValidatingWebhookConfigurations, pointed at `url`.

    `only`: the names of the webhooks to keep (a configuration left without any is dropped);
    `namespace_labels`: per webhook name ("*" for all), labels added to its namespaceSelector."""
    with WEBHOOKS.open(encoding="utf-8") as handle:
        configs = [doc for doc in yaml.safe_load_all(handle) if doc]
    bundle = base64.b64encode(ca_pem).decode()
    labels = namespace_labels or {}
    kept = []
    for config in configs:
        config["metadata"]["name"] += name_suffix
        config["webhooks"] = [h for h in config["webhooks"] if only is None or h["name"] in only]
        for hook in config["webhooks"]:
            path = hook["clientConfig"]["service"].get("path", "/")
            hook["clientConfig"] = {"url": url + path, "caBundle": bundle}
            selector = hook.setdefault("namespaceSelector", {}).setdefault("matchLabels", {})
            selector.update({**labels.get("*", {}), **labels.get(hook["name"], {})})
        if config["webhooks"]:
            kept.append(config)
    return kept


def _admission_calls(
    api: kubernetes.client.ApiClient, kind: str
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(create, delete) of a webhook configuration of `kind`."""
    admission = kubernetes.client.AdmissionregistrationV1Api(api)
    if kind == "MutatingWebhookConfiguration":
        return (
            admission.create_mutating_webhook_configuration,
            admission.delete_mutating_webhook_configuration,
        )
    if kind == "ValidatingWebhookConfiguration":
        return (
            admission.create_validating_webhook_configuration,
            admission.delete_validating_webhook_configuration,
        )
    raise KeyError(kind)


def apply_webhook_configurations(api: kubernetes.client.ApiClient, configs: Iterable[dict[str, Any]]) -> None:
    for config in configs:
        create, delete = _admission_calls(api, config["kind"])
        try:
            create(config)
        except ApiException as err:
            if err.status != 409:
                raise
            delete(config["metadata"]["name"])
            create(config)


def delete_webhook_configurations(
    api: kubernetes.client.ApiClient, configs: Iterable[dict[str, Any]]
) -> None:
    for config in configs:
        _create, delete = _admission_calls(api, config["kind"])
        with contextlib.suppress(ApiException):
            delete(config["metadata"]["name"])


def ensure_namespace(
    api: kubernetes.client.ApiClient,
    name: str,
    opted_in: bool = True,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> None:
    """Create namespace `name` (labelled opted-in unless `opted_in` is false, plus `labels`); if it
    exists, only add `labels` to it."""
    core = kubernetes.client.CoreV1Api(api)
    metadata = kubernetes.client.V1ObjectMeta(
        name=name,
        labels={**(OPT_IN if opted_in else {}), **(labels or {})},
        annotations=dict(annotations or {}),
    )
    try:
        core.create_namespace(kubernetes.client.V1Namespace(metadata=metadata))
    except ApiException as err:
        if err.status != 409:
            raise
        if labels:
            core.patch_namespace(name, {"metadata": {"labels": dict(labels)}})


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


def probe_service(namespace: str) -> dict[str, Any]:
    """A plain ClusterIP Service (every Service goes through the shipped services webhooks)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {"type": "ClusterIP", "selector": {"app": "probe"}, "ports": [{"port": 80}]},
    }


@dataclass
class Answer:
    """An API server answer: HTTP status, decoded body, and the `Warning:` headers' texts."""

    status: int
    body: dict[str, Any]
    warnings: list[str]

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


def warnings_of(headers: Any) -> list[str]:
    """The texts of the `Warning: 299 - "..."` headers (a urllib3 HTTPHeaderDict, or a response
    that has one as `.headers`, or as `.raw.headers` for requests)."""
    raw = getattr(headers, "raw", None)
    headers = getattr(raw if raw is not None else headers, "headers", headers)
    texts = []
    for value in headers.getlist("Warning"):
        match = _WARNING_RE.match(value)
        if match:
            texts.append(re.sub(r"\\(.)", r"\1", match[1]))
    return texts


def api_request(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    params: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> Answer:
    """One API server request with the credentials of `api`; any status is returned, not raised."""
    conf = api.configuration
    headers = {"Accept": "application/json", "Content-Type": content_type}
    if token := conf.get_api_key_with_prefix("authorization"):
        headers["Authorization"] = token
    url = conf.host + path + ("?" + urlencode(params) if params else "")
    data = None if body is None else json.dumps(body).encode()
    response = api.rest_client.pool_manager.request(method, url, body=data, headers=headers, timeout=30)
    decoded = json.loads(response.data) if response.data else {}
    return Answer(response.status, decoded if isinstance(decoded, dict) else {}, warnings_of(response))


def create_object(
    api: kubernetes.client.ApiClient, namespace: str, obj: dict[str, Any], *, dry_run: bool = False
) -> Answer:
    """POST a Pod or a Service into `namespace`, as `kubectl create` would."""
    resource = {"Service": "services", "Pod": "pods"}[obj["kind"]]
    body = copy.deepcopy(obj)
    body.setdefault("metadata", {})["namespace"] = namespace
    params = {"dryRun": "All"} if dry_run else None
    return api_request(api, "POST", f"/api/v1/namespaces/{namespace}/{resource}", body, params=params)


def is_mutated(answer: Answer) -> bool:
    """A broker pod as the API server answered it carries the exposed label."""
    labels = answer.body.get("metadata", {}).get("labels") or {}
    return bool(labels.get("kafka-expose.io/exposed") == "true")


def wait_until_called(api: kubernetes.client.ApiClient, namespace: str, timeout: float = 60) -> None:
    """The API server loads webhook configurations asynchronously: dry-run a broker pod until it
    comes back mutated, so tests never race the registration."""
    last = ["no answer"]

    def mutated() -> bool:
        answer = create_object(api, namespace, probe_pod(namespace), dry_run=True)
        last[0] = f"{answer.status} {answer.message}" if answer.status >= 300 else "pod came back unmutated"
        return is_mutated(answer)

    try:
        wait_for(mutated, timeout, 0.3, "the API server to call the webhook")
    except AssertionError:
        raise AssertionError(
            f"the API server never called the webhook within {timeout}s: {last[0]}"
        ) from None


def write_kubeconfig(api: kubernetes.client.ApiClient, path: Path) -> Path:
    """A kubeconfig with the credentials of `api` (client certificate files, or a bearer token)."""
    conf = api.configuration
    user: dict[str, Any] = {}
    if conf.cert_file:
        user = {"client-certificate": conf.cert_file, "client-key": conf.key_file}
    elif token := conf.get_api_key_with_prefix("authorization"):
        user = {"token": token.removeprefix("Bearer ")}
    cluster: dict[str, Any] = {"server": conf.host}
    if conf.ssl_ca_cert:
        cluster["certificate-authority"] = conf.ssl_ca_cert
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


class RegisteredWebhook:
    """`kafka-expose serve` (real gunicorn, real TLS, `--kubeconfig`) registered with the real API
    server. `start()`/`stop()`, or use it as a context manager."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        settings_text: str = SETTINGS,
        *,
        root: Path | None = None,
        kubeconfig: Path | str | None = None,
        workers: int = 2,
        threads: int = 4,
        isolated: bool = False,
        only: Collection[str] | None = None,
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.api = api
        self.root = root or Path(tempfile.mkdtemp(prefix="kafka-expose-webhook-"))
        self.ca = CA()
        self.kubeconfig = Path(kubeconfig) if kubeconfig else write_kubeconfig(api, self.root / "kubeconfig")
        self.server = WebhookServer(
            root=self.root,
            ca=self.ca,
            leaf=self.ca.issue(),
            port=free_port(),
            settings_text=settings_text,
            workers=workers,
            threads=threads,
            extra_args=("--kubeconfig", str(self.kubeconfig)),
        )
        self.settings_text = settings_text
        self.url = f"https://127.0.0.1:{self.server.port}"
        self.hook_id = uuid.uuid4().hex[:8]
        self.isolated = isolated
        labels = {key: dict(value) for key, value in (namespace_labels or {}).items()}
        if isolated:
            labels["*"] = {**labels.get("*", {}), HOOK_LABEL: self.hook_id}
        self.namespace_labels = labels
        self.configs = webhook_configurations(
            self.url,
            self.ca.cert_pem,
            f"-{self.hook_id}" if isolated else "",
            only=only,
            namespace_labels=labels,
        )
        self.namespaces: list[str] = []

    @property
    def settings_path(self) -> Path:
        return self.server.config_dir / "settings.yaml"

    @property
    def hooks(self) -> list[dict[str, Any]]:
        return [hook for config in self.configs for hook in config["webhooks"]]

    def start(self, probe_namespace: str = "kafka-expose-probe", timeout: float = 60) -> RegisteredWebhook:
        self.server.start(timeout=60)
        apply_webhook_configurations(self.api, self.configs)
        all_labels = {k: v for labels in self.namespace_labels.values() for k, v in labels.items()}
        if self.isolated:
            probe_namespace = self.namespace("probe", labels=all_labels)
        else:
            ensure_namespace(self.api, probe_namespace, labels=all_labels)
        self.wait_until_called(probe_namespace, timeout)
        return self

    def stop(self) -> None:
        delete_webhook_configurations(self.api, self.configs)
        core = kubernetes.client.CoreV1Api(self.api)
        for namespace in self.namespaces:
            with contextlib.suppress(ApiException):
                core.delete_namespace(namespace)
        self.server.stop()

    def __enter__(self) -> RegisteredWebhook:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def wait_until_called(self, namespace: str, timeout: float = 60) -> None:
        """Dry-run a broker pod and a Service in `namespace` until every endpoint of the registered
        webhooks has been called (the API server loads configurations asynchronously), and a pods
        mutating webhook, if registered, returned the pod mutated."""
        resources = {
            rule_resource
            for hook in self.hooks
            for rule in hook["rules"]
            for rule_resource in rule["resources"]
        }
        endpoints = {hook["clientConfig"]["url"].rsplit("/", 1)[1] for hook in self.hooks}
        mutates_pods = any(
            "pods" in rule["resources"] and hook["clientConfig"]["url"].endswith("/mutate")
            for hook in self.hooks
            for rule in hook["rules"]
        )

        def called() -> bool:
            before = {e: self.server.metric(ADMISSION_METRIC, endpoint=e) for e in endpoints}
            mutated = True
            if "pods" in resources:
                mutated = is_mutated(self.create(namespace, probe_pod(namespace), dry_run=True))
            if "services" in resources:
                self.create(namespace, probe_service(namespace), dry_run=True)
            return (mutated or not mutates_pods) and all(
                self.server.metric(ADMISSION_METRIC, endpoint=e) > before[e] for e in endpoints
            )

        wait_for(called, timeout, 0.3, f"the API server to call the webhook ({sorted(endpoints)})")

    # --- what a user sees from the API server ---

    def request(self, method: str, path: str, body: Any = None, **options: Any) -> Answer:
        """`api_request` with this client's credentials: any status is returned."""
        return api_request(self.api, method, path, body, **options)

    def create(self, namespace: str, obj: dict[str, Any], *, dry_run: bool = False) -> Answer:
        return create_object(self.api, namespace, obj, dry_run=dry_run)

    def get(self, path: str) -> dict[str, Any]:
        answer = self.request("GET", path)
        assert answer.status == 200, (path, answer.status, answer.body)
        return answer.body

    def namespace(
        self,
        prefix: str = "policy",
        *,
        opted_in: bool = True,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """A new namespace (deleted by `stop`), with this instance's hook label if isolated."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        own = {HOOK_LABEL: self.hook_id} if self.isolated else {}
        ensure_namespace(self.api, name, opted_in, labels={**own, **(labels or {})}, annotations=annotations)
        self.namespaces.append(name)
        return name

    # --- settings and metrics ---

    def set_settings(self, text: str, timeout: float = 30) -> None:
        """Swap the settings file and wait until the server has reloaded it."""
        if text == self.settings_text:
            return
        before = self.server.metric(RELOAD_METRIC, result="success")
        self.server.set_settings(text)
        try:
            wait_for(lambda: self.server.metric(RELOAD_METRIC, result="success") > before, timeout, 0.1)
        except AssertionError:
            raise AssertionError(
                f"settings not reloaded after {timeout}s:\n{self.server.log_tail()}"
            ) from None
        self.settings_text = text

    def policy_decisions(self, rule: str, outcome: str) -> float:
        return self.server.metric(POLICY_METRIC, rule=rule, outcome=outcome)


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
    dynamic = DynamicClient(api)  # type: ignore[no-untyped-call]
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
    """`tests.controlplane.wait_for` with a longer default timeout; it fails with a `WaitTimeout`,
    an AssertionError (and a TimeoutError)."""
    return controlplane.wait_for(predicate, timeout, interval, message=what)
