"""The per-broker Service as planned, and how an observed one differs from it on the fields
kafka-expose owns (managedFields): drift, stale fields to prune, the create's ownership, and the
settings a cloud reads only at creation (recorded in the created-with annotation)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from webhook.core.clouds import IMMUTABLE_ANNOTATIONS
from webhook.core.decision import BrokerPlan
from webhook.core.names import CREATED_WITH, FIELD_MANAGER
from webhook.core.objects import (
    annotations_of,
    as_dict,
    labels_of,
    metadata_of,
    spec_of,
    string_map,
)
from webhook.core.podspec import copy_json
from webhook.core.services import broker_service
from webhook.core.settings import Settings

# The spec fields kafka-expose sets; fields the API server defaults are not ours to prune.
OWN_SPEC_FIELDS = frozenset(
    {
        "type",
        "selector",
        "ports",
        "externalTrafficPolicy",
        "publishNotReadyAddresses",
        "loadBalancerClass",
        "loadBalancerSourceRanges",
    }
)

# ------------------------------------------------------------------------------- desired Services


def immutable_settings(service: Mapping[str, Any]) -> dict[str, Any]:
    """What a cloud reads only when it creates the load balancer: `loadBalancerClass` and the
    IMMUTABLE_ANNOTATIONS, as set on `service`."""
    record: dict[str, Any] = {
        "annotations": {
            k: v for k, v in sorted(annotations_of(service).items()) if k in IMMUTABLE_ANNOTATIONS
        }
    }
    balancer_class = spec_of(service).get("loadBalancerClass")
    if isinstance(balancer_class, str) and balancer_class:
        record["loadBalancerClass"] = balancer_class
    return record


def recorded_immutable_settings(service: Mapping[str, Any]) -> dict[str, Any]:
    """The immutable settings the Service was created with (its created-with annotation); a Service
    without a readable record is taken as it is."""
    text = annotations_of(service).get(CREATED_WITH)
    if text:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if (
            isinstance(record, dict)
            and set(record) <= {"annotations", "loadBalancerClass"}
            and isinstance(record.get("annotations", {}), dict)
        ):
            return {
                "annotations": string_map(record.get("annotations", {})),
                **(
                    {"loadBalancerClass": record["loadBalancerClass"]}
                    if isinstance(record.get("loadBalancerClass"), str)
                    else {}
                ),
            }
    return immutable_settings(service)


def _encode(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def desired_service(plan: BrokerPlan, settings: Settings, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The Service the core plans for the broker, plus the record of its immutable settings."""
    service = broker_service(plan, settings, owner=owner)
    service["metadata"]["annotations"][CREATED_WITH] = _encode(immutable_settings(service))
    return service


