"""Flavors: how a chart hands its broker the listener configuration, and how to add ours to it.

Each flavor is a small strategy over a raw pod spec: `detect` says whether this layout is the one the
chart uses, `apply` edits a copy so that, once the image has evaluated its env, shell command and
config files, the broker advertises exactly one external listener. Order matters: the first flavor
that detects wins (a prepared file beats env vars, which the image then ignores).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.core import runtime, tls_listener
from webhook.core.certificates import ExternalTls
from webhook.core.images import Family
from webhook.core.listeners import ListenerError, add_external_listener
from webhook.core.podspec import (
    ShapeError,
    as_dict,
    as_list,
    containers,
    env_entry,
    env_list,
    literal_env,
    set_env_front,
    set_env_value,
)

INIT_CONTAINER = "kafka-expose-listener"
PROPERTIES_MOUNT = "/kafka-expose/config"
EVAL_HOOK = 'eval "$KAFKAEXPOSE_SH" && '
_SHELLS = {"sh", "bash", "ash", "dash"}
_C_FLAG = re.compile(r"^-[a-zA-Z]*c[a-zA-Z]*$")


@dataclass(frozen=True)
class Listen:
    """What to add: the listener, where it is advertised and which container port it binds."""

    name: str
    host_expression: str  # `$(KAFKAEXPOSE_HOST)`-style, expanded by Kubernetes
    advertised_port: int
    container_port: int
    security_protocol: str | None
    on_existing: str
    env: tuple[dict[str, Any], ...]  # entries the host expression needs (fieldRefs, KAFKAEXPOSE_HOST)
    tls: ExternalTls | None = None  # encrypted external listener (core/certificates.py)

    def runtime_env(self) -> list[dict[str, Any]]:
        return [
            *self.env,
            {"name": "KAFKAEXPOSE_LISTENER_NAME", "value": self.name},
            {"name": "KAFKAEXPOSE_ADVERTISED_PORT", "value": str(self.advertised_port)},
            {"name": "KAFKAEXPOSE_CONTAINER_PORT", "value": str(self.container_port)},
            {"name": "KAFKAEXPOSE_SECURITY_PROTOCOL", "value": self.security_protocol or ""},
            {"name": "KAFKAEXPOSE_ON_EXISTING", "value": self.on_existing},
            *tls_listener.runtime_env(self.tls, self.name),
        ]


class Flavor(Protocol):
    name: str

    def detect(self, spec: dict[str, Any], container: dict[str, Any], family: Family) -> bool: ...

    def apply(self, spec: dict[str, Any], container: dict[str, Any], family: Family, listen: Listen) -> str:
        """Edit `spec` and `container` (copies) by assigning new values to their fields, never by
        editing a value in place (it may be shared with the input: see podspec.editable_pod);
        return the security protocol ('' if decided at run time)."""
        ...


def _mounts(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        as_dict(mount, "volumeMounts[]") for mount in as_list(container.get("volumeMounts"), "volumeMounts")
    ]


class PreparedFile:
    """A server.properties mounted (subPath) from an emptyDir that an init container prepares
    (bitnami/kafka 24+). We append our own init container that edits the prepared file."""

    name = "prepared-file"

    def _source(
        self, spec: dict[str, Any], container: dict[str, Any]
    ) -> tuple[str, str, dict[str, Any]] | None:
        """(volume, file inside the volume, the chart's init container that prepares it)."""
        for mount in _mounts(container):
            path, sub_path, volume = mount.get("mountPath"), mount.get("subPath"), mount.get("name")
            if not isinstance(path, str) or not path.endswith("/server.properties"):
                continue
            if not isinstance(sub_path, str) or not isinstance(volume, str):
                continue
            volumes = (as_dict(v, "volumes[]") for v in as_list(spec.get("volumes"), "volumes"))
            if not any(v.get("name") == volume and "emptyDir" in v for v in volumes):
                continue
            for init in containers(spec, "initContainers"):
                if init["name"] != INIT_CONTAINER and any(m.get("name") == volume for m in _mounts(init)):
                    return str(volume), sub_path, init
        return None

    def detect(self, spec: dict[str, Any], container: dict[str, Any], family: Family) -> bool:
        return self._source(spec, container) is not None

    def apply(self, spec: dict[str, Any], container: dict[str, Any], family: Family, listen: Listen) -> str:
        source = self._source(spec, container)
        if source is None:  # detect() said yes on the same spec
            raise ShapeError("prepared server.properties vanished")
        volume, sub_path, preparer = source
        ours: dict[str, Any] = {
            "name": INIT_CONTAINER,
            "image": container.get("image", ""),
            "command": ["sh", "-c", runtime.FILE_SCRIPT],
            "env": [
                *listen.runtime_env(),
                {"name": "KAFKAEXPOSE_PROPERTIES", "value": posixpath.join(PROPERTIES_MOUNT, sub_path)},
            ],
            "volumeMounts": [{"name": volume, "mountPath": PROPERTIES_MOUNT}],
        }
        for key in ("imagePullPolicy", "securityContext", "resources"):
            if key in preparer:
                ours[key] = preparer[key]
        others = [c for c in containers(spec, "initContainers") if c["name"] != INIT_CONTAINER]
        spec["initContainers"] = [*others, ours]  # after the chart's: the file must be prepared first
        return listen.security_protocol or ""


def _shell_script(container: dict[str, Any]) -> tuple[str, int, str] | None:
    """(the field holding the `sh -c` script, its index there, the script), from command and args
    together."""
    command = as_list(container.get("command"), "command")
    args = as_list(container.get("args"), "args")
    words = [*command, *args]
    if not words or not isinstance(words[0], str) or posixpath.basename(words[0]) not in _SHELLS:
        return None
    for index, word in enumerate(words[:-1]):
        script = words[index + 1]
        if isinstance(word, str) and _C_FLAG.match(word) and isinstance(script, str):
            at = index + 1
            return ("command", at, script) if at < len(command) else ("args", at - len(command), script)
    return None


def _exec_position(script: str, family: Family) -> int | None:
    for run in family.run_scripts:
        match = re.search(r"\bexec\s+" + re.escape(run) + r"\b", script)
        if match:
            return match.start()
    return None


class ShellExport:
    """A shell command that exports KAFKA_ADVERTISED_LISTENERS and then execs the image's run script
    (incubator/kafka). An env var alone would be overridden by the export, so the script is given one
    `eval` right before its `exec`, which adds the listener to whatever the chart exported."""

    name = "shell-export"

    def detect(self, spec: dict[str, Any], container: dict[str, Any], family: Family) -> bool:
        found = _shell_script(container)
        return found is not None and _exec_position(found[2], family) is not None

    def apply(self, spec: dict[str, Any], container: dict[str, Any], family: Family, listen: Listen) -> str:
        found = _shell_script(container)
        if found is None:
            raise ShapeError("shell command vanished")
        field, index, script = found
        if EVAL_HOOK not in script:
            at = _exec_position(script, family)
            if at is None:
                raise ShapeError("exec of the run script vanished")
            words = list(container[field])  # a new list: the container's own may be the input's
            words[index] = script[:at] + EVAL_HOOK + script[at:]
            container[field] = words
        set_env_front(
            container,
            [
                *listen.runtime_env(),
                {"name": "KAFKAEXPOSE_ENV_PREFIX", "value": family.env_prefix},
                {"name": "KAFKAEXPOSE_SH", "value": runtime.ENV_SCRIPT},
            ],
        )
        return listen.security_protocol or ""


class EnvOnly:
    """Listeners configured by env vars only (apache/kafka, Confluent images, bitnami before chart 24).
    Everything is known at admission, so the env values are edited directly."""

    name = "env"

    def detect(self, spec: dict[str, Any], container: dict[str, Any], family: Family) -> bool:
        return env_entry(container, family.env_name("advertised.listeners")) is not None

    def apply(self, spec: dict[str, Any], container: dict[str, Any], family: Family, listen: Listen) -> str:
        def value(prop: str) -> str | None:
            return literal_env(container, family.env_name(prop))

        advertised = value("advertised.listeners") or ""
        controllers = [
            n.strip().upper() for n in (value("controller.listener.names") or "").split(",") if n.strip()
        ]
        edit = add_external_listener(
            advertised=advertised,
            listeners=value("listeners"),
            protocol_map=value("listener.security.protocol.map"),
            # Kafka's default: the listener named after security.inter.broker.protocol (PLAINTEXT).
            inter_broker=(
                value("inter.broker.listener.name") or value("security.inter.broker.protocol") or "PLAINTEXT"
            ).upper(),
            controllers=controllers,
            name=listen.name,
            host=listen.host_expression,
            port=listen.advertised_port,
            container_port=listen.container_port,
            protocol=listen.security_protocol,
            on_existing=listen.on_existing,
        )
        if edit is None:
            raise ListenerError(f"the chart already advertises {listen.name} and onExistingListener is keep")
        if listen.tls is not None:
            edit = tls_listener.encrypt_edit(edit, listen.name, listen.tls)
        set_env_front(container, list(listen.env))
        set_env_value(container, family.env_name("advertised.listeners"), edit.advertised)
        set_env_value(container, family.env_name("listeners"), edit.listeners)
        set_env_value(container, family.env_name("listener.security.protocol.map"), edit.protocol_map)
        if edit.client and edit.client != listen.name:
            _copy_listener_settings(container, family, edit.client, listen.name)
        if listen.tls is not None:
            tls_listener.set_env_properties(container, family, listen.name, listen.tls)
        return edit.protocol


def _copy_listener_settings(container: dict[str, Any], family: Family, source: str, target: str) -> None:
    """listener.name.<client>.* (SASL mechanisms, JAAS, SSL) -> listener.name.<external>.*"""
    source_prefix = family.env_name(f"listener.name.{source.lower()}.")
    target_prefix = family.env_name(f"listener.name.{target.lower()}.")
    entries = list(env_list(container))
    present = {entry["name"] for entry in entries}
    for entry in list(entries):
        if entry["name"].startswith(source_prefix):
            copied = {**entry, "name": target_prefix + entry["name"][len(source_prefix) :]}
            if copied["name"] not in present:
                entries.append(copied)
    container["env"] = entries


FLAVORS: tuple[Flavor, ...] = (PreparedFile(), ShellExport(), EnvOnly())


def detect_flavor(spec: dict[str, Any], container: dict[str, Any], family: Family) -> Flavor | None:
    for flavor in FLAVORS:
        if flavor.detect(spec, container, family):
            return flavor
    return None
