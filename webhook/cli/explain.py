"""`kafka-expose explain`: per broker, what it will advertise and through which Service, or why not."""

from __future__ import annotations

import argparse
from typing import Any

from webhook.cli.inputs import settings_and_objects
from webhook.core import mutate
from webhook.core.settings import Settings
from webhook.documents import InputError, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="settings file (YAML)")
    parser.add_argument("-f", "--filename", default="-", help="manifests (a file, or - for stdin)")
    parser.add_argument("--namespace", help="namespace of objects that name none")


def explain_objects(items: list[dict[str, Any]], settings: Settings, namespace: str | None) -> list[str]:
    lines = []
    for obj in items:
        kind = obj.get("kind")
        if kind not in ("StatefulSet", "Pod", "Service"):
            continue
        name = (obj.get("metadata") or {}).get("name")
        decision = mutate(obj, settings, namespace)
        if decision.plans:
            for plan in decision.plans:
                protocol = plan.security_protocol or (
                    "SSL or SASL_SSL as the client listener" if plan.tls else "that of the client listener"
                )
                tls = (
                    f"; serves Certificate {plan.tls.certificate} (Secret {plan.tls.secret}, "
                    f"{plan.tls.keystore.upper()} keystore, client auth {plan.tls.client_auth})"
                    if plan.tls
                    else ""
                )
                lines.append(
                    f"{plan.namespace}/{plan.pod}: advertises {plan.advertised} ({protocol}), "
                    f"listens on container port {plan.container_port} ({plan.flavor}); "
                    f"LoadBalancer Service {plan.service_name} {plan.advertised_port}->{plan.container_port}{tls}"
                )
        elif decision.outcome == "mutated":
            lines.append(f"{kind} {name}: {decision.reason}")
        elif decision.outcome == "warned" or (kind != "Service" and "Kafka" not in decision.reason):
            lines.append(f"{kind} {name}: not exposed: {decision.reason}")
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        settings, items = settings_and_objects(args.config, args.filename)
    except InputError as err:
        return fail(str(err))
    for line in explain_objects(items, settings, args.namespace):
        print(line)
    return 0
