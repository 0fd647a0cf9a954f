"""`kafka-expose controller`: make every exposed broker slot's LoadBalancer Service exist, and only those.

Level-triggered. Watches keep small fingerprints (never whole objects) of what can change the plan:
opted-in namespaces, pods labelled `kafka-expose.io/exposed`, StatefulSets, and the Services we
manage. A change puts its namespace on a deduplicated work queue; one worker reconciles a namespace
at a time: it reads the namespace's objects fresh, asks the pure planner
(`webhook.core.reconcile.plan_namespace`) what to do, and does it. Every namespace of interest is
also reconciled every `controller.resyncSeconds`. Replicas elect a leader with a Lease; only the
leader watches and writes.

Only argparse and the standard library are imported at module level (`kafka-expose render` builds
the whole parser); the rest is imported when the controller runs.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from webhook.core.names import EXPOSED_LABEL, PREFIX

if TYPE_CHECKING:
    from webhook.config import SettingsStore
    from webhook.core.reconcile import Action
    from webhook.kube.client import Kube
    from webhook.kube.events import EventRecorder
    from webhook.kube.leader import LeaderElector

log = logging.getLogger("kafka_expose.controller")

COMPONENT = "kafka-expose-controller"
DEFAULT_LEASE_NAME = "kafka-expose-controller"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="settings file (YAML), hot reloaded")
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig to use (default: the in-cluster ServiceAccount, else $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE") or "kafka-expose",
        metavar="NS",
        help="namespace of the leader-election Lease (default: $POD_NAMESPACE, else kafka-expose)",
    )
    parser.add_argument("--lease-name", default=DEFAULT_LEASE_NAME, metavar="NAME", help="the Lease's name")
    parser.add_argument(
        "--identity",
        default=f"{socket.gethostname()}_{os.getpid()}",
        help="this candidate's name in the Lease (default: hostname_pid)",
    )
    parser.add_argument(
        "--lease-duration", type=float, default=15.0, metavar="SECONDS", help="how long a Lease holds"
    )
    parser.add_argument(
        "--renew-deadline",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="the leader steps down when it could not renew for this long",
    )
    parser.add_argument(
        "--retry-period", type=float, default=2.0, metavar="SECONDS", help="how often to renew or try to lead"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, metavar="PORT", help="Prometheus port (0: off)"
    )
    parser.add_argument("--metrics-bind", default="0.0.0.0", metavar="ADDRESS", help="metrics listen address")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    # hidden: the settings file poll interval and the server-side watch timeout
    parser.add_argument("--reload-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--watch-timeout", type=int, default=300, help=argparse.SUPPRESS)


# ------------------------------------------------------------------------------------------ metrics


class Metrics:
    """The controller's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.services_managed = Gauge(
            "kafka_expose_controller_services_managed",
            "LoadBalancer Services managed by kafka-expose, as seen by the leader's watch.",
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "kafka_expose_controller_reconcile_errors",
            "Namespace reconciles that failed (retried with backoff).",
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "kafka_expose_controller_reconcile_duration_seconds",
            "Time to reconcile one namespace (read, plan, act).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.conflicts = Counter(
            "kafka_expose_controller_conflicts",
            "Service names taken by an object kafka-expose did not create (each counted once).",
            registry=self.registry,
        )
        self.unexposed = Counter(
            "kafka_expose_controller_unexposed_brokers",
            "Broker pods found running without kafka-expose in an opted-in namespace (each counted once).",
            registry=self.registry,
        )
        self.leader = Gauge(
            "kafka_expose_controller_leader", "1 while this replica leads, else 0.", registry=self.registry
        )
        self.actions = Counter(
            "kafka_expose_controller_actions",
            "Actions carried out, by kind (create, update, replace, delete, report-address...).",
            ["action"],
            registry=self.registry,
        )
        for kind in ("create", "update", "replace", "delete", "report-address"):
            self.actions.labels(kind)

    def serve(self, port: int, address: str) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=address, registry=self.registry)


# --------------------------------------------------------------------------------------- work queue


