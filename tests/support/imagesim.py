"""Evaluate a (mutated) broker Pod the way its image would, to learn what the broker really runs with.

Tests assert on this outcome, not on the shape of a patch:
- env: Kubernetes `$(VAR)` expansion and the downward API, then the image's env-to-property rule;
- a shell command: run for real with `sh`, the image's run script stubbed by one that dumps its env;
- a prepared server.properties: the chart's preparation (its ConfigMap with the placeholders filled
  as its init script does), then every kafka-expose init container run for real with `sh`;
- a `kafka-server-start.sh FILE [--override k=v]...` command line (the chart's shell script, a bare
  command, or args to an ENTRYPOINT): the pod's volumes as directories (ConfigMaps filled from the
  render), its shell init containers and then the broker's command run for real with every mount
  path mapped there, TMPDIR nowhere (read-only root filesystem), kafka tools stubbed by one that
  records its arguments and the file; the broker's properties are that file with each override
  applied in order (the last wins), as kafka.Kafka does;
- wurstmeister's start-kafka.sh rules and bitnami's legacy `KAFKA_<X>` aliases.
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
from webhook.core.images import BITNAMI_ALIASED, FAMILIES, Family, command_words, container_family
from webhook.core.settings import Settings

POD_IP = "10.1.2.3"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass
class Broker:
    properties: dict[str, str]
    flavor: str
    log: str = ""
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)  # start-command: kafka-server-start.sh's arguments
    file_text: str = ""  # ... and the file it was started with, as it was then

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


_WURSTMEISTER_SKIPPED = (
    "KAFKA_HOME",
    "KAFKA_CREATE_TOPICS",
    "KAFKA_ADVERTISED_PROTOCOL_NAME",
    "KAFKA_PROTOCOL_NAME",
)


def wurstmeister_properties(env: dict[str, str]) -> dict[str, str]:
    """start-kafka.sh: KAFKA_PORT defaults to 9092; `_{HOSTNAME_COMMAND}` in a value becomes the
    output of HOSTNAME_COMMAND; every other `KAFKA_X_Y` becomes `x.y` (lower case, every `_` a dot)."""
    env = {"KAFKA_PORT": "9092", **env}
    env.pop("KAFKA_HEAP_OPTS", None)
    hostname = "host-from-command" if env.get("HOSTNAME_COMMAND") else None
    props = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name.startswith(_WURSTMEISTER_SKIPPED):
            continue
        if hostname is not None:
            value = value.replace("_{HOSTNAME_COMMAND}", hostname)
        props[name[len("KAFKA_") :].lower().replace("_", ".")] = value
    if "listeners" not in props:
        props["listeners"] = f"PLAINTEXT://:{props['port']}"  # what Kafka binds on `port`
    return props


def env_to_properties(env: dict[str, str], family: Family) -> dict[str, str]:
    """The images' rule: strip the prefix, lower-case, `___` -> `-`, `__` -> `_`, `_` -> `.`."""
    if family.rule == "wurstmeister":
        return wurstmeister_properties(env)
    if family.name == "bitnami":
        # libkafka.sh exports each legacy KAFKA_<X> of its list over KAFKA_CFG_<X>.
        env = {**env, **{f"KAFKA_CFG_{s}": env[f"KAFKA_{s}"] for s in BITNAMI_ALIASED if f"KAFKA_{s}" in env}}
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
            text = text.replace("advertised-address-placeholder", headless) + "\n"
            return _bitnami_external_access(pod, name, text)
    raise AssertionError("no ConfigMap with server.properties behind the prepared file")


