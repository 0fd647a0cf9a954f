"""gunicorn settings and hooks for `kafka-expose serve`.

TLS: gunicorn 27 wraps each accepted connection itself (`gthread`: `TConn.init` ->
`gunicorn.sock.ssl_wrap_socket` -> `cfg.ssl_context(cfg, default_factory)`), so the `ssl_context`
hook is called once per new connection. Its default factory would re-read the certificate files on
every connection (and could read half-written files). Ours returns the context of the worker's
`CertificateStore`, which a watcher thread replaces when the files change: connections already open
keep their TLS session, new ones get the new certificate, nothing is dropped or restarted. The
`certfile`/`keyfile` settings are still set: they make gunicorn treat the listener as TLS.

Deadline (`DeadlineWorker`): gunicorn's gthread waits at most 5 s for a new connection's first
byte, but once a byte came it reads the TLS handshake, the headers and the body with blocking reads
and no deadline: 8 connections that each sent one byte and stalled held all 2 x 4 threads, and no
admission was answered for as long as they stayed. Each connection handled by a thread now has a
deadline (READ_DEADLINE_SECONDS from the moment a thread takes it, covering the wait for data, the
handshake, the headers, the body and the answer); a reaper thread shuts the socket of a connection
past it, which ends the blocked read at once, and counts it (`kafka_expose_connections_cut_total`).

Probes (`probe_port`): with `--client-ca` every TLS connection needs a client certificate, which the
kubelet's probes do not have. `--probe-port` opens a second, plain-HTTP listener that answers only
/healthz, /readyz and /metrics (the app refuses anything else there); the probes point at it.

Metrics: each worker writes prometheus-client multiprocess files; `child_exit` marks a dead worker's
live gauges gone.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gunicorn import glogging
from gunicorn import http as gunicorn_http
from gunicorn.workers import gthread

from webhook.config import SettingsStore
from webhook.logs import gunicorn_logconfig
from webhook.reload import Watcher
from webhook.tls.served import CertificateStore

log = logging.getLogger("kafka_expose.serve")

# The API server (Go's transport) keeps idle connections 90 s; closing later than that on our side
# means the client is the one that closes, so a request never races a server-side close.
KEEPALIVE_SECONDS = 120
GRACEFUL_TIMEOUT_SECONDS = 25  # under the pod's default terminationGracePeriodSeconds (30)
# After this many requests a kept-alive connection gets `Connection: close` on its response (so no
# request races the close) and the client opens a new one, which the least busy worker accepts
# first. Without it the few long-lived connections of an API server (or of a load test) may all sit
# on one worker while the others idle: measured, half the throughput. nginx's keepalive_requests.
MAX_REQUESTS_PER_CONNECTION = 100
# How long one connection may hold a worker thread for one request: the wait for its first byte
# (gthread: 5 s at most), the handshake, the headers, the body and the answer. The API server gives up
# on a webhook after its timeoutSeconds (5 in the manifests, 30 at most): an answer later than that
# is read by no one.
READ_DEADLINE_SECONDS = 10.0
REAPER_INTERVAL_SECONDS = 0.25


@dataclass
class Runtime:
    """What the workers share (inherited through fork): the stores and the serving options."""

    settings: SettingsStore
    certificates: CertificateStore
    reload_interval: float = 1.0
    noop: bool = False
    kubeconfig: str | None = None  # API access for the policy hooks (None: in-cluster, else none)
    self_managed_dir: str | None = None  # where `--self-managed` writes the files and its ready marker
    probe_port: int | None = None  # the plain-HTTP listener of the probes (None: none)
    read_deadline: float = READ_DEADLINE_SECONDS
    watcher: Watcher | None = field(default=None, repr=False)

    def start_watching(self) -> None:
        """Start polling the settings and certificate files (in a worker, after fork)."""
        self.watcher = Watcher(
            [self.settings.reload_if_changed, self.certificates.reload_if_changed], self.reload_interval
        )
        self.watcher.poll()  # catch up with changes made since the arbiter loaded the files
        self.watcher.start()


class _Connection(gthread.TConn):  # type: ignore[misc]
    """gthread's connection; one accepted on the probe port is plain HTTP (no TLS wrap)."""

    plain = False

    def init(self) -> None:
        if self.plain and not getattr(self, "initialized", False):
            self.initialized = True
            self.sock.setblocking(True)
            self.parser = gunicorn_http.get_parser(self.cfg, self.sock, self.client)
            return
        super().init()


class DeadlineWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """gthread with a deadline on each connection's request and a plain probe listener (see above)."""

    def init_process(self) -> None:
        runtime = getattr(self.app, "runtime", None)
        self.deadline = getattr(runtime, "read_deadline", READ_DEADLINE_SECONDS)
        self.probe_port = getattr(runtime, "probe_port", None)
        self._active: dict[int, tuple[float, Any]] = {}
        self._active_lock = threading.Lock()
        threading.Thread(target=self._reap, name="connection-deadline", daemon=True).start()
        super().init_process()

    def accept(self, listener: Any) -> None:
        """gthread's accept, with our connection class (the probe listener's connections are plain)."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as err:
            if err.errno not in (gthread.errno.EAGAIN, gthread.errno.ECONNABORTED, gthread.errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock.setblocking(True)
        server = listener.getsockname()
        conn = _Connection(self.cfg, client_sock, client_addr, server)
        conn.plain = self.probe_port is not None and _port_of(server) == self.probe_port
        self.enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        with self._active_lock:
            self._active[id(conn)] = (time.monotonic() + self.deadline, conn)
        try:
            return super().handle(conn)
        finally:
            with self._active_lock:
                self._active.pop(id(conn), None)

    def _reap(self) -> None:
        while True:
            time.sleep(REAPER_INTERVAL_SECONDS)
            now = time.monotonic()
            with self._active_lock:
                late = [(key, conn) for key, (deadline, conn) in self._active.items() if deadline <= now]
                for key, conn in late:
                    del self._active[key]
                    cut_connection(conn.sock)
            for _ in late:
                log.warning(
                    "connection cut: no complete request within the deadline",
                    extra={"fields": {"deadline_seconds": self.deadline}},
                )
                _count_cut()


def cut_connection(sock: Any) -> None:
    """End every blocked read and write on `sock` now. The TCP socket is shut down under the TLS layer
    (`socket.socket.shutdown`, not `SSLSocket.shutdown`, which would tear the TLS object from under the
    reading thread); that thread sees end of file and gunicorn closes the connection."""
    with contextlib.suppress(OSError):  # closed already
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _count_cut() -> None:
    from webhook.server import telemetry as metrics

    metrics.CONNECTIONS_CUT.inc()


def _port_of(address: Any) -> int | None:
    return address[1] if isinstance(address, tuple) and len(address) >= 2 else None


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ssl_context_hook(runtime: Runtime) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    def ssl_context(conf: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return runtime.certificates.context

    return ssl_context


def post_worker_init_hook(runtime: Runtime) -> Callable[[Any], None]:
    def post_worker_init(worker: Any) -> None:
        # Everything loaded so far (Flask, pydantic, the core) lives as long as the worker: keep it out
        # of the garbage collector's full collections, which otherwise scan it all (tail latency).
        gc.collect()
        gc.freeze()
        runtime.start_watching()

    return post_worker_init


def recycle_connections_hook(limit: int) -> Callable[[Any, Any], None]:
    """gunicorn's pre_request: close the connection after its `limit`-th request (0: never)."""

    def pre_request(worker: Any, req: Any) -> None:
        # gunicorn numbers the requests of a connection (`req_number`), and answers a request whose
        # `must_close` is set with `Connection: close` before closing (gunicorn.http.message).
        if limit and getattr(req, "req_number", 1) >= limit:
            req.must_close = True

    return pre_request


def worker_exit_hook(runtime: Runtime) -> Callable[[Any, Any], None]:
    def worker_exit(server: Any, worker: Any) -> None:
        if runtime.watcher is not None:
            runtime.watcher.stop()

    return worker_exit


def child_exit(server: Any, worker: Any) -> None:
    """In the arbiter: forget a dead worker's live gauges (its counters stay counted)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class NoAccessLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger without access lines. The app logs one line per admission; gunicorn, once
    given a logging config, builds every access line's atoms (about 0.1 ms of a request, measured
    with py-spy) before the level filter drops the line."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


def gunicorn_options(
    runtime: Runtime,
    *,
    bind: str,
    port: int,
    workers: int,
    threads: int,
    log_level: str = "info",
    keepalive: int = KEEPALIVE_SECONDS,
    graceful_timeout: int = GRACEFUL_TIMEOUT_SECONDS,
    max_requests_per_connection: int = MAX_REQUESTS_PER_CONNECTION,
) -> dict[str, Any]:
    """The gunicorn settings of the webhook server."""
    binds = [bind_address(bind, port)]
    if runtime.probe_port is not None:
        binds.append(bind_address(bind, runtime.probe_port))
    options: dict[str, Any] = {
        "bind": binds,
        "workers": workers,
        "worker_class": DeadlineWorker,
        "threads": threads,
        "keepalive": keepalive,
        "graceful_timeout": graceful_timeout,
        "timeout": 30,
        "certfile": runtime.certificates.cert_file,
        "keyfile": runtime.certificates.key_file,
        "ssl_context": ssl_context_hook(runtime),
        "do_handshake_on_connect": False,  # the handshake runs in a worker thread, not the accept loop
        "post_worker_init": post_worker_init_hook(runtime),
        "pre_request": recycle_connections_hook(max_requests_per_connection),
        "worker_exit": worker_exit_hook(runtime),
        "child_exit": child_exit,
        "loglevel": log_level,
        "logconfig_dict": gunicorn_logconfig(log_level),
        "errorlog": "-",
        "accesslog": None,  # one admission line per request is logged by the app instead
        "logger_class": NoAccessLogger,
        "proc_name": "kafka-expose",
        "control_socket_disable": True,
        "preload_app": False,
    }
    if os.path.isdir("/dev/shm"):
        options["worker_tmp_dir"] = "/dev/shm"  # heartbeat files off a possibly read-only or slow disk
    return options
