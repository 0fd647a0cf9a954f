"""Watches: list, then watch, keeping small fingerprints (never whole objects) of what can change the
plan, and telling the manager which namespace changed."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.core.names import PREFIX
from webhook.kube.client import ApiError, Backoff, Kube

log = logging.getLogger("kafka_expose.controller")


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
        self.last_progress = time.monotonic()  # a list, a watch (re)started or an event: for /healthz

    def stalled(self, now: float) -> bool:
        """No list, watch request or event for longer than one watch request can last (its server
        timeout, spread by up to 1.5x, plus the client's read timeout): the loop is hung."""
        return now - self.last_progress > self.timeout_seconds * 1.5 + 60.0

    def run(self) -> None:
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
        self.last_progress = time.monotonic()
        items, version = self.kube.list_all(self.path, self.selector)
        self.last_progress = time.monotonic()
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
        # Spread the reconnections of the watches (as client-go does).
        timeout = int(self.timeout_seconds * random.uniform(1.0, 1.5))
        self.last_progress = time.monotonic()
        for event in self.kube.watch(self.path, version, self.selector, timeout):
            self.last_progress = time.monotonic()
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


def pod_fingerprint(pod: Mapping[str, Any]) -> Hashable:
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    owners = tuple(sorted(str(o.get("uid")) for o in metadata.get("ownerReferences") or []))
    return (
        metadata.get("uid"),
        bool(metadata.get("deletionTimestamp")),
        owners,
        tuple(sorted((k, v) for k, v in annotations.items() if k.startswith(PREFIX))),
    )


def statefulset_fingerprint(statefulset: Mapping[str, Any]) -> Hashable:
    return (
        (statefulset.get("metadata") or {}).get("uid"),
        (statefulset.get("spec") or {}).get("replicas", 1),
        str((statefulset.get("spec") or {}).get("ordinals")),
    )


def version_fingerprint(obj: Mapping[str, Any]) -> Hashable:
    return (obj.get("metadata") or {}).get("resourceVersion")


def constant_fingerprint(obj: Mapping[str, Any]) -> Hashable:
    return True
