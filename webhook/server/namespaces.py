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
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.core.policy import (
    is_load_balancer,
)
from webhook.kube.client import Kube, load_api_client

log = logging.getLogger("kafka_expose.namespaces")

NAMESPACES = Kube.path("v1", "namespaces")
# One API read made while an admission request waits: under the webhooks' timeoutSeconds (5) with
# room for the rest of the request, so a slow API server yields our answer, not the API server's timeout.
READ_TIMEOUT_SECONDS = 2.0


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
