"""What the controller should do in one namespace: pure planning over the objects it observed.

The controller reads (exposed broker pods, StatefulSets, Services, whether the namespace opted in),
calls `plan_namespace`, and carries out the actions it gets back. Nothing here does I/O, so every
lifecycle rule is a unit test:

- a per-broker Service lives as long as its *slot* (StatefulSet + ordinal < replicas), not its pod:
  a restarting pod keeps its Service, and so its load balancer address;
- scaling down removes the Services of the removed ordinals (after `scaleDownGraceSeconds`);
- deleting the StatefulSet removes them through their ownerReference (the garbage collector);
- a namespace opting out removes them, unless `keepOnOptOut`;
- a Service kafka-expose did not create is never changed nor deleted, whatever its name;
- settings a cloud reads only when it creates the load balancer (`loadBalancerClass`, the
  IMMUTABLE_ANNOTATIONS) are recorded at creation; a change replaces the Service only when
  `replaceOnImmutableChange` says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from webhook.core.clouds import IMMUTABLE_ANNOTATIONS
from webhook.core.decision import BrokerPlan
from webhook.core.expose import NotExposed, mutate, pod_identity
from webhook.core.hosts import HostError, check_dns_name, split_pod_name
from webhook.core.names import (
    ADVERTISED,
    CONTAINER_PORT,
    CREATED_WITH,
    EXPOSED_LABEL,
    FIELD_MANAGER,
    FLAVOR,
    LOAD_BALANCER,
    OPT_IN_LABEL,
    OPT_IN_VALUE,
    POD_LABEL,
    SECURITY_PROTOCOL,
    SECURITY_PROTOCOLS,
    SERVICE,
    STATEFULSET_LABEL,
)
from webhook.core.podspec import ShapeError, copy_json
from webhook.core.services import broker_service, is_managed, selected_broker
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

# ------------------------------------------------------------------------------------------ actions
# One small frozen dataclass per thing the controller can do; it dispatches with `match`. `kind` is
# the name in logs and in the actions metric.


@dataclass(frozen=True, kw_only=True)
class _Action:
    kind: ClassVar[str]
    namespace: str
    service: str  # the Service name the action is about
    reason: str
    statefulset: str | None = None  # where the Event goes


@dataclass(frozen=True, kw_only=True)
class Create(_Action):
    """The slot's Service is missing: create it (never over an existing object)."""

    kind: ClassVar[str] = "create"
    desired: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Update(_Action):
    """Our Service drifted from the plan: server-side apply our fields, conditioned on the version."""

    kind: ClassVar[str] = "update"
    desired: dict[str, Any]
    uid: str | None
    resource_version: str | None
    convert_ownership: bool = False  # our create's field ownership must become "Apply" first


@dataclass(frozen=True, kw_only=True)
class Replace(_Action):
    """An immutable setting changed and the settings allow replacing: delete, then create."""

    kind: ClassVar[str] = "replace"
    desired: dict[str, Any]
    uid: str | None


@dataclass(frozen=True, kw_only=True)
class Delete(_Action):
    """Our Service outlived its slot (scale-down, opt-out, orphaned)."""

    kind: ClassVar[str] = "delete"
    uid: str | None


@dataclass(frozen=True, kw_only=True)
class Wait(_Action):
    """A deletion waits for the scale-down grace period: reconcile again after `delay`."""

    kind: ClassVar[str] = "wait"
    uid: str | None
    delay: float


@dataclass(frozen=True, kw_only=True)
class Conflict(_Action):
    """The name is taken by a Service we did not create (or by another broker's): report."""

    kind: ClassVar[str] = "conflict"
    uid: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChartLoadBalancer(_Action):
    """The chart already has a LoadBalancer for this broker: do not add a second one."""

    kind: ClassVar[str] = "chart-lb"
    uid: str | None


@dataclass(frozen=True, kw_only=True)
class ImmutableKept(_Action):
    """An immutable setting changed, the Service keeps its creation values: report."""

    kind: ClassVar[str] = "immutable-kept"
    uid: str | None


