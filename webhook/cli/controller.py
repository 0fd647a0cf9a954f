"""`kafka-expose controller`: the arguments, the settings file, the API clients and the signals around
`webhook.controller.manager.Controller`.

Only argparse and the standard library are imported at module level: the other sub-commands build
this parser too when asked for help.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from typing import Any

from webhook.controller.queue import DEFAULT_WORKERS

log = logging.getLogger("kafka_expose.controller")

DEFAULT_LEASE_NAME = "kafka-expose-controller"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="settings file (YAML), hot reloaded")
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig to use (default: the in-cluster ServiceAccount, else $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE") or "kafka-expose",
        metavar="NS",
        help="namespace of the leader-election Lease (default: $POD_NAMESPACE, else kafka-expose)",
    )
    parser.add_argument("--lease-name", default=DEFAULT_LEASE_NAME, metavar="NAME", help="the Lease's name")
    parser.add_argument(
        "--identity",
        default=f"{socket.gethostname()}_{os.getpid()}",
        help="this candidate's name in the Lease (default: hostname_pid)",
    )
    for flag, default, text in LEASE_TIMINGS:
        parser.add_argument(flag, type=float, default=default, metavar="SECONDS", help=text)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="/healthz, /readyz and /metrics over plain HTTP (0: off)",
    )
    parser.add_argument("--metrics-bind", default="0.0.0.0", metavar="ADDRESS", help="metrics listen address")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"namespaces reconciled at once (default {DEFAULT_WORKERS})",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    # hidden: the settings file poll interval and the server-side watch timeout
    parser.add_argument("--reload-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--watch-timeout", type=int, default=300, help=argparse.SUPPRESS)


# The Lease's timings, in the order of Lease's fields: flag, default (client-go's), help
LEASE_TIMINGS = (
    ("--lease-duration", 15.0, "how long a Lease holds"),
    ("--renew-deadline", 10.0, "the leader steps down when it could not renew for this long"),
    ("--retry-period", 2.0, "how often to renew or try to lead"),
)


def run(args: argparse.Namespace) -> int:
    from webhook.config import SettingsStore
    from webhook.controller.health import HealthServer
    from webhook.controller.manager import Controller, TermOptions
    from webhook.controller.metrics import Metrics
    from webhook.kube.client import Backoff, Kube, load_api_client
    from webhook.kube.leader import Lease
    from webhook.logs import configure_logging

    configure_logging(args.log_level)
    if args.log_level != "debug":  # urllib3 warns on each connection retry; our own logs say what failed
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    if args.workers < 1:
        log.error("--workers must be at least 1")
        return 2
    timings = (args.lease_duration, args.renew_deadline, args.retry_period)
    try:
        lease = Lease(args.lease_namespace, args.lease_name, args.identity, *timings)
    except ValueError:
        log.error("need 0 < --retry-period < --renew-deadline < --lease-duration")
        return 2
    settings = SettingsStore.at_start(args.config, log)
    if settings is None:
        return 2
    try:
        api = load_api_client(args.kubeconfig)
        watch_api = load_api_client(args.kubeconfig)
        elector_api = load_api_client(args.kubeconfig, retries=False)
    except Exception as error:
        log.error("cannot load Kubernetes credentials", extra={"fields": {"error": str(error)}})
        return 2
    metrics = Metrics()
    controller = Controller(
        Kube(api),
        Kube(watch_api),
        # Lease requests are not retried inside a renewal: the election loop is the retry.
        Kube(elector_api, timeout=max(1.0, args.renew_deadline / 2), backoff=Backoff(attempts=1)),
        settings,
        metrics,
        lease,
        TermOptions(watch_timeout=int(args.watch_timeout), workers=args.workers),
    )
    health = None
    if args.metrics_port:  # /healthz, /readyz and /metrics (controller/health.py)
        health = HealthServer(
            args.metrics_port, args.metrics_bind, metrics.registry, controller.health, controller.readiness
        ).start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("shutting down", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "starting",
        extra={
            "fields": {
                "identity": args.identity,
                "lease": f"{args.lease_namespace}/{args.lease_name}",
                "settings_version": settings.settings.version,
                "metrics_port": args.metrics_port,
            }
        },
    )
    try:
        return controller.run(stop, args.reload_interval)
    finally:
        if health is not None:
            health.close()
