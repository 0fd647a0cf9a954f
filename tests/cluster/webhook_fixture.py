"""A real kafka-expose webhook server registered with the test control plane.

`policy_webhook(control_plane, root, settings_text)` starts the server over HTTPS on a free loopback
port with a throwaway CA, registers a MutatingWebhookConfiguration (pods CREATE; services
CREATE/UPDATE only in namespaces labelled `kafka-expose.io/test-mutate-services=on`) and a
ValidatingWebhookConfiguration (pods and services CREATE/UPDATE), both `url` + `caBundle`,
`sideEffects: None`, `failurePolicy: Fail`, selecting namespaces labelled
`kafka-expose.io/inject=enabled` plus this instance's `kafka-expose.io/test-hook=<id>` (so other
tests' namespaces never reach it), and waits until the API server calls both.

The server: `python -m webhook serve ... --kubeconfig K --workers 1` when `serve` has a
`--kubeconfig` option (the policy hooks wired in), otherwise this module's own runner (the same
`create_app` with `webhook.namespaces.policy_hooks`, under werkzeug's TLS server):
`KAFKA_EXPOSE_TEST_WEBHOOK=serve|inline` forces one. One worker: the LoadBalancer cap is exact
within one process (see `webhook.namespaces.NamespaceCache`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.server.harness import WebhookServer, free_port  # noqa: E402
from tests.tlsutil import CA  # noqa: E402

OPT_IN = {"kafka-expose.io/inject": "enabled"}
HOOK_LABEL = "kafka-expose.io/test-hook"
MUTATE_SERVICES_LABEL = "kafka-expose.io/test-mutate-services"
POLICY_METRIC = "kafka_expose_policy_decisions_total"
_WARNING_RE = re.compile(r'^\s*\d{3} \S+ "((?:[^"\\]|\\.)*)"')


@functools.cache
def serve_has_kubeconfig() -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return "--kubeconfig" in help_text


def use_inline_runner() -> bool:
    forced = os.environ.get("KAFKA_EXPOSE_TEST_WEBHOOK", "")
    if forced in ("serve", "inline"):
        return forced == "inline"
    return not serve_has_kubeconfig()


@dataclass
class ClusterWebhookServer(WebhookServer):
    kubeconfig: Path | None = None
    inline: bool = False

    def command(self) -> list[str]:
        if not self.inline:
            return [*super().command(), "--kubeconfig", str(self.kubeconfig)]
        return [
            sys.executable, "-m", "tests.cluster.webhook_fixture",
            "--config", str(self.config_dir / "settings.yaml"),
            "--cert", str(self.secret_dir / "tls.crt"),
            "--key", str(self.secret_dir / "tls.key"),
            "--port", str(self.port),
            "--kubeconfig", str(self.kubeconfig),
        ]  # fmt: skip


@dataclass
class Answer:
    """An API server answer: HTTP status, decoded body, and the `Warning:` headers' texts."""

    status: int
    body: dict[str, Any]
    warnings: list[str]

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


def warnings_of(response: Any) -> list[str]:
    """The texts of the `Warning: 299 - "..."` headers of a requests response."""
    values = response.raw.headers.getlist("Warning") if response.raw is not None else []
    texts = []
    for value in values:
        match = _WARNING_RE.match(value)
        if match:
            texts.append(re.sub(r"\\(.)", r"\1", match[1]))
    return texts


