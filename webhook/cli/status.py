"""`kafka-expose status`: every broker of every opted-in namespace, as the controller sees it.

Reads the cluster with the user's kubeconfig, the same way the controller does
(`webhook.controller.reconciler.observe`), and the platform's settings from the settings ConfigMap
(or `--config FILE`). Exit status: 0 when every broker is exposed behind an internal load balancer
with an address and nothing is pending; 1 when something needs a person; 2 when the cluster or the
settings cannot be read.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from webhook.config import load_settings, load_settings_text
from webhook.controller.reconciler import observe
from webhook.core.names import OPT_IN_LABEL, OPT_IN_VALUE
from webhook.core.settings import Settings, SettingsError
from webhook.core.status import BrokerStatus, namespace_status
from webhook.kube.client import ApiError, Kube, load_api_client

SETTINGS_CONFIGMAP = "kafka-expose-settings"
SETTINGS_KEY = "settings.yaml"
COLUMNS = (
    "NAMESPACE",
    "POD",
    "ADVERTISED",
    "SERVICE",
    "LB-ADDRESS",
    "INTERNAL",
    "DNS",
    "CERT-EXPIRES",
    "STATUS",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="one namespace (default: every opted-in namespace)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every opted-in namespace")
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config or in-cluster")
    parser.add_argument("--config", help="settings file (default: read the settings ConfigMap)")
    parser.add_argument(
        "--settings-configmap",
        default=f"kafka-expose/{SETTINGS_CONFIGMAP}",
        metavar="NS/NAME",
        help="where kafka-expose's settings live (default %(default)s)",
    )
    parser.add_argument(
        "--resolve",
        action="store_true",
        help="also resolve each DNS name from here and compare it with the LB",
    )


def _settings(args: argparse.Namespace, kube: Kube) -> Settings:
    if args.config:
        return load_settings(args.config)
    namespace, _, name = str(args.settings_configmap).partition("/")
    configmap = kube.get(Kube.path("v1", "configmaps", namespace, name or SETTINGS_CONFIGMAP))
    text = ((configmap or {}).get("data") or {}).get(SETTINGS_KEY)
    if not isinstance(text, str):
        raise SettingsError([f"no {SETTINGS_KEY} in ConfigMap {args.settings_configmap} (use --config FILE)"])
    return load_settings_text(text)


def _namespaces(args: argparse.Namespace, kube: Kube) -> list[str]:
    if args.namespace:
        return [args.namespace]
    items, _ = kube.list_all(Kube.path("v1", "namespaces"), label_selector=f"{OPT_IN_LABEL}={OPT_IN_VALUE}")
    return sorted(str(item["metadata"]["name"]) for item in items)


def _resolved(row: BrokerStatus) -> BrokerStatus:
    if not row.dns_name:
        return row
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(row.dns_name, None)}
    except OSError as error:
        return _with_problem(row, f"{row.dns_name} does not resolve from here ({error})")
    if row.address and row.address not in addresses:
        return _with_problem(
            row, f"{row.dns_name} resolves to {', '.join(sorted(addresses))}, not {row.address}"
        )
    return row


def _with_problem(row: BrokerStatus, problem: str) -> BrokerStatus:
    from dataclasses import replace

    return replace(row, problems=(*row.problems, problem))


def _table(rows: Sequence[BrokerStatus]) -> str:
    def internal(value: bool | None) -> str:
        return "unknown" if value is None else "yes" if value else "NO"

    lines = [
        (
            row.namespace,
            row.pod,
            row.advertised or "-",
            row.service or "-",
            row.address or "-",
            internal(row.internal),
            row.dns_name or "-",
            row.certificate_expiry or "-",
            "ok" if row.ok else "; ".join(row.problems),
        )
        for row in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS[:-1])]
    out = []
    for line in [COLUMNS, *lines]:
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])) + "  " + line[-1])
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    try:
        kube = Kube(load_api_client(args.kubeconfig), timeout=15.0)
        settings = _settings(args, kube)
        rows: list[BrokerStatus] = []
        namespaces = _namespaces(args, kube)
        for namespace in namespaces:
            observed = observe(kube, namespace, settings, {}, time.time())
            if observed is not None:
                state, effective = observed
                rows.extend(namespace_status(state, effective))
    except (ApiError, SettingsError, OSError) as error:
        print(f"kafka-expose status: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a kubeconfig the client cannot load raises its own types
        print(f"kafka-expose status: cannot read the cluster: {error}", file=sys.stderr)
        return 2
    if args.resolve:
        rows = [_resolved(row) for row in rows]
    if args.output == "table":
        if rows:
            print(_table(rows))
        scope = (
            f"namespace {args.namespace}" if args.namespace else f"{len(namespaces)} opted-in namespace(s)"
        )
        bad = sum(not row.ok for row in rows)
        print(
            f"{len(rows)} broker(s) in {scope}; {bad} need(s) attention"
            if rows
            else f"no Kafka broker in {scope}"
        )
    else:
        document: dict[str, Any] = {"brokers": [row.as_dict() for row in rows], "namespaces": namespaces}
        if args.output == "json":
            print(json.dumps(document, indent=2))
        else:
            import yaml

            print(yaml.safe_dump(document, sort_keys=False), end="")
    return 1 if any(not row.ok for row in rows) else 0