@dataclass(frozen=True, kw_only=True)
class ReportAddress(_Action):
    """The broker pod's load-balancer annotation differs from the Service's address."""

    kind: ClassVar[str] = "report-address"
    pod: str
    pod_uid: str | None
    address: str | None  # None: remove the annotation


@dataclass(frozen=True, kw_only=True)
class Unexposed(_Action):
    """A broker pod was admitted without kafka-expose (webhook unreachable): report."""

    kind: ClassVar[str] = "unexposed"
    pod: str
    pod_uid: str | None


Action = (
    Create
    | Update
    | Replace
    | Delete
    | Wait
    | Conflict
    | ChartLoadBalancer
    | ImmutableKept
    | ReportAddress
    | Unexposed
)
A = TypeVar("A", bound=_Action)


@dataclass(frozen=True)
class NamespaceState:
    """What the controller observed in one namespace (raw objects as the API server sent them)."""

    namespace: str
    opted_in: bool
    pods: Sequence[Mapping[str, Any]] = ()  # pods labelled kafka-expose.io/exposed=true
    statefulsets: Sequence[Mapping[str, Any]] = ()
    services: Sequence[Mapping[str, Any]] = ()  # every Service of the namespace
    pending_deletions: Mapping[str, float] = field(default_factory=dict)  # name -> first seen removable
    now: float = 0.0
    # pods matched by unexposed_pod_selectors: broker pods without the exposed label
    unexposed_pods: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class NamespacePlan:
    actions: tuple[Action, ...]
    pending_deletions: dict[str, float]  # to pass back in the next NamespaceState

    def of(self, kind: type[A]) -> list[A]:
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def requeue_after(self) -> float | None:
        delays = [a.delay for a in self.of(Wait)]
        return min(delays) if delays else None


# ------------------------------------------------------------------------------------- small readers


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def _spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return _strings(_meta(obj).get("labels"))


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return _strings(_meta(obj).get("annotations"))


