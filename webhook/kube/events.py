"""Kubernetes Events (core/v1) about the objects kafka-expose acts on, deduplicated as client-go's
recorder does (a repeat bumps the count of the first Event instead of adding another)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from webhook.kube.client import ApiError, Kube, now_rfc3339

log = logging.getLogger("kafka_expose.kube")


class EventRecorder:
    """Kubernetes Events (core/v1) about objects; a repeat within `window` seconds bumps the count of
    the first one instead of adding another, as client-go's recorder does. Never raises."""

    def __init__(self, kube: Kube, component: str, instance: str, window: float = 600.0) -> None:
        self.kube = kube
        self.component = component
        self.instance = instance[:128]
        self.window = window
        self._sent: dict[tuple[str, str, str, str], tuple[str, str, int, float]] = {}
        self._lock = threading.Lock()

    def record(self, involved: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """`involved`: apiVersion, kind, name, namespace, uid of the object; kind: Normal or Warning."""
        namespace = str(involved.get("namespace") or "default")
        message = message[:1024]
        key = (str(involved.get("uid") or involved.get("name")), kind, reason, message)
        now = now_rfc3339()
        with self._lock:
            previous = self._sent.get(key)
            if len(self._sent) > 4096:
                self._sent.clear()
        try:
            if previous and time.monotonic() - previous[3] < self.window:
                name, ns, count, _ = previous
                path = Kube.path("v1", "events", ns, name)
                try:
                    self.kube.merge_patch(path, {"count": count + 1, "lastTimestamp": now})
                    with self._lock:
                        self._sent[key] = (name, ns, count + 1, time.monotonic())
                    return
                except ApiError as error:
                    if error.status != 404:
                        raise
            name = f"{involved.get('name')}.{uuid.uuid4().hex[:16]}"
            self.kube.create(
                Kube.path("v1", "events", namespace),
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": namespace},
                    "involvedObject": {
                        k: involved[k]
                        for k in ("apiVersion", "kind", "name", "namespace", "uid")
                        if involved.get(k)
                    },
                    "reason": reason,
                    "message": message,
                    "type": kind,
                    "count": 1,
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "source": {"component": self.component},
                    "reportingComponent": self.component,
                    "reportingInstance": self.instance,
                    "action": reason,
                },
            )
            with self._lock:
                self._sent[key] = (name, namespace, 1, time.monotonic())
        except ApiError as error:
            log.warning(
                "cannot record an event",
                extra={"fields": {"reason": reason, "event_message": message, "error": str(error)}},
            )
