"""Hot reload of the settings file and the serving certificate.

Files are polled, not watched with inotify: ConfigMap and Secret volumes are updated by the kubelet
swapping a `..data` symlink, so the watched path itself never changes. Each poll compares the stat of
the resolved file (device, inode, mtime, size); a change triggers a reload. A reload that fails keeps
the previous value serving, records the error (readiness shows it) and tells the listeners (metrics).

The stores hold immutable values swapped by one attribute assignment: request threads read them
without locks.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from webhook.core.settings import Settings, SettingsError, load_settings

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


class _Watched:
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


class SettingsStore(_Watched):
    """The settings in force, re-read from `path` when the file changes."""

    def __init__(self, settings: Settings, path: str | None = None) -> None:
        super().__init__([path] if path else [])
        self.path = path
        self._settings = settings

    @classmethod
    def from_file(cls, path: str) -> SettingsStore:
        """Load `path` now; raise SettingsError when it is invalid."""
        return cls(load_settings(path), path)

    @property
    def settings(self) -> Settings:
        return self._settings

    def reload_if_changed(self) -> bool | None:
        """None: nothing changed; True: reloaded; False: the new file is invalid (previous kept)."""
        if not self.path:
            return None
        with self._lock:
            if not self._take_change():
                return None
            try:
                settings = load_settings(self.path)
            except SettingsError as err:
                return self._rejected(
                    "; ".join(err.problems)[:1000],
                    "settings reload rejected, previous settings keep serving",
                    {"path": self.path, "problems": err.problems[:20], "version": self._settings.version},
                )
            previous = self._settings.version
            self._settings = settings
            self._reloaded()
        log.info(
            "settings reloaded",
            extra={"fields": {"path": self.path, "version": settings.version, "previous_version": previous}},
        )
        self._notify(True, settings.version)
        return True

    def readiness(self) -> tuple[bool, str]:
        text = f"settings: version {self._settings.version}"
        if self.last_error:
            text += " (a newer file was rejected: see the log)"
        return True, text


class CertificateError(ValueError):
    """The certificate, key or client CA files cannot be used."""


@dataclass(frozen=True)
class ServingCertificate:
    context: ssl.SSLContext
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int

    def valid_at(self, now: dt.datetime) -> bool:
        return self.not_before <= now <= self.not_after


def build_server_context(
    cert_file: str, key_file: str, client_ca_file: str | None = None
) -> ServingCertificate:
    """A TLS 1.2+ server context for the chain; with a client CA, client certificates are required."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
        if client_ca_file:
            context.load_verify_locations(cafile=client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        with open(cert_file, "rb") as handle:
            leaf = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ssl.SSLError, ValueError) as err:
        raise CertificateError(one_line(err)) from None
    return ServingCertificate(
        context=context,
        subject=leaf.subject.rfc4514_string(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=leaf.serial_number,
    )


class CertificateStore(_Watched):
    """The serving certificate in force (as an SSLContext), rebuilt when its files change.

    gunicorn asks for a context on each new connection (see `webhook.gunicorn_conf`): connections
    open before a rotation finish with the old certificate, new ones get the new one.
    """

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        client_ca_file: str | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__([p for p in (cert_file, key_file, client_ca_file) if p])
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self._clock = clock
        self._current = build_server_context(cert_file, key_file, client_ca_file)

    @property
    def current(self) -> ServingCertificate:
        return self._current

    @property
    def context(self) -> ssl.SSLContext:
        return self._current.context

    def reload_if_changed(self) -> bool | None:
        """None: nothing changed; True: reloaded; False: the new files are unusable (previous kept)."""
        with self._lock:
            if not self._take_change():
                return None
            try:
                loaded = build_server_context(self.cert_file, self.key_file, self.client_ca_file)
                if self._clock() > loaded.not_after:
                    raise CertificateError(f"the new certificate expired at {loaded.not_after.isoformat()}")
            except CertificateError as err:
                return self._rejected(
                    str(err),
                    "certificate reload rejected, previous certificate keeps serving",
                    {
                        "cert_file": self.cert_file,
                        "error": str(err),
                        "serving_not_after": self._current.not_after.isoformat(),
                    },
                )
            self._current = loaded
            self._reloaded()
        log.info(
            "certificate reloaded",
            extra={
                "fields": {
                    "cert_file": self.cert_file,
                    "subject": loaded.subject,
                    "serial": f"{loaded.serial:x}",
                    "not_after": loaded.not_after.isoformat(),
                }
            },
        )
        self._notify(True, loaded.subject)
        return True

    def readiness(self) -> tuple[bool, str]:
        cert = self._current
        now = self._clock()
        if now > cert.not_after:
            ok, text = False, f"certificate: expired at {cert.not_after.isoformat()}"
        elif now < cert.not_before:
            ok, text = False, f"certificate: not valid before {cert.not_before.isoformat()}"
        else:
            ok, text = True, f"certificate: {cert.subject} valid until {cert.not_after.isoformat()}"
        if self.last_error:
            text += f" (new certificate files rejected: {self.last_error})"
        return ok, text


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
