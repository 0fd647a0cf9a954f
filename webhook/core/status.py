"""What `kafka-expose status` reports per broker: pure, over what the controller observes.

One row per broker pod of an opted-in namespace (exposed or not): the address it advertises, its
Service, the load balancer's address, whether that load balancer is internal by the namespace's
settings, the DNS name external-dns publishes, the policy's findings on the Service, and the
problems a person must look at. The planner decides what is pending, so status says exactly what
the controller would still do (create, update, replace, delete) or cannot do (a conflict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.core.actions import (
    Conflict,
    Create,
    Delete,
    ImmutableKept,
    NamespaceState,
    Replace,
    Unexposed,
    Update,
)
from webhook.core.names import CERTIFICATE, EXTERNAL_DNS
from webhook.core.objects import annotations_of, name_of
from webhook.core.policy import assess, internal_load_balancer_changes
from webhook.core.reconcile import (
    chart_load_balancer,
    controlling_statefulset,
    load_balancer_address,
    plan_from_pod,
    plan_namespace,
)
from webhook.core.settings import Settings

PENDING = (Create, Update, Replace, Delete)


@dataclass(frozen=True)
class BrokerStatus:
    namespace: str
    pod: str
    advertised: str | None  # LISTENER://host:port, None when the pod is not exposed
    service: str | None
    address: str | None  # the load balancer's address (status.loadBalancer.ingress)
    internal: bool | None  # None: the settings name no internal annotation nor loadBalancerClass
    dns_name: str | None  # external-dns hostname annotation of the Service
    findings: tuple[str, ...] = ()  # policy violations of the Service (rule: message)
    problems: tuple[str, ...] = field(default=())  # what needs a person; empty: all is well
    certificate_expiry: str | None = None  # notAfter of the Certificate its external listener serves

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "advertised": self.advertised,
            "service": self.service,
            "address": self.address,
            "internal": self.internal,
            "dnsName": self.dns_name,
            "findings": list(self.findings),
            "problems": list(self.problems),
            "certificateExpiry": self.certificate_expiry,
            "ok": self.ok,
        }


def _internal(service: Mapping[str, Any], settings: Settings) -> bool | None:
    lb = settings.load_balancer
    if not lb.internal_annotations() and not lb.load_balancer_class:
        return None
    return not internal_load_balancer_changes(service, settings)


def namespace_status(state: NamespaceState, settings: Settings) -> list[BrokerStatus]:
    """One row per broker pod of the namespace, sorted by pod name."""
    plan = plan_namespace(state, settings)
    services = {name_of(s): s for s in state.services}
    pending: dict[str, list[str]] = {}
    for action in plan.actions:
        if isinstance(action, PENDING):
            pending.setdefault(action.service, []).append(f"pending {action.kind}: {action.reason}")
        elif isinstance(action, Conflict | ImmutableKept):
            pending.setdefault(action.service, []).append(f"{action.kind}: {action.reason}")
    rows: list[BrokerStatus] = []
    for pod in state.pods:
        owner = controlling_statefulset(pod, state.statefulsets)
        broker = plan_from_pod(pod, owner, settings, state.namespace) if owner is not None else None
        if broker is None:
            continue  # not a broker of a StatefulSet here: the controller gives it nothing either
        chart = chart_load_balancer(state.services, broker.pod)
        service_name = name_of(chart) if chart is not None else broker.service_name  # the chart's own
        row = _row(state.namespace, name_of(pod), broker.advertised, services.get(service_name),
                   service_name, pending.get(service_name, []), settings)  # fmt: skip
        rows.append(_with_certificate(row, annotations_of(pod).get(CERTIFICATE), state))
    for action in plan.of(Unexposed):
        rows.append(
            BrokerStatus(
                namespace=state.namespace,
                pod=action.pod,
                advertised=None,
                service=None,
                address=None,
                internal=None,
                dns_name=None,
                problems=(f"unexposed: {action.reason}",),
            )
        )
    return sorted(rows, key=lambda row: row.pod)


def _with_certificate(row: BrokerStatus, certificate: str | None, state: NamespaceState) -> BrokerStatus:
    """The expiry of the Certificate the broker serves (tls.mode cert-manager), or why there is none."""
    if certificate is None:
        return row
    found = next((c for c in state.certificates if name_of(c) == certificate), None)
    status = found.get("status") if found is not None else None
    status = status if isinstance(status, dict) else {}
    conditions = status.get("conditions")
    ready = isinstance(conditions, list) and any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )
    expiry = status.get("notAfter") if isinstance(status.get("notAfter"), str) else None
    problems = row.problems
    if found is None:
        problems += (f"Certificate {certificate} is missing",)
    elif not ready:
        problems += (f"Certificate {certificate} is not Ready (cert-manager has not issued it)",)
    return replace(row, certificate_expiry=expiry, problems=problems)


def _row(
    namespace: str,
    pod: str,
    advertised: str,
    service: Mapping[str, Any] | None,
    service_name: str,
    pending: Sequence[str],
    settings: Settings,
) -> BrokerStatus:
    problems = list(pending)
    if service is None:
        if not pending:
            problems.append(f"Service {service_name} is missing")
        return BrokerStatus(namespace, pod, advertised, service_name, None, None, None, (), tuple(problems))
    address = load_balancer_address(service)
    internal = _internal(service, settings)
    dns_name = annotations_of(service).get(EXTERNAL_DNS)
    assessment = assess(dict(service, kind="Service"), settings, namespace=namespace,
                        load_balancers_in_namespace=None)  # fmt: skip
    findings = tuple(f"{v.rule}: {v.message}" for v in assessment.violations)
    if address is None:
        problems.append("the load balancer has no address yet")
    if internal is False:
        problems.append("the load balancer is not internal")
    if findings:
        problems.append("the policy finds the Service non-compliant")
    return BrokerStatus(
        namespace, pod, advertised, service_name, address, internal, dns_name, findings, tuple(problems)
    )
