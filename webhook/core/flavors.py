"""Flavors: how a chart hands its broker the listener configuration, and how to add ours to it.

Each flavor is a small strategy over a raw pod spec: `detect` says whether this layout is the one the
chart uses, `apply` edits a copy so that, once the image has evaluated its env, shell command and
config files, the broker advertises exactly one external listener. Order matters: the first flavor
that detects wins (a kafka-server-start.sh command line beats everything: the broker runs exactly
that; a prepared file beats env vars, which the image then ignores).

Over 400 lines, knowingly: each flavor is a short class behind one protocol, kept side by side so
that choosing among them (and what each assumes) reads in one place.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.core import runtime, tls_listener
from webhook.core.certificates import ExternalTls
from webhook.core.images import START_SCRIPT, Family
from webhook.core.listeners import (
    BrokerListeners,
    ListenerError,
    add_external_listener,
    choose_name,
    parse_listeners,
)
from webhook.core.podspec import (
    ShapeError,
    as_list,
    containers,
    dict_at,
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
    fallbacks: tuple[str, ...] = ()  # names to use when the chart serves in-cluster on `name`
    headless: str | None = None  # the pod's headless Service (subdomain): names under it are inside
    tls: ExternalTls | None = None  # encrypted external listener (core/certificates.py)

    def runtime_env(self) -> list[dict[str, Any]]:
        return [
            *self.env,
            {"name": "KAFKAEXPOSE_LISTENER_NAME", "value": self.name},
            {"name": "KAFKAEXPOSE_FALLBACK_NAMES", "value": ",".join(self.fallbacks)},
            {"name": "KAFKAEXPOSE_HEADLESS", "value": self.headless or ""},
            {"name": "KAFKAEXPOSE_ADVERTISED_PORT", "value": str(self.advertised_port)},
            {"name": "KAFKAEXPOSE_CONTAINER_PORT", "value": str(self.container_port)},
            {"name": "KAFKAEXPOSE_SECURITY_PROTOCOL", "value": self.security_protocol or ""},
            {"name": "KAFKAEXPOSE_ON_EXISTING", "value": self.on_existing},
            *tls_listener.runtime_env(self.tls),
        ]


class Flavor(Protocol):
    name: str

    def detect(self, spec: dict[str, Any], container: dict[str, Any], family: Family) -> bool: ...

    def listener_name(self, container: dict[str, Any], family: Family, listen: Listen) -> str | None:
        """The listener name the broker will use, when known at admission (None: decided at start,
        `listen.name` or the first free fallback)."""
        ...

    def apply(self, spec: dict[str, Any], container: dict[str, Any], family: Family, listen: Listen) -> str:
        """Edit `spec` and `container` (copies) by assigning new values to their fields, never by
        editing a value in place (it may be shared with the input: see podspec.editable_pod);
        return the security protocol ('' if decided at run time)."""
        ...


class _RuntimeName:
    """For flavors finished at run time: the name is chosen there (listener.awk)."""

    def listener_name(self, container: dict[str, Any], family: Family, listen: Listen) -> str | None:
        return None


def _mounts(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        dict_at(mount, "volumeMounts[]") for mount in as_list(container.get("volumeMounts"), "volumeMounts")
    ]


class PreparedFile(_RuntimeName):
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
            volumes = (dict_at(v, "volumes[]") for v in as_list(spec.get("volumes"), "volumes"))
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


# Where a shell script runs a command: at the start of a line or after `;`, `&&`, `||`, `|`, `(`,
# `{`, `then`, `do` or `else`, optionally as `exec CMD`.
_COMMAND_POSITION = (
    r"(?:^|(?<=[;&|({\n])|(?<=\bthen)|(?<=\bdo)|(?<=\belse))(?P<lead>[ \t]*)(?P<exec>exec[ \t]+)?"
)


def _invocations(script: str, commands: tuple[str, ...]) -> list[re.Match[str]]:
    """Where `script` runs one of `commands` (a path, or its end: `$KAFKA_HOME/bin/x.sh` runs x.sh)."""
    if not commands:
        return []
    names = "|".join(re.escape(c) for c in commands)
    pattern = _COMMAND_POSITION + r"(?P<cmd>[\"']?[^\s;&|()<>]*?(?:" + names + r")[\"']?)(?=[\s;&|)]|$)"
    return list(re.finditer(pattern, script, re.MULTILINE))


def _exec_position(script: str, family: Family) -> int | None:
    found = _invocations(script, family.run_scripts)
    return (
        found[0].start("exec")
        if found and found[0].group("exec")
        else (found[0].start("cmd") if found else None)
    )


class ShellExport(_RuntimeName):
    """A shell command that exports KAFKA_ADVERTISED_LISTENERS and then execs the image's run script
    (incubator/kafka). An env var alone would be overridden by the export, so the script is given one
    `eval` right before its `exec`, which adds the listener to whatever the chart exported."""

    name = "shell-export"

    def detect(self, spec: dict[str, Any], container: dict[str, Any], family: Family) -> bool:
        found = _shell_script(container)
        return family.reads_env and found is not None and _exec_position(found[2], family) is not None

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


def in_force(container: dict[str, Any], family: Family, prop: str) -> str:
    """The variable the image reads for `prop` that the chart set (bitnami's legacy `KAFKA_<X>` wins
    over `KAFKA_CFG_<X>`), else the family's own name for it."""
    names = family.env_names(prop)
    return next((n for n in names if env_entry(container, n) is not None), names[-1])


