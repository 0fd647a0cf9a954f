"""`kafka-expose explain`: per broker, what it will advertise and through which Service, or why not."""

from __future__ import annotations

import argparse
from typing import Any

from webhook.cli.inputs import settings_and_objects
from webhook.core import mutate
from webhook.core.decision import BrokerPlan
from webhook.core.flavors import RUNTIME_FLAVORS
from webhook.core.images import FAMILIES, looks_like_kafka, repository
from webhook.core.objects import as_dict
from webhook.core.settings import Settings, template_warnings
from webhook.documents import InputError, fail, namespace_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="settings file (YAML)")
    parser.add_argument("-f", "--filename", default="-", help="manifests (a file, or - for stdin)")
    parser.add_argument("--namespace", help="namespace of objects that name none")


def explain_objects(items: list[dict[str, Any]], settings: Settings, namespace: str | None) -> list[str]:
    """One line per broker (or why not); never nothing: "no Kafka broker found" with the images seen."""
    lines = [f"settings: {problem}" for problem in template_warnings(settings)]
    images: list[str] = []
    brokers = 0
    for obj in items:
        kind = obj.get("kind")
        if kind not in ("StatefulSet", "Pod", "Service"):
            continue
        name = (obj.get("metadata") or {}).get("name")
        decision = mutate(obj, settings, namespace_of(obj) or namespace)
        pod_containers = _containers(obj)
        images += [str(c.get("image")) for c in pod_containers]
        if decision.plans:
            brokers += 1
            if namespace_of(obj) is None and namespace is None:
                lines.append(f"{kind} {name} names no namespace: 'default' assumed (pass --namespace)")
            for plan in decision.plans:
                lines.append(_plan_line(plan, settings))
        elif decision.outcome == "mutated":
            lines.append(f"{kind} {name}: {decision.reason}")
        elif decision.outcome == "warned":
            brokers += 1
            lines.append(f"{kind} {name}: not exposed: {decision.reason}")
        elif kind != "Service":
            unknown = "no Kafka broker" in decision.reason
            advice = [_declare(c) for c in pod_containers if unknown and looks_like_kafka(c)]
            if advice:
                brokers += 1
                lines += [f"{kind} {name}: not exposed: {line}" for line in advice]
            elif "Kafka" not in decision.reason and pod_containers:
                lines.append(f"{kind} {name}: not exposed: {decision.reason}")
    if not brokers:
        seen = ", ".join(dict.fromkeys(images)) or "none"
        lines.append(f"no Kafka broker found (images seen: {seen})")
    return lines


def _plan_line(plan: BrokerPlan, settings: Settings) -> str:
    protocol = plan.security_protocol or (
        "SSL or SASL_SSL as the client listener" if plan.tls else "that of the client listener"
    )
    listener = plan.advertised
    if plan.flavor in RUNTIME_FLAVORS:
        fallbacks = ", ".join(settings.listener.fallback_names)
        listener += (
            f" (or the first free of {fallbacks} if the chart serves in-cluster on {plan.listener_name})"
        )
    return (
        f"{plan.namespace}/{plan.pod}: advertises {listener} ({protocol}), "
        f"listens on container port {plan.container_port} ({plan.flavor}); "
        f"LoadBalancer Service {plan.service_name} {plan.advertised_port}->{plan.container_port}"
        + _tls_line(plan)
    )


def _tls_line(plan: BrokerPlan) -> str:
    """The certificate an encrypted external listener serves (tls.mode cert-manager)."""
    if plan.tls is None:
        return ""
    return (
        f"; serves Certificate {plan.tls.certificate} (Secret {plan.tls.secret}, "
        f"{plan.tls.keystore.upper()} keystore, client auth {plan.tls.client_auth})"
    )


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = as_dict(obj.get("spec"))
    if obj.get("kind") == "StatefulSet":
        spec = as_dict(as_dict(spec.get("template")).get("spec"))
    items = spec.get("containers")
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def _declare(container: dict[str, Any]) -> str:
    image = str(container.get("image"))
    return (
        f"container {container.get('name')} runs {image!r}, which looks like Kafka but is not a known image; "
        f"declare it in settings: match: {{images: [{{pattern: '{repository(image)}', family: <{'|'.join(FAMILIES)}>}}]}} "
        "(see README: supported images and mechanisms)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings, items = settings_and_objects(args.config, args.filename)
    except InputError as err:
        return fail(str(err))
    for line in explain_objects(items, settings, args.namespace):
        print(line)
    return 0