class WorkQueue:
    """Namespaces to reconcile. An item is queued once however often it is added, handed to one
    worker at a time, and added again after `done` if it changed while being processed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._processing: set[str] = set()
        self._again: dict[str, float] = {}
        self._closed = False

    def add(self, item: str, delay: float = 0.0) -> None:
        when = time.monotonic() + max(0.0, delay)
        with self._cond:
            if self._closed:
                return
            if item in self._processing:
                self._again[item] = min(when, self._again.get(item, when))
                return
            if item in self._due and self._due[item] <= when:
                return
            self._due[item] = when
            heapq.heappush(self._heap, (when, item))
            self._cond.notify()

    def get(self, timeout: float) -> str | None:
        """The next due item (None after `timeout` or once closed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier due time
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    _, item = heapq.heappop(self._heap)
                    del self._due[item]
                    self._processing.add(item)
                    return item
                wait = deadline - now
                if wait <= 0:
                    return None
                if self._heap:
                    wait = min(wait, self._heap[0][0] - now)
                self._cond.wait(wait)
            return None

    def done(self, item: str) -> None:
        with self._cond:
            self._processing.discard(item)
            when = self._again.pop(item, None)
        if when is not None:
            self.add(item, when - time.monotonic())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)


# ------------------------------------------------------------------------------------------ watches

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@dataclass
class Store:
    """Fingerprints of the watched objects of one kind: what the controller remembers, no more."""

    items: dict[Key, Hashable] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    synced: threading.Event = field(default_factory=threading.Event)

    def namespaces(self) -> set[str]:
        with self.lock:
            return {ns or name for ns, name in self.items}

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)