def _bitnami_external_access(pod: dict[str, Any], name: str, text: str) -> str:
    """The chart's `configure_external_access`: its listener appended to advertised.listeners with
    the host of this pod (from EXTERNAL_ACCESS_HOSTS_LIST, or a discovered LB name) and the port."""
    for init in pod["spec"].get("initContainers") or []:
        env = container_env(pod, init)
        if "EXTERNAL_ACCESS_LISTENER_NAME" not in env:
            continue
        ordinal = int(name.rsplit("-", 1)[1])
        hosts = [h for h in env.get("EXTERNAL_ACCESS_HOSTS_LIST", "").split(",") if h]
        host = hosts[ordinal] if ordinal < len(hosts) else f"lb-{ordinal}.elb.example.net"
        port = env.get("EXTERNAL_ACCESS_PORT", "9094")
        entry = f"{env['EXTERNAL_ACCESS_LISTENER_NAME']}://{host}:{port}"
        return re.sub(r"^(advertised\.listeners=\S+)$", rf"\1,{entry}", text, flags=re.M)
    return text


_SHELLS = {"sh", "bash", "ash", "dash"}
_KAFKA_TOOL = re.compile(r"[^\s\"';&|()]*kafka-(server-start|storage)\.sh")


def _runs_start_script(container: dict[str, Any], family: Family) -> bool:
    words = command_words(container)
    if not container.get("command") and family.entrypoint and container.get("args"):
        return True
    return any("kafka-server-start.sh" in word for word in words)


