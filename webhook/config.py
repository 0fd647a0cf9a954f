"""The settings FILE: YAML text in, validated Settings out (webhook.core.settings), hot reloaded.

The model and its rules are pure and live in the core; reading the file, parsing YAML, the version
digest and the reload on change are this edge's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import yaml

from webhook.core.settings import Settings, SettingsError, parse_settings
from webhook.reload import Watched

log = logging.getLogger("kafka_expose.config")


def settings_digest(settings: Settings) -> str:
    """12 hex digits over the canonical JSON of the settings (camelCase keys, sorted)."""
    canonical = json.dumps(settings.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_settings_text(text: str) -> Settings:
    """Parse YAML text into Settings. The version is a digest of what the settings ARE (their
    validated, canonical form), not of the text: a comment or a reordering changes no pod template, so
    `helm upgrade` through the post-renderer restarts no broker for it."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SettingsError([f"(yaml): {' '.join(str(err).split())}"]) from None
    settings = parse_settings(document)
    return settings.model_copy(update={"version": settings_digest(settings)})


def read_settings_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise SettingsError([f"{path}: {err.strerror or err}"]) from None


def load_settings(path: str) -> Settings:
    return load_settings_text(read_settings_text(path))


class SettingsStore(Watched):
    """The settings in force, re-read from `path` when the file changes."""

    def __init__(self, settings: Settings, path: str | None = None) -> None:
        super().__init__([path] if path else [])
        self.path = path
        self._settings = settings
        # Shared by the processes of one server (see `share_last_good`); None: not shared.
        self.last_good: Path | None = None

    def share_last_good(self, path: Path) -> None:
        """Keep the last settings any process of this server loaded in `path`.

        Gunicorn forks a replacement worker from the arbiter, whose store holds the settings of its
        start: if the file has become invalid meanwhile, that worker would serve the boot settings
        while its siblings serve the last good ones. With the snapshot it adopts the last good ones
        too (every process writes it on each successful load; all agree on its content)."""
        self.last_good = path
        self._write_last_good(self._settings)

    def _write_last_good(self, settings: Settings) -> None:
        if self.last_good is None or not self.path:
            return
        try:
            text = read_settings_text(self.path)
            if load_settings_text(text).version != settings.version:
                return  # the file moved on since these settings were read: not this snapshot's to write
            temporary = self.last_good.with_name(f".{self.last_good.name}.{os.getpid()}")
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, self.last_good)
        except (OSError, SettingsError) as err:
            log.warning("cannot share the last good settings", extra={"fields": {"error": str(err)}})

    def _adopt_last_good(self) -> bool:
        """After a rejected file: take the snapshot when another process loaded newer settings."""
        if self.last_good is None:
            return False
        try:
            shared = load_settings_text(self.last_good.read_text(encoding="utf-8"))
        except (OSError, SettingsError):
            return False
        if shared.version == self._settings.version:
            return False
        previous, self._settings = self._settings.version, shared
        log.warning(
            "the settings file is invalid: serving the last good settings another process loaded",
            extra={"fields": {"path": self.path, "version": shared.version, "previous_version": previous}},
        )
        return True

    @classmethod
    def from_file(cls, path: str) -> SettingsStore:
        """Load `path` now; raise SettingsError when it is invalid."""
        return cls(load_settings(path), path)

    @classmethod
    def at_start(cls, path: str, process_log: logging.Logger) -> SettingsStore | None:
        """A process's first load: the store, or None after one error line listing every problem."""
        try:
            return cls.from_file(path)
        except SettingsError as err:
            process_log.error(
                "invalid settings file", extra={"fields": {"path": path, "problems": err.problems}}
            )
            return None

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
                self._adopt_last_good()
                return self._rejected(
                    "; ".join(err.problems)[:1000],
                    "settings reload rejected, previous settings keep serving",
                    {"path": self.path, "problems": err.problems[:20], "version": self._settings.version},
                )
            previous = self._settings.version
            self._settings = settings
            self._reloaded()
            self._write_last_good(settings)
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
