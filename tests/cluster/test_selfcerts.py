"""Self-managed certificates against the real API server.

SelfManagedCerts (running as a ServiceAccount-like user holding only the self-managed overlay's RBAC
shape) creates its CA Secret, issues a serving certificate into files, and injects caBundle into a
Mutating and a Validating webhook configuration whose `url` points at a small HTTPS server run here.
That server loads the certificate files on every connection and closes each connection after one
answer, so every admission call is a fresh TLS handshake checked against the current caBundle.
The API server then calls the webhooks (failurePolicy Fail: any trust problem fails the request);
a forced CA rotation runs while dry-run pods are created in a loop, and none may fail.

`WebhookStub` and `call` are also used by test_manifests_cluster.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client

from tests.support.controlplane import ControlPlane, wait_for
from webhook.tls import primitives as certs
from webhook.tls.selfmanaged import SelfManagedCerts

pytestmark = pytest.mark.cluster

MARKER = "kafka-expose.test/seen-by"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"


# ---- helpers shared with test_manifests_cluster.py --------------------------------------------------


def call(
    api: client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    query: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    """One raw API call: (HTTP status, decoded JSON body). Never raises on an HTTP error status."""
    _m, url, headers, serialized, _p = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=list((query or {}).items()),
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    response: Any = api.call_api(method, url, header_params=headers, body=serialized, _request_timeout=30)
    data = response.read()
    try:
        decoded = json.loads(data) if data else None
    except ValueError:
        decoded = data.decode(errors="replace")
    return int(response.status), decoded


def ok(result: tuple[int, Any]) -> Any:
    status, body = result
    assert 200 <= status < 300, f"HTTP {status}: {body}"
    return body


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WebhookStub

    def setup(self) -> None:
        context, serial = self.server.context()
        self.serial = serial
        self.request = context.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._send(200, {"ok": True})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        review = json.loads(self.rfile.read(length))
        request = review["request"]
        path = self.path.split("?", 1)[0]  # the API server adds ?timeout=5s
        obj = request.get("object") or {}
        meta = obj.get("metadata") or {}
        self.server.record(
            {
                "path": path,
                "kind": request["kind"]["kind"],
                "namespace": request.get("namespace"),
                "name": meta.get("name") or meta.get("generateName"),
                "dryRun": request.get("dryRun"),
                "serial": self.serial,
            }
        )
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if path == "/mutate" and request["operation"] == "CREATE":
            annotations = meta.get("annotations")
            ops: list[dict[str, Any]] = []
            if annotations is None:
                ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
            if not annotations or MARKER not in annotations:
                key = MARKER.replace("~", "~0").replace("/", "~1")
                ops.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": str(self.serial)})
            if ops:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        self._send(
            200, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.server.close_connections:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)


class WebhookStub(http.server.ThreadingHTTPServer):
    """An HTTPS admission webhook on 127.0.0.1 that records what it is asked and marks mutated pods.

    The certificate is read from (cert_file, key_file) on each new connection when the files
    changed, as the real server's hot reload does.
    """

    daemon_threads = True

    def __init__(self, cert_file: Path, key_file: Path, close_connections: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.cert_file, self.key_file = cert_file, key_file
        self.close_connections = close_connections
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loaded: tuple[bytes, bytes] | None = None
        self._context: ssl.SSLContext | None = None
        self._serial = 0
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def context(self) -> tuple[ssl.SSLContext, int]:
        cert, key = self.cert_file.read_bytes(), self.key_file.read_bytes()
        with self._lock:
            if self._context is None or self._loaded != (cert, key):
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(self.cert_file, self.key_file)
                self._context, self._loaded = context, (cert, key)
                self._serial = x509.load_pem_x509_certificate(cert).serial_number
            return self._context, self._serial

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def seen(self, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if all(r.get(k) == v for k, v in match.items())]

    def start(self) -> WebhookStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:  # TLS resets etc.: not ours
        pass


def pod(
    name: str, image: str = "registry.example/nginx:1", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def create_namespace(api: client.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    ok(call(api, "POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels or {}}}))


def delete(api: client.ApiClient, path: str) -> None:
    status, body = call(api, "DELETE", path)
    assert status in (200, 202, 404), f"DELETE {path}: {status} {body}"


# ---- the test -----------------------------------------------------------------------------------------


def _rbac(namespace: str, user: str, secret: str, configs: str) -> list[tuple[str, dict[str, Any]]]:
    """The self-managed overlay's rules (manifests/overlays/self-managed/rbac.yaml), renamed."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    subject = [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]
    role = {
        "metadata": {"name": "selfcerts"},
        "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [secret],
                "verbs": ["get", "update"],
            },
        ],
    }
    cluster_role = {
        "metadata": {"name": configs},
        "rules": [
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
                "resourceNames": [configs],
                "verbs": ["get", "patch"],
            }
        ],
    }
    ref = {"apiGroup": "rbac.authorization.k8s.io"}
    return [
        (f"{rbac}/namespaces/{namespace}/roles", role),
        (
            f"{rbac}/namespaces/{namespace}/rolebindings",
            {
                "metadata": {"name": "selfcerts"},
                "roleRef": {**ref, "kind": "Role", "name": "selfcerts"},
                "subjects": subject,
            },
        ),
        (f"{rbac}/clusterroles", cluster_role),
        (
            f"{rbac}/clusterrolebindings",
            {
                "metadata": {"name": configs},
                "roleRef": {**ref, "kind": "ClusterRole", "name": configs},
                "subjects": subject,
            },
        ),
    ]