def with_immutable_settings(service: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """`service` with the immutable settings of `record` instead of its own (keep what the load
    balancer was created with)."""
    result = copy_json(dict(service))
    annotations = result["metadata"]["annotations"]
    for key in IMMUTABLE_ANNOTATIONS:
        annotations.pop(key, None)
    annotations.update(record.get("annotations", {}))
    annotations[CREATED_WITH] = _encode(record)
    result["spec"].pop("loadBalancerClass", None)
    if record.get("loadBalancerClass"):
        result["spec"]["loadBalancerClass"] = record["loadBalancerClass"]
    return result


# ------------------------------------------------------------------------------------------ drift


def _port_key(port: Mapping[str, Any]) -> str:
    return f"{port.get('port')}/{port.get('protocol') or 'TCP'}"


def owned_fields(service: Mapping[str, Any], manager: str = FIELD_MANAGER) -> set[tuple[str, str]]:
    """The fields `manager` owns on `service` (from managedFields), as (section, key) pairs:
    ("labels", k), ("annotations", k), ("ownerReferences", uid), ("spec", field), ("ports", port/proto)."""
    owned: set[tuple[str, str]] = set()
    entries = metadata_of(service).get("managedFields")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("manager") != manager or entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1")
        if not isinstance(fields, dict):
            continue
        metadata = as_dict(fields.get("f:metadata"))
        for section in ("labels", "annotations"):
            keys = metadata.get(f"f:{section}")
            for key in keys if isinstance(keys, dict) else {}:
                if key.startswith("f:"):
                    owned.add((section, key[2:]))
        refs = metadata.get("f:ownerReferences")
        for key in refs if isinstance(refs, dict) else {}:
            if key.startswith("k:"):
                try:
                    owned.add(("ownerReferences", str(json.loads(key[2:]).get("uid"))))
                except (ValueError, AttributeError):
                    continue
        spec = as_dict(fields.get("f:spec"))
        for key in spec:
            if key.startswith("f:") and key[2:] in OWN_SPEC_FIELDS:
                owned.add(("spec", key[2:]))
        ports = spec.get("f:ports")
        for key in ports if isinstance(ports, dict) else {}:
            if key.startswith("k:"):
                try:
                    owned.add(("ports", _port_key(json.loads(key[2:]))))
                except (ValueError, AttributeError):
                    continue
    return owned


def _fields_of(service: Mapping[str, Any]) -> set[tuple[str, str]]:
    meta, spec = metadata_of(service), spec_of(service)
    result = {("labels", k) for k in labels_of(service)} | {
        ("annotations", k) for k in annotations_of(service)
    }
    refs = meta.get("ownerReferences")
    result |= {("ownerReferences", str(r.get("uid"))) for r in refs if isinstance(r, dict)} if refs else set()
    result |= {("spec", k) for k in spec if k in OWN_SPEC_FIELDS}
    ports = spec.get("ports")
    result |= {("ports", _port_key(p)) for p in ports if isinstance(p, dict)} if ports else set()
    return result


def has_create_ownership(service: Mapping[str, Any], manager: str = FIELD_MANAGER) -> bool:
    """Whether `manager` still owns fields through an Update (the create), not an Apply: those fields
    would never be pruned by a later apply, so the ownership is converted first."""
    entries = metadata_of(service).get("managedFields")
    return any(
        isinstance(e, dict) and e.get("manager") == manager and e.get("operation") == "Update"
        for e in (entries if isinstance(entries, list) else [])
    )


def drift(desired: Mapping[str, Any], observed: Mapping[str, Any], manager: str = FIELD_MANAGER) -> list[str]:
    """Why `observed` does not match `desired` on the fields kafka-expose owns (empty: it matches).

    Only our fields are compared: labels, annotations, ownerReferences, ports and spec fields that
    others (a cloud controller, a user) add are theirs. Fields we own but no longer plan are drift too
    (an apply prunes them)."""
    reasons: list[str] = []
    observed_labels, observed_annotations = labels_of(observed), annotations_of(observed)
    for key, value in labels_of(desired).items():
        if observed_labels.get(key) != value:
            reasons.append(f"label {key}")
    for key, value in annotations_of(desired).items():
        if observed_annotations.get(key) != value:
            reasons.append(f"annotation {key}")
    observed_owners = {
        r.get("uid") for r in metadata_of(observed).get("ownerReferences") or [] if isinstance(r, dict)
    }
    for ref in metadata_of(desired).get("ownerReferences") or []:
        if ref.get("uid") not in observed_owners:
            reasons.append(f"ownerReference to {ref.get('kind')} {ref.get('name')}")
    want, have = spec_of(desired), spec_of(observed)
    for key in ("type", "selector", "externalTrafficPolicy", "loadBalancerClass", "loadBalancerSourceRanges"):
        if key in want and want[key] != have.get(key):
            reasons.append(f"spec.{key}")
    if "publishNotReadyAddresses" in want and want["publishNotReadyAddresses"] != bool(
        have.get("publishNotReadyAddresses", False)
    ):
        reasons.append("spec.publishNotReadyAddresses")
    observed_ports = {_port_key(p): p for p in have.get("ports") or [] if isinstance(p, dict)}
    for port in want.get("ports") or []:
        current = observed_ports.get(_port_key(port))
        if current is None or any(current.get(k) != port.get(k) for k in ("name", "targetPort")):
            reasons.append(f"port {_port_key(port)}")
    stale = owned_fields(observed, manager) - _fields_of(desired)
    reasons.extend(f"{section} {key} no longer planned" for section, key in sorted(stale))
    # The create's ownership (operation Update) is not drift by itself: it is converted to an apply's
    # by the first Update that real drift needs (`convert_ownership`), so a Service that never drifts
    # costs one write, its create (issue 19). Stale fields it owns are found above either way.
    return reasons
