"""The controller's HTTP endpoints on its metrics port: `/healthz`, `/readyz`, `/metrics`.

`/healthz` answers 200 while every loop is alive and making progress (the kubelet restarts the
container otherwise: a hung watch or a dead worker is never left running); `/readyz` 200 for a
follower (a warm standby) and for a leader whose first lists are in, with `{"ready", "leader",
"synced"}` as JSON either way; `/metrics` the controller's registry. Plain HTTP: nothing secret is
served, and the kubelet's probes carry no client certificate.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("kafka_expose.controller")

Problems = Callable[[], list[str]]
Readiness = Callable[[], dict[str, Any]]


class HealthServer:
    """Serves the three endpoints in a daemon thread until `close()`."""

    def __init__(
        self, port: int, address: str, registry: CollectorRegistry, problems: Problems, readiness: Readiness
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    outer._send(self, 200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    found = problems()
                    body = {"ok": not found, "problems": found}
                    outer._send(
                        self, 200 if not found else 503, json.dumps(body).encode(), "application/json"
                    )
                elif path == "/readyz":
                    state = readiness()
                    code = 200 if state.get("ready") else 503
                    outer._send(self, code, json.dumps(state).encode(), "application/json")
                else:
                    outer._send(self, 404, b"not found: /healthz, /readyz, /metrics\n", "text/plain")

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: quiet
                log.debug("health request", extra={"fields": {"line": format % args}})

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
