"""`kafka-expose serve`: the admission webhook over HTTPS, gunicorn (gthread workers) + Flask.

The process itself; its arguments are wired in webhook/cli/serve.py. Only argparse is imported at
module level: `kafka-expose render` builds the whole parser and must stay light. Everything else is
imported inside `run`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    from flask import Flask

    from webhook.config import SettingsStore
    from webhook.server.gunicorn import Runtime
    from webhook.tls.selfmanaged import SelfManagedCerts

    SelfManagedFactory = Callable[[Any], SelfManagedCerts]  # an API client -> the manager

NOOP_ENV = "KAFKA_EXPOSE_NOOP"
LAST_GOOD_SETTINGS = "last-good-settings.yaml"  # in the workers' shared directory (config.py)


def run(args: argparse.Namespace, self_managed: SelfManagedFactory | None = None) -> int:
    """Serve until stopped; `self_managed` builds the self-managed certificates (`--self-managed`)
    from an API client (cli/serve.py wires it from the arguments)."""
    import logging

    from webhook.config import SettingsStore
    from webhook.logs import configure_logging
    from webhook.tls.served import CertificateError, CertificateStore

    configure_logging(args.log_level)
    log = logging.getLogger("kafka_expose.serve")
    if (problem := _argument_problem(args)) is not None:
        log.error(problem)
        return 2
    settings = SettingsStore.at_start(args.config, log)
    if settings is None:
        return 2
    self_managed_dir: str | None = None
    if self_managed is not None:
        self_managed_dir = _start_self_managed(self_managed, args, log)
        if self_managed_dir is None:
            return 2
    try:
        certificates = CertificateStore(args.cert, args.key, args.client_ca)
    except CertificateError as err:
        log.error(
            "unusable certificate",
            extra={
                "fields": {"cert": args.cert, "key": args.key, "client_ca": args.client_ca, "error": str(err)}
            },
        )
        return 2
    ready, why = certificates.readiness()
    if not ready:  # serve anyway: readiness says so, and a rotation fixes it without a restart
        log.error("the serving certificate is not valid now", extra={"fields": {"readiness": why}})

    from webhook.server.gunicorn import (
        MAX_REQUESTS_PER_CONNECTION,
        READ_DEADLINE_SECONDS,
        Runtime,
        gunicorn_options,
    )

    noop = bool(args.noop) or os.environ.get(NOOP_ENV, "").lower() in ("1", "true", "yes")
    runtime = Runtime(
        settings,
        certificates,
        reload_interval=args.reload_interval,
        noop=noop,
        kubeconfig=args.kubeconfig,
        self_managed_dir=self_managed_dir,
        probe_port=args.probe_port,
        read_deadline=args.read_deadline or READ_DEADLINE_SECONDS,
    )
    options = gunicorn_options(
        runtime,
        bind=args.bind,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        log_level=args.log_level,
        max_requests_per_connection=(
            MAX_REQUESTS_PER_CONNECTION
            if args.max_requests_per_connection is None
            else args.max_requests_per_connection
        ),
    )
    return _serve(
        runtime,
        options,
        settings,
        log,
        {
            "bind": options["bind"],
            "workers": args.workers,
            "threads": args.threads,
            "settings_version": settings.settings.version,
            "client_ca": bool(args.client_ca),
            "probe_port": args.probe_port,
            "noop": noop,
        },
    )


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the serving options, before anything is loaded."""
    if args.workers < 1 or args.threads < 1:
        return "--workers and --threads must be at least 1"
    if args.probe_port is not None and args.probe_port in (args.port, 0):
        return "--probe-port must be another port than --port"
    if args.max_requests_per_connection is not None and args.max_requests_per_connection < 0:
        return "--max-requests-per-connection must be 0 (never close) or more"
    return None


def _start_self_managed(
    self_managed: SelfManagedFactory, args: argparse.Namespace, log: logging.Logger
) -> str | None:
    """Start the self-managed certificates; the directory they write, or None (logged) when they
    cannot start. The CA Secret, the serving certificate files and the caBundles are kept in step by
    a thread of this (arbiter) process; workers only read the files (hot reload) and the marker."""
    from webhook.kube.client import load_api_client

    try:
        manager = self_managed(load_api_client(args.kubeconfig))
        manager.first_pass(timeout=60)
    except Exception as err:
        log.error("self-managed certificates: cannot start", extra={"fields": {"error": str(err)}})
        return None
    manager.start()
    return str(manager.cert_dir)


def _serve(
    runtime: Runtime,
    options: dict[str, Any],
    settings: SettingsStore,
    log: logging.Logger,
    fields: dict[str, Any],
) -> int:
    """Run gunicorn until it stops; the exit code."""
    created_dir = _prepare_multiprocess_dir()
    shared_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if shared_dir:  # the workers' shared scratch directory: replacement workers adopt the last good
        settings.share_last_good(Path(shared_dir) / LAST_GOOD_SETTINGS)
    arbiter_pid = os.getpid()
    log.info("starting", extra={"fields": fields})
    try:
        _application_class()(runtime, options).run()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        # Workers are forked from inside this call and leave it too (gunicorn ends them with
        # sys.exit): only the arbiter may remove the directory every worker writes to.
        if created_dir and os.getpid() == arbiter_pid:
            import shutil

            shutil.rmtree(created_dir, ignore_errors=True)
    return 0


def _prepare_multiprocess_dir() -> str | None:
    """Point prometheus-client at an empty directory; return it when we created it (to remove it)."""
    import glob
    import tempfile

    existing = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if existing:
        os.makedirs(existing, exist_ok=True)
        for stale in glob.glob(os.path.join(existing, "*.db")):
            os.remove(stale)
        return None
    created = tempfile.mkdtemp(prefix="kafka-expose-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = created
    return created


def _application_class() -> Any:
    from gunicorn.app.base import BaseApplication

    class WebhookApplication(BaseApplication):  # type: ignore[misc]
        """gunicorn embedded: settings from a dict, the app built by `create_app` in each worker."""

        def __init__(self, runtime: Runtime, options: dict[str, Any]) -> None:
            self.runtime = runtime
            self.options = options
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                self.cfg.set(key, value)

        def load(self) -> Flask:
            """In each worker, after fork: the policy hooks' namespace watch belongs to this process."""
            from webhook.server import telemetry as metrics
            from webhook.server.app import ReadyCheck, create_app
            from webhook.server.hooks import policy_hooks

            validate, mutate, _cache = policy_hooks(
                self.runtime.kubeconfig,
                record=lambda rule, outcome: metrics.POLICY_DECISIONS.labels(rule, outcome).inc(),
                on_failure=lambda what: metrics.POLICY_FAILURES.labels(what).inc(),
            )
            checks: list[ReadyCheck] = []
            if self.runtime.self_managed_dir:
                checks.append(_ca_injected_check(self.runtime.self_managed_dir))
            return create_app(
                self.runtime.settings,
                certificates=self.runtime.certificates,
                validate=validate,
                mutate=mutate,
                noop=self.runtime.noop,
                ready_checks=checks,
                probe_port=self.runtime.probe_port,
            )

    return WebhookApplication


def _ca_injected_check(cert_dir: str) -> Any:
    from webhook.tls.selfmanaged import injected

    def check() -> tuple[bool, str]:
        if injected(cert_dir):
            return True, "caBundle: the CA of the serving certificate is injected"
        return False, "caBundle: the CA of the serving certificate is not injected yet"

    return check
