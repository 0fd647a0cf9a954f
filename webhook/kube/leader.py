"""Leader election on a coordination.k8s.io/v1 Lease.

Why not `kubernetes.leaderelection` (read in kubernetes 35): its `acquire()` sleeps in a loop with no
way to stop it, it never releases the Lease on shutdown (a successor waits a full lease duration), it
judges expiry by wall-clock time rather than a monotonic clock, and it goes through the model classes.
client-go's algorithm is small enough to keep here: every write conditioned on the resourceVersion
read just before, expiry by this process's own monotonic clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from webhook.kube.client import ApiError, Kube, now_rfc3339

log = logging.getLogger("kafka_expose.kube")


@dataclass(frozen=True)
class Lease:
    """Where and how the replicas elect their leader (client-go's LeaderElectionConfig)."""

    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")


@dataclass(eq=False)
class LeaderElector:
    """Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

    A candidate takes the Lease when it is free (no holder, or not renewed for its duration as seen
    by this process's own clock: no clock comparison across machines). Every write is conditioned on
    the resourceVersion read just before, so two candidates never both win. The leader renews every
    `retry_period`; when it could not renew for `renew_deadline` it stops leading. On shutdown the
    leader releases the Lease (no holder) so a successor takes over at once.
    """

    kube: Kube
    lease: Lease
    on_started_leading: Callable[[], None] = lambda: None
    on_stopped_leading: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.monotonic
    _leading: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _observed: tuple[Any, ...] | None = field(default=None, init=False, repr=False)
    _observed_at: float = field(default=0.0, init=False, repr=False)
    _renewed_at: float = field(default=0.0, init=False, repr=False)

    @property
    def path(self) -> str:
        return Kube.path("coordination.k8s.io/v1", "leases", self.lease.namespace, self.lease.name)

    def is_leader(self) -> bool:
        return self._leading.is_set()

    def run(self, stop: threading.Event) -> None:
        """Campaign, lead, renew until `stop` is set; then release the Lease if held."""
        try:
            while not stop.is_set():
                started = self.clock()
                if self._leading.is_set() and started - self._renewed_at > self.lease.renew_deadline:
                    self._step_down("could not renew the lease")
                won = self._try_acquire_or_renew()
                now = self.clock()
                if won and now - started > self.lease.renew_deadline:
                    won = False  # too slow to count: others may have seen the lease expire meanwhile
                if won:
                    self._renewed_at = started  # the lease runs from when the renewal was sent
                    if not self._leading.is_set():
                        self._leading.set()
                        log.info("became the leader", extra={"fields": self._fields()})
                        self.on_started_leading()
                elif self._leading.is_set() and (
                    now - self._renewed_at > self.lease.renew_deadline or self._held_by_other()
                ):
                    self._step_down("could not renew the lease")
                stop.wait(self.lease.retry_period)
        finally:
            if self._leading.is_set():
                self._step_down("shutting down", expected=True)
                self.release()

    def _fields(self) -> dict[str, Any]:
        return {"lease": f"{self.lease.namespace}/{self.lease.name}", "identity": self.lease.identity}

    def _step_down(self, why: str, expected: bool = False) -> None:
        self._leading.clear()
        log.log(
            logging.INFO if expected else logging.WARNING,
            "stopped leading",
            extra={"fields": {**self._fields(), "why": why}},
        )
        self.on_stopped_leading()

    def _held_by_other(self) -> bool:
        return self._observed is not None and self._observed[0] not in (None, "", self.lease.identity)

    def _try_acquire_or_renew(self) -> bool:
        now = now_rfc3339(micro=True)
        try:
            lease = self.kube.get(self.path)
            if lease is None:
                self.kube.create(
                    Kube.path("coordination.k8s.io/v1", "leases", self.lease.namespace),
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.lease.name, "namespace": self.lease.namespace},
                        "spec": {
                            "holderIdentity": self.lease.identity,
                            "leaseDurationSeconds": max(1, round(self.lease.duration)),
                            "acquireTime": now,
                            "renewTime": now,
                            "leaseTransitions": 0,
                        },
                    },
                )
                self._observe((self.lease.identity, now))
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or None
            self._observe((holder, spec.get("renewTime"), spec.get("leaseDurationSeconds")))
            duration = spec.get("leaseDurationSeconds") or self.lease.duration
            if (
                holder not in (None, self.lease.identity)
                and self._observed_at + float(duration) > self.clock()
            ):
                return False  # held by another candidate, and renewed recently
            new_spec = dict(spec)
            new_spec.update(
                {
                    "holderIdentity": self.lease.identity,
                    "leaseDurationSeconds": max(1, round(self.lease.duration)),
                    "renewTime": now,
                }
            )
            if holder != self.lease.identity:
                new_spec["acquireTime"] = now
                new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            # PUT with the resourceVersion just read: 409 if anyone wrote the Lease in between.
            self.kube.replace(self.path, {**lease, "spec": new_spec})
            self._observe((self.lease.identity, now))
            return True
        except ApiError as error:
            if error.status not in (409,):
                log.warning("lease request failed", extra={"fields": {**self._fields(), "error": str(error)}})
            return False

    def _observe(self, record: tuple[Any, ...]) -> None:
        if record != self._observed:
            self._observed = record
            self._observed_at = self.clock()

    def release(self) -> None:
        """Give the Lease up (no holder, 1 s duration), if this candidate still holds it."""
        try:
            lease = self.kube.get(self.path)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.lease.identity:
                return
            now = now_rfc3339(micro=True)
            new_spec = {**spec, "leaseDurationSeconds": 1, "renewTime": now}
            new_spec.pop("holderIdentity", None)
            self.kube.replace(self.path, {**lease, "spec": new_spec})
            log.info("released the lease", extra={"fields": self._fields()})
        except ApiError as error:
            log.warning("cannot release the lease", extra={"fields": {**self._fields(), "error": str(error)}})