def _env_config(container: dict[str, Any], family: Family) -> BrokerListeners:
    def value(prop: str) -> str | None:
        return literal_env(container, in_force(container, family, prop))

    controllers = [
        n.strip().upper() for n in (value("controller.listener.names") or "").split(",") if n.strip()
    ]
    listeners = value("listeners")
    if listeners is None and family.rule == "wurstmeister":
        # start-kafka.sh derives nothing: Kafka binds PLAINTEXT on `port` (KAFKA_PORT, default 9092).
        port = literal_env(container, "KAFKA_PORT") or "9092"
        listeners = f"PLAINTEXT://:{port}" if port.isdigit() else None
    return BrokerListeners(
        advertised=value("advertised.listeners") or "",
        listeners=listeners,
        protocol_map=value("listener.security.protocol.map"),
        # Kafka's default: the listener named after security.inter.broker.protocol (PLAINTEXT).
        inter_broker=(
            value("inter.broker.listener.name") or value("security.inter.broker.protocol") or "PLAINTEXT"
        ).upper(),
        controllers=controllers,
    )


def _wurstmeister_overwrites(container: dict[str, Any]) -> bool:
    """start-kafka.sh rebuilds KAFKA_ADVERTISED_LISTENERS from KAFKA_ADVERTISED_PROTOCOL_NAME and
    KAFKA_ADVERTISED_PORT when a protocol map is set: an edit of the variable would be lost."""
    return all(
        env_entry(container, n) is not None
        for n in (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "KAFKA_ADVERTISED_PORT",
            "KAFKA_ADVERTISED_PROTOCOL_NAME",
        )
    )


class EnvOnly:
    """Listeners configured by env vars only (apache/kafka, Confluent images, bitnami before chart 24,
    wurstmeister). Everything is known at admission, so the variables the chart set are edited."""

    name = "env"

    def detect(self, spec: dict[str, Any], container: dict[str, Any], family: Family) -> bool:
        names = family.env_names("advertised.listeners") if family.reads_env else ()
        return any(env_entry(container, n) is not None for n in names)

    def listener_name(self, container: dict[str, Any], family: Family, listen: Listen) -> str | None:
        config = _env_config(container, family)
        advertised = parse_listeners(config.advertised)
        bound = parse_listeners(config.listeners) if config.listeners is not None else advertised
        return choose_name(
            listen.name,
            listen.fallbacks,
            advertised,
            bound,
            config.inter_broker,
            config.controllers,
            listen.host_expression,
            listen.headless,
        )

    def apply(self, spec: dict[str, Any], container: dict[str, Any], family: Family, listen: Listen) -> str:
        if family.rule == "wurstmeister" and _wurstmeister_overwrites(container):
            raise ListenerError(
                "start-kafka.sh rebuilds KAFKA_ADVERTISED_LISTENERS from KAFKA_ADVERTISED_PROTOCOL_NAME and "
                "KAFKA_ADVERTISED_PORT; set KAFKA_ADVERTISED_LISTENERS and KAFKA_LISTENERS instead"
            )
        config = _env_config(container, family)
        edit = add_external_listener(
            config,
            name=listen.name,
            host=listen.host_expression,
            port=listen.advertised_port,
            container_port=listen.container_port,
            protocol=listen.security_protocol,
            on_existing=listen.on_existing,
            fallbacks=listen.fallbacks,
            headless=listen.headless,
        )
        if edit is None:
            raise ListenerError(f"the chart already advertises {listen.name} and onExistingListener is keep")
        if listen.tls is not None:
            edit = tls_listener.encrypt_edit(edit, listen.tls)
        set_env_front(container, list(listen.env))
        set_env_value(container, in_force(container, family, "advertised.listeners"), edit.advertised)
        set_env_value(container, in_force(container, family, "listeners"), edit.listeners)
        set_env_value(
            container, in_force(container, family, "listener.security.protocol.map"), edit.protocol_map
        )
        if edit.client and edit.client != edit.name:
            _copy_listener_settings(container, family, edit.client, edit.name)
        if listen.tls is not None:
            tls_listener.set_env_properties(container, family, edit.name, listen.tls)
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