@dataclass
class RegisteredWebhook:
    control_plane: Any
    server: ClusterWebhookServer
    hook_id: str
    session: Any
    settings_text: str = ""
    names: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.control_plane.api_url}{path}"

    # --- API calls that show what a user sees ---

    def create(
        self, namespace: str, obj: dict[str, Any], *, dry_run: bool = False, session: Any = None
    ) -> Answer:
        kind = obj["kind"]
        resource = {"Service": "services", "Pod": "pods"}[kind]
        body = json.loads(json.dumps(obj))
        body.setdefault("metadata", {})["namespace"] = namespace
        params = {"dryRun": "All"} if dry_run else {}
        response = (session or self.session).post(
            self.url(f"/api/v1/namespaces/{namespace}/{resource}"), json=body, params=params, timeout=30
        )
        return Answer(response.status_code, response.json(), warnings_of(response))

    def get(self, path: str) -> dict[str, Any]:
        response = self.session.get(self.url(path), timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def namespace(
        self,
        prefix: str = "policy",
        *,
        opted_in: bool = True,
        mutate_services: bool = False,
        annotations: dict[str, str] | None = None,
    ) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        labels = {HOOK_LABEL: self.hook_id}
        if opted_in:
            labels.update(OPT_IN)
        if mutate_services:
            labels[MUTATE_SERVICES_LABEL] = "on"
        metadata = {"name": name, "labels": labels, "annotations": annotations or {}}
        response = self.session.post(
            self.url("/api/v1/namespaces"),
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": metadata},
        )
        response.raise_for_status()
        self.namespaces.append(name)
        return name

    # --- settings ---

    def set_settings(self, text: str, timeout: float = 30) -> None:
        """Swap the settings file and wait until the server has reloaded it."""
        if text == self.settings_text:
            return
        before = self.server.metric("kafka_expose_settings_reloads_total", result="success")
        self.server.set_settings(text)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.metric("kafka_expose_settings_reloads_total", result="success") > before:
                self.settings_text = text
                return
            time.sleep(0.1)
        raise AssertionError(f"settings not reloaded after {timeout}s:\n{self.server.log_tail()}")

    def policy_decisions(self, rule: str, outcome: str) -> float:
        return self.server.metric(POLICY_METRIC, rule=rule, outcome=outcome)

    # --- registration ---

    def register(self, timeout: float = 60) -> None:
        ca_bundle = base64.b64encode(self.server.ca.cert_pem).decode()
        base = f"https://127.0.0.1:{self.server.port}"
        selector = {"matchLabels": {**OPT_IN, HOOK_LABEL: self.hook_id}}

        def hook(name: str, path: str, resource: str, operations: list[str], **extra: Any) -> dict[str, Any]:
            return {
                "name": f"{name}.{self.hook_id}.kafka-expose.test",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": base + path, "caBundle": ca_bundle},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": operations,
                        "resources": [resource],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": selector,
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                **extra,
            }

        name = f"kafka-expose-test-{self.hook_id}"
        mutate_services = {"matchLabels": {**selector["matchLabels"], MUTATE_SERVICES_LABEL: "on"}}
        mutating = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                hook("pods.mutate", "/mutate", "pods", ["CREATE"], reinvocationPolicy="IfNeeded"),
                hook(
                    "services.mutate",
                    "/mutate",
                    "services",
                    ["CREATE", "UPDATE"],
                    namespaceSelector=mutate_services,
                    reinvocationPolicy="IfNeeded",
                ),
            ],
        }
        validating = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                hook("pods.validate", "/validate", "pods", ["CREATE", "UPDATE"]),
                hook("services.validate", "/validate", "services", ["CREATE", "UPDATE"]),
            ],
        }
        group = "/apis/admissionregistration.k8s.io/v1"
        for path, config in (
            (f"{group}/mutatingwebhookconfigurations", mutating),
            (f"{group}/validatingwebhookconfigurations", validating),
        ):
            response = self.session.post(self.url(path), json=config, timeout=30)
            response.raise_for_status()
            self.names.append(f"{path}/{name}")
        self._wait_called(timeout)

    def _wait_called(self, timeout: float) -> None:
        """Dry-run creates in a probe namespace until the API server calls /mutate and /validate."""
        probe_ns = self.namespace("probe", mutate_services=True)
        probe = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "probe"},
            "spec": {"type": "ClusterIP", "selector": {"app": "probe"}, "ports": [{"port": 80}]},
        }
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            validate = self.server.metric("kafka_expose_admission_requests_total", endpoint="validate")
            mutate = self.server.metric("kafka_expose_admission_requests_total", endpoint="mutate")
            self.create(probe_ns, probe, dry_run=True)
            if (
                self.server.metric("kafka_expose_admission_requests_total", endpoint="validate") > validate
                and self.server.metric("kafka_expose_admission_requests_total", endpoint="mutate") > mutate
            ):
                return
            time.sleep(0.2)
        raise AssertionError(f"the API server did not call the webhook within {timeout}s")

    def close(self) -> None:
        for path in reversed(self.names):
            with contextlib.suppress(Exception):
                self.session.delete(self.url(path), timeout=30)
        for namespace in self.namespaces:
            with contextlib.suppress(Exception):
                self.session.delete(self.url(f"/api/v1/namespaces/{namespace}"), timeout=30)
        self.server.stop()


@contextlib.contextmanager
def policy_webhook(control_plane: Any, root: Path, settings_text: str) -> Iterator[RegisteredWebhook]:
    ca = CA()
    server = ClusterWebhookServer(
        root=root,
        ca=ca,
        leaf=ca.issue(hosts=("127.0.0.1", "localhost")),
        port=free_port(),
        settings_text=settings_text,
        workers=1,
        threads=8,
        kubeconfig=Path(control_plane.kubeconfig_path),
        inline=use_inline_runner(),
    )
    server.start(timeout=60)
    webhook = RegisteredWebhook(
        control_plane, server, uuid.uuid4().hex[:8], control_plane.requests_session(), settings_text
    )
    try:
        webhook.register()
        yield webhook
    finally:
        webhook.close()


# ------------------------------------------------------------------------------ the inline runner


def _run_inline(argv: list[str] | None = None) -> int:
    """The webhook app with the policy hooks under werkzeug's TLS server (until serve wires them)."""
    parser = argparse.ArgumentParser()
    for option in ("--config", "--cert", "--key", "--kubeconfig"):
        parser.add_argument(option, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    from prometheus_client import Counter
    from werkzeug.serving import make_server

    from webhook import metrics
    from webhook.logs import configure_logging
    from webhook.namespaces import policy_hooks
    from webhook.reload import CertificateStore, SettingsStore, Watcher
    from webhook.server import create_app

    configure_logging("info")
    store = SettingsStore.from_file(args.config)
    certificates = CertificateStore(args.cert, args.key, None)
    decisions = getattr(metrics, "POLICY_DECISIONS", None) or Counter(
        "kafka_expose_policy_decisions", "Policy rule decisions by rule and outcome.", ["rule", "outcome"]
    )
    validate, mutate, _cache = policy_hooks(
        args.kubeconfig, record=lambda rule, outcome: decisions.labels(rule, outcome).inc()
    )
    app = create_app(store, certificates=certificates, validate=validate, mutate=mutate)
    Watcher([store.reload_if_changed, certificates.reload_if_changed], 0.5).start()
    server = make_server("127.0.0.1", args.port, app, threaded=True, ssl_context=certificates.context)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(_run_inline())
