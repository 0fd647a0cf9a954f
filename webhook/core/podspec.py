"""Reading and editing raw pod specs (plain dicts as the API server sent them).

Raw dicts, never the client's model classes: those drop fields they do not know and turn a no-op
into a spurious patch. Accessors raise `ShapeError` on anything that is not what the Pod schema
says, so hostile or broken objects are refused with a reason instead of a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

_T = TypeVar("_T")


class ShapeError(ValueError):
    """The object does not have the shape Kubernetes gives it."""


def dict_at(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ShapeError(f"{where} is not an object")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ShapeError(f"{where} is not a list")
    return value


def as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ShapeError(f"{where} is not a string")
    return value


_STR = {str}


def str_map(value: Any, where: str) -> dict[str, str]:
    mapping = dict_at(value, where)
    # the types of all keys and values, collected at C speed (JSON has no str subclasses)
    if not {*map(type, mapping), *map(type, mapping.values())} <= _STR:
        raise ShapeError(f"{where} must map strings to strings")
    return mapping


def containers(spec: Mapping[str, Any], field: str = "containers") -> list[dict[str, Any]]:
    items = as_list(spec.get(field), f"spec.{field}")
    for index, item in enumerate(items):
        if type(item) is dict and type(item.get("name")) is str and type(item.get("image", "")) is str:
            continue  # the usual case, checked cheaply: this runs several times per admission
        container = dict_at(item, f"spec.{field}[{index}]")
        as_str(container.get("name"), f"spec.{field}[{index}].name")
        raise ShapeError(f"spec.{field}[{index}].image is not a string")
    return items


def env_list(container: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries = as_list(container.get("env"), "env")
    for entry in entries:
        if type(entry) is not dict or type(entry.get("name")) is not str:  # cheap: runs per lookup
            as_str(dict_at(entry, "env[]").get("name"), "env[].name")
    return entries


def env_entry(container: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The last entry of that name (Kubernetes lets a later duplicate win)."""
    found = None
    for entry in env_list(container):
        if entry["name"] == name:
            found = entry
    return found


def literal_env(container: Mapping[str, Any], name: str) -> str | None:
    """The literal value of an env var; None if unset. Raises ShapeError if it comes from elsewhere."""
    entry = env_entry(container, name)
    if entry is None:
        return None
    if "valueFrom" in entry:
        raise ShapeError(f"env {name} comes from valueFrom; its value is unknown at admission")
    value = entry.get("value", "")
    return as_str(value, f"env {name}")


def set_env_front(container: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """Put `entries` first (so later `$(VAR)` references expand), replacing earlier copies."""
    names = {entry["name"] for entry in entries}
    rest = [entry for entry in env_list(container) if entry["name"] not in names]
    container["env"] = [*entries, *rest]


def set_env_value(container: dict[str, Any], name: str, value: str) -> None:
    """Set an env var (the last entry of that name, the one in force, keeping its position), or append
    it. The container gets a new list and entry: the old ones may be shared with the input."""
    entries = env_list(container)
    for index in reversed(range(len(entries))):
        if entries[index]["name"] == name:
            edited = {key: item for key, item in entries[index].items() if key != "valueFrom"}
            edited["value"] = value
            container["env"] = [*entries[:index], edited, *entries[index + 1 :]]
            return
    container["env"] = [*entries, {"name": name, "value": value}]


def ports(container: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = as_list(container.get("ports"), "ports")
    for item in items:
        port = dict_at(item, "ports[]").get("containerPort")
        if not isinstance(port, int) or isinstance(port, bool):
            raise ShapeError("ports[].containerPort is not an integer")
    return items


def used_ports(spec: Mapping[str, Any]) -> set[int]:
    used: set[int] = set()
    for field in ("containers", "initContainers"):
        for container in containers(spec, field):
            used.update(int(port["containerPort"]) for port in ports(container))
    return used


def set_container_port(container: dict[str, Any], name: str, number: int) -> None:
    entries = ports(container)
    entries = [entry for entry in entries if entry.get("name") != name]
    entries.append({"name": name, "containerPort": number, "protocol": "TCP"})
    container["ports"] = entries


def field_ref_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def editable_pod(obj: Mapping[str, Any], container_index: int) -> dict[str, Any]:
    """A copy of a pod whose metadata, spec and one container `engine.expose` may edit, sharing
    everything below them with `obj`.

    Copy-on-write: expose and the flavors assign new values to fields of these dicts (a new env list,
    a new labels map...) and never edit a value they read in place, so the input stays exactly as the
    API server sent it (tested on every render). A deep copy of the pod cost a third of an admission's
    CPU, and the JSON-patch diff skips every shared subtree by identity."""
    result = dict(obj)
    if "metadata" in obj:
        result["metadata"] = dict(dict_at(obj["metadata"], "metadata"))
    spec = result["spec"] = dict(dict_at(obj.get("spec"), "spec"))
    items = spec["containers"] = list(containers(spec))
    items[container_index] = dict(items[container_index])
    return result


def copy_json(value: _T) -> _T:
    """A deep copy of decoded JSON (dicts, lists, immutable scalars): several times faster than
    copy.deepcopy, which keeps a memo for cycles and shared references that JSON cannot have."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [copy_json(item) for item in value]  # type: ignore[return-value]
    return value
