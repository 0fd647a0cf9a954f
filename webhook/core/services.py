"""LoadBalancer Services: the one we plan per broker, and the chart's own that select brokers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from webhook.core.decision import BrokerPlan
from webhook.core.hosts import BrokerIdentity, HostError, render, split_pod_name
from webhook.core.names import (
    ADVERTISED,
    CREATED_WITH,
    EXTERNAL_DNS,
    FIELD_MANAGER,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    OWNED_LABEL,
    POD_LABEL,
    SETTINGS_VERSION,
    STATEFULSET_LABEL,
    STS_POD_NAME_LABEL,
)
from webhook.core.objects import annotations_of, metadata_of, name_of, spec_of, uid_of
from webhook.core.podspec import dict_at
from webhook.core.settings import Settings

MAX_NAME = 63
_HASH_LENGTH = 8


def service_name(settings: Settings, identity: BrokerIdentity) -> str:
    """The template's name; one over 63 characters is cut to 54 and given `-` and the first 8 hex
    digits of the SHA-256 of the full name (as Kubernetes controllers shorten generated names):
    valid, stable, and distinct for distinct full names."""
    name = settings.load_balancer.service_name_template.format(
        pod=identity.pod,
        ordinal=identity.ordinal,
        statefulset=identity.statefulset,
        namespace=identity.namespace,
        domain=settings.domain,
    )
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LENGTH]
    return name[: MAX_NAME - _HASH_LENGTH - 1].rstrip("-.") + "-" + digest


def bootstrap_host(settings: Settings, identity: BrokerIdentity) -> str | None:
    if settings.bootstrap_host_template is None:
        return None
    return render(settings.bootstrap_host_template, identity, settings.domain)


def managed_labels(identity: BrokerIdentity) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        OWNED_LABEL: MANAGED_BY_VALUE,
        STATEFULSET_LABEL: identity.statefulset,
        POD_LABEL: identity.pod or "",
    }


def is_managed(service: Mapping[str, Any]) -> bool:
    labels = (service.get("metadata") or {}).get("labels") or {}
    return isinstance(labels, dict) and labels.get(OWNED_LABEL) == MANAGED_BY_VALUE


def broker_service(
    plan: BrokerPlan, settings: Settings, owner: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The per-broker LoadBalancer Service: only this broker behind it, the cloud's internal-LB
    settings, and the external-dns name that makes `plan.host` follow the load balancer's address."""
    identity = BrokerIdentity(plan.statefulset or "", plan.namespace, plan.pod, plan.ordinal)
    hostnames = [plan.host]
    bootstrap = bootstrap_host(settings, identity)
    if bootstrap:
        hostnames.append(bootstrap)
    lb = settings.load_balancer
    metadata: dict[str, Any] = {
        "name": plan.service_name,
        "namespace": plan.namespace,
        "labels": managed_labels(identity),
        "annotations": {
            **lb.internal_annotations(),
            EXTERNAL_DNS: ",".join(hostnames),
            ADVERTISED: plan.advertised,
            SETTINGS_VERSION: settings.version,
        },
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "blockOwnerDeletion": False,
            }
        ]
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "selector": {STS_POD_NAME_LABEL: plan.pod},
        "ports": [
            {
                "name": plan.container_port_name,
                "port": plan.advertised_port,
                "targetPort": plan.container_port,
                "protocol": "TCP",
            }
        ],
        "externalTrafficPolicy": lb.external_traffic_policy,
        "publishNotReadyAddresses": False,
    }
    if lb.load_balancer_class:
        spec["loadBalancerClass"] = lb.load_balancer_class
    if lb.source_ranges:
        spec["loadBalancerSourceRanges"] = list(lb.source_ranges)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def lead_to_listener(ports: list[Any], port: int, target: str) -> list[dict[str, Any]]:
    """A chart LB's ports with `port` leading to the container port named `target` (the broker's
    external listener): the entry on `port` is retargeted, or one is added; the others stay."""
    entries = [dict(dict_at(entry, "spec.ports[]")) for entry in ports]
    for entry in entries:
        if entry.get("port") == port:
            entry["targetPort"] = target
            return entries
    names = {entry.get("name") for entry in entries if isinstance(entry.get("name"), str)}
    name = target if target not in names else f"{target[:10]}-{port}"
    return [*entries, {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}]


def selected_broker(service: Mapping[str, Any]) -> str | None:
    """The single broker pod a Service selects by pod name, if it selects exactly one."""
    selector = (service.get("spec") or {}).get("selector") or {}
    pod = selector.get(STS_POD_NAME_LABEL) if isinstance(selector, dict) else None
    if isinstance(pod, str):
        return pod
    labels = selector.get("pod") if isinstance(selector, dict) else None  # incubator/kafka 0.9 style
    return labels if isinstance(labels, str) and split_pod_name(labels) else None


def selects_kafka(service: Mapping[str, Any], settings: Settings) -> bool:
    """Whether a Service selects Kafka brokers, judged from the Service alone (admission sees no pods):
    a selector that names a broker pod, mentions kafka, or matches the settings' broker labels."""
    selector = (service.get("spec") or {}).get("selector") or {}
    if not isinstance(selector, dict) or not selector:
        return False
    if selected_broker(service):
        return True
    wanted = settings.match.pod_labels
    if wanted and all(selector.get(k) == v for k, v in wanted.items()):
        return True
    return any("kafka" in str(value).lower() for value in selector.values())


def single_broker_host(service: Mapping[str, Any], settings: Settings, namespace: str) -> str | None:
    pod = selected_broker(service)
    parts = split_pod_name(pod) if pod else None
    if not pod or not parts:
        return None
    identity = BrokerIdentity(parts[0], namespace, pod, parts[1])
    try:
        return render(settings.host_template, identity, settings.domain)
    except HostError:
        return None


# ------------------------------------------------------------------------------- proof of ownership


def in_apps(api_version: Any) -> bool:
    """apps/v1, as the API server writes it (old manifests' apps/v1beta* name the same objects)."""
    return isinstance(api_version, str) and api_version.startswith("apps/")


def proven_owner(
    service: Mapping[str, Any], statefulsets: Sequence[Mapping[str, Any]], manager: str = FIELD_MANAGER
) -> Mapping[str, Any] | None:
    """The StatefulSet a Service was created for, when there is positive proof that kafka-expose
    created it (issue 15, item 5: a label is no proof, anyone may set it): type LoadBalancer, the
    created-with record, fields owned by kafka-expose's field manager, and an ownerReference to a
    StatefulSet of `statefulsets` (the Service's namespace's) by uid. Only such a Service is ever
    updated, replaced or deleted."""
    if not is_managed(service) or spec_of(service).get("type") != "LoadBalancer":
        return None
    if CREATED_WITH not in annotations_of(service):
        return None
    entries = metadata_of(service).get("managedFields")
    if not any(isinstance(e, dict) and e.get("manager") == manager for e in entries or []):
        return None
    by_uid = {uid_of(s): s for s in statefulsets if uid_of(s)}
    for ref in metadata_of(service).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("kind") == "StatefulSet" and in_apps(ref.get("apiVersion")):
            owner = by_uid.get(ref.get("uid") if isinstance(ref.get("uid"), str) else None)
            if owner is not None and name_of(owner) == ref.get("name"):
                return owner
    return None
