"""Per-namespace settings, and what the webhook server needs from the API server for the policy.

* The namespace's effective settings come from `webhook.core.overrides.settings_for_namespace` over
  the annotations the cache holds.
* `NamespaceCache`: namespace labels and annotations kept by a watch in a background thread, and the
  LoadBalancer count for the cap, by a LIST of the namespace's Services at admission plus the
  creations this process admitted that the LIST does not show yet (see `count_load_balancers`).
* `PolicyHook` (the server's `validate` hook) and `NamespaceMutate` (the server's `mutate`): the
  policy and the core with the namespace's effective settings.

Without API access (`NamespaceCache.connect` returns None) overrides are not applied and the cap is
not checked; both are logged once. With API access, a LoadBalancer count that could not be read
(LIST failed or timed out) does not skip the cap: the request is judged as over it (`cap_unknown`),
denied when loadBalancerCap is enforced, warned when it warns, and counted by `on_failure("cap_lookup")`.
The LIST's timeout (READ_TIMEOUT_SECONDS) is well under the webhook's timeoutSeconds (5), so the
answer, a denial, still reaches the API server instead of its own timeout (and its failurePolicy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.admission.responses import warning_text
from webhook.core import Decision
from webhook.core import mutate as core_mutate
from webhook.core.overrides import settings_for_namespace
from webhook.core.policy import (
    LOAD_BALANCER_CAP,
    Assessment,
    RuleOutcome,
    Violation,
    assess_request,
    cap_applies,
    is_load_balancer,
    mode_of,
    policy_off,
    verdict_of,
)
from webhook.core.settings import Settings
from webhook.kube.client import Kube, load_api_client

log = logging.getLogger("kafka_expose.namespaces")

NAMESPACES = Kube.path("v1", "namespaces")
# One API read made while an admission request waits: under the webhooks' timeoutSeconds (5) with
# room for the rest of the request, so a slow API server yields our answer, not the API server's timeout.
READ_TIMEOUT_SECONDS = 2.0


# record(rule, outcome): count one policy decision (wired to a metrics counter by the server)
PolicyRecorder = Callable[[str, RuleOutcome], None]
# on_failure(what): count a policy check that could not be made ("cap_lookup")
FailureRecorder = Callable[[str], None]


# ---------------------------------------------------------------------------------- API access


class KubeReader(Protocol):
    """The reads the cache makes (raw dicts as the API server sends them)."""

    def list_namespaces(self) -> tuple[list[dict[str, Any]], str]: ...  # items, resourceVersion

    def watch_namespaces(self, resource_version: str) -> Iterator[dict[str, Any]]: ...  # raw events

    def read_namespace(self, name: str) -> dict[str, Any] | None: ...  # None: not found

    def list_services(self, namespace: str) -> list[dict[str, Any]]: ...


class ClientReader:
    """`KubeReader` over `webhook.kube.Kube`, the one client. Reads made while a request waits are
    not retried: the API server's webhook timeout bounds them, a retry would only outlast it."""

    def __init__(self, kube: Kube, watch_seconds: int = 300) -> None:
        self.kube = kube
        self.watch_seconds = watch_seconds

    def list_namespaces(self) -> tuple[list[dict[str, Any]], str]:
        return self.kube.list_all(NAMESPACES)

    def watch_namespaces(self, resource_version: str) -> Iterator[dict[str, Any]]:
        return self.kube.watch(NAMESPACES, resource_version, timeout_seconds=self.watch_seconds)

    def stop(self) -> None:
        self.kube.close_watches()

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(Kube.path("v1", "namespaces", name=name), retry=False)

    def list_services(self, namespace: str) -> list[dict[str, Any]]:
        items, _ = self.kube.list_all(Kube.path("v1", "services", namespace), retry=False)
        return items


@dataclass(frozen=True)
class NamespaceInfo:
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


def _info(obj: Mapping[str, Any]) -> tuple[str, NamespaceInfo]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("name", "")), NamespaceInfo(
        dict(metadata.get("labels") or {}), dict(metadata.get("annotations") or {})
    )


MISSING_SECONDS = 30.0  # a namespace a direct read did not find, unless the watch adds it sooner
FAILED_SECONDS = 5.0  # a namespace that could not be read (API server down or busy)
MAX_UNREADABLE = 1000


