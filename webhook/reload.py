"""Hot reload of files: the settings file (webhook.config) and the serving certificate (webhook.tls.served).

Files are polled, not watched with inotify: ConfigMap and Secret volumes are updated by the kubelet
swapping a `..data` symlink, so the watched path itself never changes. Each poll compares the stat of
the resolved file (device, inode, mtime, size); a change triggers a reload. A reload that fails keeps
the previous value serving, records the error (readiness shows it) and tells the listeners (metrics).

The stores hold immutable values swapped by one attribute assignment: request threads read them
without locks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence

log = logging.getLogger("kafka_expose.reload")

# (resolved path, device, inode, mtime ns, size), or (path, -1, -1, -1, -1) when missing
FileStat = tuple[str, int, int, int, int]
# listener(ok, detail): called after each reload attempt
ReloadListener = Callable[[bool, str], None]


def stat_files(paths: Iterable[str]) -> tuple[FileStat, ...]:
    """What identifies the current content of `paths`, following symlinks (`..data` swaps)."""
    stats: list[FileStat] = []
    for path in paths:
        try:
            st = os.stat(path)
            stats.append((os.path.realpath(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            stats.append((path, -1, -1, -1, -1))
    return tuple(stats)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:500]


class Watched:
    """Common part of the stores: which files, their last stat, the last error, the listeners."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(paths)
        self._stat = stat_files(self.paths)
        self._lock = threading.Lock()
        self._listeners: list[ReloadListener] = []
        self.last_error: str | None = None
        self.loaded_at = time.time()

    def add_listener(self, listener: ReloadListener) -> None:
        self._listeners.append(listener)

    def _notify(self, ok: bool, detail: str) -> None:
        for listener in self._listeners:
            try:
                listener(ok, detail)
            except Exception:
                log.exception("reload listener failed")

    def _take_change(self) -> bool:
        """Whether the files changed since the last call (or the start); with the lock held."""
        current = stat_files(self.paths)
        if current == self._stat:
            return False
        self._stat = current
        return True

    def _rejected(self, error: str, message: str, fields: dict[str, object]) -> bool:
        """A reload failed and the previous value keeps serving: record, log and tell it; False."""
        self.last_error = error
        log.error(message, extra={"fields": fields})
        self._notify(False, error)
        return False

    def _reloaded(self) -> None:
        self.last_error = None
        self.loaded_at = time.time()


class Watcher:
    """A daemon thread that polls the stores every `interval` seconds."""

    def __init__(self, checks: Sequence[Callable[[], bool | None]], interval: float = 1.0) -> None:
        self.checks = tuple(checks)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        for check in self.checks:
            try:
                check()
            except Exception:  # a bug in a check must not stop the watching
                log.exception("file watch check failed")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kafka-expose-reload", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
