"""Security of `kafka-expose serve` over real HTTPS, of its logs and of the dependencies.

Here: TLS below 1.2, weak ciphers and plaintext HTTP refused; client certificates required with
--client-ca; no endpoint gives away the settings or the key (GET on every route and a list of
guesses; /metrics, /readyz after a rejected settings file); the logs never hold Secret data or
object content; the locks pin every package with hashes; pip-audit when its service is reachable.

Elsewhere, and checked to still exist by `test_the_other_security_checks_exist`:
* least-privilege RBAC: tests/unit/install/test_manifests.py (no wildcard, exactly what the server and the
  controller use) and tests/cluster/test_manifests_cluster.py (the ServiceAccount, against the real
  API server, can do what it needs and nothing more);
* non-root, read-only root filesystem, restricted Pod Security Standard: tests/unit/install/test_manifests.py,
  tests/unit/install/test_dockerfile.py and tests/cluster/test_manifests_cluster.py;
* a namespace cannot take another namespace's domain or a cloud preset it is not allowed:
  tests/unit/core/test_policy.py and tests/cluster/test_policy_cluster.py.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import importlib
import json
import re
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import podfactory
from tests.support.harness import WebhookServer, running_server
from tests.support.tlsutil import CA, client_context

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
MARKER = "Zq7SECRETx9"  # never expected in an answer to GET, nor in any log line
SETTINGS = f"""\
domain: kafka.example.com
loadBalancer:
  cloud: gke
  annotations:
    example.com/{MARKER.lower()}-token: "{MARKER}-settings-annotation"
"""
INVALID_SETTINGS = f"""\
domain: {MARKER.lower()}.example.com
loadBalancer:
  cloud: {MARKER}
  annotations: [{MARKER}, unclosed
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    with running_server(tmp_path_factory.mktemp("security"), settings_text=SETTINGS) as srv:
        yield srv


@contextlib.contextmanager
def tls(server: WebhookServer, context: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with plain, context.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
        yield sock


# --- TLS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_below_1_2_is_refused(server: WebhookServer, version: ssl.TLSVersion) -> None:
    try:
        context = server.context(maximum_version=version)
    except ssl.SSLError:
        pytest.skip(f"this OpenSSL cannot configure a {version.name} client")
    with pytest.raises((ssl.SSLError, ConnectionError)), tls(server, context) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(100)


def test_tls_1_2_and_1_3_are_served_with_strong_ciphers_only(server: WebhookServer) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = server.context()
        context.minimum_version = context.maximum_version = version
        with tls(server, context) as sock:
            assert sock.version() == version.name.replace("_", ".")
            cipher = sock.cipher()
            assert cipher is not None
            assert not re.search(r"NULL|RC4|DES|MD5|EXPORT|anon", cipher[0]), cipher
    weak = server.context()
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:@SECLEVEL=0")  # CBC with SHA-1 MACs
    with pytest.raises((ssl.SSLError, ConnectionError)), tls(server, weak):
        pass


def test_plaintext_http_gets_no_http_answer(server: WebhookServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
        plain.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        with contextlib.suppress(ConnectionError, TimeoutError):
            while chunk := plain.recv(4096):
                received += chunk
    assert not received.startswith(b"HTTP/"), received[:200]
    assert b"kafka_expose" not in received


def test_client_certificate_required_with_client_ca(tmp_path: Path) -> None:
    """With --client-ca (the API server's client CA): no certificate, or one from another CA, cannot
    even finish the handshake; the API server's certificate can."""
    client_ca = CA("kube-apiserver client CA")
    apiserver = client_ca.issue("kube-apiserver", hosts=(), client=True)
    with running_server(tmp_path, client_ca=client_ca, client_leaf=apiserver, show_log=False) as server:
        doc = podfactory.admission_review(podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0])
        assert server.review(doc)["response"]["uid"] == doc["request"]["uid"]
        for stranger in (None, CA("another CA").issue("intruder", hosts=(), client=True)):
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                conn = http.client.HTTPSConnection(
                    "127.0.0.1", server.port, context=client_context(server.ca, stranger), timeout=10
                )
                try:
                    conn.request("GET", "/metrics")
                    conn.getresponse().read()
                finally:
                    conn.close()
        assert server.request("GET", "/healthz")[0] == 200


# --- nothing leaks from an endpoint -----------------------------------------------------------------

GUESSES = (
    "/", "/settings", "/config", "/configz", "/debug", "/debug/vars", "/debug/pprof", "/env", "/environ",
    "/admin", "/status", "/version", "/info", "/static/", "/secret", "/tls.key", "/certs", "/.env",
    "/..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd", "/mutate", "/validate", "/metrics?format=json",
    "/readyz?verbose", "/healthz?verbose=1", "/console", "/flasgger", "/swagger.json", "/openapi",
)  # fmt: skip


def routes() -> set[str]:
    """Every route the app defines (built here with plain settings, like each worker builds it)."""
    from webhook.config import load_settings_text
    from webhook.server.app import create_app

    app = create_app(load_settings_text(SETTINGS))
    return {rule.rule for rule in app.url_map.iter_rules() if "<" not in rule.rule}


def secrets_in(text: str, server: WebhookServer) -> list[str]:
    key_lines = [line for line in server.leaf.key_pem.decode().splitlines() if "PRIVATE KEY" not in line]
    found = []
    if MARKER.lower() in text.lower():
        found.append("a value of the settings file")
    if "PRIVATE KEY" in text or any(len(line) > 16 and line in text for line in key_lines):
        found.append("the private key")
    if "annotations:" in text or "loadBalancer" in text:
        found.append("settings text")
    return found


def test_no_endpoint_leaks_settings_or_secrets(server: WebhookServer) -> None:
    paths = sorted(routes() | set(GUESSES))
    assert {"/mutate", "/validate", "/healthz", "/readyz", "/metrics"} <= set(paths)
    server.set_settings(INVALID_SETTINGS)  # readiness then reports a rejected file: what does it say?
    try:
        import time

        deadline = time.monotonic() + 15
        while b"rejected" not in server.request("GET", "/readyz")[2]:
            assert time.monotonic() < deadline, "the invalid settings were not rejected"
            time.sleep(0.2)
        leaks = {}
        for method in ("GET", "HEAD", "OPTIONS"):
            for path in paths:
                status, headers, body = server.request(method, path)
                assert status < 500, (method, path, status)
                text = body.decode("utf-8", "replace") + json.dumps(headers)
                if found := secrets_in(text, server):
                    leaks[f"{method} {path} ({status})"] = (found, text[:600])
    finally:
        server.set_settings(SETTINGS)
    assert not leaks, leaks


# --- the logs ----------------------------------------------------------------------------------------


def _sasl_pod() -> dict[str, Any]:
    docs = [
        d for d in podfactory.load_render("bitnami-kafka-32.4.4-default") if d.get("kind") == "StatefulSet"
    ]
    pod = podfactory.pod_from_statefulset(docs[0], 0, "kafka")
    container = pod["spec"]["containers"][0]
    container.setdefault("env", []).extend(
        [
            {
                "name": "KAFKA_CFG_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG",
                "value": f'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="{MARKER}-jaas";',
            },
            {"name": "KAFKA_CLIENT_PASSWORDS", "value": f"{MARKER}-env-password"},
        ]
    )
    container.setdefault("args", []).append(f"--password={MARKER}-arg")
    pod["metadata"].setdefault("annotations", {})["vault.example.com/secret"] = f"{MARKER}-annotation"
    return pod


def _env_pod(advertised: str) -> dict[str, Any]:
    pod = _sasl_pod()
    pod["spec"]["containers"][0]["image"] = "apache/kafka:4.1.0"
    pod["spec"]["containers"][0]["env"].append({"name": "KAFKA_ADVERTISED_LISTENERS", "value": advertised})
    return pod


def _secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "kafka-jaas",
            "namespace": "kafka",
            "annotations": {"a": f"{MARKER}-secret-annotation"},
        },
        "data": {"client-jaas": base64.b64encode(f"{MARKER}-secret-data".encode()).decode()},
        "stringData": {"plain": f"{MARKER}-secret-string"},
    }