START_HOOK = 'eval "$KAFKAEXPOSE_SH" && kafkaexpose_start '
# The container's own command line (or the image's ENTRYPOINT), run by `sh` with the hook first.
WRAP_SCRIPT = START_HOOK + 'exec "$0" "$@"'


class StartCommand(_RuntimeName):
    """The broker is started as `kafka-server-start.sh FILE [--override k=v]...`: by the chart's own
    shell command (after it prepared FILE itself, often on a read-only root filesystem), directly as
    the container's command (FILE prepared by an init container, per-pod names such as
    `server.properties.$(POD_NAME)`), or as the args of an image whose ENTRYPOINT is that script.
    Kafka applies `--override` after the file and the last override of a key wins, so the external
    listener is added as overrides computed at start from FILE and the chart's own overrides
    (listener-start.sh): the file is never written, and a chart override is never lost."""

    name = "start-command"

    def _form(self, container: dict[str, Any], family: Family) -> str | None:
        found = _shell_script(container)
        if found is not None:
            script = found[2]
            if START_HOOK in script or _invocations(script, (START_SCRIPT,)):
                return "script"
            return None
        command = [w for w in as_list(container.get("command"), "command") if isinstance(w, str)]
        if any(posixpath.basename(word) == START_SCRIPT for word in command[:2]):
            return "command"
        if not command and family.entrypoint and as_list(container.get("args"), "args"):
            return "entrypoint"
        return None

    def detect(self, spec: dict[str, Any], container: dict[str, Any], family: Family) -> bool:
        return self._form(container, family) is not None

    def apply(self, spec: dict[str, Any], container: dict[str, Any], family: Family, listen: Listen) -> str:
        form = self._form(container, family)
        if form == "script":
            found = _shell_script(container)
            if found is None:
                raise ShapeError("shell command vanished")
            field, index, script = found
            if START_HOOK not in script:
                edited, at = [], 0
                for match in _invocations(script, (START_SCRIPT,)):
                    how = "exec " if match.group("exec") else "run "
                    edited += [script[at : match.end("lead")], START_HOOK, how, match.group("cmd")]
                    at = match.end("cmd")
                words = list(container[field])  # a new list: the container's own may be the input's
                words[index] = "".join([*edited, script[at:]])
                container[field] = words
        elif form == "command":
            container["command"] = ["sh", "-c", WRAP_SCRIPT, *as_list(container.get("command"), "command")]
        elif form == "entrypoint" and family.entrypoint:
            container["command"] = ["sh", "-c", WRAP_SCRIPT, family.entrypoint]
        else:
            raise ShapeError("kafka-server-start.sh command line vanished")
        set_env_front(
            container, [*listen.runtime_env(), {"name": "KAFKAEXPOSE_SH", "value": runtime.START_SCRIPT}]
        )
        return listen.security_protocol or ""


FLAVORS: tuple[Flavor, ...] = (StartCommand(), PreparedFile(), ShellExport(), EnvOnly())
# Flavors finished at start: the listener name may fall back then (see listener.awk).
RUNTIME_FLAVORS = frozenset(f.name for f in FLAVORS if isinstance(f, _RuntimeName))


def detect_flavor(spec: dict[str, Any], container: dict[str, Any], family: Family) -> Flavor | None:
    for flavor in FLAVORS:
        if flavor.detect(spec, container, family):
            return flavor
    return None
