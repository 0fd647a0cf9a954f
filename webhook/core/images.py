"""Which Kafka image a container runs, and so how that image turns its environment into config.

Recognition is by REPOSITORY (registry, port, tag and digest stripped), never by a substring of the
image reference: `danielqsj/kafka-exporter`, `confluentinc/cp-zookeeper` or
`solsson/kafka-prometheus-jmx-exporter` are not brokers, however much "kafka" they hold. A known
repository whose container evidently runs ZooKeeper (a `zookeeper` tag, `zookeeper-server-start.sh`
on its command line: images such as Strimzi's serve both) is not a broker either. A container whose
command line runs `kafka-server-start.sh` is a broker whatever its image. Anything else is declared
in `settings.match.images` with the family that says how it is configured.

Families (what each assumes):
- confluent: `/etc/confluent/docker/run` turns every `KAFKA_*` env var into a property.
- apache: `/etc/kafka/docker/run`, the same rule (apache/kafka, apache/kafka-native).
- bitnami: `KAFKA_CFG_*` env, with the legacy `KAFKA_<X>` aliases of a fixed list (they win).
- wurstmeister: `start-kafka.sh`, `KAFKA_X_Y` -> `x.y` (every `_` a dot).
- distribution: a plain Kafka distribution, configured only by `kafka-server-start.sh FILE
  [--override k=v]...` on the command line (solsson/kafka; the fallback for any image whose command
  runs kafka-server-start.sh).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from webhook.core.settings import Settings

START_SCRIPT = "kafka-server-start.sh"
_START_WORD = re.compile(r"(^|[\s;&|(`'\"/])kafka-server-start\.sh\b")
_ZOOKEEPER_WORD = re.compile(r"zookeeper-server-start|zkServer\.sh|zookeeper\.server|QuorumPeerMain")

# bitnami's libkafka.sh `kafka_create_alias_environment_variables`: KAFKA_<X> -> KAFKA_CFG_<X>
# (the alias is exported over KAFKA_CFG_<X>, so when both are set, the legacy name wins).
BITNAMI_ALIASED = (
    "ADVERTISED_LISTENERS",
    "BROKER_ID",
    "NODE_ID",
    "CONTROLLER_QUORUM_VOTERS",
    "PROCESS_ROLES",
    "INTER_BROKER_LISTENER_NAME",
    "LISTENERS",
    "LISTENER_SECURITY_PROTOCOL_MAP",
)


@dataclass(frozen=True)
class Family:
    """How an image family reads its configuration."""

    name: str
    env_prefix: str  # "" when the image reads no env (a plain distribution)
    run_scripts: tuple[str, ...]  # what a chart's shell command runs to start the broker from env
    rule: str = "dotted"  # dotted (`.`->`_`, `_`->`__`, `-`->`___`) | wurstmeister (`.`->`_`)
    entrypoint: str | None = None  # the image's ENTRYPOINT when it is kafka-server-start.sh
    aliased: tuple[str, ...] = ()  # legacy env names (after the prefix) that win over the prefixed one

    def env_name(self, prop: str) -> str:
        """Property -> variable by the image's documented rule."""
        if self.rule == "wurstmeister":
            return self.env_prefix + prop.replace(".", "_").upper()
        return self.env_prefix + prop.replace("_", "__").replace("-", "___").replace(".", "_").upper()

    def env_names(self, prop: str) -> tuple[str, ...]:
        """Every variable the image reads for `prop`, the one that wins first."""
        name = self.env_name(prop)
        suffix = name[len(self.env_prefix) :]
        if suffix in self.aliased:
            return ("KAFKA_" + suffix, name)
        return (name,)

    @property
    def reads_env(self) -> bool:
        return bool(self.env_prefix)


FAMILIES = {
    "confluent": Family("confluent", "KAFKA_", ("/etc/confluent/docker/run",)),
    "apache": Family("apache", "KAFKA_", ("/etc/kafka/docker/run",)),
    "bitnami": Family(
        "bitnami",
        "KAFKA_CFG_",
        ("/opt/bitnami/scripts/kafka/run.sh", "/opt/bitnami/scripts/kafka/entrypoint.sh", "/run.sh"),
        aliased=BITNAMI_ALIASED,
    ),
    "wurstmeister": Family("wurstmeister", "KAFKA_", ("start-kafka.sh",), rule="wurstmeister"),
    "distribution": Family("distribution", "", ()),
}
# solsson/kafka: the Kafka distribution under /opt/kafka, ENTRYPOINT its kafka-server-start.sh.
_SOLSSON = replace(FAMILIES["distribution"], entrypoint="/opt/kafka/bin/kafka-server-start.sh")

