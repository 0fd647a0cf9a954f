"""`kafka-expose serve`: the webhook server's arguments (and the self-managed certificates' group),
wired to webhook.server.process."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webhook.tls.selfmanaged import SelfManagedCerts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="settings file (YAML), hot reloaded")
    parser.add_argument("--cert", required=True, metavar="FILE", help="serving certificate chain (PEM)")
    parser.add_argument("--key", required=True, metavar="FILE", help="private key of the certificate (PEM)")
    parser.add_argument("--port", type=int, default=8443, help="HTTPS port (default: 8443)")
    parser.add_argument(
        "--probe-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also listen on PORT in plain HTTP for /healthz, /readyz and /metrics only (kubelet probes, "
        "which have no client certificate for --client-ca)",
    )
    parser.add_argument("--bind", default="0.0.0.0", metavar="ADDRESS", help="address to listen on")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes (default: 2)")
    parser.add_argument("--threads", type=int, default=4, metavar="N", help="threads per worker (default: 4)")
    parser.add_argument(
        "--max-requests-per-connection",
        type=int,
        default=None,
        metavar="N",
        help="close a kept-alive connection after N requests so that load spreads over the workers "
        "(default: 100; 0: never)",
    )
    parser.add_argument(
        "--client-ca", metavar="FILE", help="require client certificates signed by this CA (the API server's)"
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="API access for namespace overrides and the LoadBalancer cap (default: in-cluster, else none)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    # hidden: answer /mutate without calling the core (benchmark floor), and the file poll interval
    parser.add_argument("--noop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reload-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    # hidden: the per-connection read deadline (tests shorten it; see webhook.server.gunicorn)
    parser.add_argument("--read-deadline", type=float, default=None, help=argparse.SUPPRESS)
    add_self_managed_arguments(parser)


def add_self_managed_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--self-managed` option group for `kafka-expose serve`."""
    group = parser.add_argument_group("self-managed certificates")
    group.add_argument(
        "--self-managed",
        action="store_true",
        help="keep a CA in a Secret, issue the serving certificate into the --cert/--key files and "
        "inject caBundle into the webhook configurations; ready only once the CA is injected",
    )
    group.add_argument("--ca-secret", default="kafka-expose-ca", help="the CA Secret (default %(default)s)")
    group.add_argument(
        "--webhook-service", default="kafka-expose", help="the webhook Service's name (default %(default)s)"
    )
    group.add_argument(
        "--webhook-namespace",
        default=None,
        help="namespace of the Service and the Secret (default: $POD_NAMESPACE, else kafka-expose)",
    )
    group.add_argument(
        "--mutating-webhook-configuration",
        action="append",
        default=None,
        metavar="NAME",
        help="MutatingWebhookConfiguration to inject (repeatable; default kafka-expose)",
    )
    group.add_argument(
        "--validating-webhook-configuration",
        action="append",
        default=None,
        metavar="NAME",
        help="ValidatingWebhookConfiguration to inject (repeatable; default kafka-expose)",
    )
    group.add_argument("--ca-validity-days", type=float, default=730.0, help="default %(default)s")
    group.add_argument("--cert-validity-hours", type=float, default=24.0, help="default %(default)s")
    group.add_argument("--cert-renew-before-hours", type=float, default=8.0, help="default %(default)s")


def from_args(args: argparse.Namespace, api_client: Any) -> SelfManagedCerts:
    """Build the manager from `add_self_managed_arguments` options and serve's --cert/--key."""
    cert = Path(getattr(args, "cert", None) or "/certs/tls.crt")
    key = Path(getattr(args, "key", None) or "/certs/tls.key")
    if cert.parent != key.parent:
        raise ValueError("--self-managed needs --cert and --key in the same directory")
    namespace = args.webhook_namespace or os.environ.get("POD_NAMESPACE") or "kafka-expose"
    from webhook.tls.selfmanaged import SelfManagedCerts  # cryptography: only when it runs

    return SelfManagedCerts(
        api_client,
        namespace=namespace,
        secret_name=args.ca_secret,
        service_name=args.webhook_service,
        webhook_config_names=(
            args.mutating_webhook_configuration or ["kafka-expose"],
            args.validating_webhook_configuration or ["kafka-expose"],
        ),
        cert_dir=cert.parent,
        ca_validity=dt.timedelta(days=args.ca_validity_days),
        cert_validity=dt.timedelta(hours=args.cert_validity_hours),
        renew_before=dt.timedelta(hours=args.cert_renew_before_hours),
        cert_file=cert.name,
        key_file=key.name,
    )


def run(args: argparse.Namespace) -> int:
    from webhook.server import process

    factory = (lambda api_client: from_args(args, api_client)) if args.self_managed else None
    return process.run(args, self_managed=factory)
