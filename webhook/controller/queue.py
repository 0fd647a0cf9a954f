"""The controller's work queue: namespaces to reconcile, deduplicated, one worker per item at a time
(as client-go's workqueue), each with a due time so failures back off and waits come due."""

from __future__ import annotations

import heapq
import threading
import time

DEFAULT_WORKERS = 4  # namespaces reconciled at once (controller-runtime's MaxConcurrentReconciles)


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