class NamespaceCache:
    """Namespaces (labels, annotations) from a watch, and the LoadBalancer count for the cap.

    The cap count: the namespace's Services are LISTed at admission (one cheap read, done only for a
    request that adds a LoadBalancer under a configured cap), and the LoadBalancer creations this
    process admitted but the LIST does not show yet are added ("reservations": released as soon as a
    LIST shows the Service, or after `reservation_seconds` if it never appears, e.g. another webhook
    denied it). Count, check and reservation run under one per-namespace lock, so concurrent creates
    reaching this process are serialised and the cap is exact. Requests answered by other processes
    (several gunicorn workers, several replicas) cannot see each other's reservations: the cap is exact
    when one process answers the namespace's requests and may be exceeded by concurrent creates
    landing in different processes, at most by (processes - 1). A ResourceQuota
    `services.loadbalancers` is the API server's own exact limit, for a hard guarantee.
    """

    def __init__(
        self,
        reader: KubeReader,
        *,
        reservation_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = 2.0,
    ) -> None:
        self.reader = reader
        self.reservation_seconds = reservation_seconds
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._namespaces: dict[str, NamespaceInfo] = {}
        # names a direct read did not find (or could not read): name -> until when that answer stands
        self._unreadable: dict[str, float] = {}
        self._lock = threading.Lock()
        self._namespace_locks: dict[str, threading.Lock] = {}
        self._reserved: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()

    # --- construction and the watch ---

    @classmethod
    def connect(cls, kubeconfig: str | None = None, **options: Any) -> NamespaceCache | None:
        """A cache over the API server of `kubeconfig`, or in-cluster; None (logged) without access."""
        if not kubeconfig and not os.environ.get("KUBERNETES_SERVICE_HOST"):
            log.warning(
                "no API access (not in a cluster, no --kubeconfig): namespace overrides are not "
                "applied and the LoadBalancer cap is not checked"
            )
            return None
        try:
            # urllib3 retries off: a read made while a request waits must not outlast its timeout.
            api_client = load_api_client(kubeconfig, retries=False)
        except Exception as err:
            log.warning(
                "cannot configure API access: namespace overrides are not applied and the LoadBalancer "
                "cap is not checked",
                extra={"fields": {"kubeconfig": kubeconfig, "error": str(err)}},
            )
            return None
        return cls(ClientReader(Kube(api_client, timeout=READ_TIMEOUT_SECONDS)), **options)

    def start(self) -> NamespaceCache:
        """Start the namespace watch in a daemon thread (in the process that serves requests)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="namespace-cache", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        stop = getattr(self.reader, "stop", None)
        if callable(stop):
            stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items, version = self.reader.list_namespaces()
                fresh = dict(_info(item) for item in items)
                with self._lock:
                    self._namespaces = fresh
                    self._unreadable.clear()
                self.synced.set()
                self._watch(version)
            except Exception as err:
                if self._stop.is_set():
                    return
                log.warning("namespace watch failed, relisting", extra={"fields": {"error": str(err)}})
                self._stop.wait(self.retry_seconds)

    def _watch(self, version: str) -> None:
        for event in self.reader.watch_namespaces(version):
            if self._stop.is_set():
                return
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise RuntimeError(f"watch error: {obj.get('message', obj)}")
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            name, info = _info(obj)
            with self._lock:
                if kind == "DELETED":
                    self._namespaces.pop(name, None)
                else:
                    self._namespaces[name] = info
                    self._unreadable.pop(name, None)

    # --- namespaces ---

    def namespace(self, name: str) -> NamespaceInfo | None:
        """The namespace's labels and annotations; read directly when the watch has not seen it yet.

        A read that finds nothing is remembered for MISSING_SECONDS (the watch's ADDED event ends it
        sooner) and a failed one for FAILED_SECONDS: else every request naming that namespace would
        wait for an API round trip, and one at a time for a timeout while the API server is down
        (measured: the load test's client, in a namespace that does not exist, saw p99 of 100 ms
        while the API server was busy)."""
        now = self._clock()
        with self._lock:
            info = self._namespaces.get(name)
            if info is None and self._unreadable.get(name, now) > now:
                return None
        if info is not None:
            return info
        try:
            obj = self.reader.read_namespace(name)
        except Exception as err:
            log.warning("cannot read namespace", extra={"fields": {"namespace": name, "error": str(err)}})
            self._remember_unreadable(name, now + FAILED_SECONDS)
            return None
        if obj is None:
            self._remember_unreadable(name, now + MISSING_SECONDS)
            return None
        _, info = _info(obj)
        with self._lock:
            self._namespaces.setdefault(name, info)
        return info

    def _remember_unreadable(self, name: str, until: float) -> None:
        with self._lock:
            if len(self._unreadable) >= MAX_UNREADABLE:  # names come from requests: bounded
                self._unreadable.clear()
            self._unreadable[name] = until

    def annotations(self, name: str) -> Mapping[str, str] | None:
        info = self.namespace(name)
        return info.annotations if info is not None else None

    # --- LoadBalancer count for the cap ---

    @contextlib.contextmanager
    def cap_lock(self, namespace: str) -> Iterator[None]:
        """Held around count, check and reservation of one request."""
        with self._lock:
            lock = self._namespace_locks.setdefault(namespace, threading.Lock())
        with lock:
            yield

    def count_load_balancers(self, namespace: str, exclude: str | None = None) -> int | None:
        """LoadBalancer Services of the namespace other than `exclude`, counting the admitted creations
        not listed yet; None (logged) when the LIST fails."""
        try:
            services = self.reader.list_services(namespace)
        except Exception as err:
            log.warning(
                "cannot list Services: LoadBalancer cap not checked",
                extra={"fields": {"namespace": namespace, "error": str(err)}},
            )
            return None
        listed = {str((s.get("metadata") or {}).get("name")) for s in services if is_load_balancer(s)}
        now = self._clock()
        with self._lock:
            reserved = self._reserved.setdefault(namespace, {})
            for name, expiry in list(reserved.items()):
                if name in listed or expiry <= now:
                    del reserved[name]
            pending = set(reserved)
        return len((listed | pending) - {exclude})

    def reserve(self, namespace: str, name: str) -> None:
        """Count an admitted LoadBalancer creation until a LIST shows it (or the reservation expires)."""
        with self._lock:
            self._reserved.setdefault(namespace, {})[name] = self._clock() + self.reservation_seconds


# --------------------------------------------------------------------------- the server's hooks


_logged_once: set[str] = set()


def _log_once(key: str, message: str) -> None:
    if key not in _logged_once:
        _logged_once.add(key)
        log.warning(message)


def effective_settings(
    cache: NamespaceCache | None, settings: Settings, namespace: str | None
) -> tuple[Settings, list[str]]:
    """The namespace's settings (platform settings without a cache or a namespace)."""
    if cache is None or not namespace:
        overrides = settings.policy.namespace_overrides
        if cache is None and (overrides.allowed_domains or overrides.allowed_clouds):
            _log_once("overrides", "no API access: namespace overrides (kafka-expose.io/*) are not applied")
        return settings, []
    return settings_for_namespace(settings, cache.annotations(namespace), namespace)


