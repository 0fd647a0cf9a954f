"""`kafka-expose render`: a Helm post-renderer over the same core as the webhook.

Broker StatefulSets get their pod template exposed (the host is derived from each pod's own name
at run time) and one LoadBalancer Service per ordinal is added; everything else passes through
byte for byte, so `render | render` is identical to `render`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webhook.config import load_settings
from webhook.core import mutate
from webhook.core.certificates import planned_objects
from webhook.core.services import broker_service
from webhook.core.settings import Settings, SettingsError, template_warnings
from webhook.documents import (
    Document,
    DocumentError,
    dump,
    fail,
    leading_comments,
    namespace_of,
    split_documents,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="settings file (YAML)")
    parser.add_argument("--namespace", help="namespace of objects that name none (helm install -n)")


def render_text(text: str, settings: Settings, namespace: str | None) -> str:
    documents = split_documents(text)
    existing_services = {
        (doc.obj.get("metadata") or {}).get("name")
        for doc in documents
        if isinstance(doc.obj, dict) and doc.obj.get("kind") == "Service"
    }
    # Certificates (and PKCS12 password Secrets) already there: render | render adds nothing.
    existing_services |= {
        (doc.obj.get("kind"), (doc.obj.get("metadata") or {}).get("name"))
        for doc in documents
        if isinstance(doc.obj, dict) and doc.obj.get("kind") in ("Certificate", "Secret")
    }
    out: list[str] = []
    added: list[dict[str, Any]] = []
    for document in documents:
        out.append(_render_one(document, settings, namespace, existing_services, added))
    chunks = [chunk for chunk in out if chunk.strip()]
    chunks += [dump(service) for service in added]
    return "".join(f"---\n{chunk.strip(chr(10))}\n" for chunk in chunks)


def _render_one(
    document: Document,
    settings: Settings,
    namespace: str | None,
    existing_services: set[Any],
    added: list[dict[str, Any]],
) -> str:
    if document.obj is None or document.obj.get("kind") not in ("StatefulSet", "Service"):
        return document.raw
    # The object's own namespace wins; --namespace only for objects that name none.
    own = namespace_of(document.obj) or namespace
    decision = mutate(document.obj, settings, own)
    for warning in decision.warnings:
        print(f"kafka-expose: warning: {_name(document.obj)}: {warning}", file=sys.stderr)
    if decision.plans and own is None:
        print(
            f"kafka-expose: warning: {_name(document.obj)} names no namespace and --namespace is not "
            "given: its Services are written without one (helm -n applies), their DNS names assume "
            "namespace 'default'; pass --namespace",
            file=sys.stderr,
        )
    for plan in decision.plans:
        if plan.service_name not in existing_services:
            service = broker_service(plan, settings)
            if own is None:
                del service["metadata"]["namespace"]
            added.append(service)
            existing_services.add(plan.service_name)
    for obj in planned_objects(decision.plans, settings):  # encrypted external listeners
        key = (obj["kind"], obj["metadata"]["name"])
        if key not in existing_services:
            if own is None:
                del obj["metadata"]["namespace"]
            added.append(obj)
            existing_services.add(key)
    if not decision.changed:
        return document.raw
    return leading_comments(document.raw) + dump(decision.result)


def _name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        for problem in template_warnings(settings):
            print(f"kafka-expose: warning: settings: {problem}", file=sys.stderr)
        text = sys.stdin.read()
        output = render_text(text, settings, args.namespace)
    except SettingsError as err:
        return fail(f"invalid settings: {err}")
    except DocumentError as err:
        return fail(f"invalid manifests: {err}")
    except UnicodeDecodeError as err:
        return fail(f"input is not UTF-8: {err}")
    sys.stdout.write(output)
    return 0