def name_of(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name") or "")


def uid_of(obj: Mapping[str, Any]) -> str | None:
    uid = _meta(obj).get("uid")
    return uid if isinstance(uid, str) else None


def is_opted_in(namespace: Mapping[str, Any] | None) -> bool:
    """A namespace opts in with the label `kafka-expose.io/inject: enabled` (as the webhook's selector)."""
    return namespace is not None and labels_of(namespace).get(OPT_IN_LABEL) == OPT_IN_VALUE


def replicas_of(statefulset: Mapping[str, Any]) -> int:
    replicas = _spec(statefulset).get("replicas", 1)
    return replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1


def ordinals_of(statefulset: Mapping[str, Any]) -> range:
    """The ordinals of the StatefulSet's slots: `spec.ordinals.start` (default 0) and `replicas` on."""
    ordinals = _spec(statefulset).get("ordinals")
    start = ordinals.get("start", 0) if isinstance(ordinals, dict) else 0
    start = start if isinstance(start, int) and not isinstance(start, bool) and start >= 0 else 0
    return range(start, start + max(0, replicas_of(statefulset)))


def load_balancer_address(service: Mapping[str, Any]) -> str | None:
    """The first address the cloud assigned (status.loadBalancer.ingress[].ip or hostname)."""
    status = service.get("status")
    balancer = status.get("loadBalancer") if isinstance(status, dict) else None
    ingress = balancer.get("ingress") if isinstance(balancer, dict) else None
    for entry in ingress if isinstance(ingress, list) else []:
        if isinstance(entry, dict):
            for key in ("ip", "hostname"):
                if isinstance(entry.get(key), str) and entry[key]:
                    return str(entry[key])
    return None


# ------------------------------------------------------------------------------- plan from the pod


def plan_from_pod(
    pod: Mapping[str, Any], settings: Settings | None = None, namespace: str | None = None
) -> BrokerPlan | None:
    """The exposure plan of a pod the webhook exposed, or None.

    First from what the webhook recorded on the pod (`kafka-expose.io/advertised`, `.../service`,
    `.../container-port`): that is what the broker really advertises and listens on, even after the
    settings changed. A pod created from a template exposed by `render` has the label but not those
    annotations: its plan is recomputed with the core (idempotent on an exposed pod).
    """
    if labels_of(pod).get(EXPOSED_LABEL) != "true":
        return None
    ns = namespace or _meta(pod).get("namespace") or "default"
    if not isinstance(ns, str):
        return None
    try:
        identity = pod_identity(pod, ns)
    except (NotExposed, ShapeError):
        return None
    if identity is None or identity.pod is None:
        return None
    recorded = _plan_from_annotations(pod, identity.pod, ns, identity.statefulset, identity.ordinal)
    if recorded is not None or settings is None:
        return recorded
    decision = mutate({**pod, "kind": "Pod"}, settings, ns)  # items of a list carry no kind
    return decision.plans[0] if decision.plans else None


def _plan_from_annotations(
    pod: Mapping[str, Any], name: str, namespace: str, statefulset: str, ordinal: int | None
) -> BrokerPlan | None:
    annotations = annotations_of(pod)
    advertised = annotations.get(ADVERTISED, "")
    service = annotations.get(SERVICE, "")
    container_port_text = annotations.get(CONTAINER_PORT, "")
    listener, sep, rest = advertised.partition("://")
    host, colon, port_text = rest.rpartition(":")
    if not (sep and colon and listener and service and port_text.isdigit() and container_port_text.isdigit()):
        return None
    try:
        check_dns_name(host)
    except HostError:
        return None
    container_port = int(container_port_text)
    protocol = annotations.get(SECURITY_PROTOCOL)
    return BrokerPlan(
        pod=name,
        namespace=namespace,
        statefulset=statefulset,
        ordinal=ordinal,
        flavor=annotations.get(FLAVOR, ""),
        listener_name=listener,
        host=host,
        advertised_port=int(port_text),
        container_port=container_port,
        container_port_name=_port_name(pod, container_port, listener),
        security_protocol=protocol if protocol in SECURITY_PROTOCOLS else None,
        service_name=service,
    )


def _port_name(pod: Mapping[str, Any], container_port: int, listener: str) -> str:
    """The name the webhook gave the container port (engine.port_name of the listener it used)."""
    containers = _spec(pod).get("containers")
    for container in containers if isinstance(containers, list) else []:
        ports = container.get("ports") if isinstance(container, dict) else None
        for entry in ports if isinstance(ports, list) else []:
            if (
                isinstance(entry, dict)
                and entry.get("containerPort") == container_port
                and isinstance(entry.get("name"), str)
                and entry["name"]
            ):
                return str(entry["name"])
    return listener.lower().replace("_", "-")[:15]


# ------------------------------------------------------------------------------- desired Services


def immutable_settings(service: Mapping[str, Any]) -> dict[str, Any]:
    """What a cloud reads only when it creates the load balancer: `loadBalancerClass` and the
    IMMUTABLE_ANNOTATIONS, as set on `service`."""
    record: dict[str, Any] = {
        "annotations": {
            k: v for k, v in sorted(annotations_of(service).items()) if k in IMMUTABLE_ANNOTATIONS
        }
    }
    balancer_class = _spec(service).get("loadBalancerClass")
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
                "annotations": _strings(record.get("annotations", {})),
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
    entries = _meta(service).get("managedFields")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("manager") != manager or entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1")
        if not isinstance(fields, dict):
            continue
        metadata = _dict(fields.get("f:metadata"))
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
        spec = _dict(fields.get("f:spec"))
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
    meta, spec = _meta(service), _spec(service)
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
    entries = _meta(service).get("managedFields")
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
        r.get("uid") for r in _meta(observed).get("ownerReferences") or [] if isinstance(r, dict)
    }
    for ref in _meta(desired).get("ownerReferences") or []:
        if ref.get("uid") not in observed_owners:
            reasons.append(f"ownerReference to {ref.get('kind')} {ref.get('name')}")
    want, have = _spec(desired), _spec(observed)
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
    if has_create_ownership(observed, manager):
        reasons.append("field ownership of the create")
    return reasons


