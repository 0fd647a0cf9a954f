"""The controller's audit (as Gatekeeper's): Services kafka-expose did not create, in opted-in
namespaces, checked with the policy's own Service rules; reported, and repaired only when the
settings say so."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from webhook.core import policy
from webhook.core.actions import AuditViolation, NamespaceState
from webhook.core.names import (
    EXTERNAL_DNS,
)
from webhook.core.objects import (
    annotations_of,
    metadata_of,
    name_of,
    spec_of,
    uid_of,
)
from webhook.core.services import proven_owner
from webhook.core.settings import Settings

# ------------------------------------------------------------------------------------------ audit

UNCHECKED = "unchecked"  # the audit's rule for a Service the policy check failed on
EXTERNAL_DNS_PREFIX = EXTERNAL_DNS.rpartition("/")[0] + "/"  # hostname, internal-hostname, target...


def in_audit_scope(service: Mapping[str, Any]) -> bool:
    """What the audit looks at: every LoadBalancer or NodePort Service, and every Service with
    external-dns annotations or externalIPs."""
    spec = spec_of(service)
    return (
        spec.get("type") in ("LoadBalancer", "NodePort")
        or bool(spec.get("externalIPs"))
        or any(k.startswith(EXTERNAL_DNS_PREFIX) for k in annotations_of(service))
    )


def audit_services(state: NamespaceState, settings: Settings) -> list[AuditViolation]:
    """The Services of an opted-in namespace, other than the ones kafka-expose provably created,
    that break the policy (`webhook.core.policy`'s Service check, the one the webhook runs), as
    Gatekeeper's audit finds what was admitted while the webhook was down or before a rule existed.
    The cap is not audited: it is for new load balancers."""
    if not settings.controller.audit.enabled:
        return []
    found = []
    for service in sorted(state.services, key=name_of):
        if not in_audit_scope(service) or proven_owner(service, state.statefulsets) is not None:
            continue
        if metadata_of(service).get("deletionTimestamp"):
            continue
        try:
            violations = policy.assess(
                {**service, "kind": "Service"},
                settings,
                namespace=state.namespace,
                load_balancers_in_namespace=None,
            ).violations
        except Exception as error:  # the check itself failed: reported as unchecked, never repaired
            found.append(
                AuditViolation(
                    namespace=state.namespace,
                    service=name_of(service),
                    reason=f"Service {name_of(service)} could not be checked against the policy: {error!r}",
                    uid=uid_of(service),
                    rules=(UNCHECKED,),
                )
            )
            continue
        violations = tuple(v for v in violations if v.mode != "off")
        if not violations:
            continue
        rules = tuple(dict.fromkeys(v.rule for v in violations))
        enforced = [v.rule for v in violations if v.mode == "enforce"]  # warn: reported, kept
        found.append(
            AuditViolation(
                namespace=state.namespace,
                service=name_of(service),
                reason="; ".join(dict.fromkeys(v.message for v in violations)),
                uid=uid_of(service),
                rules=rules,
                repair=tuple(_repair(service, enforced)) if settings.controller.audit.repair else (),
            )
        )
    return found


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _repair(service: Mapping[str, Any], rules: Sequence[str]) -> list[dict[str, Any]]:
    """JSON patch operations that make `service` safe, conditioned on its uid and resourceVersion: no
    load balancer nor node port in front of the brokers (type ClusterIP, no externalIPs) when it is not
    internal or open too widely, and no external-dns names when they are not allowed."""
    meta, spec = metadata_of(service), spec_of(service)
    operations: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/uid", "value": meta.get("uid")},
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
    ]
    if {policy.INTERNAL_LOAD_BALANCER, policy.SOURCE_RANGES} & set(rules):
        if spec.get("type") in ("LoadBalancer", "NodePort"):
            operations.append({"op": "replace", "path": "/spec/type", "value": "ClusterIP"})
        if spec.get("externalIPs"):
            operations.append({"op": "remove", "path": "/spec/externalIPs"})
    if policy.ALLOWED_DOMAINS in rules:
        operations += [
            {"op": "remove", "path": f"/metadata/annotations/{_pointer(key)}"}
            for key in sorted(annotations_of(service))
            if key.startswith(EXTERNAL_DNS_PREFIX)
        ]
    return operations if len(operations) > 2 else []