def _webhook_configs(name: str, url: str, label: str) -> list[tuple[str, dict[str, Any]]]:
    def hook(kind: str, path: str) -> dict[str, Any]:
        return {
            "name": f"pods.{kind}.selfcerts.kafka-expose.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": f"{url}{path}"},
            "rules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
            ],
            "namespaceSelector": {"matchLabels": {label: "on"}},
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "failurePolicy": "Fail",  # a trust problem must show
        }

    mutating = {
        "metadata": {"name": name},
        "webhooks": [{**hook("mutate", "/mutate"), "reinvocationPolicy": "Never"}],
    }
    validating = {"metadata": {"name": name}, "webhooks": [hook("validate", "/validate")]}
    return [
        (f"{ADMISSION}/mutatingwebhookconfigurations", mutating),
        (f"{ADMISSION}/validatingwebhookconfigurations", validating),
    ]


@pytest.fixture
def setup(control_plane: ControlPlane, tmp_path: Path) -> Iterator[dict[str, Any]]:
    admin = control_plane.api_client()
    suffix = uuid.uuid4().hex[:6]
    namespace, pods_ns = f"selfcerts-{suffix}", f"selfcerts-pods-{suffix}"
    label = f"selfcerts-{suffix}"
    configs = f"kafka-expose-selfcerts-{suffix}"
    user = f"system:serviceaccount:{namespace}:kafka-expose"
    cert_dir = tmp_path / "certs"
    created: list[str] = []
    stub: WebhookStub | None = None
    try:
        create_namespace(admin, namespace)
        create_namespace(admin, pods_ns, {label: "on"})
        for path, body in _rbac(namespace, user, "kafka-expose-ca", configs):
            ok(call(admin, "POST", path, body))
            created.append(f"{path}/{body['metadata']['name']}")
        # the stub needs a certificate file before it can listen for handshakes; SelfManagedCerts
        # overwrites it on its first pass
        cert_dir.mkdir()
        bootstrap = certs.make_ca("bootstrap", dt.timedelta(hours=1))
        leaf = certs.issue_serving_cert(*bootstrap, ["bootstrap"], ["127.0.0.1"])
        (cert_dir / "tls.crt").write_bytes(leaf[0])
        (cert_dir / "tls.key").write_bytes(leaf[1])
        stub = WebhookStub(cert_dir / "tls.crt", cert_dir / "tls.key", close_connections=True).start()
        for path, body in _webhook_configs(configs, stub.url, label):
            ok(call(admin, "POST", path, body))
            created.append(f"{path}/{body['metadata']['name']}")
        identity = control_plane.kubeconfig_for(
            user, ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
        )
        as_sa = control_plane.api_client(identity)
        yield {
            "admin": admin,
            "as_sa": as_sa,
            "namespace": namespace,
            "pods_ns": pods_ns,
            "configs": configs,
            "cert_dir": cert_dir,
            "stub": stub,
        }
        as_sa.close()  # type: ignore[no-untyped-call]
    finally:
        for path in reversed(created):
            delete(admin, path)
        for ns in (namespace, pods_ns):
            delete(admin, f"/api/v1/namespaces/{ns}")
        if stub is not None:
            stub.stop()
        admin.close()  # type: ignore[no-untyped-call]


def _manager(env: dict[str, Any], api: client.ApiClient) -> SelfManagedCerts:
    return SelfManagedCerts(
        api,
        namespace=env["namespace"],
        secret_name="kafka-expose-ca",
        service_name="kafka-expose",
        webhook_config_names=([env["configs"]], [env["configs"]]),
        cert_dir=env["cert_dir"],
        ca_validity=dt.timedelta(days=1),
        cert_validity=dt.timedelta(seconds=40),
        renew_before=dt.timedelta(seconds=10),
        propagation_delay=dt.timedelta(seconds=3),
        extra_ip_addresses=["127.0.0.1"],
    )


def _bundles(admin: client.ApiClient, name: str) -> list[bytes]:
    out = []
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        config = ok(call(admin, "GET", f"{ADMISSION}/{kind}/{name}"))
        out += [base64.b64decode(h["clientConfig"].get("caBundle", "")) for h in config["webhooks"]]
    return out