# --------------------------------------------------------------------------------------- planning


def _owner_uid(pod: Mapping[str, Any]) -> str | None:
    for ref in _meta(pod).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("kind") == "StatefulSet":
            uid = ref.get("uid")
            return uid if isinstance(uid, str) else None
    return None


def is_chart_load_balancer(service: Mapping[str, Any], pod: str) -> bool:
    """A LoadBalancer Service kafka-expose did not create whose selector pins exactly this broker pod
    (`statefulset.kubernetes.io/pod-name`, or incubator/kafka 0.9's `pod` label)."""
    return (
        not is_managed(service)
        and _spec(service).get("type") == "LoadBalancer"
        and selected_broker(service) == pod
    )


def chart_load_balancer(services: Sequence[Mapping[str, Any]], pod: str) -> Mapping[str, Any] | None:
    return next((s for s in sorted(services, key=name_of) if is_chart_load_balancer(s, pod)), None)


def unexposed_pod_selectors(
    statefulsets: Sequence[Mapping[str, Any]], settings: Settings, namespace: str
) -> dict[str, str]:
    """StatefulSet name -> label selector of its pods that lack the exposed label, for every
    StatefulSet whose pods the webhook should expose: the core would expose its template, and the
    template is not exposed already (by `render`: then every pod carries the label). Only
    `matchLabels` selectors (what the charts use); others are not checked."""
    selectors: dict[str, str] = {}
    for statefulset in statefulsets:
        template = _dict(_spec(statefulset).get("template"))
        if labels_of(template).get(EXPOSED_LABEL) == "true":
            continue
        selector = _dict(_spec(statefulset).get("selector"))
        match = _strings(selector.get("matchLabels"))
        if not match or set(selector) - {"matchLabels"}:
            continue
        try:
            decision = mutate(
                {**statefulset, "kind": "StatefulSet"}, settings, namespace
            )  # list items: no kind
        except Exception:  # the core answers malformed objects itself; never let one stop the others
            continue
        if decision.plans:
            terms = [f"{key}={value}" for key, value in sorted(match.items())]
            selectors[name_of(statefulset)] = ",".join([*terms, f"!{EXPOSED_LABEL}"])
    return selectors


def _unexposed(state: NamespaceState, statefulsets: Mapping[str, Mapping[str, Any]]) -> list[Unexposed]:
    actions = []
    by_uid = {uid_of(s): s for s in statefulsets.values() if uid_of(s)}
    for pod in sorted(state.unexposed_pods, key=name_of):
        if _meta(pod).get("deletionTimestamp") or labels_of(pod).get(EXPOSED_LABEL) == "true":
            continue
        owner = by_uid.get(_owner_uid(pod))
        if owner is None:
            continue
        name, sts = name_of(pod), name_of(owner)
        actions.append(
            Unexposed(
                namespace=state.namespace,
                service="",
                reason=f"broker pod {name} is not exposed (it started before the namespace opted in, the "
                "webhook was unreachable, or it warned at admission): it advertises no external "
                f"listener and gets no load balancer; delete it to have StatefulSet {sts} recreate it "
                "through the webhook",
                statefulset=sts,
                pod=name,
                pod_uid=uid_of(pod),
            )
        )
    return actions


