"""Which Kafka image a container runs, and so how that image turns its environment into config."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from webhook.core.settings import Settings


@dataclass(frozen=True)
class Family:
    """How an image family reads its configuration."""

    name: str
    env_prefix: str  # KAFKA_ADVERTISED_LISTENERS or KAFKA_CFG_ADVERTISED_LISTENERS
    run_scripts: tuple[str, ...]  # what a chart's shell command `exec`s to start the broker

    def env_name(self, prop: str) -> str:
        """Property -> variable by the images' documented rule (`.` -> `_`, `_` -> `__`, `-` -> `___`)."""
        return self.env_prefix + prop.replace("_", "__").replace("-", "___").replace(".", "_").upper()


FAMILIES = {
    "confluent": Family("confluent", "KAFKA_", ("/etc/confluent/docker/run",)),
    "apache": Family("apache", "KAFKA_", ("/etc/kafka/docker/run",)),
    "bitnami": Family(
        "bitnami",
        "KAFKA_CFG_",
        ("/opt/bitnami/scripts/kafka/run.sh", "/opt/bitnami/scripts/kafka/entrypoint.sh", "/run.sh"),
    ),
}

# Repository (registry and tag stripped) -> family.
KNOWN_IMAGES = {
    "confluentinc/cp-kafka": "confluent",
    "confluentinc/cp-server": "confluent",
    "confluentinc/cp-enterprise-kafka": "confluent",
    "apache/kafka": "apache",
    "apache/kafka-native": "apache",
    "bitnami/kafka": "bitnami",
    "bitnamilegacy/kafka": "bitnami",
}


def repository(image: str) -> str:
    """`docker.io/bitnami/kafka:4.0@sha256:..` -> `bitnami/kafka`; mirrors keep their path."""
    name = image.split("@", 1)[0]
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


def image_family(image: str, settings: Settings) -> Family | None:
    repo = repository(image)
    for rule in settings.match.images:
        if fnmatch.fnmatchcase(repo, rule.pattern) or fnmatch.fnmatchcase(image, rule.pattern):
            return FAMILIES[rule.family]
    for known, family in KNOWN_IMAGES.items():
        # A mirror keeps the upstream path at its end: registry.corp/mirror/bitnami/kafka.
        if repo == known or repo.endswith("/" + known):
            return FAMILIES[family]
    return None
