"""`kafka-expose controller`: make every exposed broker slot's LoadBalancer Service exist, and only those.

Level-triggered. Watches (`watches.py`) keep small fingerprints of what can change the plan: opted-in
namespaces, pods labelled `kafka-expose.io/exposed`, StatefulSets, and the Services we manage. A
change puts its namespace on a deduplicated work queue (`queue.py`); workers (`--workers`, 4) reconcile
namespaces side by side, each namespace by one worker at a time (`reconciler.py`: read fresh, plan
with the pure core, act). Every namespace of
interest is also reconciled every `controller.resyncSeconds`. Replicas elect a leader with a Lease;
only the leader watches and writes: each leadership term has its own watches, queue and workers.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.config import SettingsStore
from webhook.controller.metrics import Metrics
from webhook.controller.queue import DEFAULT_WORKERS, WorkQueue
from webhook.controller.reconciler import Reconciler
from webhook.controller.watches import (
    Watcher,
    constant_fingerprint,
    pod_fingerprint,
    statefulset_fingerprint,
    version_fingerprint,
)
from webhook.core.names import EXPOSED_LABEL, MANAGED_BY_VALUE, OPT_IN_LABEL, OPT_IN_VALUE, OWNED_LABEL
from webhook.kube.client import ApiError, Kube
from webhook.kube.events import EventRecorder
from webhook.kube.leader import LeaderElector, Lease

log = logging.getLogger("kafka_expose.controller")

COMPONENT = "kafka-expose-controller"


@dataclass(frozen=True)
class TermOptions:
    watch_timeout: int = 300  # seconds the API server keeps a watch open
    workers: int = DEFAULT_WORKERS


class Term:
    """One leadership term: watches, the work queue, the workers and the periodic resync."""

    def __init__(
        self,
        watch_kube: Kube,
        reconciler: Reconciler,
        settings: SettingsStore,
        metrics: Metrics,
        options: TermOptions = TermOptions(),
    ) -> None:
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
                options.watch_timeout,
            )

        self.namespaces = watcher(
            "namespaces",
            Kube.path("v1", "namespaces"),
            f"{OPT_IN_LABEL}={OPT_IN_VALUE}",
            constant_fingerprint,
        )
        self.pods = watcher("pods", Kube.path("v1", "pods"), f"{EXPOSED_LABEL}=true", pod_fingerprint)
        self.services = watcher(
            "services", Kube.path("v1", "services"), f"{OWNED_LABEL}={MANAGED_BY_VALUE}", version_fingerprint
        )
        # StatefulSets carry no label of ours: all are watched, but only their uid and replicas are
        # kept, and only a namespace of interest is reconciled when one changes.
        self.statefulsets = watcher(
            "statefulsets",
            Kube.path("apps/v1", "statefulsets"),
            None,
            statefulset_fingerprint,
            self._statefulset_changed,
        )
        self.watchers = [self.namespaces, self.pods, self.services, self.statefulsets]
        self.threads: list[threading.Thread] = [
            *self.watchers,
            # Namespaces are reconciled side by side (the queue hands a namespace to one worker at a
            # time): a reconcile mostly waits for the API server, so one worker bounds a storm's pace.
            *(
                threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
                for i in range(options.workers)
            ),
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

    def problems(self) -> list[str]:
        """What is wrong with this term's loops (empty: all alive and making progress)."""
        now = time.monotonic()
        found = [f"thread {t.name} died" for t in self.threads if t.ident is not None and not t.is_alive()]
        found += [f"the {w.kind} watch made no progress" for w in self.watchers if w.stalled(now)]
        return found

    def synced(self) -> bool:
        return all(w.store.synced.is_set() for w in self.watchers)

    def _resync(self) -> None:
        while not self.stop.wait(float(self.settings.settings.controller.resync_seconds)):
            log.debug("periodic resync")
            self.enqueue_all()

    def _work(self) -> None:
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
                self.metrics.failures.labels(failure_mode(error)).inc()
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


def failure_mode(error: Exception) -> str:
    """The failure table's mode of a failed reconcile (README, Reliability: the controller's failures)."""
    if not isinstance(error, ApiError):
        return "unexpected"
    if error.reason == "NotLeader":
        return "lost-lease"
    return "conflict" if error.status == 409 else "api"


class Controller:
    """Leader election around terms."""

    def __init__(
        self,
        kube: Kube,
        watch_kube: Kube,
        elector_kube: Kube,
        settings: SettingsStore,
        metrics: Metrics,
        lease: Lease,
        term_options: TermOptions = TermOptions(),
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.watch_kube = watch_kube
        self.term_options = term_options
        self.elector = LeaderElector(
            elector_kube, lease, on_started_leading=self._started, on_stopped_leading=self._stopped
        )
        self.reconciler = Reconciler(
            kube, settings, EventRecorder(kube, COMPONENT, lease.identity), metrics, self.elector.is_leader
        )
        self.term: Term | None = None
        self._lock = threading.Lock()
        self._elector_thread: threading.Thread | None = None

    def _started(self) -> None:
        with self._lock:
            self.metrics.leader.set(1)
            self.reconciler.pending.clear()
            self.term = Term(self.watch_kube, self.reconciler, self.settings, self.metrics, self.term_options)
            self.term.start()

    def _stopped(self) -> None:
        with self._lock:
            self.metrics.leader.set(0)
            term, self.term = self.term, None
        if term is not None:
            term.close()

    def health(self) -> list[str]:
        """Liveness: the election loop runs and, while leading, every loop of the term is alive and
        making progress (a hung watch or a dead worker restarts the container)."""
        elector = self._elector_thread
        found = [] if elector is None or elector.is_alive() else ["the leader election loop died"]
        with self._lock:
            term = self.term
        return found + (term.problems() if term is not None else [])

    def readiness(self) -> dict[str, Any]:
        """Readiness: a follower is ready (a warm standby); a leader once its first lists are in."""
        with self._lock:
            term = self.term
        leading = self.elector.is_leader()
        synced = term.synced() if term is not None else False
        return {"ready": not leading or synced, "leader": leading, "synced": synced}

    def settings_changed(self) -> None:
        with self._lock:
            term = self.term
        if term is not None:
            term.enqueue_all()

    def run(self, stop: threading.Event, reload_interval: float) -> int:
        """Elect, lead, follow and hot-reload the settings until `stop` (0), or until the election
        loop dies (1)."""
        elector = threading.Thread(target=self.elector.run, args=(stop,), name="leader-election")
        self._elector_thread = elector
        elector.start()
        while not stop.wait(reload_interval):
            reloaded = self.settings.reload_if_changed()
            if reloaded:
                self.settings_changed()
            elif reloaded is False:  # invalid: the previous settings keep running (config.py logs why)
                self.metrics.failures.labels("settings-rejected").inc()
            if not elector.is_alive():
                log.error("leader election stopped unexpectedly")
                stop.set()
                elector.join()
                return 1
        elector.join(timeout=self.elector.lease.renew_deadline + 5)
        return 0