def plan_namespace(state: NamespaceState, settings: Settings) -> NamespacePlan:
    """The actions that make the namespace's per-broker Services match its broker slots."""
    ns = state.namespace
    by_name = {name_of(s): s for s in state.services}
    statefulsets = {name_of(s): s for s in state.statefulsets}
    applies: list[Action] = []
    reports: list[Action] = []
    removals: list[Action] = []
    slots: dict[tuple[str, int], str] = {}  # (statefulset, ordinal) -> planned Service name
    claimed: dict[str, str] = {}  # planned Service name -> pod

    for pod in sorted(state.pods, key=name_of):
        plan = plan_from_pod(pod, settings, ns)
        if plan is None or plan.statefulset is None or plan.ordinal is None or not plan.service_name:
            continue
        owner = statefulsets.get(plan.statefulset)
        if owner is None or (_owner_uid(pod) not in (None, uid_of(owner))):
            continue  # the StatefulSet is gone (the garbage collector follows) or was replaced
        if plan.ordinal not in ordinals_of(owner):
            continue  # being scaled away
        sts = plan.statefulset
        if plan.service_name in claimed:
            applies.append(
                Conflict(
                    namespace=ns,
                    service=plan.service_name,
                    reason=f"Service {plan.service_name} is planned for both {claimed[plan.service_name]} and "
                    f"{plan.pod}: the service name template must contain {{pod}} or {{ordinal}}",
                    statefulset=sts,
                )
            )
            continue
        claimed[plan.service_name] = plan.pod
        slots[(sts, plan.ordinal)] = plan.service_name
        existing = by_name.get(plan.service_name)
        target: Mapping[str, Any] | None = None  # the load balancer of this broker, if any

        if existing is not None and _meta(existing).get("deletionTimestamp"):
            continue  # being deleted (a cloud finalizer): recreated once it is gone
        if not state.opted_in:
            # Nothing is created or repaired; a Service kept on opt-out still reports its address.
            keep = settings.controller.keep_on_opt_out
            target = existing if existing is not None and is_managed(existing) and keep else None
        elif (chart := chart_load_balancer(state.services, plan.pod)) is not None and (
            existing is None or not is_managed(existing)
        ):
            # The chart has its own LoadBalancer for this broker (often under the very name we plan).
            target = chart
            applies.append(
                ChartLoadBalancer(
                    namespace=ns,
                    service=name_of(chart),
                    reason=f"broker {plan.pod} uses the chart's own load balancer {name_of(chart)}: "
                    "no second one is created",
                    statefulset=sts,
                    uid=uid_of(chart),
                )
            )
        elif existing is not None and not is_managed(existing):
            applies.append(
                Conflict(
                    namespace=ns,
                    service=plan.service_name,
                    reason=f"Service {plan.service_name} already exists and was not created by kafka-expose: "
                    f"left as it is, broker {plan.pod} gets no load balancer from kafka-expose",
                    statefulset=sts,
                    uid=uid_of(existing),
                )
            )
        elif existing is not None and (
            labels_of(existing).get(STATEFULSET_LABEL, sts) != sts
            or labels_of(existing).get(POD_LABEL, plan.pod) != plan.pod
        ):
            applies.append(
                Conflict(
                    namespace=ns,
                    service=plan.service_name,
                    reason=f"Service {plan.service_name} belongs to broker {labels_of(existing).get(POD_LABEL)}, "
                    f"not {plan.pod}: left as it is",
                    statefulset=sts,
                    uid=uid_of(existing),
                )
            )
        elif existing is None:
            applies.append(
                Create(
                    namespace=ns,
                    service=plan.service_name,
                    reason=f"LoadBalancer Service {plan.service_name} for broker {plan.pod} ({plan.advertised})",
                    statefulset=sts,
                    desired=desired_service(plan, settings, owner),
                )
            )
        else:
            target = existing
            applies.extend(_keep_in_line(existing, desired_service(plan, settings, owner), settings, sts))

        address = load_balancer_address(target) if target is not None else None
        pod_annotations = annotations_of(pod)
        if address != pod_annotations.get(LOAD_BALANCER) and not _meta(pod).get("deletionTimestamp"):
            reports.append(
                ReportAddress(
                    namespace=ns,
                    service=name_of(target) if target is not None else plan.service_name,
                    reason=f"broker {plan.pod} is reachable at {address}"
                    if address
                    else f"broker {plan.pod} has no load balancer address",
                    statefulset=sts,
                    pod=plan.pod,
                    pod_uid=uid_of(pod),
                    address=address,
                )
            )

    pending: dict[str, float] = {}
    grace = settings.controller.scale_down_grace_seconds
    for service in sorted(state.services, key=name_of):
        name = name_of(service)
        if not is_managed(service) or _meta(service).get("deletionTimestamp"):
            continue
        labels = labels_of(service)
        sts_name = labels.get(STATEFULSET_LABEL)
        parts = split_pod_name(labels.get(POD_LABEL, ""))
        owner = statefulsets.get(sts_name) if sts_name else None
        event_to, uid = (sts_name if owner else None), uid_of(service)
        if not state.opted_in:
            if not settings.controller.keep_on_opt_out:
                removals.append(
                    Delete(
                        namespace=ns,
                        service=name,
                        reason=f"namespace {ns} opted out of kafka-expose",
                        statefulset=event_to,
                        uid=uid,
                    )
                )
            continue
        if name in claimed:
            continue
        reason: str | None = None
        immediate = False
        if owner is None:
            if _meta(service).get("ownerReferences"):
                continue  # the StatefulSet was deleted: the garbage collector removes its Services
            reason = f"StatefulSet {sts_name} no longer exists"
        elif parts is None or parts[0] != sts_name:
            continue  # not one of our slot Services; never guess
        elif parts[1] not in ordinals_of(owner):
            reason = f"StatefulSet {sts_name} was scaled down to {replicas_of(owner)}"
        elif slots.get((sts_name, parts[1]), name) != name:
            reason = f"broker {labels.get(POD_LABEL)} now uses Service {slots[(sts_name, parts[1])]}"
            immediate = True
        if reason is None:
            continue  # the slot lives on: its pod is restarting or not exposed right now
        since = state.pending_deletions.get(name, state.now)
        if immediate or state.now - since >= grace:
            removals.append(Delete(namespace=ns, service=name, reason=reason, statefulset=event_to, uid=uid))
        else:
            pending[name] = since
            delay = since + grace - state.now
            removals.append(
                Wait(namespace=ns, service=name, reason=reason, statefulset=event_to, uid=uid, delay=delay)
            )
    unexposed = _unexposed(state, statefulsets) if state.opted_in else []
    return NamespacePlan(tuple(applies + reports + unexposed + removals), pending)


