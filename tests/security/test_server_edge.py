"""Attacks on the webhook server itself, against a real `kafka-expose serve` (gunicorn, TLS):
stalled connections, oversized bodies, and probes next to `--client-ca` (issue 15, item 3)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.procinfo import reset_peak, server_memory
from tests.support import podfactory
from tests.support.harness import WebhookServer, free_port, running_server
from tests.support.tlsutil import CA, client_context
from webhook.admission.wire import MAX_BODY_BYTES

pytestmark = pytest.mark.unit

DEADLINE = 2.0  # the server's read deadline here (--read-deadline); the shipped one is 10 s
ANSWER_TIMEOUT = 30.0  # how long a test admission waits: far past the deadline, far under "forever"


def review_body(uid: str) -> bytes:
    pod = podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0]
    return json.dumps(podfactory.admission_review(pod, uid=uid)).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    with running_server(
        tmp_path_factory.mktemp("edge"), extra_args=("--read-deadline", str(DEADLINE)), show_log=False
    ) as srv:
        yield srv


def stall_handshake(server: WebhookServer) -> socket.socket:
    """A TCP connection that sent one byte of a TLS ClientHello, then nothing."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
    sock.sendall(b"\x16")
    return sock


def stall_headers(server: WebhookServer) -> socket.socket:
    """TLS done, then half a request line."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
    sock = server.context().wrap_socket(raw, server_hostname="localhost")
    sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Ty")
    return sock


def stall_body(server: WebhookServer) -> socket.socket:
    """TLS done, headers done, 10 of the announced 100000 body bytes."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
    sock = server.context().wrap_socket(raw, server_hostname="localhost")
    sock.sendall(
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100000\r\n\r\n{"apiVersi'
    )
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server ended the connection (end of file or reset), waiting at most ANSWER_TIMEOUT."""
    try:
        while sock.recv(4096):
            pass
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


def test_stalled_connections_do_not_starve_admissions(server: WebhookServer) -> None:
    """8 connections (as many as 2 workers x 4 threads) each send a few bytes, then stall: in the TLS
    handshake, in the headers, in the body. Every admission sent meanwhile is answered, and the stalled
    connections are cut by the server. Without the deadline, each held its thread forever: 0 of 10."""
    before = server.metric("kafka_expose_connections_cut_total")
    stallers = [stall_handshake, stall_headers, stall_body]
    stalled = []
    for index in range(server.workers * server.threads):
        stalled.append(stallers[index % 3](server))
        time.sleep(0.05)  # let a thread of some worker take it

    def admit(index: int) -> str:
        conn = server.connection(timeout=ANSWER_TIMEOUT)
        try:
            status, _, data = server.post("/mutate", review_body(f"starve-{index}"), conn=conn)
        finally:
            conn.close()
        assert status == 200, data
        return str(json.loads(data)["response"]["uid"])

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answered = list(pool.map(admit, range(10)))
    assert answered == [f"starve-{i}" for i in range(10)]
    assert all(closed_by_server(sock) for sock in stalled)
    for sock in stalled:
        sock.close()
    assert server.metric("kafka_expose_connections_cut_total") - before >= len(stalled)


def test_a_trickling_body_is_cut_at_the_deadline(server: WebhookServer) -> None:
    """A client that keeps sending one byte a second never finishes its body: a per-read timeout would
    never fire, the per-connection deadline does."""
    sock = stall_body(server)
    cut = threading.Event()

    def trickle() -> None:
        with contextlib.suppress(OSError):
            for _ in range(int(ANSWER_TIMEOUT)):
                sock.sendall(b" ")
                time.sleep(0.5)
        cut.set()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    assert closed_by_server(sock)
    sock.close()
    thread.join(ANSWER_TIMEOUT)


def test_a_body_over_the_api_servers_own_limit_is_refused(server: WebhookServer) -> None:
    assert MAX_BODY_BYTES == 3 * 1024 * 1024
    status, _, data = server.post("/mutate", b"{" + b" " * MAX_BODY_BYTES + b"}")
    assert status == 413, data


def test_memory_stays_under_the_limit_with_every_thread_holding_the_largest_body(
    server: WebhookServer,
) -> None:
    """workers x threads reviews of the largest accepted size at once: the server's processes together
    stay under the container's 256 Mi limit (manifests/base/deployment.yaml). A review padded to just
    under MAX_BODY_BYTES with one long annotation (a valid object the core has to read)."""
    assert server.proc is not None
    pod = podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0]
    doc = podfactory.admission_review(pod, uid="big")
    base = len(json.dumps(doc).encode())
    doc["request"]["object"]["metadata"].setdefault("annotations", {})["pad"] = "x" * (
        MAX_BODY_BYTES - base - 200
    )
    body = json.dumps(doc).encode()
    assert MAX_BODY_BYTES - 1024 < len(body) <= MAX_BODY_BYTES
    processes = server_memory(server.proc.pid, server.log_path)
    for process in processes:
        reset_peak(process.pid)

    def admit(_: int) -> int:
        conn = server.connection(timeout=ANSWER_TIMEOUT)
        try:
            return server.post("/mutate", body, conn=conn)[0]
        finally:
            conn.close()

    for _ in range(2):
        with concurrent.futures.ThreadPoolExecutor(server.workers * server.threads) as pool:
            assert set(pool.map(admit, range(server.workers * server.threads))) == {200}
    peak = sum(m.hwm_mib for m in server_memory(server.proc.pid, server.log_path))
    assert peak < 256, f"peak {peak:.0f} MiB over {len(processes)} processes"


def test_probes_answer_on_the_plain_port_while_admissions_need_the_client_certificate(
    tmp_path: Path,
) -> None:
    """--client-ca and --probe-port: the kubelet (no client certificate, plain HTTP) gets /healthz and
    /readyz; nothing else is answered there; the TLS port still needs the API server's certificate."""
    client_ca = CA("kube-apiserver client CA")
    apiserver = client_ca.issue("kube-apiserver", hosts=(), client=True)
    probe_port = free_port()
    with running_server(
        tmp_path,
        client_ca=client_ca,
        client_leaf=apiserver,
        extra_args=("--probe-port", str(probe_port)),
        show_log=False,
    ) as server:
        for path, status in (("/healthz", 200), ("/readyz", 200), ("/mutate", 404), ("/validate", 404)):
            plain = http.client.HTTPConnection("127.0.0.1", probe_port, timeout=10)
            try:
                method = "GET" if path.endswith("z") else "POST"
                plain.request(method, path, body=review_body("plain") if method == "POST" else None)
                answer = plain.getresponse()
                assert answer.status == status, (path, answer.read())
            finally:
                plain.close()
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            conn = http.client.HTTPSConnection(
                "127.0.0.1", server.port, context=client_context(server.ca, None), timeout=10
            )
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
            finally:
                conn.close()
        doc = json.loads(review_body("with-cert"))
        assert server.review(doc)["response"]["uid"] == "with-cert"