def test_logs_hold_no_secret_data_nor_object_content(tmp_path: Path) -> None:
    """Pods whose env (JAAS config, passwords), args and annotations carry a marker, and a Secret,
    through every outcome (mutated, warned, skipped, an error in the core, a rejected body): the
    marker (also base64-encoded) is in no log line, and no line carries an object's content."""
    broken_volume = _sasl_pod()
    broken_volume["spec"].setdefault("volumes", []).append({"name": ["not", "a", "string"], "emptyDir": {}})
    objects = [
        _sasl_pod(),  # prepared-file flavor: mutated
        _env_pod(
            f"CLIENT://{MARKER.lower()}-host:9092"
        ),  # env flavor: mutated, the marker in a listener host
        _env_pod(f"CLIENT://h:{MARKER}"),  # a listener the core cannot read: warned
        broken_volume,  # an exception in the core: admitted unchanged, with a traceback in the log
        _secret(),  # a Secret (the webhook is never registered for them): skipped
    ]
    with running_server(tmp_path, show_log=False) as server:
        for obj in objects:
            for path in ("/mutate", "/validate"):
                for operation in ("CREATE", "UPDATE"):
                    doc = podfactory.admission_review(obj, operation=operation, old_object=obj)
                    assert server.post(path, doc)[0] == 200
        text = json.dumps(podfactory.admission_review(objects[0]))
        for body in (text[:-5].encode(), text.replace('"kind": "AdmissionReview"', '"kind": 1').encode()):
            assert server.post("/mutate", body)[0] == 400
        server.post("/mutate", b"{" + b" " * (8 * 2**20) + f'"{MARKER}": 1}}'.encode())
        log = server.log_path.read_text(errors="replace")
    encoded = base64.b64encode(f"{MARKER}-secret-data".encode()).decode()
    hits = [line[:300] for line in log.splitlines() if MARKER.lower() in line.lower() or encoded in line]
    assert not hits, hits
    content = [
        line[:300]
        for line in log.splitlines()
        if re.search(r"['\"](containers|env|volumeMounts)['\"]:", line)
    ]
    assert not content, content
    assert max(len(line) for line in log.splitlines()) < 16_384


