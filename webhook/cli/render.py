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
from webhook.core.settings import Settings, SettingsError
from webhook.documents import Document, DocumentError, dump, fail, split_documents


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
    decision = mutate(document.obj, settings, namespace)
    for warning in decision.warnings:
        print(f"kafka-expose: warning: {_name(document.obj)}: {warning}", file=sys.stderr)
    for plan in decision.plans:
        if plan.service_name not in existing_services:
            added.append(broker_service(plan, settings))
            existing_services.add(plan.service_name)
    for obj in planned_objects(decision.plans, settings):  # encrypted external listeners
        key = (obj["kind"], obj["metadata"]["name"])
        if key not in existing_services:
            added.append(obj)
            existing_services.add(key)
    return dump(decision.result) if decision.changed else document.raw


def _name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
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