def _key(obj: Mapping[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class Watcher(threading.Thread):
    """List, then watch from the list's resourceVersion; on 410 Gone or any error list again (with
    backoff), so a restarted API server is caught up with. Calls `changed(namespace)` whenever an
    object's fingerprint changes, appears or goes."""

    def __init__(
        self,
        kube: Kube,
        kind: str,
        path: str,
        selector: str | None,
        fingerprint: Callable[[Mapping[str, Any]], Hashable],
        changed: Callable[[str], None],
        stop: threading.Event,
        timeout_seconds: int = 300,
    ) -> None:
        super().__init__(name=f"watch-{kind}", daemon=True)
        self.kube = kube
        self.kind = kind
        self.path = path
        self.selector = selector
        self.fingerprint = fingerprint
        self.changed = changed
        self.stop = stop
        self.timeout_seconds = timeout_seconds
        self.store = Store()

    def run(self) -> None:
        from webhook.kube.client import ApiError, Backoff

        backoff = Backoff(base=0.5, cap=10.0)
        failures = 0
        while not self.stop.is_set():
            try:
                version = self._relist()
                failures = 0
                while not self.stop.is_set():
                    version = self._watch(version)
            except ApiError as error:
                if self.stop.is_set():
                    return
                if error.status == 410:
                    log.info("watch expired, listing again", extra={"fields": {"kind": self.kind}})
                    continue
                failures += 1
                log.warning(
                    "watch failed, listing again",
                    extra={"fields": {"kind": self.kind, "error": str(error), "failures": failures}},
                )
                self.stop.wait(backoff.delay(min(failures, 6)))
            except Exception:
                if self.stop.is_set():
                    return
                failures += 1
                log.exception("watch crashed, listing again", extra={"fields": {"kind": self.kind}})
                self.stop.wait(backoff.delay(min(failures, 6)))

    def _relist(self) -> str:
        items, version = self.kube.list_all(self.path, self.selector)
        fresh = {_key(item): self.fingerprint(item) for item in items}
        with self.store.lock:
            old = self.store.items
            self.store.items = fresh
        touched = {k for k in old.keys() | fresh.keys() if old.get(k) != fresh.get(k)}
        self.store.synced.set()
        for ns, name in sorted(touched):
            self.changed(ns or name)
        return version

    def _watch(self, version: str) -> str:
        """One watch request; returns the resourceVersion to resume from when the server ends it."""
        from webhook.kube.client import ApiError

        # Spread the reconnections of the watches (as client-go does).
        timeout = int(self.timeout_seconds * random.uniform(1.0, 1.5))
        for event in self.kube.watch(self.path, version, self.selector, timeout):
            if self.stop.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise ApiError(
                    int(obj.get("code") or 0), str(obj.get("reason") or ""), str(obj.get("message"))
                )
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            key = _key(obj)
            with self.store.lock:
                if kind == "DELETED":
                    touched = self.store.items.pop(key, None) is not None
                else:
                    value = self.fingerprint(obj)
                    touched = self.store.items.get(key) != value
                    self.store.items[key] = value
            if touched or kind == "DELETED":
                self.changed(key[0] or key[1])
        return version


# ---------------------------------------------------------------------------------------- fingerprints


def _pod_fingerprint(pod: Mapping[str, Any]) -> Hashable:
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    owners = tuple(sorted(str(o.get("uid")) for o in metadata.get("ownerReferences") or []))
    return (
        metadata.get("uid"),
        bool(metadata.get("deletionTimestamp")),
        owners,
        tuple(sorted((k, v) for k, v in annotations.items() if k.startswith(PREFIX))),
    )


def _statefulset_fingerprint(statefulset: Mapping[str, Any]) -> Hashable:
    return (
        (statefulset.get("metadata") or {}).get("uid"),
        (statefulset.get("spec") or {}).get("replicas", 1),
        str((statefulset.get("spec") or {}).get("ordinals")),
    )


def _version_fingerprint(obj: Mapping[str, Any]) -> Hashable:
    return (obj.get("metadata") or {}).get("resourceVersion")


def _constant_fingerprint(obj: Mapping[str, Any]) -> Hashable:
    return True


# -------------------------------------------------------------------------------------- the reconciler


class Reconciler:
    """Reconciles one namespace: read fresh, plan (pure), act; every write is checked against
    leadership first."""

    def __init__(
        self,
        kube: Kube,
        settings: SettingsStore,
        events: EventRecorder,
        metrics: Metrics,
        is_leader: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.events = events
        self.metrics = metrics
        self.is_leader = is_leader
        self.clock = clock
        self.pending: dict[str, dict[str, float]] = {}
        self._counted_conflicts: set[tuple[str, str, str | None]] = set()
        self._reported_unexposed: set[str | None] = set()

    def reconcile(self, namespace: str) -> float | None:
        """Make `namespace` match the plan; the delay after which to look again, if any."""
        from webhook.core.overrides import settings_for_namespace
        from webhook.core.reconcile import (
            NamespaceState,
            is_opted_in,
            plan_namespace,
            unexposed_pod_selectors,
        )
        from webhook.core.services import is_managed
        from webhook.kube.client import ApiError, Kube

        namespace_obj = self.kube.get(Kube.path("v1", "namespaces", name=namespace))
        if namespace_obj is None or (namespace_obj.get("metadata") or {}).get("deletionTimestamp"):
            self.pending.pop(namespace, None)
            return None  # gone or going: the namespace controller deletes what is in it
        # The namespace's allowed overrides (kafka-expose.io/cloud, .../domain), as the webhook applies
        # them to its pods; a refused one keeps the platform default (the webhook warns about it).
        annotations = (namespace_obj.get("metadata") or {}).get("annotations")
        settings, _refused = settings_for_namespace(
            self.settings.settings, annotations if isinstance(annotations, dict) else None, namespace
        )
        opted_in = is_opted_in(namespace_obj)
        services, _ = self.kube.list_all(Kube.path("v1", "services", namespace))
        if not opted_in and not any(is_managed(s) for s in services):
            self.pending.pop(namespace, None)
            return None
        pods, _ = self.kube.list_all(
            Kube.path("v1", "pods", namespace), label_selector=f"{EXPOSED_LABEL}=true"
        )
        statefulsets, _ = self.kube.list_all(Kube.path("apps/v1", "statefulsets", namespace))
        unexposed: list[dict[str, Any]] = []
        if opted_in:  # only broker StatefulSets' pods, so unrelated pods never reach this process
            for selector in unexposed_pod_selectors(statefulsets, settings, namespace).values():
                found, _ = self.kube.list_all(Kube.path("v1", "pods", namespace), label_selector=selector)
                unexposed.extend(found)
        state = NamespaceState(
            namespace=namespace,
            opted_in=opted_in,
            pods=pods,
            statefulsets=statefulsets,
            services=services,
            pending_deletions=self.pending.get(namespace, {}),
            now=self.clock(),
            unexposed_pods=unexposed,
        )
        plan = plan_namespace(state, settings)
        self.pending[namespace] = plan.pending_deletions
        owners = {s["metadata"]["name"]: s for s in statefulsets}
        first_error: ApiError | None = None
        for action in plan.actions:
            if not self.is_leader():
                raise ApiError(0, "NotLeader", "lost the lease while reconciling")
            try:
                self._act(action, owners.get(action.statefulset or ""))
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
        if first_error is not None:
            raise first_error
        return plan.requeue_after

    # -- actions ---------------------------------------------------------------------------------

    def _act(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        handler = getattr(self, "_" + action.kind.replace("-", "_"))
        handler(action, owner)
        if action.kind in ("create", "update", "replace", "delete", "report-address"):
            self.metrics.actions.labels(action.kind).inc()
        if action.kind not in ("wait",):
            log.info(
                action.reason,
                extra={
                    "fields": {
                        "action": action.kind,
                        "namespace": action.namespace,
                        "service": action.service,
                    }
                },
            )

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

    def _service_path(self, action: Action) -> str:
        from webhook.kube.client import Kube

        return Kube.path("v1", "services", action.namespace, action.service)

    def _create(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        from webhook.kube.client import ApiError, Kube

        assert action.desired is not None
        try:
            created = self.kube.create(Kube.path("v1", "services", action.namespace), action.desired)
        except ApiError as error:
            if error.status == 409:  # a racing replica, or a Service that appeared since we listed
                raise ApiError(
                    409, "AlreadyExists", f"{action.service} appeared meanwhile; reading again"
                ) from None
            raise
        self._take_apply_ownership(created)
        self._event(owner, "Normal", "ServiceCreated", f"Created {action.reason}")

    def _take_apply_ownership(self, service: Mapping[str, Any]) -> Mapping[str, Any]:
        """Turn the create's field ownership (operation Update) into an apply's, so that a later
        server-side apply prunes the fields we stop planning (as kubectl's client-side to
        server-side apply upgrade does). Conditioned on the resourceVersion; best effort."""
        from webhook.core.names import FIELD_MANAGER
        from webhook.kube.client import ApiError

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
                self._service_path_of(service),
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

    @staticmethod
    def _service_path_of(service: Mapping[str, Any]) -> str:
        from webhook.kube.client import Kube

        metadata = service.get("metadata") or {}
        return Kube.path("v1", "services", str(metadata.get("namespace")), str(metadata.get("name")))

    def _update(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        from webhook.kube.client import ApiError

        assert action.desired is not None
        version = action.resource_version
        if action.convert_ownership:
            current = self.kube.get(self._service_path(action))
            if current is None or current["metadata"].get("uid") != action.uid:
                raise ApiError(409, "Conflict", f"{action.service} changed meanwhile; reading again")
            version = str(self._take_apply_ownership(current)["metadata"].get("resourceVersion"))
        body = {**action.desired, "metadata": {**action.desired["metadata"], "resourceVersion": version}}
        # Server-side apply of our fields only, conditioned on the version we planned from (409 if the
        # Service changed meanwhile, or if it is another object of the same name).
        self.kube.apply(self._service_path(action), body)
        self._event(owner, "Normal", "ServiceUpdated", action.reason)

    def _replace(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        from webhook.kube.client import ApiError, Kube

        assert action.desired is not None
        self._event(owner, "Warning", "ServiceReplaced", action.reason)
        self.kube.delete(self._service_path(action), uid=action.uid)
        try:
            created = self.kube.create(Kube.path("v1", "services", action.namespace), action.desired)
        except ApiError as error:
            if error.status == 409:  # still being deleted (a cloud finalizer): the next reconcile creates
                raise ApiError(409, "AlreadyExists", f"{action.service} is still being deleted") from None
            raise
        self._take_apply_ownership(created)

    def _delete(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        if self.kube.delete(self._service_path(action), uid=action.uid):
            self._event(
                owner, "Normal", "ServiceDeleted", f"Deleted Service {action.service}: {action.reason}"
            )

    def _wait(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        log.debug(action.reason, extra={"fields": {"service": action.service, "due_in": action.delay}})

    def _conflict(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        key = (action.namespace, action.service, action.uid)
        if key not in self._counted_conflicts:
            self._counted_conflicts.add(key)
            self.metrics.conflicts.inc()
        self._event(owner, "Warning", "ServiceNameConflict", action.reason)

    def _chart_lb(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        self._event(owner, "Normal", "ChartLoadBalancer", action.reason)

    def _unexposed(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        """Said once per pod (its uid): a Warning Event on the StatefulSet, a log line, a metric."""
        if action.pod_uid in self._reported_unexposed:
            return
        if len(self._reported_unexposed) >= 10_000:  # pods come and go: keep the memory bounded
            self._reported_unexposed.clear()
        self._reported_unexposed.add(action.pod_uid)
        self.metrics.unexposed.inc()
        log.warning(action.reason, extra={"fields": {"namespace": action.namespace, "pod": action.pod}})
        self._event(owner, "Warning", "BrokerNotExposed", action.reason)

    def _immutable_kept(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        self._event(owner, "Warning", "ImmutableSettingsChanged", action.reason)

    def _report_address(self, action: Action, owner: Mapping[str, Any] | None) -> None:
        from webhook.core.names import LOAD_BALANCER
        from webhook.kube.client import ApiError, Kube

        assert action.pod is not None
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


# ------------------------------------------------------------------------------------------ a term


class Term:
    """One leadership term: watches, the work queue, the worker and the periodic resync."""

    def __init__(
        self,
        watch_kube: Kube,
        reconciler: Reconciler,
        settings: SettingsStore,
        metrics: Metrics,
        watch_timeout: int = 300,
    ) -> None:
        from webhook.core.names import MANAGED_BY_VALUE, OPT_IN_LABEL, OPT_IN_VALUE, OWNED_LABEL
        from webhook.kube.client import Kube

        self.kube = Kube(watch_kube.api)  # its own, so closing this term's watches closes no other's
        self.reconciler = reconciler
        self.settings = settings
        self.metrics = metrics
        self.stop = threading.Event()
        self.queue = WorkQueue()
        self._failures: dict[str, int] = {}

        def watcher(
            kind: str,
            path: str,
            selector: str | None,
            fingerprint: Callable[[Mapping[str, Any]], Hashable],
            changed: Callable[[str], None] | None = None,
        ) -> Watcher:
            return Watcher(
                self.kube,
                kind,
                path,
                selector,
                fingerprint,
                changed or self.queue.add,
                self.stop,
                watch_timeout,
            )

        self.namespaces = watcher(
            "namespaces",
            Kube.path("v1", "namespaces"),
            f"{OPT_IN_LABEL}={OPT_IN_VALUE}",
            _constant_fingerprint,
        )
        self.pods = watcher("pods", Kube.path("v1", "pods"), f"{EXPOSED_LABEL}=true", _pod_fingerprint)
        self.services = watcher(
            "services", Kube.path("v1", "services"), f"{OWNED_LABEL}={MANAGED_BY_VALUE}", _version_fingerprint
        )
        # StatefulSets carry no label of ours: all are watched, but only their uid and replicas are
        # kept, and only a namespace of interest is reconciled when one changes.
        self.statefulsets = watcher(
            "statefulsets",
            Kube.path("apps/v1", "statefulsets"),
            None,
            _statefulset_fingerprint,
            self._statefulset_changed,
        )
        self.watchers = [self.namespaces, self.pods, self.services, self.statefulsets]
        self.threads: list[threading.Thread] = [
            *self.watchers,
            threading.Thread(target=self._work, name="worker", daemon=True),
            threading.Thread(target=self._resync, name="resync", daemon=True),
        ]

    def namespaces_of_interest(self) -> set[str]:
        return (
            self.namespaces.store.namespaces()
            | self.pods.store.namespaces()
            | self.services.store.namespaces()
        )

    def _statefulset_changed(self, namespace: str) -> None:
        if namespace in self.namespaces_of_interest():
            self.queue.add(namespace)

    def enqueue_all(self) -> None:
        for namespace in sorted(self.namespaces_of_interest()):
            self.queue.add(namespace)

    def start(self) -> None:
        self.metrics.services_managed.set_function(lambda: len(self.services.store))
        for thread in self.threads:
            thread.start()

    def close(self, timeout: float = 3.0) -> None:
        self.stop.set()
        self.queue.close()
        self.kube.close_watches()
        self.metrics.services_managed.set_function(lambda: 0)
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _resync(self) -> None:
        while not self.stop.wait(float(self.settings.settings.controller.resync_seconds)):
            log.debug("periodic resync")
            self.enqueue_all()

    def _work(self) -> None:
        from webhook.kube.client import ApiError

        # Reconcile only once the first lists are in, so the namespaces of interest are known.
        for watcher in self.watchers:
            while not self.stop.is_set() and not watcher.store.synced.wait(0.2):
                pass
        while not self.stop.is_set():
            namespace = self.queue.get(timeout=0.5)
            if namespace is None:
                continue
            started = time.monotonic()
            try:
                again = self.reconciler.reconcile(namespace)
                self._failures.pop(namespace, None)
                if again is not None:
                    self.queue.add(namespace, again)
            except Exception as error:
                failures = self._failures[namespace] = self._failures.get(namespace, 0) + 1
                delay = min(60.0, 0.25 * 2 ** min(failures, 8)) * random.uniform(0.8, 1.2)
                conflict = isinstance(error, ApiError) and error.status == 409
                if not conflict:
                    self.metrics.reconcile_errors.inc()
                log.log(
                    logging.INFO if conflict or self.stop.is_set() else logging.WARNING,
                    "reconcile failed, retrying",
                    exc_info=not isinstance(error, ApiError),
                    extra={
                        "fields": {
                            "namespace": namespace,
                            "error": str(error),
                            "retry_in": round(delay, 2),
                            "failures": failures,
                        }
                    },
                )
                self.queue.add(namespace, delay)
            finally:
                self.metrics.reconcile_duration.observe(time.monotonic() - started)
                self.queue.done(namespace)


# ------------------------------------------------------------------------------------------ running


class Controller:
    """Leader election around terms."""

    def __init__(
        self,
        kube: Kube,
        watch_kube: Kube,
        elector_kube: Kube,
        settings: SettingsStore,
        metrics: Metrics,
        args: argparse.Namespace,
    ) -> None:
        from webhook.kube.events import EventRecorder
        from webhook.kube.leader import LeaderElector

        self.settings = settings
        self.metrics = metrics
        self.watch_kube = watch_kube
        self.watch_timeout = int(args.watch_timeout)
        self.elector: LeaderElector = LeaderElector(
            elector_kube,
            args.lease_namespace,
            args.lease_name,
            args.identity,
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
            on_started_leading=self._started,
            on_stopped_leading=self._stopped,
        )
        self.reconciler = Reconciler(
            kube, settings, EventRecorder(kube, COMPONENT, args.identity), metrics, self.elector.is_leader
        )
        self.term: Term | None = None
        self._lock = threading.Lock()

    def _started(self) -> None:
        with self._lock:
            self.metrics.leader.set(1)
            self.reconciler.pending.clear()
            self.term = Term(
                self.watch_kube, self.reconciler, self.settings, self.metrics, self.watch_timeout
            )
            self.term.start()

    def _stopped(self) -> None:
        with self._lock:
            self.metrics.leader.set(0)
            term, self.term = self.term, None
        if term is not None:
            term.close()

    def settings_changed(self) -> None:
        with self._lock:
            term = self.term
        if term is not None:
            term.enqueue_all()


def run(args: argparse.Namespace) -> int:
    from webhook.config import SettingsStore
    from webhook.core.settings import SettingsError
    from webhook.kube.client import Backoff, Kube, load_api_client
    from webhook.logs import configure_logging

    configure_logging(args.log_level)
    if args.log_level != "debug":  # urllib3 warns on each connection retry; our own logs say what failed
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    if not 0 < args.retry_period < args.renew_deadline < args.lease_duration:
        log.error("need 0 < --retry-period < --renew-deadline < --lease-duration")
        return 2
    try:
        settings = SettingsStore.from_file(args.config)
    except SettingsError as err:
        log.error("invalid settings file", extra={"fields": {"path": args.config, "problems": err.problems}})
        return 2
    try:
        api = load_api_client(args.kubeconfig)
        watch_api = load_api_client(args.kubeconfig)
        elector_api = load_api_client(args.kubeconfig, retries=False)
    except Exception as error:
        log.error("cannot load Kubernetes credentials", extra={"fields": {"error": str(error)}})
        return 2
    metrics = Metrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_bind)
    controller = Controller(
        Kube(api),
        Kube(watch_api),
        # Lease requests are not retried inside a renewal: the election loop is the retry.
        Kube(elector_api, timeout=max(1.0, args.renew_deadline / 2), backoff=Backoff(attempts=1)),
        settings,
        metrics,
        args,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("shutting down", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "starting",
        extra={
            "fields": {
                "identity": args.identity,
                "lease": f"{args.lease_namespace}/{args.lease_name}",
                "settings_version": settings.settings.version,
                "metrics_port": args.metrics_port,
            }
        },
    )
    elector = threading.Thread(target=controller.elector.run, args=(stop,), name="leader-election")
    elector.start()
    while not stop.wait(args.reload_interval):
        if settings.reload_if_changed():
            controller.settings_changed()
        if not elector.is_alive():
            log.error("leader election stopped unexpectedly")
            stop.set()
            elector.join()
            return 1
    elector.join(timeout=args.renew_deadline + 5)
    return 0