# --- the supply chain ------------------------------------------------------------------------------

LOCKS = ("requirements.lock", "requirements-test.lock")


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes file; any other form fails."""
    entries: dict[str, tuple[str, list[str]]] = {}
    logical = re.sub(r"\\\n", " ", path.read_text())
    for line in logical.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(("--find-links", "--index-url", "--extra-index-url")):
            continue
        match = re.fullmatch(
            r"([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)((?:\s*;[^-]*)?)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line
        )
        assert match, f"{path.name}: not pinned with hashes: {line[:120]}"
        entries[match[1].lower().split("[")[0]] = (match[2], re.findall(r"sha256:([0-9a-f]{64})", match[4]))
    return entries


def test_dependencies_are_pinned_with_hashes() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime, test = (locked(REPO / name) for name in LOCKS)
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()
        assert name in runtime, f"{name} (pyproject dependencies) is not in requirements.lock"
    for requirement in project["optional-dependencies"]["test"]:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()
        assert name in test, f"{name} (test extras) is not in requirements-test.lock"
    for name, (version, _) in runtime.items():
        assert test.get(name, (version,))[0] == version, (
            f"{name}: {version} vs {test[name][0]} in the test lock"
        )


def test_dependencies_are_audited() -> None:
    """pip-audit over requirements.lock (hashed, so without resolving: --disable-pip). It needs its
    vulnerability service (PyPI's JSON API per release, or OSV): when that is unreachable, or
    answers for no package (pip-audit then still prints "No known vulnerabilities found"), this
    skips and says so instead of passing."""
    if importlib.util.find_spec("pip_audit") is None:
        pytest.skip("pip-audit is not installed (pip install pip-audit)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        try:
            run = subprocess.run(
                [sys.executable, "-m", "pip_audit", "-r", str(REPO / "requirements.lock"), "--disable-pip",
                 "--progress-spinner", "off", "-f", "json", "-o", str(out), "--timeout", "5"],
                capture_output=True, text=True, timeout=300, cwd=REPO,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.skip("pip-audit did not finish in 300 s (its vulnerability service is unreachable?)")
        if not out.exists():
            pytest.skip(f"pip-audit could not run (offline?): {run.stderr.strip()[-500:]}")
        report = json.loads(out.read_text())
    dependencies = report["dependencies"]
    vulnerable = {d["name"]: [v["id"] for v in d["vulns"]] for d in dependencies if d.get("vulns")}
    assert not vulnerable, vulnerable
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        reason = dependencies[0].get("skip_reason", "") if dependencies else "no dependencies"
        pytest.skip(
            f"the vulnerability service answered for none of {len(dependencies)} packages, e.g. {reason}"
        )
    assert len(audited) == len(dependencies), [d["name"] for d in dependencies if "skip_reason" in d]


# --- what other tests check ----------------------------------------------------------------------------

ELSEWHERE = {
    "tests/unit/install/test_manifests.py": [
        "test_rbac_has_no_wildcard_nor_cluster_admin",
        "test_base_rbac_is_exactly_what_the_server_and_controller_use",
        "test_security_context",
        "test_namespace_enforces_the_restricted_pod_security_standard",
        "test_failure_policy_is_documented",
    ],
    "tests/unit/install/test_dockerfile.py": ["test_runs_as_a_numeric_non_root_user_that_exists"],
    "tests/cluster/test_manifests_cluster.py": [
        "test_the_server_can_read_what_it_reads_and_write_nothing",
        "test_service_account_can_do_what_the_controller_does",
        "test_the_controller_has_no_unused_grant",
        "test_service_account_cannot_do_more",
        "test_nobody_but_kafka_expose_changes_its_own_pod_metadata",
        "test_the_self_managed_server_may_change_only_the_ca_bundle",
        "test_pod_template_passes_the_restricted_pod_security_standard",
    ],
    "tests/unit/core/test_policy.py": [
        "test_a_namespace_cannot_take_another_namespace_s_domain",
        "test_refused_overrides_keep_the_platform_default",
    ],
    "tests/cluster/test_policy_cluster.py": [
        "test_a_disallowed_domain_requested_by_namespace_annotation_is_refused",
        "test_namespaces_not_opted_in_are_never_affected",
    ],
}


def test_the_other_security_checks_exist() -> None:
    """The checks this module relies on (see its docstring) are still there."""
    missing = []
    for path, names in ELSEWHERE.items():
        source = (REPO / path).read_text()
        missing += [f"{path}::{name}" for name in names if f"def {name}(" not in source]
    assert not missing, missing
