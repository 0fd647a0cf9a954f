"""The Flask layer of the webhook: HTTP in, `webhook.admission` in the middle, logs and metrics out.

Routes: POST /mutate, POST /validate (AdmissionReview v1), GET /healthz, /readyz, /metrics. On the
plain-HTTP probe port (`probe_port`) only PROBE_PATHS are answered: admissions need TLS (and, with
`--client-ca`, the API server's client certificate).
Whatever the input, the answer is a well-formed AdmissionReview or a 4xx with a one-line text body;
an exception inside the core allows the object untouched with a warning (see admission.handlers.failed_open).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from webhook.admission.handlers import (
    Handled,
    MutateFn,
    ValidateHook,
    allow_all,
    failed_open,
    mutate_review,
    validate_review,
)
from webhook.admission.responses import allowed, review_response
from webhook.admission.wire import (
    MAX_BODY_BYTES,
    BadReview,
    Review,
    check_content_type,
    check_size,
    encode,
    parse_review,
)
from webhook.config import SettingsStore
from webhook.core import mutate as core_mutate
from webhook.core.settings import Settings
from webhook.logs import ADMISSION_LOGGER
from webhook.server import telemetry as metrics
from webhook.tls.served import CertificateStore

Endpoint = Literal["mutate", "validate"]
ReadyCheck = Callable[[], tuple[bool, str]]  # (ready, one line for /readyz)

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

log = logging.getLogger("kafka_expose.server")
admission_log = logging.getLogger(ADMISSION_LOGGER)


def wire_metrics(settings: SettingsStore, certificates: CertificateStore | None) -> None:
    """Count reloads and publish the certificate expiry from this process."""
    settings.add_listener(
        lambda ok, _detail: metrics.SETTINGS_RELOADS.labels("success" if ok else "failure").inc()
    )
    if certificates is None:
        return

    def on_certificate(ok: bool, _detail: str) -> None:
        metrics.CERTIFICATE_RELOADS.labels("success" if ok else "failure").inc()
        metrics.CERTIFICATE_EXPIRY.set(certificates.current.not_after.timestamp())

    certificates.add_listener(on_certificate)
    metrics.CERTIFICATE_EXPIRY.set(certificates.current.not_after.timestamp())


def text(body: str, status: int) -> Response:
    return Response(body.rstrip("\n") + "\n", status=status, content_type="text/plain; charset=utf-8")


class Admission:
    """POST /mutate and /validate: read and check the AdmissionReview, answer it with the handlers
    (admission/handlers.py), count and log it. The HTTP layer's part only: no decision is made here."""

    def __init__(self, store: SettingsStore, validate: ValidateHook, mutate: MutateFn, noop: bool) -> None:
        self.store = store
        self.validate = validate
        self.mutate = mutate
        self.noop = noop

    def admit(self, endpoint: Endpoint) -> Response:
        started = time.perf_counter()
        try:
            check_content_type(request.content_type)
            check_size(request.content_length)
            review = parse_review(request.stream.read(MAX_BODY_BYTES + 1))
        except BadReview as bad:
            if bad.status == 413:
                _drain(request.stream)
            return self.rejected(endpoint, bad.status, bad.reason, bad.kind)
        except HTTPException as err:  # client went away mid-body, bad chunked encoding...
            return self.rejected(endpoint, err.code or 400, err.name, "unreadable")
        except Exception as err:
            log.error("could not read an admission request", exc_info=err)
            return self.rejected(
                endpoint, 400, f"could not read the AdmissionReview ({type(err).__name__})", "unreadable"
            )

        try:
            current = self.store.settings
            if self.noop:
                handled = Handled(allowed(review.uid), "skipped", "noop")
            elif endpoint == "mutate":
                handled = mutate_review(review, current, self.mutate)
            else:
                handled = validate_review(review, current, self.validate)
            body = encode(review_response(review, handled.response))
        except Exception as err:  # the handlers catch the core's errors; this is the last resort
            handled = failed_open(review.uid, "admitted unchanged", err)
            body = encode(review_response(review, handled.response))
        duration = time.perf_counter() - started
        record(endpoint, review, handled, duration)
        return Response(body, status=200, content_type="application/json")

    @staticmethod
    def rejected(endpoint: Endpoint, status: int, reason: str, kind: str) -> Response:
        metrics.ADMISSION_REQUESTS.labels(endpoint, "invalid").inc()
        metrics.ADMISSION_INVALID.labels(endpoint, kind).inc()
        log.warning(
            "admission request rejected",
            extra={
                "fields": {
                    "endpoint": endpoint,
                    "status": status,
                    "reason": reason,
                    "remote": request.remote_addr,
                }
            },
        )
        return text(reason, status)


