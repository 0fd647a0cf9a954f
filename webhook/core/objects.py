"""Lenient readers of Kubernetes objects as the API server or a chart sends them (raw dicts).

A field of the wrong type reads as empty, never raises: objects come from tenants and charts, and
the core decides on what it can read. One set for the whole package (issue 13: there were six).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def string_map(value: Any) -> dict[str, str]:
    """The str -> str entries of a mapping (labels, annotations, selectors)."""
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def metadata_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    return as_dict(obj.get("metadata"))


def spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    return as_dict(obj.get("spec"))


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return string_map(metadata_of(obj).get("labels"))


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return string_map(metadata_of(obj).get("annotations"))


def name_of(obj: Mapping[str, Any]) -> str:
    return str(metadata_of(obj).get("name") or "")


def namespace_of(obj: Mapping[str, Any], default: str = "") -> str:
    namespace = metadata_of(obj).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else default


def uid_of(obj: Mapping[str, Any]) -> str | None:
    uid = metadata_of(obj).get("uid")
    return uid if isinstance(uid, str) else None
