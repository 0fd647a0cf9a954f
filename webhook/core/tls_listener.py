"""The broker side of an encrypted external listener: small edits the flavors call. Pure.

Kept apart from the flavors so that each flavor gains one call, not a TLS branch: every flavor
mounts the certificate Secret the same way (`mount`); the env flavor, whose listener settings are
known at admission, rewrites its env (`encrypt_edit`, `set_env_properties`); the runtime flavors
hand the same properties to the awk program in runtime.py through `runtime_env`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from webhook.core.certificates import VOLUME, ExternalTls
from webhook.core.images import Family
from webhook.core.listeners import ListenerEdit, format_protocol_map, parse_protocol_map
from webhook.core.podspec import as_list, dict_at, env_list


def mount(spec: dict[str, Any], container: dict[str, Any], tls: ExternalTls) -> None:
    """The certificate Secret as a read-only volume of the broker container (new lists, see
    podspec.editable_pod); a mount of ours from an earlier pass is replaced, not doubled."""
    volumes = [dict_at(v, "volumes[]") for v in as_list(spec.get("volumes"), "volumes")]
    spec["volumes"] = [*(v for v in volumes if v.get("name") != VOLUME), tls.volume()]
    mounts = [dict_at(m, "volumeMounts[]") for m in as_list(container.get("volumeMounts"), "volumeMounts")]
    container["volumeMounts"] = [*(m for m in mounts if m.get("name") != VOLUME), tls.volume_mount()]


def encrypt_edit(edit: ListenerEdit, tls: ExternalTls) -> ListenerEdit:
    """The same edit with the external listener (`edit.name`) mapped to SSL / SASL_SSL."""
    protocol = tls.security_protocol(edit.protocol)
    pairs = [
        (name, protocol if name == edit.name else value)
        for name, value in parse_protocol_map(edit.protocol_map)
    ]
    return replace(edit, protocol_map=format_protocol_map(pairs), protocol=protocol)


def set_env_properties(container: dict[str, Any], family: Family, listener: str, tls: ExternalTls) -> None:
    """The listener's SSL settings as env vars; any other `listener.name.<listener>.ssl.*` env (the
    chart's, or copied from the client listener) is dropped: they belong to another keystore."""
    ours = {family.env_name(key): value for key, value in tls.listener_properties(listener).items()}
    prefix = family.env_name(f"listener.name.{listener.lower()}.ssl.")
    kept = [entry for entry in env_list(container) if not str(entry.get("name", "")).startswith(prefix)]
    container["env"] = [*kept, *({"name": name, "value": value} for name, value in ours.items())]


def runtime_env(tls: ExternalTls | None) -> list[dict[str, Any]]:
    """KAFKAEXPOSE_TLS_PROPERTIES for runtime.py: space-separated `ssl.*=value` (no value has a space),
    scoped by the awk program to the listener's name, which may only be chosen at start."""
    if tls is None:
        return []
    props = " ".join(f"{key}={value}" for key, value in tls.ssl_properties().items())
    return [{"name": "KAFKAEXPOSE_TLS_PROPERTIES", "value": props}]