def _keep_in_line(
    existing: Mapping[str, Any], desired: dict[str, Any], settings: Settings, statefulset: str
) -> list[Action]:
    """Actions for a Service we manage: replace it, report a kept immutable change, or repair drift."""
    ns, name = str(_meta(existing).get("namespace") or desired["metadata"]["namespace"]), name_of(existing)
    actions: list[Action] = []
    recorded = recorded_immutable_settings(existing)
    wanted = immutable_settings(desired)
    if recorded != wanted:
        change = f"created with {_encode(recorded)}, the settings now ask for {_encode(wanted)}"
        if settings.controller.replace_on_immutable_change:
            return [
                Replace(
                    namespace=ns,
                    service=name,
                    reason=f"settings the cloud reads only at creation changed ({change}): replacing Service "
                    f"{name} (its load balancer address changes)",
                    statefulset=statefulset,
                    desired=desired,
                    uid=uid_of(existing),
                )
            ]
        actions.append(
            ImmutableKept(
                namespace=ns,
                service=name,
                reason=f"Service {name} keeps its load balancer: {change}; set controller.replaceOnImmutableChange "
                "to replace it",
                statefulset=statefulset,
                uid=uid_of(existing),
            )
        )
        desired = with_immutable_settings(desired, recorded)
    reasons = drift(desired, existing)
    if reasons:
        actions.append(
            Update(
                namespace=ns,
                service=name,
                reason=f"Service {name} differs from the plan: {', '.join(reasons)}",
                statefulset=statefulset,
                desired=desired,
                uid=uid_of(existing),
                resource_version=str(_meta(existing).get("resourceVersion") or "") or None,
                convert_ownership=has_create_ownership(existing),
            )
        )
    return actions