class PolicyHook:
    """The server's `validate` hook: `(AdmissionRequest, Settings) -> (allowed, message, warnings)`."""

    def __init__(
        self,
        cache: NamespaceCache | None,
        record: PolicyRecorder | None = None,
        on_failure: FailureRecorder | None = None,
    ) -> None:
        self.cache = cache
        self.record = record
        self.on_failure = on_failure

    def __call__(self, request: Mapping[str, Any], settings: Settings) -> tuple[bool, str, Sequence[str]]:
        obj = request.get("object")
        metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
        namespace = request.get("namespace") or (metadata or {}).get("namespace")
        namespace = namespace if isinstance(namespace, str) and namespace else None
        effective, problems = effective_settings(self.cache, settings, namespace)
        if policy_off(effective):
            return True, "", []
        if cap_applies(request, effective) and namespace:
            if self.cache is None:
                _log_once("cap", "no API access: the LoadBalancer cap (loadBalancerCap) is not checked")
                assessment = assess_request(request, effective, load_balancers_in_namespace=None)
                verdict = verdict_of(assessment)
            else:
                name = str((metadata or {}).get("name") or "")
                with self.cache.cap_lock(namespace):
                    others = self.cache.count_load_balancers(namespace, exclude=name or None)
                    assessment = assess_request(request, effective, load_balancers_in_namespace=others)
                    if others is None:
                        assessment = cap_unknown(assessment, effective, namespace, name)
                        if self.on_failure is not None:
                            self.on_failure("cap_lookup")
                    verdict = verdict_of(assessment)
                    if verdict.allowed and others is not None and name and not request.get("dryRun"):
                        self.cache.reserve(namespace, name)
        elif self.cache is not None and namespace and broker_cap_applies(request, effective):
            assessment = assess_request(request, effective, load_balancers_in_namespace=None)
            assessment = self._broker_slot(request, effective, namespace, assessment)
            verdict = verdict_of(assessment)
        else:
            assessment = assess_request(request, effective, load_balancers_in_namespace=None)
            verdict = verdict_of(assessment)
            verdict.outcomes.pop(LOAD_BALANCER_CAP, None)  # not a request the cap applies to
        if self.record is not None:
            for rule, outcome in verdict.outcomes.items():
                self.record(rule, outcome)
        warnings = [warning_text(v.message, keep=v.tail) for v in verdict.warnings]
        if assessment.concerns_kafka:
            warnings += [warning_text(p) for p in problems]
        return verdict.allowed, verdict.message or "", warnings

    def _broker_slot(
        self, request: Mapping[str, Any], settings: Settings, namespace: str, assessment: Assessment
    ) -> Assessment:
        """The assessment with the cap checked for the new broker pod's future LoadBalancer."""
        assert self.cache is not None
        decision = core_mutate(request.get("object") or {}, settings, namespace)
        plans = [p for p in decision.plans if p.service_name] if decision.outcome == "mutated" else []
        if not plans:
            return assessment
        plan = plans[0]
        others = self.cache.count_load_balancers(namespace, exclude=plan.service_name)
        if others is None and self.on_failure is not None:
            self.on_failure("cap_lookup")
        violation = _broker_slot_violation(settings, namespace, plan.pod, plan.service_name, others)
        return Assessment(
            (*assessment.violations, *([violation] if violation else [])),
            (*assessment.checked, LOAD_BALANCER_CAP),
            assessment.unchecked,
            assessment.concerns_kafka,
        )