def create_app(
    settings: SettingsStore | Settings,
    *,
    certificates: CertificateStore | None = None,
    validate: ValidateHook = allow_all,
    mutate: MutateFn = core_mutate,
    noop: bool = False,
    ready_checks: Sequence[ReadyCheck] = (),
    probe_port: int | None = None,
) -> Flask:
    """The webhook's WSGI app.

    settings: the store in force (hot reloaded by its owner) or fixed Settings.
    certificates: the serving certificate store, for readiness and metrics (None: TLS is not ours).
    validate: the /validate hook `validate(request, settings) -> (allowed, message, warnings)`.
    mutate: the core's entry point (tests may inject a failing one).
    noop: answer /mutate with a plain allow without calling the core (benchmark floor).
    ready_checks: more conditions for /readyz (e.g. the CA injected into the webhook configurations).
    probe_port: the plain-HTTP listener's port, where only PROBE_PATHS are answered (404 otherwise).
    """
    store = settings if isinstance(settings, SettingsStore) else SettingsStore(settings)
    wire_metrics(store, certificates)
    app = Flask("kafka_expose")

    @app.before_request
    def probe_port_only_probes() -> Response | None:
        on_probe_port = probe_port is not None and request.environ.get("SERVER_PORT") == str(probe_port)
        if on_probe_port and request.path not in PROBE_PATHS:
            return text("404 Not Found: the probe port answers only /healthz, /readyz and /metrics", 404)
        return None

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        return text(f"{err.code} {err.name}", err.code or 500)

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Response:
        log.error("unexpected error serving %s %s", request.method, request.path, exc_info=err)
        return text("500 internal error", 500)

    admission = Admission(store, validate, mutate, noop)

    @app.post("/mutate")
    def mutate_route() -> Response:
        return admission.admit("mutate")

    @app.post("/validate")
    def validate_route() -> Response:
        return admission.admit("validate")

    @app.get("/healthz")
    def healthz() -> Response:
        return text("ok", 200)

    @app.get("/readyz")
    def readyz() -> Response:
        checks = [store.readiness()]
        if certificates is not None:
            checks.append(certificates.readiness())
        for check in ready_checks:
            try:
                checks.append(check())
            except Exception as err:
                checks.append((False, f"{getattr(check, '__name__', 'check')}: {type(err).__name__}: {err}"))
        ready = all(ok for ok, _ in checks)
        lines = ["ok" if ready else "not ready", *(line for _, line in checks)]
        return text("\n".join(lines), 200 if ready else 503)

    @app.get("/metrics")
    def metrics_route() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, status=200, content_type=content_type)

    return app


def _drain(stream: Any, limit: int = 2 * MAX_BODY_BYTES) -> None:
    """Read and drop what is left of an oversized body (up to `limit`), so the client, still sending,
    gets to read the 413 instead of a connection reset. Past the limit gunicorn closes the connection."""
    remaining = limit
    try:
        while remaining > 0 and (chunk := stream.read(min(65536, remaining))):
            remaining -= len(chunk)
    except Exception:  # the client went away: nothing to answer to
        log.debug("could not drain an oversized body", exc_info=True)


def record(endpoint: Endpoint, review: Review, handled: Handled, duration: float) -> None:
    """Count and log one admission decision (one JSON line, no object content)."""
    metrics.ADMISSION_REQUESTS.labels(endpoint, handled.outcome).inc()
    metrics.ADMISSION_DURATION.labels(endpoint).observe(duration)
    warnings = handled.response.get("warnings", [])
    if warnings:
        metrics.ADMISSION_WARNINGS.labels(endpoint).inc(len(warnings))
    if review.dry_run:
        metrics.ADMISSION_DRY_RUN.labels(endpoint).inc()
    if endpoint == "validate" and handled.error is not None:
        metrics.POLICY_FAILURES.labels("hook_error").inc()
    fields: dict[str, Any] = {
        "endpoint": endpoint,
        "uid": review.uid[:128],
        "namespace": (review.namespace or _object_namespace(review) or "")[:253] or None,
        "kind": review.kind[:128],
        "name": review.name[:253],
        "operation": review.operation,
        "outcome": handled.outcome,
        "allowed": handled.response["allowed"],
        "advertised": ",".join(handled.advertised),
        "duration_ms": round(duration * 1000, 3),
        "dry_run": review.dry_run,
    }
    if review.sub_resource:
        fields["sub_resource"] = review.sub_resource
    if handled.reason:
        fields["reason"] = handled.reason[:300]
    if handled.patch_operations:
        fields["patch_operations"] = handled.patch_operations
    if warnings:
        fields["warnings"] = warnings
    if handled.error is not None:
        verdict = "admitted unchanged" if handled.response["allowed"] else "refused"
        admission_log.error(
            f"admission failed, object {verdict}", exc_info=handled.error, extra={"fields": fields}
        )
    else:
        admission_log.info("admission", extra={"fields": fields})


def _object_namespace(review: Review) -> str | None:
    metadata = (review.object or {}).get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    return namespace if isinstance(namespace, str) else None
