"""What the controller should do in one namespace: pure planning over the objects it observed.

The controller reads (exposed broker pods, StatefulSets, Services, whether the namespace opted in),
calls `plan_namespace`, and carries out the actions it gets back. Nothing here does I/O, so every
lifecycle rule is a unit test:

- a per-broker Service lives as long as its *slot* (StatefulSet + ordinal < replicas), not its pod:
  a restarting pod keeps its Service, and so its load balancer address;
- scaling down removes the Services of the removed ordinals (after `scaleDownGraceSeconds`);
- deleting the StatefulSet removes them through their ownerReference (the garbage collector);
- a namespace opting out removes them, unless `keepOnOptOut`;
- a broker's names come from the settings and its identity (a pod its StatefulSet controls), never
  from what a tenant can write on the pod (`plan_from_pod`);
- a Service kafka-expose did not create is never changed nor deleted, whatever its name or labels:
  acting needs positive proof (`proven_owner`);
- creates stop at `policy.maxLoadBalancersPerNamespace` (`_capped`);
- the audit reports, and if asked repairs, non-compliant Services others made (`audit_services`);
- settings a cloud reads only when it creates the load balancer (`loadBalancerClass`, the
  IMMUTABLE_ANNOTATIONS) are recorded at creation; a change replaces the Service only when
  `replaceOnImmutableChange` says so.

Its parts live beside it: the actions and the snapshot in core/actions.py, drift and ownership of
fields in core/drift.py, the audit in core/audit.py, the object readers in core/objects.py. What
stays is the planner itself: which pod is a broker of which slot, and what each slot needs; over
400 lines still, because the Certificates (tls) are planned with the Services they name.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from webhook.core import policy
from webhook.core.actions import (
    Action,
    AnnotationsIgnored,
    ApplyCertificate,
    CapReached,
    CertificateConflict,
    ChartLoadBalancer,
    Conflict,
    Create,
    Delete,
    DeleteCertificate,
    ImmutableKept,
    NamespacePlan,
    NamespaceState,
    Replace,
    ReportAddress,
    RestartBroker,
    Unexposed,
    Update,
    Wait,
)
from webhook.core.audit import audit_services
from webhook.core.certificates import certificate_name, planned_objects
from webhook.core.decision import BrokerPlan
from webhook.core.drift import (
    _encode,
    desired_service,
    drift,
    has_create_ownership,
    immutable_settings,
    recorded_immutable_settings,
    with_immutable_settings,
)
from webhook.core.expose import mutate
from webhook.core.hosts import split_pod_name
from webhook.core.names import (
    ADVERTISED,
    CERTIFICATE,
    CONTAINER_PORT,
    EXPOSED_LABEL,
    LOAD_BALANCER,
    OPT_IN_LABEL,
    OPT_IN_VALUE,
    POD_INDEX_LABEL,
    POD_LABEL,
    SERVICE,
    STS_POD_NAME_LABEL,
)
from webhook.core.objects import (
    annotations_of,
    as_dict,
    labels_of,
    metadata_of,
    name_of,
    spec_of,
    string_map,
    uid_of,
)
from webhook.core.services import in_apps, is_managed, proven_owner, selected_broker
from webhook.core.settings import Settings

# ------------------------------------------------------------------------------------- small readers


def is_opted_in(namespace: Mapping[str, Any] | None) -> bool:
    """A namespace opts in with the label `kafka-expose.io/inject: enabled` (as the webhook's selector)."""
    return namespace is not None and labels_of(namespace).get(OPT_IN_LABEL) == OPT_IN_VALUE


def replicas_of(statefulset: Mapping[str, Any]) -> int:
    replicas = spec_of(statefulset).get("replicas", 1)
    return replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1


def ordinals_of(statefulset: Mapping[str, Any]) -> range:
    """The ordinals of the StatefulSet's slots: `spec.ordinals.start` (default 0) and `replicas` on."""
    ordinals = spec_of(statefulset).get("ordinals")
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
# Pod labels, annotations, ownerReferences and names are written by whoever may create pods in the
# namespace (issue 15, item 1): none is authority. A broker's names come only from the settings (the
# namespace's effective ones) and the pod's identity, and only for a pod a real StatefulSet controls.


def controlling_statefulset(
    pod: Mapping[str, Any], statefulsets: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The StatefulSet of `statefulsets` (the pod's namespace's, as listed) that controls the pod: its
    ownerReference with `controller: true` names a StatefulSet whose uid and name match."""
    for ref in metadata_of(pod).get("ownerReferences") or []:
        if not isinstance(ref, dict) or ref.get("controller") is not True:
            continue
        if ref.get("kind") != "StatefulSet" or not in_apps(ref.get("apiVersion")):
            return None
        return next(
            (s for s in statefulsets if uid_of(s) == ref.get("uid") and name_of(s) == ref.get("name")), None
        )
    return None


def plan_from_pod(
    pod: Mapping[str, Any], owner: Mapping[str, Any], settings: Settings, namespace: str
) -> BrokerPlan | None:
    """The exposure plan of a broker pod of `owner` (its controlling StatefulSet), or None.

    Derived as the webhook derives it (`mutate`, idempotent on an exposed pod): a broker by the
    webhook's own rules, its host and Service name from the settings and its identity (namespace,
    StatefulSet, ordinal). The pod's name must be `<statefulset>-<ordinal>` for an ordinal of the
    StatefulSet, its pod-index label (if any) that ordinal, and its container must have the port
    kafka-expose named, with the number planned. What the webhook recorded in annotations is never
    read here (see `recorded_differences`)."""
    if labels_of(pod).get(EXPOSED_LABEL) != "true":
        return None
    name, sts = name_of(pod), name_of(owner)
    parts = split_pod_name(name)
    if parts is None or parts[0] != sts or parts[1] not in ordinals_of(owner):
        return None
    index = labels_of(pod).get(POD_INDEX_LABEL)
    if index is not None and index != str(parts[1]):
        return None
    try:
        decision = mutate({**pod, "kind": "Pod"}, settings, namespace)  # items of a list carry no kind
    except Exception:  # the core answers malformed objects itself; never let one stop the others
        return None
    plan = decision.plans[0] if decision.plans else None
    if plan is None or (plan.statefulset, plan.ordinal, plan.pod) != (sts, parts[1], name):
        return None
    if not _has_port(pod, plan.container_port_name, plan.container_port):
        return None  # the broker does not listen where the Service would send clients
    return plan


def _has_port(pod: Mapping[str, Any], port_name: str, number: int) -> bool:
    containers = spec_of(pod).get("containers")
    for container in containers if isinstance(containers, list) else []:
        ports = container.get("ports") if isinstance(container, dict) else None
        for entry in ports if isinstance(ports, list) else []:
            if isinstance(entry, dict) and entry.get("name") == port_name:
                return bool(entry.get("containerPort") == number)
    return False


def recorded_differences(pod: Mapping[str, Any], plan: BrokerPlan) -> list[str]:
    """Where the pod's kafka-expose annotations disagree with the derived plan (forged or edited, or
    the settings changed since the pod was admitted): said to the user, never followed."""
    annotations = annotations_of(pod)
    recorded = {
        ADVERTISED: plan.advertised,
        SERVICE: plan.service_name,
        CONTAINER_PORT: str(plan.container_port),
    }
    return [
        f"{key}={annotations[key]!r} (derived: {value!r})"
        for key, value in recorded.items()
        if key in annotations and annotations[key] != value
    ]


# --------------------------------------------------------------------------------------- planning


def is_chart_load_balancer(service: Mapping[str, Any], pod: str) -> bool:
    """A LoadBalancer Service kafka-expose did not create whose selector pins exactly this broker pod
    (`statefulset.kubernetes.io/pod-name`, or incubator/kafka 0.9's `pod` label)."""
    return (
        not is_managed(service)
        and spec_of(service).get("type") == "LoadBalancer"
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
        template = as_dict(spec_of(statefulset).get("template"))
        if labels_of(template).get(EXPOSED_LABEL) == "true":
            continue
        selector = as_dict(spec_of(statefulset).get("selector"))
        match = string_map(selector.get("matchLabels"))
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
    for pod in sorted(state.unexposed_pods, key=name_of):
        if metadata_of(pod).get("deletionTimestamp") or labels_of(pod).get(EXPOSED_LABEL) == "true":
            continue
        owner = controlling_statefulset(pod, list(statefulsets.values()))
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
    slots: dict[tuple[str, int], str] = {}  # (statefulset, ordinal) -> planned Service name
    claimed: dict[str, str] = {}  # planned Service name -> pod

    for pod in sorted(state.pods, key=name_of):
        # No controlling StatefulSet (gone, replaced, or a forged ownerReference), not a broker by the
        # webhook's rules, or an ordinal being scaled away: nothing for this pod.
        owner = controlling_statefulset(pod, state.statefulsets)
        plan = plan_from_pod(pod, owner, settings, ns) if owner is not None else None
        if owner is None or plan is None or plan.ordinal is None or not plan.service_name:
            continue
        sts = name_of(owner)
        if (differences := recorded_differences(pod, plan)) and not metadata_of(pod).get("deletionTimestamp"):
            reports.append(
                AnnotationsIgnored(
                    namespace=ns,
                    service=plan.service_name,
                    reason=f"broker pod {plan.pod}'s kafka-expose annotations are not followed: "
                    f"{'; '.join(differences)}; its Service publishes {plan.host} (delete the pod to have "
                    "it advertise that name again)",
                    statefulset=sts,
                    pod=plan.pod,
                    pod_uid=uid_of(pod),
                )
            )
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
        slot = _slot_actions(state, settings, plan, owner, by_name)
        if slot is None:
            continue
        actions, target = slot
        applies.extend(actions)
        if (report := _address_report(ns, pod, plan, target, sts)) is not None:
            reports.append(report)

    removals, pending = _removals(state, settings, claimed, slots)
    unexposed = _unexposed(state, statefulsets) if state.opted_in else []
    audit = audit_services(state, settings) if state.opted_in else []
    certificates = _certificates(state, settings, statefulsets)  # encrypted external listeners
    return NamespacePlan(
        tuple(certificates + _capped(applies, state, settings) + reports + unexposed + audit + removals),
        pending,
    )


def _slot_actions(
    state: NamespaceState,
    settings: Settings,
    plan: BrokerPlan,
    owner: Mapping[str, Any],
    by_name: Mapping[str, Mapping[str, Any]],
) -> tuple[list[Action], Mapping[str, Any] | None] | None:
    """What one broker's slot needs (create, keep in line, use the chart's LB, or a conflict), and
    the load balancer that serves it, if any; None while its Service is being deleted (nothing to
    do or report until it is gone)."""
    ns, sts = state.namespace, name_of(owner)
    actions: list[Action] = []
    existing = by_name.get(plan.service_name)
    existing_owner = proven_owner(existing, state.statefulsets) if existing is not None else None
    ours = existing_owner is not None
    target: Mapping[str, Any] | None = None  # the load balancer of this broker, if any

    if existing is not None and metadata_of(existing).get("deletionTimestamp"):
        return None  # being deleted (a cloud finalizer): recreated once it is gone
    if not state.opted_in:
        # Nothing is created or repaired; a Service kept on opt-out still reports its address.
        keep = settings.controller.keep_on_opt_out
        target = existing if ours and keep else None
    elif (chart := chart_load_balancer(state.services, plan.pod)) is not None and not ours:
        # The chart has its own LoadBalancer for this broker (often under the very name we plan).
        target = chart
        actions.append(
            ChartLoadBalancer(
                namespace=ns,
                service=name_of(chart),
                reason=f"broker {plan.pod} uses the chart's own load balancer {name_of(chart)}: "
                "no second one is created",
                statefulset=sts,
                uid=uid_of(chart),
            )
        )
    elif existing is not None and not ours:
        actions.append(
            Conflict(
                namespace=ns,
                service=plan.service_name,
                reason=f"Service {plan.service_name} already exists and was not created by kafka-expose "
                "(no ownerReference to a StatefulSet here, created-with record and kafka-expose "
                f"field ownership on a LoadBalancer): left as it is, broker {plan.pod} gets no load "
                "balancer from kafka-expose; delete it to have kafka-expose create its own",
                statefulset=sts,
                uid=uid_of(existing),
            )
        )
    elif existing is not None and (
        uid_of(existing_owner or {}) != uid_of(owner)
        or labels_of(existing).get(POD_LABEL, plan.pod) != plan.pod
    ):
        actions.append(
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
        actions.append(
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
        actions.extend(_keep_in_line(existing, desired_service(plan, settings, owner), settings, sts))

    return actions, target


def _address_report(
    ns: str, pod: Mapping[str, Any], plan: BrokerPlan, target: Mapping[str, Any] | None, sts: str
) -> ReportAddress | None:
    """The pod's load-balancer annotation, when it differs from its load balancer's address."""
    address = load_balancer_address(target) if target is not None else None
    if address == annotations_of(pod).get(LOAD_BALANCER) or metadata_of(pod).get("deletionTimestamp"):
        return None
    return ReportAddress(
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


def _removals(
    state: NamespaceState,
    settings: Settings,
    claimed: Mapping[str, str],
    slots: Mapping[tuple[str, int], str],
) -> tuple[list[Action], dict[str, float]]:
    """Our Services that outlived their slot (scale-down, a renamed slot, opt-out): Delete, or Wait
    out the scale-down grace period; and the pending deletions to remember."""
    ns = state.namespace
    removals: list[Action] = []
    pending: dict[str, float] = {}
    grace = settings.controller.scale_down_grace_seconds
    for service in sorted(state.services, key=name_of):
        name = name_of(service)
        owner = proven_owner(service, state.statefulsets)
        if owner is None or metadata_of(service).get("deletionTimestamp"):
            continue  # not provably ours (never touched), or a StatefulSet gone: the garbage collector's
        labels = labels_of(service)
        sts_name = name_of(owner)
        parts = split_pod_name(labels.get(POD_LABEL, ""))
        event_to, uid = sts_name, uid_of(service)
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
        if parts is None or parts[0] != sts_name:
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
    return removals, pending


def _certificates(
    state: NamespaceState, settings: Settings, statefulsets: Mapping[str, Mapping[str, Any]]
) -> list[Action]:
    """One Certificate per StatefulSet whose exposed pods serve it (their kafka-expose.io/certificate),
    with every ordinal's name. Ours is proven by its name and an ownerReference to that StatefulSet's
    uid (labels are anyone's); one that is not ours is never changed nor deleted. Ours that no broker
    serves any more is deleted; a StatefulSet deleted takes its own along (garbage collector)."""
    ns = state.namespace
    serving = {annotations_of(pod).get(CERTIFICATE) for pod in state.pods}
    observed = {name_of(c): c for c in state.certificates}
    owners = {certificate_name(name): sts for name, sts in statefulsets.items()}
    actions: list[Action] = []
    for name, sts in sorted(statefulsets.items()):
        cert = certificate_name(name)
        if not state.opted_in or cert not in serving or metadata_of(sts).get("deletionTimestamp"):
            continue
        plans = mutate({**sts, "kind": "StatefulSet"}, settings, ns).plans[:1]
        objects = planned_objects(plans, settings, replicas=replicas_of(sts), owner=sts)
        if not objects:
            continue  # TLS off now, or the template no longer exposable: deleted below
        desired, secret = objects[0], (objects[1] if len(objects) > 1 else None)
        current = observed.get(cert)
        if current is not None and not _owned_by(current, sts):
            reason = f"Certificate {cert} exists and was not made by kafka-expose: left as it is"
            actions.append(CertificateConflict(namespace=ns, service=cert, reason=reason, statefulset=name))
        elif current is None or _certificate_drift(desired, current):
            names = len(desired["spec"]["dnsNames"])
            actions.append(
                ApplyCertificate(
                    namespace=ns,
                    service=cert,
                    reason=f"Certificate {cert} for {names} name(s) of StatefulSet {name}",
                    statefulset=name,
                    desired=desired,
                    password_secret=secret,
                )
            )
        elif settings.tls.restart_on_renewal:
            actions.extend(_restart_after_renewal(state, sts, current))
        observed.pop(cert, None)  # planned: not a leftover
    for cert, current in sorted(observed.items()):
        owner = owners.get(cert)
        if owner is None or not _owned_by(current, owner) or metadata_of(current).get("deletionTimestamp"):
            continue  # not provably ours (or going)
        actions.append(
            DeleteCertificate(
                namespace=ns,
                service=cert,
                reason=f"no broker of StatefulSet {name_of(owner)} serves Certificate {cert} any more",
                statefulset=name_of(owner),
                uid=uid_of(current),
            )
        )
    return actions


def _restart_after_renewal(
    state: NamespaceState, statefulset: Mapping[str, Any], certificate: Mapping[str, Any]
) -> list[Action]:
    """The first broker (by ordinal) whose containers started before the certificate's notBefore,
    when every broker of the StatefulSet is Ready and none is going: a rolling restart of one broker
    per reconcile, so the cluster keeps its replicas in sync meanwhile."""
    status = as_dict(certificate.get("status"))
    renewed = _timestamp(status.get("notBefore"))
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    if renewed is None or not ready:
        return []
    name = name_of(statefulset)
    pods = {name_of(p): p for p in state.pods if controlling_statefulset(p, [statefulset]) is statefulset}
    brokers = [pods.get(f"{name}-{i}") for i in ordinals_of(statefulset)]
    if any(p is None or metadata_of(p).get("deletionTimestamp") or not _pod_ready(p) for p in brokers):
        return []  # a broker is missing, going or not Ready: wait for it
    for pod in brokers:
        assert pod is not None  # checked above
        started = _started(pod)
        if started is not None and started < renewed:
            cert = name_of(certificate)
            reason = (
                f"broker {name_of(pod)} restarts to serve Certificate {cert} renewed at {status['notBefore']}"
            )
            return [
                RestartBroker(
                    namespace=state.namespace,
                    service=cert,
                    reason=reason,
                    statefulset=name,
                    pod=name_of(pod),
                    pod_uid=uid_of(pod),
                )
            ]
    return []


def _timestamp(value: Any) -> float | None:
    """Seconds of an RFC 3339 time as the API server writes it (`2026-12-02T14:05:40Z`)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = as_dict(pod.get("status")).get("conditions") or []
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )


def _started(pod: Mapping[str, Any]) -> float | None:
    """When the last of the pod's containers started (what it mounted is at least that recent)."""
    times = [
        _timestamp(as_dict(as_dict(c).get("state")).get("running", {}).get("startedAt"))
        for c in as_dict(pod.get("status")).get("containerStatuses") or []
    ]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _owned_by(certificate: Mapping[str, Any], statefulset: Mapping[str, Any]) -> bool:
    uid = uid_of(statefulset)
    owners = metadata_of(certificate).get("ownerReferences") or []
    return uid is not None and any(
        isinstance(o, dict) and o.get("kind") == "StatefulSet" and o.get("uid") == uid for o in owners
    )


def _certificate_drift(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> bool:
    spec, seen = spec_of(desired), spec_of(observed)
    return any(seen.get(key) != value for key, value in spec.items())


def _capped(actions: list[Action], state: NamespaceState, settings: Settings) -> list[Action]:
    """`actions` with each create that would take the namespace over the LoadBalancer cap turned into
    a report (issue 15, item 4): the cap binds the controller as it binds everyone. Every LoadBalancer
    Service of the namespace counts, whoever made it; a replace frees its slot first."""
    cap = settings.policy.max_load_balancers_per_namespace
    if cap is None or policy.mode_of(settings, policy.LOAD_BALANCER_CAP) == "off":
        return actions
    count = sum(1 for s in state.services if spec_of(s).get("type") == "LoadBalancer")
    result: list[Action] = []
    for action in actions:
        if isinstance(action, Create) and count >= cap:
            pod = str(spec_of(action.desired).get("selector", {}).get(STS_POD_NAME_LABEL, ""))
            result.append(
                CapReached(
                    namespace=action.namespace,
                    service=action.service,
                    reason=f"namespace {action.namespace} has {count} LoadBalancer Service(s), the cap "
                    f"(policy.maxLoadBalancersPerNamespace) is {cap}: Service {action.service} is not "
                    f"created, broker {pod} gets no load balancer",
                    statefulset=action.statefulset,
                    pod=pod,
                )
            )
            continue
        count += isinstance(action, Create)
        result.append(action)
    return result


def _keep_in_line(
    existing: Mapping[str, Any], desired: dict[str, Any], settings: Settings, statefulset: str
) -> list[Action]:
    """Actions for a Service we manage: replace it, report a kept immutable change, or repair drift."""
    ns, name = (
        str(metadata_of(existing).get("namespace") or desired["metadata"]["namespace"]),
        name_of(existing),
    )
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
                resource_version=str(metadata_of(existing).get("resourceVersion") or "") or None,
                convert_ownership=has_create_ownership(existing),
            )
        )
    return actions