def broker_cap_applies(request: Mapping[str, Any], settings: Settings) -> bool:
    """A new Pod under a configured cap (its broker would get a LoadBalancer from the controller)."""
    obj = request.get("object")
    return (
        settings.policy.max_load_balancers_per_namespace is not None
        and mode_of(settings, LOAD_BALANCER_CAP) != "off"
        and request.get("operation") == "CREATE"
        and isinstance(obj, Mapping)
        and obj.get("kind") == "Pod"
    )


def cap_unknown(assessment: Assessment, settings: Settings, namespace: str, name: str) -> Assessment:
    """The assessment with the cap counted as exceeded: its count could not be read, and a cap that is
    skipped whenever the API server is slow is no cap (issue 15, item 7)."""
    violation = Violation(
        LOAD_BALANCER_CAP,
        f"Service {name or '(unnamed)'}: the LoadBalancer Services of namespace {namespace} could not be "
        f"counted, so the cap of {settings.policy.max_load_balancers_per_namespace} could not be checked: "
        "retry (policy rule loadBalancerCap)",
        mode_of(settings, LOAD_BALANCER_CAP),
    )
    return Assessment(
        (*assessment.violations, violation),
        (*assessment.checked, LOAD_BALANCER_CAP),
        tuple(rule for rule in assessment.unchecked if rule != LOAD_BALANCER_CAP),
        assessment.concerns_kafka,
    )


def _broker_slot_violation(
    settings: Settings, namespace: str, pod: str, service: str, others: int | None
) -> Violation | None:
    """The cap judged for the LoadBalancer a new broker pod will get (issue 15, item 4): a broker that
    advertises a name whose Service the cap will never allow is refused (enforce) or warned (warn).
    A count that could not be read only warns: a lookup failure never keeps a broker from starting."""
    cap = settings.policy.max_load_balancers_per_namespace
    mode = mode_of(settings, LOAD_BALANCER_CAP)
    if others is None:
        text = (
            f"Pod {pod}: the LoadBalancer Services of namespace {namespace} could not be counted, so "
            f"whether Service {service} fits the cap of {cap} is unknown (policy rule loadBalancerCap)"
        )
        return Violation(LOAD_BALANCER_CAP, text, "warn")
    if others + 1 <= (cap or 0):
        return None
    text = (
        f"Pod {pod}: namespace {namespace} already has {others} LoadBalancer Service(s), the cap is {cap}: "
        f"this broker's Service {service} would not be created and its advertised name would not resolve; "
        "scale the StatefulSet down or raise policy.maxLoadBalancersPerNamespace (policy rule loadBalancerCap)"
    )
    return Violation(LOAD_BALANCER_CAP, text, mode)


class NamespaceMutate:
    """The server's `mutate`: the core with the namespace's effective settings; a refused override
    request comes back as a warning on the brokers and Services the core handles."""

    def __init__(
        self,
        cache: NamespaceCache | None,
        mutate: Callable[[Mapping[str, Any], Settings, str | None], Decision] = core_mutate,
    ) -> None:
        self.cache = cache
        self.mutate = mutate

    def __call__(self, obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
        if namespace is None and isinstance(obj, Mapping):
            found = (obj.get("metadata") or {}).get("namespace")
            namespace = found if isinstance(found, str) else None
        effective, problems = effective_settings(self.cache, settings, namespace)
        decision = self.mutate(obj, effective, namespace)
        if problems and decision.outcome != "skipped":
            extra = tuple(warning_text(p) for p in problems)
            decision = dataclasses.replace(decision, warnings=(*decision.warnings, *extra))
        return decision


def policy_hooks(
    kubeconfig: str | None = None,
    record: PolicyRecorder | None = None,
    *,
    start: bool = True,
    on_failure: FailureRecorder | None = None,
) -> tuple[PolicyHook, NamespaceMutate, NamespaceCache | None]:
    """What `create_app` needs: `validate=hook, mutate=mutate`. Call it in each worker (after fork):
    the cache's watch thread and HTTP connections must belong to the serving process."""
    cache = NamespaceCache.connect(kubeconfig)
    if cache is not None and start:
        cache.start()
    return PolicyHook(cache, record, on_failure), NamespaceMutate(cache), cache
