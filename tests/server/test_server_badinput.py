"""Bad input over real HTTPS: a one-line 4xx, never a 500 or a stack trace, and the server keeps answering."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import podfactory
from tests.support.harness import WebhookServer
from webhook.admission.wire import MAX_BODY_BYTES

pytestmark = pytest.mark.unit


def valid_review() -> dict[str, Any]:
    return podfactory.admission_review(podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0])


def still_answers(server: WebhookServer) -> None:
    doc = valid_review()
    assert server.review(doc)["response"]["uid"] == doc["request"]["uid"]
    assert server.alive()


@contextlib.contextmanager
def tls_connection(server: WebhookServer, context: ssl.SSLContext | None = None) -> Iterator[ssl.SSLSocket]:
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with plain, (context or server.context()).wrap_socket(plain, server_hostname="127.0.0.1") as tls:
        yield tls


def one_line(body: bytes) -> str:
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert "Traceback" not in text
    return text


def without(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return doc


BAD_BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"this is not json", id="not-json"),
    pytest.param(
        b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {', id="truncated"
    ),
    pytest.param(b"\xff\xfe\x00{", id="not-utf8"),
    pytest.param(b"[1, 2, 3]", id="array"),
    pytest.param(b'"AdmissionReview"', id="string"),
    pytest.param(json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode(), id="a-pod"),
    pytest.param(
        json.dumps({**valid_review(), "apiVersion": "admission.k8s.io/v1beta1"}).encode(), id="wrong-version"
    ),
    pytest.param(json.dumps(without(valid_review(), "request")).encode(), id="no-request"),
    pytest.param(json.dumps(without(valid_review(), "request", "uid")).encode(), id="no-uid"),
    pytest.param(json.dumps(without(valid_review(), "request", "kind")).encode(), id="no-kind"),
    pytest.param(json.dumps(without(valid_review(), "request", "operation")).encode(), id="no-operation"),
    pytest.param(json.dumps(without(valid_review(), "request", "object")).encode(), id="no-object"),
    pytest.param(b"[" * 101 + b"]" * 101, id="depth-101"),
    pytest.param(b"[" * 1_000_000, id="depth-1M-unclosed"),
    pytest.param(b'{"a":' * 200_000 + b"1" + b"}" * 200_000, id="depth-200k-objects"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
@pytest.mark.parametrize("path", ["/mutate", "/validate"])
def test_400_with_one_line(server: WebhookServer, body: bytes, path: str) -> None:
    status, headers, answer = server.post(path, body)
    assert status == 400
    assert headers["content-type"].startswith("text/plain")
    one_line(answer)
    still_answers(server)


def test_wrong_version_says_which(server: WebhookServer) -> None:
    doc = valid_review()
    doc["apiVersion"] = "admission.k8s.io/v1beta1"
    status, _, answer = server.post("/mutate", doc)
    assert status == 400
    assert "admission.k8s.io/v1beta1" in one_line(answer)


def test_invalid_requests_are_counted(server: WebhookServer) -> None:
    before = server.metric("kafka_expose_admission_requests_total", endpoint="mutate", outcome="invalid")
    too_deep = server.metric(
        "kafka_expose_admission_invalid_requests_total", endpoint="mutate", reason="too_deep"
    )
    server.post("/mutate", b"[" * 500)
    assert (
        server.metric("kafka_expose_admission_requests_total", endpoint="mutate", outcome="invalid")
        == before + 1
    )
    assert (
        server.metric("kafka_expose_admission_invalid_requests_total", endpoint="mutate", reason="too_deep")
        == too_deep + 1
    )


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/yaml", ""]
)
def test_415_for_the_wrong_content_type(server: WebhookServer, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, answer = server.request("POST", "/mutate", json.dumps(valid_review()).encode(), headers)
    assert status == 415
    one_line(answer)
    still_answers(server)


def test_json_with_charset_is_fine(server: WebhookServer) -> None:
    doc = valid_review()
    status, _, answer = server.post("/mutate", doc, content_type="application/json; charset=utf-8")
    assert status == 200
    assert json.loads(answer)["response"]["uid"] == doc["request"]["uid"]


def test_413_over_7_mib(server: WebhookServer) -> None:
    doc = valid_review()
    doc["request"]["object"]["metadata"]["annotations"] = {"big": "x" * MAX_BODY_BYTES}
    status, _, answer = server.post("/mutate", doc)
    assert status == 413
    one_line(answer)
    still_answers(server)


def test_413_for_a_chunked_body_over_7_mib(server: WebhookServer) -> None:
    conn = server.connection(timeout=30)
    try:
        chunk = b" " * (1024 * 1024)
        conn.request(
            "POST",
            "/mutate",
            body=iter([chunk] * 8),
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 413
        one_line(response.read())
    finally:
        conn.close()
    still_answers(server)


def test_just_under_the_limit_is_read(server: WebhookServer) -> None:
    doc = valid_review()
    size = len(json.dumps(doc))
    doc["request"]["object"]["metadata"]["annotations"] = {"big": "x" * (MAX_BODY_BYTES - size - 100)}
    data = json.dumps(doc).encode()
    assert len(data) <= MAX_BODY_BYTES
    status, _, answer = server.post("/mutate", data)
    assert status == 200
    assert json.loads(answer)["response"]["uid"] == doc["request"]["uid"]


def test_other_methods_and_paths(server: WebhookServer) -> None:
    for method, path, expected in (
        ("GET", "/mutate", 405),
        ("PUT", "/validate", 405),
        ("GET", "/", 404),
        ("POST", "/healthz", 405),
        ("GET", "/../etc/passwd", 404),
    ):
        status, _, answer = server.request(method, path)
        assert status == expected, (method, path)
        one_line(answer)
    still_answers(server)


def test_garbage_http(server: WebhookServer) -> None:
    """Broken HTTP over TLS is gunicorn's to refuse; the workers survive."""
    for raw in (
        b"NOT HTTP AT ALL\r\n\r\n",
        b"POST /mutate HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"\x00" * 100,
    ):
        with tls_connection(server) as tls:
            tls.sendall(raw)
            tls.settimeout(2)
            try:
                answer = tls.recv(4096)
            except (ConnectionError, ssl.SSLError, TimeoutError):
                answer = b""  # no answer at all is fine too
            assert b" 500 " not in answer.split(b"\r\n", 1)[0]
    still_answers(server)


def test_client_disconnect_mid_body(server: WebhookServer) -> None:
    with tls_connection(server) as tls:
        tls.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"apiVersion": '
        )
    still_answers(server)


def test_plain_http_gets_no_http_answer(server: WebhookServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.request("GET", "/healthz")
            conn.getresponse()
    finally:
        conn.close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        try:
            while chunk := plain.recv(4096):
                received += chunk
        except ConnectionError:
            pass
    assert not received.startswith(b"HTTP/"), received[:200]
    still_answers(server)


def test_tls_1_1_is_refused(server: WebhookServer) -> None:
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        try:
            context = server.context(maximum_version=version)
        except ssl.SSLError:
            pytest.skip("this OpenSSL cannot even configure a TLS 1.1 client")
        with pytest.raises((ssl.SSLError, ConnectionError)), tls_connection(server, context) as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            tls.recv(100)
    still_answers(server)


def test_untrusted_client_cannot_be_fooled(server: WebhookServer) -> None:
    """A client that checks the certificate against another CA refuses the server (sanity of the fixture)."""
    from tests.support.tlsutil import CA, client_context

    with (
        pytest.raises(ssl.SSLCertVerificationError),
        tls_connection(server, client_context(CA("another CA"))),
    ):
        pass
