"""The settings FILE: YAML text in, validated Settings out (webhook.core.settings), hot reloaded.

The model and its rules are pure and live in the core; reading the file, parsing YAML, the version
digest and the reload on change are this edge's.
"""

from __future__ import annotations

import hashlib
import json
import logging

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


def load_settings(path: str) -> Settings:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise SettingsError([f"{path}: {err.strerror or err}"]) from None
    return load_settings_text(text)


class SettingsStore(Watched):
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
