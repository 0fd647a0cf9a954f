"""Test harness: a real `kafka-expose serve` (gunicorn, TLS) in a subprocess on a free loopback port.

The certificate and the settings live in kubelet-style volume directories (`tls.crt -> ..data/tls.crt`,
`..data -> ..<timestamp>`), updated by an atomic symlink swap like a Secret or ConfigMap update.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.tlsutil import CA, Leaf, atomic_swap_dir, client_context  # noqa: E402

DEFAULT_SETTINGS = "domain: kafka.example.com\nlistener:\n  name: EXTERNAL\n  port: 9094\n"
Answer = tuple[int, dict[str, str], bytes]


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WebhookServer:
    root: Path
    ca: CA
    leaf: Leaf
    port: int
    settings_text: str
    client_ca: CA | None = None
    client_leaf: Leaf | None = None
    workers: int = 2
    threads: int = 4
    extra_args: tuple[str, ...] = ()
    # what `python` runs: the webhook, or a stand-in taking the same arguments (bench/bare_server.py)
    entry: tuple[str, ...] = ("-m", "webhook", "serve")
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def secret_dir(self) -> Path:
        return self.root / "secret"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, *self.entry,
            "--config", str(self.config_dir / "settings.yaml"),
            "--cert", str(self.secret_dir / "tls.crt"),
            "--key", str(self.secret_dir / "tls.key"),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--workers", str(self.workers), "--threads", str(self.threads),
            "--reload-interval", "0.5",
        ]  # fmt: skip
        if self.client_ca is not None:
            cmd += ["--client-ca", str(self.secret_dir / "ca.crt")]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 30) -> None:
        self.secret_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.set_certificate(self.leaf)
        self.set_settings(self.settings_text)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/readyz")[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def set_certificate(self, leaf: Leaf, key_pem: bytes | None = None) -> None:
        files = {"tls.crt": leaf.chain_pem, "tls.key": key_pem if key_pem is not None else leaf.key_pem}
        files["ca.crt"] = (self.client_ca or self.ca).cert_pem
        atomic_swap_dir(self.secret_dir, files)

    def set_settings(self, text: str) -> None:
        atomic_swap_dir(self.config_dir, {"settings.yaml": text.encode()})

    def context(self, **kwargs: Any) -> ssl.SSLContext:
        return client_context(self.ca, self.client_leaf, **kwargs)

    def connection(
        self, timeout: float = 10, context: ssl.SSLContext | None = None
    ) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=context or self.context(), timeout=timeout
        )

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        conn: http.client.HTTPSConnection | None = None,
    ) -> Answer:
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            if own:
                conn.close()

    def post(
        self,
        path: str,
        body: bytes | dict[str, Any],
        content_type: str = "application/json",
        conn: http.client.HTTPSConnection | None = None,
    ) -> Answer:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        return self.request("POST", path, data, {"Content-Type": content_type}, conn)

    def review(
        self, doc: dict[str, Any], path: str = "/mutate", conn: http.client.HTTPSConnection | None = None
    ) -> dict[str, Any]:
        status, headers, data = self.post(path, doc, conn=conn)
        assert status == 200, data
        assert headers["content-type"].startswith("application/json")
        answer: dict[str, Any] = json.loads(data)
        return answer

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (all workers)."""
        from prometheus_client.parser import text_string_to_metric_families

        status, _, data = self.request("GET", "/metrics")
        assert status == 200
        total = 0.0
        for family in text_string_to_metric_families(data.decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(raw)
                if isinstance(entry, dict):
                    lines.append(entry)
        return lines

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@contextlib.contextmanager
def running_server(root: Path, show_log: bool = True, **kwargs: Any) -> Iterator[WebhookServer]:
    ca = kwargs.pop("ca", None) or CA()
    leaf = kwargs.pop("leaf", None) or ca.issue()
    server = WebhookServer(
        root=root,
        ca=ca,
        leaf=leaf,
        port=free_port(),
        settings_text=kwargs.pop("settings_text", DEFAULT_SETTINGS),
        **kwargs,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if show_log:
            sys.stderr.write(f"--- server log tail ({server.log_path}) ---\n{server.log_tail()}\n")
