"""What the offline commands (explain, check) read: the settings file and the manifests."""

from __future__ import annotations

from typing import Any

from webhook.config import load_settings
from webhook.core.settings import Settings, SettingsError
from webhook.documents import DocumentError, InputError, objects, read_input, split_documents


def settings_and_objects(config: str, filename: str) -> tuple[Settings, list[dict[str, Any]]]:
    """The settings file's Settings and the objects of the manifests in `filename` (- for stdin)."""
    try:
        settings = load_settings(config)
        items = objects(split_documents(read_input(filename)))
    except SettingsError as err:
        raise InputError(f"invalid settings: {err}") from None
    except (DocumentError, OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read manifests: {err}") from None
    return settings, items
