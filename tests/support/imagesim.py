"""Evaluate a (mutated) broker Pod the way its image would, to learn what the broker really runs with.

Tests assert on this outcome, not on the shape of a patch:
- env: Kubernetes `$(VAR)` expansion and the downward API, then the image's env-to-property rule;
- a shell command: run for real with `sh`, the image's run script stubbed by one that dumps its env;
- a prepared server.properties: the chart's preparation (its ConfigMap with the placeholders filled
  as its init script does), then every kafka-expose init container run for real with `sh`.
The result is the broker's effective listener configuration.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webhook.core.flavors import INIT_CONTAINER, PROPERTIES_MOUNT
from webhook.core.images import FAMILIES, Family, image_family
from webhook.core.settings import Settings

POD_IP = "10.1.2.3"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass
class Broker:
    properties: dict[str, str]
    flavor: str
    log: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def listeners(self, key: str) -> dict[str, str]:
        """`NAME://host:port` entries of a listener property, by name."""
        value = self.properties.get(key, "")
        entries = [e.strip() for e in value.split(",") if e.strip()]
        return {e.split("://", 1)[0].upper(): e for e in entries}

    def advertised(self) -> dict[str, str]:
        return self.listeners("advertised.listeners")

    def bound(self) -> dict[str, str]:
        return self.listeners("listeners")

    def protocol_map(self) -> dict[str, str]:
        pairs = [
            p.split(":", 1) for p in self.properties.get("listener.security.protocol.map", "").split(",") if p
        ]
        return {k.strip().upper(): v.strip() for k, v in pairs}


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined earlier -> its value, `$$` -> `$`, else left as is."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(one, value)


def field_value(pod: dict[str, Any], path: str) -> str:
    metadata = pod["metadata"]
    if path == "metadata.name":
        return str(metadata["name"])
    if path == "metadata.namespace":
        return str(metadata.get("namespace", "kafka"))
    if path == "status.podIP":
        return POD_IP
    label = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if label:
        return str((metadata.get(label.group(1)) or {}).get(label.group(2), ""))
    return f"<{path}>"


def container_env(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = expand(str(entry.get("value", "")), env)
        elif "fieldRef" in source:
            env[entry["name"]] = field_value(pod, source["fieldRef"]["fieldPath"])
        else:
            ref = source.get("secretKeyRef") or source.get("configMapKeyRef") or {}
            env[entry["name"]] = f"from-{ref.get('name')}-{ref.get('key')}"
    return env


def env_to_properties(env: dict[str, str], family: Family) -> dict[str, str]:
    """The images' rule: strip the prefix, lower-case, `___` -> `-`, `__` -> `_`, `_` -> `.`."""
    props = {}
    for name, value in env.items():
        if not name.startswith(family.env_prefix) or name.startswith("KAFKA_CFG_") != (
            family.name == "bitnami"
        ):
            continue
        key = name[len(family.env_prefix) :].lower()
        key = (
            key.replace("___", "\0")
            .replace("__", "\1")
            .replace("_", ".")
            .replace("\0", "-")
            .replace("\1", "_")
        )
        props[key] = value
    if family.name != "bitnami" and "listeners" not in props and "advertised.listeners" in props:
        # Confluent and Apache images bind the advertised listeners on 0.0.0.0 when unset.
        props["listeners"] = ",".join(
            re.sub(r"://[^,]*:", "://0.0.0.0:", e.strip()) for e in props["advertised.listeners"].split(",")
        )
    return props


def parse_properties(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        props[key.strip()] = value.strip()
    return props


def _shell(container: dict[str, Any]) -> str | None:
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    for index, word in enumerate(words[:-1]):
        if re.fullmatch(r"-[a-zA-Z]*c[a-zA-Z]*", str(word)) and os.path.basename(str(words[0])) in {
            "sh",
            "bash",
        }:
            return str(words[index + 1])
    return None


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(["sh", "-ec", script], env=clean, capture_output=True, text=True, timeout=30)


def prepared_properties(pod: dict[str, Any], render_docs: list[dict[str, Any]]) -> str:
    """What the bitnami chart's `prepare-config` init container writes: its ConfigMap's
    server.properties with the advertised-address placeholder filled in (the chart's own rule)."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    config_maps = {d["metadata"]["name"]: d for d in render_docs if d.get("kind") == "ConfigMap"}
    name = pod["metadata"]["name"]
    role = name.rsplit("-", 1)[0].rsplit("-", 1)[-1]
    for volume in volumes.values():
        cm_name = (volume.get("configMap") or {}).get("name")
        if cm_name in config_maps and "server.properties" in config_maps[cm_name].get("data", {}):
            text: str = config_maps[cm_name]["data"]["server.properties"]
            headless = (
                f"{name}.kafka-{role}-headless.{pod['metadata'].get('namespace', 'kafka')}.svc.cluster.local"
            )
            return text.replace("advertised-address-placeholder", headless) + "\n"
    raise AssertionError("no ConfigMap with server.properties behind the prepared file")


def evaluate(
    pod: dict[str, Any], settings: Settings, render_docs: list[dict[str, Any]] | None = None
) -> Broker:
    """The broker's effective properties after its image evaluated env, command and files."""
    spec = pod["spec"]
    container, family = next(
        (c, f) for c in spec["containers"] if (f := image_family(c.get("image", ""), settings)) is not None
    )
    env = container_env(pod, container)
    ours = [c for c in spec.get("initContainers") or [] if c["name"] == INIT_CONTAINER]
    mounts_file = any(
        str(m.get("mountPath", "")).endswith("/server.properties")
        for m in container.get("volumeMounts") or []
    )
    if mounts_file and render_docs is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "server.properties"
            path.write_text(prepared_properties(pod, render_docs))
            log = ""
            for init in ours:
                init_env = container_env(pod, init)
                # The init container sees the volume at PROPERTIES_MOUNT; here the volume is `tmp`.
                inside = init_env["KAFKAEXPOSE_PROPERTIES"].removeprefix(PROPERTIES_MOUNT + "/")
                assert inside == "server.properties", inside
                init_env["KAFKAEXPOSE_PROPERTIES"] = str(path)
                result = _run(init["command"][-1], init_env)
                assert result.returncode == 0, result.stderr
                log += result.stdout + result.stderr
            return Broker(parse_properties(path.read_text()), "prepared-file", log, env)
    script = _shell(container)
    if script is not None:
        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "env"
            stub = Path(tmp) / "run"
            stub.write_text(f"#!/bin/sh\nenv > {dump}\n")
            stub.chmod(0o755)
            for run in family.run_scripts:
                script = script.replace(run, str(stub))
            result = _run(script, env)
            assert result.returncode == 0, result.stderr
            final = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
            return Broker(env_to_properties(final, family), "shell", result.stderr, final)
    return Broker(env_to_properties(env, family), "env", "", env)


__all__ = ["FAMILIES", "Broker", "evaluate"]