# Repository (registry, tag and digest stripped) -> family.
KNOWN_IMAGES: dict[str, Family] = {
    "confluentinc/cp-kafka": FAMILIES["confluent"],
    "confluentinc/cp-server": FAMILIES["confluent"],
    "confluentinc/cp-enterprise-kafka": FAMILIES["confluent"],
    "confluentinc/confluent-local": FAMILIES["confluent"],
    "apache/kafka": FAMILIES["apache"],
    "apache/kafka-native": FAMILIES["apache"],
    "bitnami/kafka": FAMILIES["bitnami"],
    "bitnamilegacy/kafka": FAMILIES["bitnami"],
    "bitnamisecure/kafka": FAMILIES["bitnami"],
    "wurstmeister/kafka": FAMILIES["wurstmeister"],
    "solsson/kafka": _SOLSSON,
}


def repository(image: str) -> str:
    """`docker.io/bitnami/kafka:4.0@sha256:..` -> `bitnami/kafka`; `reg:5000/x/kafka@sha256:..` ->
    `x/kafka`; mirrors keep their path."""
    name = image.strip().split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts).lower()


def tag(image: str) -> str:
    name = image.strip().split("@", 1)[0]
    colon = name.rfind(":")
    return name[colon + 1 :].lower() if colon > name.rfind("/") else ""


def image_family(image: str, settings: Settings) -> Family | None:
    """The family of an image reference, by the settings' rules first, then the known repositories."""
    repo = repository(image)
    for rule in settings.match.images:
        if fnmatch.fnmatchcase(repo, rule.pattern) or fnmatch.fnmatchcase(image, rule.pattern):
            family = FAMILIES[rule.family]
            return replace(family, entrypoint=rule.entrypoint) if rule.entrypoint else family
    if "zookeeper" in tag(image):
        return None  # a Kafka repository's ZooKeeper build: decided by what it is, not its name
    for known, family in KNOWN_IMAGES.items():
        # A mirror keeps the upstream path at its end: registry.corp/mirror/bitnami/kafka.
        if repo == known or repo.endswith("/" + known):
            return family
    return None


def command_words(container: Mapping[str, Any]) -> list[str]:
    command = container.get("command")
    args = container.get("args")
    words = [*(command if isinstance(command, list) else []), *(args if isinstance(args, list) else [])]
    return [word for word in words if isinstance(word, str)]


def runs_start_script(container: Mapping[str, Any]) -> bool:
    """Whether the container's command line (or its shell script) runs kafka-server-start.sh."""
    return any(
        _START_WORD.search(word) or posixpath.basename(word) == START_SCRIPT
        for word in command_words(container)
    )


def runs_zookeeper(container: Mapping[str, Any]) -> bool:
    return any(_ZOOKEEPER_WORD.search(word) for word in command_words(container))


def container_family(container: Mapping[str, Any], settings: Settings) -> Family | None:
    """The family of a broker container, or None if the container is no broker."""
    image = container.get("image")
    image = image if isinstance(image, str) else ""
    if runs_zookeeper(container):
        return None
    family = image_family(image, settings)
    if family is not None:
        return family
    return FAMILIES["distribution"] if runs_start_script(container) else None


_KAFKA_HINT = re.compile(r"kafka", re.IGNORECASE)
_NOT_BROKER_HINT = re.compile(
    r"exporter|zookeeper|connect|schema|registry|rest|ksql|ui|manager|cruise|mirror|proxy|jmx|operator|"
    r"strimzi-kafka-bridge|bridge|client|tools|cli",
    re.IGNORECASE,
)


def looks_like_kafka(container: Mapping[str, Any]) -> bool:
    """An unknown image that still looks like a broker (for `explain`'s advice, never for exposing):
    "kafka" in its repository and no sign of a companion tool, or `KAFKA_*ADVERTISED*` in its env."""
    image = container.get("image")
    repo = repository(image) if isinstance(image, str) else ""
    last = repo.rsplit("/", 1)[-1]
    if _KAFKA_HINT.search(last) and not _NOT_BROKER_HINT.search(last):
        return True
    env = container.get("env")
    names = [e.get("name") for e in env if isinstance(e, dict)] if isinstance(env, list) else []
    return any(isinstance(n, str) and n.startswith("KAFKA_") and "ADVERTISED" in n for n in names)