def _secret(admin: client.ApiClient, env: dict[str, Any]) -> dict[str, bytes]:
    secret = ok(call(admin, "GET", f"/api/v1/namespaces/{env['namespace']}/secrets/kafka-expose-ca"))
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def _create_pod(api: client.ApiClient, namespace: str, name: str) -> tuple[int, Any]:
    return call(api, "POST", f"/api/v1/namespaces/{namespace}/pods", pod(name), {"dryRun": "All"})


def test_self_managed_certs_inject_serve_and_rotate_without_a_failed_call(setup: dict[str, Any]) -> None:
    env = setup
    admin, stub = env["admin"], env["stub"]
    manager = _manager(env, env["as_sa"])  # least privilege: the overlay's rules only

    assert manager.ensure() is True and manager.is_ready()
    ca1 = _secret(admin, env)["ca.crt"]
    assert _bundles(admin, env["configs"]) == [ca1, ca1]
    assert certs.is_signed_by((env["cert_dir"] / "tls.crt").read_bytes(), ca1)

    # The API server calls the webhook over TLS it verifies with the injected caBundle.
    def marked() -> bool:
        status, body = _create_pod(admin, env["pods_ns"], f"probe-{uuid.uuid4().hex[:6]}")
        return status == 201 and MARKER in (body["metadata"].get("annotations") or {})

    wait_for(marked, timeout=60, interval=0.5, message="the API server to call the self-certified webhook")
    assert stub.seen(path="/validate", kind="Pod")

    # Rotation under load: a loop of dry-run pod creations, none may fail.
    results: list[tuple[int, str, str]] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            status, body = _create_pod(admin, env["pods_ns"], f"load-{n}")
            serial = (
                (body.get("metadata", {}).get("annotations") or {}).get(MARKER, "") if status == 201 else ""
            )
            results.append((status, serial, "" if status == 201 else json.dumps(body)[:300]))
            time.sleep(0.05)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(1)
        assert manager.rotate_ca() is True
        staged = _secret(admin, env)
        ca2 = staged["next-ca.crt"]
        assert all(b == ca1 + ca2 for b in _bundles(admin, env["configs"]))
        assert certs.is_signed_by((env["cert_dir"] / "tls.crt").read_bytes(), ca1)  # not switched yet

        def promoted() -> bool:
            manager.ensure()
            data = _secret(admin, env)
            return "next-ca.crt" not in data and data["ca.crt"] == ca2

        wait_for(promoted, timeout=30, interval=0.5, message="the staged CA to be promoted")
        leaf = (env["cert_dir"] / "tls.crt").read_bytes()
        assert certs.is_signed_by(leaf, ca2)
        assert all(b == ca1 + ca2 for b in _bundles(admin, env["configs"]))
        new_serial = str(x509.load_pem_x509_certificate(leaf).serial_number)
        wait_for(lambda: any(s == new_serial for _st, s, _e in results), timeout=30,
                 message="a call served with the new CA's certificate")  # fmt: skip

        def retired() -> bool:
            manager.ensure()
            return "previous-ca.crt" not in _secret(admin, env)

        # previous CA kept for cert_validity + propagation_delay (43 s) after the promotion
        wait_for(retired, timeout=90, interval=1, message="the old CA to be retired")
        assert _bundles(admin, env["configs"]) == [ca2, ca2]
        time.sleep(3)  # calls keep working after the old CA left the bundle
    finally:
        stop.set()
        worker.join(timeout=30)

    failures = [r for r in results if r[0] != 201]
    assert not failures, f"{len(failures)} of {len(results)} calls failed during the rotation: {failures[:3]}"
    served = {s for _st, s, _e in results}
    assert "" not in served, "every pod went through the mutating webhook"
    assert len(results) > 20 and len(served) >= 2, (len(results), served)


def test_replicas_agree_on_one_ca(setup: dict[str, Any], tmp_path: Path) -> None:
    env = setup
    barrier = threading.Barrier(3)
    managers = []
    for i in range(3):
        e = dict(env, cert_dir=tmp_path / f"replica-{i}")
        managers.append(_manager(e, env["as_sa"]))
    outcomes: list[bool | BaseException] = []

    def run(m: SelfManagedCerts) -> None:
        barrier.wait()
        try:
            outcomes.append(m.ensure())
        except BaseException as err:  # surfaced below
            outcomes.append(err)

    threads = [threading.Thread(target=run, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outcomes == [True, True, True]
    ca = _secret(env["admin"], env)["ca.crt"]
    for m in managers:
        assert certs.is_signed_by(m.cert_path.read_bytes(), ca)
    assert _bundles(env["admin"], env["configs"]) == [ca, ca]


def test_least_privilege_identity_cannot_touch_other_secrets(setup: dict[str, Any]) -> None:
    env = setup
    status, _ = call(env["as_sa"], "GET", f"/api/v1/namespaces/{env['namespace']}/secrets/other")
    assert status == 403
    status, _ = call(env["as_sa"], "GET", "/api/v1/secrets")
    assert status == 403
    status, _ = call(env["as_sa"], "GET", f"{ADMISSION}/mutatingwebhookconfigurations")
    assert status == 403
