"""The engine: for a Pod, a StatefulSet or a Service, decide what to change. Pure: dicts in, dicts out.

Over 400 lines, knowingly: the engine's one entry point and the per-kind steps it runs (pod,
template, Service) share the decision types; they split when a kind grows its own rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from webhook.core.certificates import TooOld, external_tls
from webhook.core.decision import BrokerPlan, Decision, Outcome
from webhook.core.flavors import Listen, detect_flavor, in_force
from webhook.core.hosts import BrokerIdentity, HostError, env_expression, render, split_pod_name
from webhook.core.images import FAMILIES, Family, container_family, looks_like_kafka
from webhook.core.listeners import ListenerError
from webhook.core.names import (
    ADVERTISED,
    CERTIFICATE,
    CONTAINER_PORT,
    EXPOSED_LABEL,
    EXTERNAL_DNS,
    FLAVOR,
    INTERNAL_LB_CLOUD,
    LISTENER,
    POD_INDEX_LABEL,
    SECURITY_PROTOCOL,
    SERVICE,
    SETTINGS_VERSION,
    STS_POD_NAME_LABEL,
    TLS_SECRET,
)
from webhook.core.podspec import (
    ShapeError,
    as_list,
    as_str,
    containers,
    copy_json,
    dict_at,
    editable_pod,
    literal_env,
    ports,
    set_container_port,
    str_map,
    used_ports,
)
from webhook.core.services import (
    is_managed,
    lead_to_listener,
    selected_broker,
    selects_kafka,
    service_name,
    single_broker_host,
)
from webhook.core.settings import Settings
from webhook.core.tls_listener import mount


class NotExposed(Exception):
    """A broker that is not exposed; `warn` when it should have been (the user must hear why)."""

    def __init__(self, reason: str, warn: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warn = warn


def mutate(obj: Mapping[str, Any], settings: Settings, namespace: str | None = None) -> Decision:
    """Decide what to change on a Pod, a StatefulSet or a Service. Never modifies `obj`."""
    kind = obj.get("kind") if isinstance(obj, Mapping) else None
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        return _unchanged(obj, "skipped", f"kind {kind!r} is not handled")
    try:
        return handler(obj, settings, namespace)
    except ShapeError as err:
        # A malformed object is never half-mutated: it is answered as it came, with the reason.
        return _unchanged(obj, "warned", f"cannot read {kind}: {err}", warn=True)


def _unchanged(obj: Mapping[str, Any], outcome: Outcome, reason: str, warn: bool = False) -> Decision:
    return Decision(
        kind=str(obj.get("kind", "")) if isinstance(obj, Mapping) else "",
        outcome=outcome,
        result=dict(obj) if isinstance(obj, Mapping) else {},  # shares its values with obj: read only
        reason=reason,
        warnings=(reason,) if warn else (),
    )


def _finish(
    kind: str, original: Mapping[str, Any], result: dict[str, Any], reason: str, plans: tuple[BrokerPlan, ...]
) -> Decision:
    outcome: Outcome = "mutated" if result != original else "unchanged"
    return Decision(kind=kind, outcome=outcome, result=result, reason=reason, plans=plans)


# ---------------------------------------------------------------------------------------------- pods


@dataclass(frozen=True)
class Broker:
    container_index: int
    family: Family


def find_broker(metadata: Mapping[str, Any], spec: Mapping[str, Any], settings: Settings) -> Broker | None:
    """The Kafka broker container of a pod (spec), or None if the pod is not Kafka."""
    labels = str_map(metadata.get("labels"), "metadata.labels")
    wanted = settings.match.pod_labels
    by_labels = bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())
    # The broker need not be the first container (JMX or exporter sidecars often come first).
    for index, container in enumerate(containers(spec)):
        family = container_family(container, settings)
        if family is not None:
            return Broker(index, family)
    if by_labels and containers(spec):
        # the container that looks like the broker, else the first (sidecars may come first)
        items = containers(spec)
        index = next((i for i, c in enumerate(items) if looks_like_kafka(c)), 0)
        return Broker(index, FAMILIES[settings.match.pod_labels_family])
    return None


def _roles(container: dict[str, Any], family: Family) -> str | None:
    if not family.reads_env:
        return None  # from its file: the runtime check in the image decides
    try:
        return literal_env(container, in_force(container, family, "process.roles"))
    except ShapeError:
        return None  # from a Secret or ConfigMap: the runtime check in the image decides


def pod_identity(obj: Mapping[str, Any], namespace: str | None) -> BrokerIdentity | None:
    """StatefulSet, ordinal and namespace of a pod, or None if it is not a StatefulSet pod."""
    metadata = dict_at(obj.get("metadata"), "metadata")
    labels = str_map(metadata.get("labels"), "metadata.labels")
    owners = [
        dict_at(o, "ownerReferences[]") for o in as_list(metadata.get("ownerReferences"), "ownerReferences")
    ]
    owner = next(
        (o for o in owners if o.get("kind") == "StatefulSet" and isinstance(o.get("name"), str)), None
    )
    name = metadata.get("name") or labels.get(STS_POD_NAME_LABEL)
    if owner is None and STS_POD_NAME_LABEL not in labels:
        return None
    if not isinstance(name, str):
        raise NotExposed("the pod has no name yet, so its host cannot be derived", warn=True)
    parts = split_pod_name(name)
    statefulset = owner["name"] if owner else (parts[0] if parts else None)
    ordinal = labels.get(POD_INDEX_LABEL)
    decimal = ordinal is not None and ordinal.isascii() and ordinal.isdigit()
    index = int(ordinal) if decimal and ordinal is not None else (parts[1] if parts else None)
    if statefulset is None or index is None:
        raise NotExposed(f"cannot tell the ordinal of pod {name!r}", warn=True)
    ns = namespace or metadata.get("namespace") or "default"
    return BrokerIdentity(statefulset, as_str(ns, "metadata.namespace"), name, index)


def _choose_port(spec: Mapping[str, Any], container: Mapping[str, Any], name: str, first: int) -> int:
    """A container port that no container of the pod uses; a port already named for our listener
    (ours from an earlier pass, or the chart's own external port) is reused."""
    for entry in ports(container):
        if entry.get("name") == name:
            return int(entry["containerPort"])
    used = used_ports(spec)
    port = first
    while port in used:
        port += 1
    if port > 65535:
        raise NotExposed("no free container port for the external listener", warn=True)
    return port


def port_name(listener: str) -> str:
    """The container port's name for a listener (an IANA_SVC_NAME: 15 characters, no `_`)."""
    return listener.lower().replace("_", "-")[:15].strip("-") or "external"


def expose(
    metadata: dict[str, Any],
    spec: dict[str, Any],
    settings: Settings,
    identity: BrokerIdentity,
    concrete: bool,
    broker: Broker | None = None,
    headless: str | None = None,
) -> BrokerPlan:
    """Edit a pod's (or pod template's) metadata and spec, by assigning new values to their fields
    (copy-on-write, see podspec.editable_pod); raise NotExposed with the reason.

    `concrete`: a real Pod (its host is checked and recorded); otherwise a StatefulSet template whose
    host is checked for every ordinal by the caller. `broker`: the caller's find_broker of the same pod.
    """
    broker = broker or find_broker(metadata, spec, settings)
    if broker is None:
        raise NotExposed("no Kafka broker container", warn=False)
    container = containers(spec)[broker.container_index]
    roles = _roles(container, broker.family)
    if roles is not None and "broker" not in roles:
        raise NotExposed(f"KRaft controller-only node (process.roles={roles})", warn=False)
    flavor = detect_flavor(spec, container, broker.family)
    if flavor is None:
        raise NotExposed(_unknown_layout(container, broker.family), warn=True)
    try:
        tls = external_tls(
            settings, identity.statefulset, str(container.get("image", "")), broker.family.name
        )
    except TooOld as err:
        raise NotExposed(str(err), warn=True) from None
    host = render(settings.host_template, identity, settings.domain) if concrete else ""
    listener = settings.listener
    expression, host_env = env_expression(settings.host_template, identity, settings.domain)
    listen = Listen(
        name=listener.name,
        host_expression=f"$({host_env[-1]['name']})",
        advertised_port=listener.port,
        container_port=0,
        security_protocol=listener.security_protocol,
        on_existing=settings.on_existing_listener,
        env=tuple(host_env),
        fallbacks=listener.fallback_names,
        headless=headless or _str_or_none(spec.get("subdomain")),
        tls=tls,
    )
    try:
        known_name = flavor.listener_name(container, broker.family, listen)
        name = port_name(known_name or listener.name)
        container_port = _choose_port(spec, container, name, listener.container_port or listener.port)
        protocol = flavor.apply(
            spec, container, broker.family, replace(listen, container_port=container_port)
        )
    except ListenerError as err:
        raise NotExposed(f"cannot add the {listener.name} listener: {err}", warn=True) from None
    set_container_port(container, name, container_port)
    if tls is not None:
        mount(spec, container, tls)
    plan = BrokerPlan(
        pod=identity.pod or "",
        namespace=identity.namespace,
        statefulset=identity.statefulset,
        ordinal=identity.ordinal,
        flavor=flavor.name,
        listener_name=known_name or listener.name,
        host=host or expression,
        advertised_port=listener.port,
        container_port=container_port,
        container_port_name=name,
        security_protocol=protocol or None,
        service_name=service_name(settings, identity) if concrete else "",
        tls=tls,
    )
    _record(metadata, plan, settings, known_name or _runtime_choice(settings), concrete)
    return plan


def _record(
    metadata: dict[str, Any], plan: BrokerPlan, settings: Settings, listener_choice: str, concrete: bool
) -> None:
    """Label the pod exposed and annotate what was decided (a template gets what holds for all)."""
    # new maps, not edits of the old ones (see podspec.editable_pod)
    metadata["labels"] = {**str_map(metadata.get("labels"), "metadata.labels"), EXPOSED_LABEL: "true"}
    annotations = metadata["annotations"] = dict(str_map(metadata.get("annotations"), "metadata.annotations"))
    annotations[FLAVOR] = plan.flavor
    annotations[SETTINGS_VERSION] = settings.version
    annotations[LISTENER] = listener_choice
    if concrete:
        annotations[ADVERTISED] = plan.advertised
        annotations[SERVICE] = plan.service_name
        annotations[CONTAINER_PORT] = str(plan.container_port)
        decided = "SSL or SASL_SSL, as the client listener" if plan.tls else "as the client listener"
        annotations[SECURITY_PROTOCOL] = plan.security_protocol or f"{decided} (decided at start)"
        if plan.tls is not None:
            annotations[CERTIFICATE] = plan.tls.certificate
            annotations[TLS_SECRET] = plan.tls.secret


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _runtime_choice(settings: Settings) -> str:
    fallbacks = ", ".join(settings.listener.fallback_names)
    return f"{settings.listener.name}, or the first free of {fallbacks} if the chart serves in-cluster on it (chosen at start)"


def _unknown_layout(container: Mapping[str, Any], family: Family) -> str:
    image = container.get("image")
    if not family.reads_env:
        return (
            f"unknown layout for image {image!r} (family {family.name}): no kafka-server-start.sh on its "
            "command line; if its ENTRYPOINT is kafka-server-start.sh, declare it in settings.match.images "
            "with `entrypoint`, or with the family that configures it"
        )
    if family.rule == "wurstmeister":
        return (
            f"image {image!r} (wurstmeister) is configured by legacy variables only (KAFKA_ADVERTISED_HOST_NAME, "
            "KAFKA_ADVERTISED_PORT, KAFKA_PORT): set KAFKA_ADVERTISED_LISTENERS and KAFKA_LISTENERS so the "
            "external listener can be added beside them"
        )
    return (
        f"unknown layout for image {image!r} (family {family.name}): no kafka-server-start.sh on its command "
        f"line, no prepared server.properties, no shell command that runs {', '.join(family.run_scripts)}, "
        f"no {' or '.join(family.env_names('advertised.listeners'))} env"
    )


def _mutate_pod(obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
    try:
        metadata_in = dict_at(obj.get("metadata"), "metadata")
        broker = find_broker(metadata_in, dict_at(obj.get("spec"), "spec"), settings)
        if broker is None:
            return _unchanged(obj, "skipped", "no Kafka broker container")
        identity = pod_identity(obj, namespace)
        if identity is None:
            return _unchanged(obj, "skipped", "not a StatefulSet pod")
        result = editable_pod(obj, broker.container_index)
        metadata = dict_at(result.get("metadata"), "metadata")
        spec = dict_at(result.get("spec"), "spec")
        plan = expose(metadata, spec, settings, identity, concrete=True, broker=broker)
    except (NotExposed, HostError) as err:
        warn = err.warn if isinstance(err, NotExposed) else True
        reason = err.reason if isinstance(err, NotExposed) else str(err)
        return _unchanged(obj, "warned" if warn else "skipped", reason, warn=warn)
    return _finish("Pod", obj, result, f"exposed as {plan.advertised}", (plan,))


# -------------------------------------------------------------------------------------- statefulsets


def _mutate_statefulset(obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
    """For `render`: expose the pod template, plan a Service per ordinal."""
    result = copy_json(dict(obj))
    metadata = dict_at(result.get("metadata"), "metadata")
    name = as_str(metadata.get("name"), "metadata.name")
    ns = as_str(namespace or metadata.get("namespace") or "default", "metadata.namespace")
    spec = dict_at(result.get("spec"), "spec")
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ShapeError("spec.replicas is not a non-negative integer")
    template = dict_at(spec.get("template"), "spec.template")
    template_meta = template.setdefault("metadata", {})
    dict_at(template_meta, "spec.template.metadata")
    template_spec = dict_at(template.get("spec"), "spec.template.spec")
    identity = BrokerIdentity(name, ns)
    try:
        # Every ordinal's host must be valid before anything is changed.
        hosts = [
            render(settings.host_template, identity.for_ordinal(i), settings.domain) for i in range(replicas)
        ]
        template_plan = expose(
            template_meta,
            template_spec,
            settings,
            identity,
            concrete=False,
            headless=_str_or_none(spec.get("serviceName")),
        )
    except (NotExposed, HostError) as err:
        warn = err.warn if isinstance(err, NotExposed) else True
        reason = err.reason if isinstance(err, NotExposed) else str(err)
        return _unchanged(obj, "warned" if warn else "skipped", reason, warn=warn)
    plans = tuple(
        BrokerPlan(
            **{
                **template_plan.__dict__,
                "pod": f"{name}-{i}",
                "ordinal": i,
                "host": hosts[i],
                "service_name": service_name(settings, identity.for_ordinal(i)),
            }
        )
        for i in range(replicas)
    )
    return _finish("StatefulSet", obj, result, f"exposed {replicas} broker(s)", plans)


# ------------------------------------------------------------------------------------------ services


def _mutate_service(obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
    """A chart's own LoadBalancer Service in front of brokers gets the internal-LB settings (and the
    broker's external-dns name when it fronts a single broker), so it cannot open a public LB."""
    if is_managed(obj):
        return _unchanged(obj, "skipped", "created by kafka-expose")
    spec = dict_at(obj.get("spec"), "spec")
    if spec.get("type") != "LoadBalancer":
        return _unchanged(obj, "skipped", "not a LoadBalancer Service")
    if not selects_kafka(obj, settings):
        return _unchanged(obj, "skipped", "does not select Kafka brokers")
    result = copy_json(dict(obj))
    metadata = dict_at(result.setdefault("metadata", {}), "metadata")
    annotations = str_map(metadata.setdefault("annotations", {}), "metadata.annotations")
    lb = settings.load_balancer
    annotations.update(lb.internal_annotations())
    ns = as_str(namespace or metadata.get("namespace") or "default", "metadata.namespace")
    host = single_broker_host(obj, settings, ns)
    result_spec = dict_at(result["spec"], "spec")
    if host and settings.on_existing_listener == "replace":
        # The controller adopts a chart's own per-broker LB instead of creating a second one. With
        # `replace` the broker's listener moves to our name and port: the LB follows it (our name,
        # the LB port leading to the port named for our listener), so the name resolves to an LB
        # that leads to where the broker listens. With `keep` the chart's access is left as built.
        annotations[EXTERNAL_DNS] = host
        result_spec["ports"] = lead_to_listener(
            as_list(result_spec.get("ports"), "spec.ports"),
            settings.listener.port,
            port_name(settings.listener.name),
        )
    elif host and EXTERNAL_DNS not in annotations:
        annotations[EXTERNAL_DNS] = host
    annotations[INTERNAL_LB_CLOUD] = lb.cloud
    if lb.load_balancer_class and "loadBalancerClass" not in result_spec:
        result_spec["loadBalancerClass"] = lb.load_balancer_class
    if lb.source_ranges and not result_spec.get("loadBalancerSourceRanges"):
        result_spec["loadBalancerSourceRanges"] = list(lb.source_ranges)
    broker = selected_broker(obj)
    reason = f"internal load balancer for {broker}" if broker else "internal load balancer for Kafka brokers"
    return _finish("Service", obj, result, reason, ())


_HANDLERS = {"Pod": _mutate_pod, "StatefulSet": _mutate_statefulset, "Service": _mutate_service}
