"""The bare floor for bench/bench_server.py: a minimal Flask app on exactly the webhook's gunicorn
settings (webhook.server.gunicorn.gunicorn_options: gthread, keep-alive, TLS context from the same
CertificateStore, connection recycling, worker hooks) answering every POST with a bare `allowed`
AdmissionReview (uid copied by a byte search, no JSON decode, no metrics, no log line). What the
stack costs before the webhook does anything.

Run: python bench/bare_server.py --config S --cert C --key K --port P [--workers 1] [--threads 4]
(the same arguments as `kafka-expose serve`, so that tests/support/harness.py starts it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

UID = re.compile(rb'"uid"\s*:\s*"([^"\\]{0,128})"')


def create_bare_app() -> Any:
    from flask import Flask, Response, request

    app = Flask("bare")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response("ok", mimetype="text/plain")

    @app.post("/mutate")
    @app.post("/validate")
    def allowed() -> Response:
        found = UID.search(request.get_data())
        uid = found.group(1) if found else b""
        body = (
            b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"'
            + uid
            + b'","allowed":true}}'
        )
        return Response(body, mimetype="application/json")

    return app


def main() -> int:
    from gunicorn.app.base import BaseApplication

    from webhook.config import SettingsStore
    from webhook.server.gunicorn import Runtime, gunicorn_options
    from webhook.tls.served import CertificateStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--config", "--cert", "--key", "--bind"):
        parser.add_argument(name)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--reload-interval", type=float, default=1.0)
    args, _ = parser.parse_known_args()
    runtime = Runtime(
        SettingsStore.from_file(args.config),
        CertificateStore(args.cert, args.key, None),
        reload_interval=args.reload_interval,
    )
    options = gunicorn_options(
        runtime, bind=args.bind or "127.0.0.1", port=args.port, workers=args.workers, threads=args.threads
    )

    class Bare(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_bare_app()

    Bare().run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
