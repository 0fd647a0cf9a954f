"""Hot reload of settings and certificates (stores in-process, then over HTTPS under load), client
certificates, graceful shutdown."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import podfactory
from tests.support.harness import DEFAULT_SETTINGS, WebhookServer, running_server
from tests.support.tlsutil import CA, atomic_swap_dir, peer_serial
from webhook.config import SettingsStore
from webhook.reload import Watcher
from webhook.tls.served import CertificateError, CertificateStore, build_server_context

pytestmark = pytest.mark.unit

OTHER_SETTINGS = DEFAULT_SETTINGS.replace("kafka.example.com", "kafka.other.example.com")
INVALID_SETTINGS = "domain: NOT A DOMAIN\nlistener:\n  port: 99999\n"


def wait_for(condition: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- the stores, in-process --------------------------------------------------------------------------


def test_settings_store_reloads_through_a_data_symlink_swap(tmp_path: Path) -> None:
    atomic_swap_dir(tmp_path, {"settings.yaml": DEFAULT_SETTINGS.encode()})
    store = SettingsStore.from_file(str(tmp_path / "settings.yaml"))
    events: list[tuple[bool, str]] = []
    store.add_listener(lambda ok, detail: events.append((ok, detail)))
    assert store.settings.domain == "kafka.example.com"
    assert store.reload_if_changed() is None

    atomic_swap_dir(tmp_path, {"settings.yaml": OTHER_SETTINGS.encode()})
    assert store.reload_if_changed() is True
    assert store.settings.domain == "kafka.other.example.com"
    assert events == [(True, store.settings.version)]

    atomic_swap_dir(tmp_path, {"settings.yaml": INVALID_SETTINGS.encode()})
    assert store.reload_if_changed() is False
    assert store.settings.domain == "kafka.other.example.com"  # previous settings keep serving
    assert events[-1][0] is False
    ok, text = store.readiness()
    # Readiness says a file was refused but never repeats its content; the log has the reason.
    assert ok and "rejected" in text and "domain" not in text
    assert store.last_error and "domain" in store.last_error
    assert store.reload_if_changed() is None  # one failure per change, not one per poll

    (tmp_path / "settings.yaml").unlink()  # the file disappears: rejected, previous kept
    assert store.reload_if_changed() is False
    assert store.settings.domain == "kafka.other.example.com"


def _write_pair(directory: Path, cert: bytes, key: bytes) -> tuple[str, str]:
    atomic_swap_dir(directory, {"tls.crt": cert, "tls.key": key})
    return str(directory / "tls.crt"), str(directory / "tls.key")


def test_certificate_store_keeps_the_old_certificate_on_garbage(tmp_path: Path) -> None:
    ca = CA()
    first, second = ca.issue(), ca.issue(not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    cert, key = _write_pair(tmp_path, first.chain_pem, first.key_pem)
    store = CertificateStore(cert, key)
    events: list[bool] = []
    store.add_listener(lambda ok, _: events.append(ok))
    assert store.current.serial == first.serial

    for bad_cert, bad_key in (
        (b"garbage", first.key_pem),
        (second.chain_pem, first.key_pem),  # key does not match
        (b"", b""),
        (second.chain_pem, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
    ):
        _write_pair(tmp_path, bad_cert, bad_key)
        assert store.reload_if_changed() is False
        assert store.current.serial == first.serial
        ok, text = store.readiness()
        assert ok and "rejected" in text

    _write_pair(tmp_path, second.chain_pem, second.key_pem)
    assert store.reload_if_changed() is True
    assert store.current.serial == second.serial
    assert store.readiness() == (True, f"certificate: {store.current.subject} valid until "
                                       f"{store.current.not_after.isoformat()}")  # fmt: skip
    assert events == [False, False, False, False, True]


def test_an_expired_certificate_is_not_taken_and_readiness_fails_when_the_served_one_expires(
    tmp_path: Path,
) -> None:
    ca = CA()
    now = dt.datetime.now(dt.UTC)
    good = ca.issue(not_after=now + dt.timedelta(hours=1))
    expired = ca.issue(not_before=now - dt.timedelta(days=2), not_after=now - dt.timedelta(days=1))
    cert, key = _write_pair(tmp_path, good.chain_pem, good.key_pem)
    clock = [now]
    store = CertificateStore(cert, key, clock=lambda: clock[0])
    _write_pair(tmp_path, expired.chain_pem, expired.key_pem)
    assert store.reload_if_changed() is False
    assert "expired" in str(store.last_error)
    assert store.current.serial == good.serial
    clock[0] = now + dt.timedelta(hours=2)
    ok, text = store.readiness()
    assert not ok and "expired" in text


def test_unusable_files_at_start_raise(tmp_path: Path) -> None:
    ca = CA()
    leaf = ca.issue()
    cert, key = leaf.write(tmp_path)
    with pytest.raises(CertificateError):
        build_server_context(str(tmp_path / "missing.crt"), str(key))
    with pytest.raises(CertificateError):
        build_server_context(str(cert), str(cert))
    bad_ca = tmp_path / "ca.crt"
    bad_ca.write_text("not a CA")
    with pytest.raises(CertificateError):
        build_server_context(str(cert), str(key), str(bad_ca))
    context = build_server_context(str(cert), str(key), str(ca.write(tmp_path / "client-ca.crt"))).context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_watcher_survives_a_failing_check() -> None:
    calls: list[str] = []

    def broken() -> bool | None:
        calls.append("broken")
        raise RuntimeError("bug")

    def fine() -> bool | None:
        calls.append("fine")
        return None

    watcher = Watcher([broken, fine], interval=0.01)
    watcher.start()
    try:
        wait_for(lambda: calls.count("fine") >= 3, 5, "three polls")
    finally:
        watcher.stop()


# --- over HTTPS, under load ----------------------------------------------------------------------------


class Hammer:
    """Threads posting AdmissionReviews without pause: some on one kept-alive connection, some on a new
    connection (a new TLS handshake) per request. Every failure is kept."""

    def __init__(self, server: WebhookServer, keepalive: int = 2, fresh: int = 2) -> None:
        self.server = server
        self.stop_event = threading.Event()
        self.failures: list[str] = []
        self.answers: list[dict[str, Any]] = []
        self.serials: list[int] = []
        self.lock = threading.Lock()
        self.pod = podfactory.broker_pods("bitnami-kafka-32.4.4-brokers3", "kafka")[0]
        self.threads = [threading.Thread(target=self.run, args=(True,)) for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self.run, args=(False,)) for _ in range(fresh)]

    def run(self, keepalive: bool) -> None:
        conn: http.client.HTTPSConnection | None = None
        while not self.stop_event.is_set():
            doc = podfactory.admission_review(self.pod)
            try:
                if conn is None:
                    conn = self.server.connection()
                    conn.connect()
                    serial = peer_serial(conn.sock)
                    with self.lock:
                        self.serials.append(serial)
                answer = self.server.review(doc, conn=conn)
                assert answer["response"]["uid"] == doc["request"]["uid"]
                with self.lock:
                    self.answers.append(answer)
            except Exception as err:  # every failure is the test's business
                with self.lock:
                    self.failures.append(f"{type(err).__name__}: {err}")
                time.sleep(0.05)
            if not keepalive and conn is not None:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def count(self) -> int:
        with self.lock:
            return len(self.answers)

    def recent_domains(self, n: int = 30) -> list[str]:
        """The domains the last `n` answers advertise (fewer while fewer came)."""
        with self.lock:
            return [advertised_domain(a) for a in self.answers[-n:]]

    def all_recent(self, domain: str, n: int = 30) -> bool:
        return self.recent_domains(n) == [domain] * n

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        wait_for(lambda: self.count() > 20, 10, "the hammer to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(15)


def booted_workers(server: WebhookServer) -> list[int]:
    """The pids of every worker gunicorn has booted so far (its log says so)."""
    return [
        int(e["message"].rsplit(" ", 1)[-1])
        for e in server.log_lines()
        if e.get("message", "").startswith("Booting worker with pid:")
    ]


def advertised_domain(answer: dict[str, Any]) -> str:
    patch = base64.b64decode(answer["response"].get("patch", "")).decode()
    return (
        "other"
        if "kafka.other.example.com" in patch
        else "default"
        if "kafka.example.com" in patch
        else "none"
    )


def test_settings_reload_under_load(tmp_path: Path) -> None:
    with running_server(tmp_path) as server, Hammer(server) as hammer:
        assert advertised_domain(hammer.answers[-1]) == "default"
        before = server.metric("kafka_expose_settings_reloads_total", result="success")
        server.set_settings(OTHER_SETTINGS)

        wait_for(lambda: hammer.all_recent("other"), 10, "every worker to serve the new settings")
        assert server.metric("kafka_expose_settings_reloads_total", result="success") >= before + 1

        failures_before = server.metric("kafka_expose_settings_reloads_total", result="failure")
        server.set_settings(INVALID_SETTINGS)
        wait_for(
            lambda: server.metric("kafka_expose_settings_reloads_total", result="failure") > failures_before,
            10,
            "the invalid settings to be rejected",
        )
        time.sleep(1.5)  # every worker has seen the invalid file by now
        seen = hammer.count()
        wait_for(lambda: hammer.count() > seen + 30, 10, "more answers")
        assert hammer.all_recent("other"), hammer.recent_domains()
        status, _, body = server.request("GET", "/readyz")
        assert status == 200
        assert b"rejected" in body
    assert hammer.failures == []
    rejected = [e for e in server.log_lines() if e.get("message", "").startswith("settings reload rejected")]
    assert rejected and rejected[0]["level"] == "ERROR"


def test_certificate_rotation_under_load(tmp_path: Path) -> None:
    ca = CA()
    first = ca.issue()
    second = ca.issue(not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    with running_server(tmp_path, ca=ca, leaf=first) as server:
        old_conn = server.connection()
        old_conn.connect()
        assert peer_serial(old_conn.sock) == first.serial
        doc = podfactory.admission_review(podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0])
        server.review(doc, conn=old_conn)

        with Hammer(server) as hammer:
            server.set_certificate(second)

            def rotated() -> bool:
                with hammer.lock:
                    recent = hammer.serials[-20:]
                return len(recent) == 20 and set(recent) == {second.serial}

            wait_for(rotated, 10, "new connections to get the new certificate")
            wait_for(
                lambda: (
                    server.metric("kafka_expose_certificate_expiry_timestamp_seconds")
                    == pytest.approx(second.not_after.timestamp(), abs=1)
                ),
                10,
                "the expiry gauge of every live worker to move",
            )

            # garbage: the last good certificate keeps serving, readiness and a metric say so
            failures = server.metric("kafka_expose_certificate_reloads_total", result="failure")
            atomic_swap_dir(server.secret_dir, {"tls.crt": b"garbage", "tls.key": b"garbage", "ca.crt": b""})
            wait_for(
                lambda: server.metric("kafka_expose_certificate_reloads_total", result="failure") > failures,
                10,
                "the garbage to be rejected",
            )
            time.sleep(1.5)
            seen = len(hammer.serials)
            wait_for(lambda: len(hammer.serials) > seen + 20, 10, "more new connections")
            with hammer.lock:
                assert set(hammer.serials[-20:]) == {second.serial}
            status, _, body = server.request("GET", "/readyz")
            assert status == 200
            assert b"rejected" in body

        assert hammer.failures == []
        # a connection opened before the rotation still works, on its old session
        server.review(podfactory.admission_review(doc["request"]["object"]), conn=old_conn)
        assert peer_serial(old_conn.sock) == first.serial
        old_conn.close()
    assert any(e.get("message") == "certificate reloaded" for e in server.log_lines())


# --- client certificates ------------------------------------------------------------------------------


def test_client_certificate_required_with_client_ca(tmp_path: Path) -> None:
    client_ca = CA("API server client CA")
    client_leaf = client_ca.issue("kube-apiserver", hosts=(), client=True)
    with running_server(tmp_path, client_ca=client_ca, client_leaf=client_leaf) as server:
        doc = podfactory.admission_review(podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0])
        assert server.review(doc)["response"]["uid"] == doc["request"]["uid"]

        stranger = CA("someone else").issue("intruder", hosts=(), client=True)
        for leaf in (None, stranger):
            server.client_leaf = leaf
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                server.request("GET", "/healthz")
        server.client_leaf = client_leaf
        assert server.request("GET", "/healthz")[0] == 200


# --- graceful shutdown --------------------------------------------------------------------------------


@contextmanager
def raw_tls(server: WebhookServer) -> Iterator[ssl.SSLSocket]:
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    with plain, server.context().wrap_socket(plain, server_hostname="127.0.0.1") as tls:
        yield tls


def test_sigterm_finishes_in_flight_requests_then_stops(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1) as server:
        doc = podfactory.admission_review(podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0])
        body = json.dumps(doc).encode()
        head = (
            f"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        keepalive = server.connection()
        server.review(doc, conn=keepalive)  # an idle kept-alive connection

        with raw_tls(server) as tls:
            tls.sendall(head + body[:100])  # a request in flight: half its body sent
            time.sleep(0.3)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            tls.sendall(body[100:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}}"):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK", answer[:300]
        _, _, payload = rest.partition(b"\r\n\r\n")
        assert json.loads(payload)["response"]["uid"] == doc["request"]["uid"]

        assert server.proc.wait(30) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        with pytest.raises((OSError, http.client.HTTPException)):
            server.review(doc, conn=keepalive)  # the idle kept-alive connection was closed
        keepalive.close()


# --- readiness and workers ------------------------------------------------------------------------------


def test_readiness_fails_once_the_served_certificate_expires(tmp_path: Path) -> None:
    ca = CA()
    with running_server(tmp_path, ca=ca, workers=1) as server:
        assert server.request("GET", "/readyz")[0] == 200
        short = ca.issue(not_after=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=8))
        server.set_certificate(short)

        def serving(serial: int) -> bool:
            conn = server.connection()
            try:
                conn.connect()
                return peer_serial(conn.sock) == serial
            except ssl.SSLError:
                return False
            finally:
                conn.close()

        wait_for(lambda: serving(short.serial), 6, "the short-lived certificate to be served")
        time.sleep(max(0.0, (short.not_after - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)
        insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # the certificate has expired: look anyway
        status, _, body = server.request("GET", "/readyz", conn=server.connection(context=insecure))
        assert status == 503
        assert body.decode().startswith("not ready\n")
        assert "expired" in body.decode()
        fresh = ca.issue()
        server.set_certificate(fresh)  # rotation fixes it without a restart
        wait_for(lambda: serving(fresh.serial), 10, "the new certificate")
        assert server.request("GET", "/readyz")[0] == 200


def test_a_killed_worker_is_replaced_and_metrics_stay_right(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2) as server:
        pod = podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0]
        for _ in range(10):
            server.review(podfactory.admission_review(pod))
        counted = server.metric("kafka_expose_admission_duration_seconds_count", endpoint="mutate")
        assert counted >= 10
        pids = booted_workers(server)
        assert len(pids) == 2
        import os

        os.kill(pids[0], signal.SIGKILL)
        wait_for(
            lambda: len(booted_workers(server)) == 3,
            15,
            "a new worker",
        )
        time.sleep(1)  # the new worker loads the app
        for _ in range(10):
            server.review(podfactory.admission_review(pod))
        # the dead worker's counts are kept, its live gauge is gone
        assert (
            server.metric("kafka_expose_admission_duration_seconds_count", endpoint="mutate") >= counted + 10
        )
        assert server.metric("kafka_expose_certificate_expiry_timestamp_seconds") == pytest.approx(
            server.leaf.not_after.timestamp(), abs=1
        )
        status, _, text = server.request("GET", "/metrics")
        assert status == 200
        assert not [e for e in server.log_lines() if e.get("message") == "Exception in worker process"]
        samples = [line for line in text.splitlines() if line.startswith(b"kafka_expose_certificate_expiry")]
        assert len(samples) == 1  # one value (the minimum over live workers), the dead worker's is gone


def test_a_worker_replaced_while_the_file_is_invalid_serves_the_last_good_settings(tmp_path: Path) -> None:
    """A replacement worker is forked from the arbiter, which loaded the settings at its start: without
    the shared last-good snapshot it would serve those boot settings while its siblings serve the
    last good ones (seen once under load: a worker timed out and came back with the old domain)."""
    with running_server(tmp_path, workers=2) as server, Hammer(server) as hammer:
        server.set_settings(OTHER_SETTINGS)

        wait_for(lambda: hammer.all_recent("other"), 10, "every worker to serve the new settings")
        failures_before = server.metric("kafka_expose_settings_reloads_total", result="failure")
        server.set_settings(INVALID_SETTINGS)
        wait_for(
            lambda: server.metric("kafka_expose_settings_reloads_total", result="failure") > failures_before,
            10,
            "the invalid settings to be rejected",
        )
        booted = booted_workers(server)
        import os

        for pid in booted:  # every worker replaced: each new one starts from the arbiter's state
            os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: len(booted_workers(server)) == 2 * len(booted),
            20,
            "the replacement workers",
        )
        seen = hammer.count()
        wait_for(lambda: hammer.count() > seen + 60, 20, "answers from the replacement workers")
        recent = hammer.recent_domains()
        assert recent == ["other"] * 30, recent