class _PodFiles:
    """The pod's volumes as directories, so its containers' scripts run for real: ConfigMaps filled
    from the render, everything else empty; nothing else of the root filesystem is writable (read-only
    root, as these charts set it): TMPDIR points nowhere, kafka tools are stubs that record what they ran."""

    def __init__(
        self, pod: dict[str, Any], docs: list[dict[str, Any]], root: Path, bin_dir: Path | None = None
    ) -> None:
        self.root = root
        config_maps = {d["metadata"]["name"]: d for d in docs if d.get("kind") in ("ConfigMap", "Secret")}
        self.volumes: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            path = root / "volumes" / volume["name"]
            path.mkdir(parents=True)
            source = volume.get("configMap") or volume.get("secret") or {}
            doc = config_maps.get(source.get("name") or source.get("secretName"))
            for key, value in ((doc or {}).get("data") or {}).items():
                (path / key).write_text(str(value))
            self.volumes[volume["name"]] = path
        self.record = root / "started"
        if bin_dir is not None:  # a real distribution's bin/ (kafkarun.distribution_layout)
            self.bin = bin_dir
            return
        self.bin = root / "bin"
        self.bin.mkdir()
        start = self.bin / "kafka-server-start.sh"
        start.write_text(
            "#!/bin/sh\n"
            f'for a in "$@"; do printf \'%s\\n\' "$a" >> {self.record}.args; done\n'
            f'[ "$1" = -daemon ] && shift\n[ -r "$1" ] && cat "$1" > {self.record}.file\nexit 0\n'
        )
        storage = self.bin / "kafka-storage.sh"
        storage.write_text("#!/bin/sh\nexit 0\n")
        start.chmod(0o755)
        storage.chmod(0o755)

    def rewrite(self, container: dict[str, Any], text: str) -> str:
        mounts = sorted(container.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"]))
        targets = {}
        for mount in mounts:
            host = self.volumes[mount["name"]] / mount.get("subPath", "")
            targets[mount["mountPath"].rstrip("/")] = str(host)
        text = _KAFKA_TOOL.sub(lambda m: str(self.bin / f"kafka-{m.group(1)}.sh"), text)
        if not targets:
            return text
        pattern = "|".join(re.escape(p) for p in targets)
        return re.sub(rf"(?<![\w.-])({pattern})(?=$|[/\s\"';])", lambda m: targets[m.group(1)], text)

    def command(
        self, pod: dict[str, Any], container: dict[str, Any], words: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        """The container's words with mount paths mapped here and its env, `bin` first on PATH."""
        env = {**container_env(pod, container), "HOSTNAME": pod["metadata"]["name"], "TMPDIR": "/nonexistent"}
        words = [self.rewrite(container, expand(word, env)) for word in words]
        if os.path.basename(words[0]) in _SHELLS:
            words[0] = os.path.basename(words[0])
        return words, {"PATH": f"{self.bin}:" + os.environ.get("PATH", "/usr/bin:/bin"), **env}

    def run(self, pod: dict[str, Any], container: dict[str, Any], words: list[str]) -> str:
        words, clean = self.command(pod, container, words)
        result = subprocess.run(
            words, env=clean, capture_output=True, text=True, timeout=30, cwd=self.root, check=False
        )
        assert result.returncode == 0, (words, result.stderr)
        return result.stdout + result.stderr

    def started(self) -> tuple[dict[str, str], list[str]]:
        """The properties kafka.Kafka runs with: the file, then each --override (the last wins)."""
        args = Path(f"{self.record}.args").read_text().splitlines()
        file = Path(f"{self.record}.file")
        props = parse_properties(file.read_text()) if file.exists() else {}
        rest = args[1:] if args and args[0] == "-daemon" else args
        rest = rest[1:]
        for index, word in enumerate(rest):
            if word == "--override" and index + 1 < len(rest):
                key, _, value = rest[index + 1].partition("=")
                props[key.strip()] = value.strip()
            elif word.startswith("--override="):
                key, _, value = word.removeprefix("--override=").partition("=")
                props[key.strip()] = value.strip()
        return props, args


def _run_init_containers(files: _PodFiles, pod: dict[str, Any]) -> str:
    log = ""
    for init in pod["spec"].get("initContainers") or []:
        if os.path.basename(str((init.get("command") or [""])[0])) in _SHELLS:
            log += files.run(pod, init, [*(init.get("command") or []), *(init.get("args") or [])])
    return log


def _main_words(container: dict[str, Any], family: Family) -> list[str]:
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    if not container.get("command") and family.entrypoint:
        words = [family.entrypoint, *words]
    return words


def start_command(
    pod: dict[str, Any], container: dict[str, Any], family: Family, docs: list[dict[str, Any]]
) -> Broker:
    """Run the pod's init containers' and the broker's shell commands for real over its volumes."""
    with tempfile.TemporaryDirectory() as tmp:
        files = _PodFiles(pod, docs, Path(tmp))
        log = _run_init_containers(files, pod)
        log += files.run(pod, container, _main_words(container, family))
        props, argv = files.started()
        started = Path(f"{files.record}.file")
        text = started.read_text() if started.exists() else ""
        return Broker(props, "start-command", log, container_env(pod, container), argv, text)


def real_start_command(
    pod: dict[str, Any], settings: Settings, docs: list[dict[str, Any]], root: Path, bin_dir: Path
) -> tuple[list[str], dict[str, str], str]:
    """For a pod whose broker runs kafka-server-start.sh: its volumes under ``root`` (kept), its shell
    init containers run, and its main command with the tool paths mapped to ``bin_dir`` (a real
    distribution's bin/, also first on PATH) -> (argv, env, init log), to be started for real."""
    container, family = next(
        (c, f) for c in pod["spec"]["containers"] if (f := container_family(c, settings)) is not None
    )
    assert _runs_start_script(container, family), "the broker does not run kafka-server-start.sh"
    files = _PodFiles(pod, docs, root, bin_dir)
    log = _run_init_containers(files, pod)
    argv, env = files.command(pod, container, _main_words(container, family))
    return argv, env, log


def evaluate(
    pod: dict[str, Any], settings: Settings, render_docs: list[dict[str, Any]] | None = None
) -> Broker:
    """The broker's effective properties after its image evaluated env, command and files."""
    spec = pod["spec"]
    container, family = next(
        (c, f) for c in spec["containers"] if (f := container_family(c, settings)) is not None
    )
    if _runs_start_script(container, family):
        return start_command(pod, container, family, render_docs or [])
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
            result = _run(script, {"HOSTNAME": pod["metadata"]["name"], **env})
            assert result.returncode == 0, result.stderr
            final = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
            return Broker(env_to_properties(final, family), "shell", result.stderr, final)
    return Broker(env_to_properties(env, family), "env", "", env)


__all__ = ["FAMILIES", "Broker", "evaluate", "real_start_command"]
