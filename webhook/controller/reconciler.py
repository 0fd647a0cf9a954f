"""Reconcile one namespace: read its objects fresh, ask the pure planner
(`webhook.core.reconcile.plan_namespace`) what to do, and do it, one `match` arm per action type.
Every write is checked against leadership first.

Over 400 lines, knowingly: one `match` arm per action type, each a few lines of API calls; the
arms stay together so that every write the controller makes is in one file.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.config import SettingsStore
from webhook.controller.metrics import WRITES, Metrics
from webhook.core import actions
from webhook.core.actions import Action, NamespaceState
from webhook.core.audit import UNCHECKED
from webhook.core.names import CERT_MANAGER_VERSION, EXPOSED_LABEL, FIELD_MANAGER, LOAD_BALANCER
from webhook.core.overrides import settings_for_namespace
from webhook.core.reconcile import is_opted_in, plan_namespace, unexposed_pod_selectors
from webhook.core.services import is_managed
from webhook.core.settings import Settings
from webhook.kube.client import ApiError, Kube
from webhook.kube.events import EventRecorder

log = logging.getLogger("kafka_expose.controller")

# How the API server starts a server-side apply's field-manager conflict (structured-merge-diff).
APPLY_CONFLICT = "Apply failed with"


def _service_path(namespace: str, name: str) -> str:
    return Kube.path("v1", "services", namespace, name)


def _certificate_path(namespace: str, name: str | None = None) -> str:
    return Kube.path(CERT_MANAGER_VERSION, "certificates", namespace, name)


def _certificates(kube: Kube, namespace: str, tls_enabled: bool) -> list[dict[str, Any]]:
    """The namespace's cert-manager Certificates; none when TLS is off and cert-manager is not installed
    (404) or not granted (403); with TLS on either is an error (the brokers wait for their Secret)."""
    try:
        found, _ = kube.list_all(_certificate_path(namespace))
    except ApiError as error:
        if error.status in (403, 404) and not tls_enabled:
            return []
        raise
    return found


def observe(
    kube: Kube,
    namespace: str,
    platform: Settings,
    pending_deletions: Mapping[str, float],
    now: float,
) -> tuple[NamespaceState, Settings] | None:
    """Read one namespace fresh: what the planner needs, and the namespace's effective settings.
    None when there is nothing to reconcile (gone or going, or not opted in and nothing of ours).
    `kafka-expose status` reads the same way, so it reports what the controller would do."""
    namespace_obj = kube.get(Kube.path("v1", "namespaces", name=namespace))
    if namespace_obj is None or (namespace_obj.get("metadata") or {}).get("deletionTimestamp"):
        return None  # gone or going: the namespace controller deletes what is in it
    # The namespace's allowed overrides (kafka-expose.io/cloud, .../domain), as the webhook applies
    # them to its pods; a refused one keeps the platform default (the webhook warns about it).
    annotations = (namespace_obj.get("metadata") or {}).get("annotations")
    settings, _refused = settings_for_namespace(
        platform, annotations if isinstance(annotations, dict) else None, namespace
    )
    opted_in = is_opted_in(namespace_obj)
    services, _ = kube.list_all(Kube.path("v1", "services", namespace))
    if not opted_in and not any(is_managed(s) for s in services):
        return None
    pods, _ = kube.list_all(Kube.path("v1", "pods", namespace), label_selector=f"{EXPOSED_LABEL}=true")
    statefulsets, _ = kube.list_all(Kube.path("apps/v1", "statefulsets", namespace))
    unexposed: list[dict[str, Any]] = []
    if opted_in:  # only broker StatefulSets' pods, so unrelated pods never reach this process
        for selector in unexposed_pod_selectors(statefulsets, settings, namespace).values():
            found, _ = kube.list_all(Kube.path("v1", "pods", namespace), label_selector=selector)
            unexposed.extend(found)
    certificates = (
        _certificates(kube, namespace, settings.tls.enabled) if opted_in or settings.tls.enabled else []
    )
    state = NamespaceState(
        namespace=namespace,
        opted_in=opted_in,
        pods=pods,
        statefulsets=statefulsets,
        services=services,
        pending_deletions=pending_deletions,
        now=now,
        unexposed_pods=unexposed,
        certificates=certificates,
    )
    return state, settings


@dataclass(eq=False)
class Reconciler:
    """Reconciles one namespace: read fresh, plan (pure), act; every write is checked against
    leadership first."""

    kube: Kube
    settings: SettingsStore
    events: EventRecorder
    metrics: Metrics
    is_leader: Callable[[], bool]
    clock: Callable[[], float] = time.time
    pending: dict[str, dict[str, float]] = field(default_factory=dict, init=False, repr=False)
    # per worker thread: the current reconcile's creates, by StatefulSet (see _report_created)
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)
    _counted_conflicts: set[tuple[str, str, str | None]] = field(default_factory=set, init=False, repr=False)
    _reported_unexposed: set[str | None] = field(default_factory=set, init=False, repr=False)
    _counted: set[tuple[str | None, ...]] = field(default_factory=set, init=False, repr=False)

    def reconcile(self, namespace: str) -> float | None:
        """Make `namespace` match the plan; the delay after which to look again, if any."""
        observed = observe(
            self.kube, namespace, self.settings.settings, self.pending.get(namespace, {}), self.clock()
        )
        if observed is None:
            self.pending.pop(namespace, None)
            return None
        state, settings = observed
        statefulsets = state.statefulsets
        plan = plan_namespace(state, settings)
        self.pending[namespace] = plan.pending_deletions
        owners = {s["metadata"]["name"]: s for s in statefulsets}
        first_error: ApiError | None = None
        self._local.created = {}
        for action in plan.actions:
            if not self.is_leader():
                raise ApiError(0, "NotLeader", "lost the lease while reconciling")
            try:
                self.act(action, owners.get(action.statefulset or ""))
            except ApiError as error:
                log.warning(
                    "action failed",
                    extra={
                        "fields": {
                            "action": action.kind,
                            "namespace": namespace,
                            "service": action.service,
                            "error": str(error),
                        }
                    },
                )
                first_error = first_error or error
        self._report_created(owners)
        if first_error is not None:
            raise first_error
        return plan.requeue_after

    def _creates(self) -> dict[str, list[tuple[str, str]]]:
        created: dict[str, list[tuple[str, str]]] = self._local.__dict__.setdefault("created", {})
        return created

    def _report_created(self, owners: Mapping[str, Mapping[str, Any]]) -> None:
        """One ServiceCreated Event per StatefulSet and reconcile, naming every Service created (as
        client-go's aggregation would): a storm of brokers costs one Event per StatefulSet, not one
        per broker (issue 19: writes per broker)."""
        created, self._local.created = self._creates(), {}
        for statefulset, reasons in created.items():
            services = ", ".join(service for service, _ in reasons)
            detail = "; ".join(reason for _, reason in reasons)
            self._event(owners.get(statefulset), "Normal", "ServiceCreated", f"Created {services}: {detail}")

    # -- actions ---------------------------------------------------------------------------------

    def act(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        match action:
            case actions.Create():
                self._create(action, owner)
            case actions.Update():
                self._update(action, owner)
            case actions.Replace():
                self._replace(action, owner)
            case actions.Delete():
                self._delete(action, owner)
            case actions.Wait():
                log.debug(
                    action.reason, extra={"fields": {"service": action.service, "due_in": action.delay}}
                )
                return
            case actions.Conflict():
                self._conflict(action, owner)
            case actions.ChartLoadBalancer():
                self._event(owner, "Normal", "ChartLoadBalancer", action.reason)
            case actions.Unexposed():
                self._unexposed(action, owner)
            case actions.ImmutableKept():
                self._event(owner, "Warning", "ImmutableSettingsChanged", action.reason)
            case actions.ReportAddress():
                self._report_address(action, owner)
            case actions.CapReached():
                self._once(("cap", action.namespace, action.service), self.metrics.refused.labels("cap"))
                self._event(owner, "Warning", "LoadBalancerCapReached", action.reason)
            case actions.AnnotationsIgnored():
                self._once(("annotations", action.pod_uid), self.metrics.annotations_ignored)
                self._event(owner, "Warning", "BrokerAnnotationsIgnored", action.reason)
            case actions.AuditViolation():
                self._audit(action)
            case actions.ApplyCertificate():
                self._apply_certificate(action, owner)
            case actions.DeleteCertificate():
                if self.kube.delete(_certificate_path(action.namespace, action.service), uid=action.uid):
                    self._event(owner, "Normal", "CertificateDeleted", f"Deleted: {action.reason}")
            case actions.RestartBroker():
                self._restart_broker(action, owner)
            case actions.CertificateConflict():
                self._event(owner, "Warning", "CertificateNameConflict", action.reason)
        if action.kind in WRITES:
            self.metrics.actions.labels(action.kind).inc()
        log.info(
            action.reason,
            extra={
                "fields": {"action": action.kind, "namespace": action.namespace, "service": action.service}
            },
        )

    def _once(self, key: tuple[str | None, ...], counter: Any) -> None:
        """Count a reported condition once (it is planned again at every reconcile until it ends)."""
        if key in self._counted:
            return
        if len(self._counted) >= 10_000:  # objects come and go: keep the memory bounded
            self._counted.clear()
        self._counted.add(key)
        counter.inc()

    def _event(self, owner: Mapping[str, Any] | None, kind: str, reason: str, message: str) -> None:
        if owner is None:
            return
        metadata = owner.get("metadata") or {}
        self.events.record(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
            },
            kind,
            reason,
            message,
        )

    def _create(self, action: actions.Create, owner: Mapping[str, Any] | None) -> None:
        try:
            self.kube.create(Kube.path("v1", "services", action.namespace), action.desired)
        except ApiError as error:
            if error.status == 409:  # a racing replica, or a Service that appeared since we listed
                raise ApiError(
                    409, "AlreadyExists", f"{action.service} appeared meanwhile; reading again"
                ) from None
            if error.status == 403 and "quota" in error.message:  # exceeded, or status unknown
                # A ResourceQuota on services.loadbalancers (issue 15, item 4): said where the team
                # looks, counted, and retried with the worker's backoff (the quota may be raised).
                self.metrics.refused.labels("quota").inc()
                self._event(
                    owner,
                    "Warning",
                    "LoadBalancerQuotaExceeded",
                    f"Service {action.service} was refused by a ResourceQuota: {error.message}",
                )
            raise
        # No second write here: the create's field ownership (operation Update) becomes an apply's
        # on the first update that needs it (Update.convert_ownership), which most Services never do.
        self._creates().setdefault(action.statefulset or "", []).append((action.service, action.reason))

    def _take_apply_ownership(self, service: Mapping[str, Any]) -> Mapping[str, Any]:
        """Turn the create's field ownership (operation Update) into an apply's, so that a later
        server-side apply prunes the fields we stop planning (as kubectl's client-side to
        server-side apply upgrade does). Conditioned on the resourceVersion; best effort."""
        metadata = service.get("metadata") or {}
        entries = metadata.get("managedFields") or []
        converted = [
            {k: v for k, v in {**e, "operation": "Apply"}.items() if k != "time"}
            if e.get("manager") == FIELD_MANAGER
            and e.get("operation") == "Update"
            and not e.get("subresource")
            else e
            for e in entries
        ]
        if converted == entries:
            return service
        try:
            return self.kube.json_patch(
                _service_path(str(metadata.get("namespace")), str(metadata.get("name"))),
                [
                    {
                        "op": "test",
                        "path": "/metadata/resourceVersion",
                        "value": metadata.get("resourceVersion"),
                    },
                    {"op": "replace", "path": "/metadata/managedFields", "value": converted},
                ],
            )
        except ApiError as error:
            log.info(
                "field ownership not converted yet (next reconcile does it)",
                extra={"fields": {"service": metadata.get("name"), "error": str(error)}},
            )
            return service

    def _update(self, action: actions.Update, owner: Mapping[str, Any] | None) -> None:
        path = _service_path(action.namespace, action.service)
        version = action.resource_version
        if action.convert_ownership:
            current = self.kube.get(path)
            if current is None or current["metadata"].get("uid") != action.uid:
                raise ApiError(409, "Conflict", f"{action.service} changed meanwhile; reading again")
            version = str(self._take_apply_ownership(current)["metadata"].get("resourceVersion"))
        body = {**action.desired, "metadata": {**action.desired["metadata"], "resourceVersion": version}}
        # Server-side apply of our fields only, conditioned on the version we planned from (409 if the
        # Service changed meanwhile, or if it is another object of the same name). Never forced: a
        # field another manager took over is reported, not taken back (issue 15, item 5).
        try:
            self.kube.apply(path, body, force=False)
        except ApiError as error:
            if error.status == 409 and APPLY_CONFLICT in error.message:
                self._once(("fields", action.uid, action.resource_version), self.metrics.field_conflicts)
                self._event(
                    owner,
                    "Warning",
                    "ServiceFieldConflict",
                    f"Service {action.service} not updated: fields kafka-expose sets are now owned by "
                    f"another field manager ({error.message}); {action.reason}",
                )
                return
            raise
        self._event(owner, "Normal", "ServiceUpdated", action.reason)

    def _replace(self, action: actions.Replace, owner: Mapping[str, Any] | None) -> None:
        self._event(owner, "Warning", "ServiceReplaced", action.reason)
        self.kube.delete(_service_path(action.namespace, action.service), uid=action.uid)
        try:
            self.kube.create(Kube.path("v1", "services", action.namespace), action.desired)
        except ApiError as error:
            if error.status == 409:  # still being deleted (a cloud finalizer): the next reconcile creates
                raise ApiError(409, "AlreadyExists", f"{action.service} is still being deleted") from None
            raise

    def _delete(self, action: actions.Delete, owner: Mapping[str, Any] | None) -> None:
        if self.kube.delete(_service_path(action.namespace, action.service), uid=action.uid):
            self._event(
                owner, "Normal", "ServiceDeleted", f"Deleted Service {action.service}: {action.reason}"
            )

    def _conflict(self, action: actions.Conflict, owner: Mapping[str, Any] | None) -> None:
        key = (action.namespace, action.service, action.uid)
        if key not in self._counted_conflicts:
            self._counted_conflicts.add(key)
            self.metrics.conflicts.inc()
        self._event(owner, "Warning", "ServiceNameConflict", action.reason)

    def _unexposed(self, action: actions.Unexposed, owner: Mapping[str, Any] | None) -> None:
        """Said once per pod (its uid): a Warning Event on the StatefulSet, a log line, a metric."""
        if action.pod_uid in self._reported_unexposed:
            return
        if len(self._reported_unexposed) >= 10_000:  # pods come and go: keep the memory bounded
            self._reported_unexposed.clear()
        self._reported_unexposed.add(action.pod_uid)
        self.metrics.unexposed.inc()
        log.warning(action.reason, extra={"fields": {"namespace": action.namespace, "pod": action.pod}})
        self._event(owner, "Warning", "BrokerNotExposed", action.reason)

    def _audit(self, action: actions.AuditViolation) -> None:
        """Report on the Service itself (its team sees it with kubectl describe); repair if asked."""
        involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "name": action.service}
        involved |= {"namespace": action.namespace, "uid": action.uid}
        for rule in action.rules:
            self._once(("audit", action.uid, rule), self.metrics.audit_violations.labels(rule))
        if not action.repair:
            reason = "PolicyUnchecked" if UNCHECKED in action.rules else "PolicyViolation"
            self.events.record(involved, "Warning", reason, action.reason)
            return
        try:
            self.kube.json_patch(_service_path(action.namespace, action.service), action.repair)
        except ApiError as error:
            if error.status in (404, 409, 422):  # changed or gone since we listed: audited again
                return
            raise
        self.metrics.audit_repairs.inc()
        self.events.record(involved, "Warning", "PolicyViolationRepaired", f"Repaired: {action.reason}")

    def _report_address(self, action: actions.ReportAddress, owner: Mapping[str, Any] | None) -> None:
        patch: dict[str, Any] = {"metadata": {"annotations": {LOAD_BALANCER: action.address}}}
        if action.pod_uid:
            patch["metadata"]["uid"] = action.pod_uid  # only this pod, not a successor of the same name
        try:
            self.kube.merge_patch(Kube.path("v1", "pods", action.namespace, action.pod), patch)
        except ApiError as error:
            if error.status in (404, 409, 422):
                return  # the pod is gone or was replaced: its successor is reconciled on its own
            raise
        if action.address:
            self._event(owner, "Normal", "LoadBalancerAddress", action.reason)

    def _apply_certificate(self, action: actions.ApplyCertificate, owner: Mapping[str, Any] | None) -> None:
        """The cert-manager Certificate of a broker StatefulSet (encrypted external listeners)."""
        if action.password_secret is not None:
            try:  # create only: never read nor overwrite a Secret
                self.kube.create(Kube.path("v1", "secrets", action.namespace), action.password_secret)
            except ApiError as error:
                if error.status == 403:  # the base RBAC grants no Secrets (README: PKCS12 keystores)
                    message = (
                        f"cannot create the PKCS12 keystore password Secret of {action.service}: grant the "
                        "controller `create` on secrets, or run Kafka 2.7+ (PEM keystores need none)"
                    )
                    self._event(owner, "Warning", "CertificatePasswordSecretForbidden", message)
                elif error.status != 409:
                    raise
        self.kube.apply(_certificate_path(action.namespace, action.service), action.desired)
        self._event(owner, "Normal", "CertificateApplied", action.reason)

    def _restart_broker(self, action: actions.RestartBroker, owner: Mapping[str, Any] | None) -> None:
        """Evict (not delete) the broker pod: the API server refuses (429) what its PodDisruptionBudget
        does not allow, and the next reconcile tries again."""
        eviction = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": action.pod, "namespace": action.namespace},
            "deleteOptions": {"preconditions": {"uid": action.pod_uid}} if action.pod_uid else {},
        }
        path = Kube.path("v1", "pods", action.namespace, action.pod) + "/eviction"
        try:
            self.kube.create(path, eviction)
        except ApiError as error:
            if error.status in (404, 409, 429):  # gone, replaced, or the budget says not now
                log.info("eviction deferred", extra={"fields": {"pod": action.pod, "status": error.status}})
                return
            raise
        self._event(owner, "Normal", "BrokerRestartedForRenewal", action.reason)
