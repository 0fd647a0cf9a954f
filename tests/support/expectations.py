"""The outcome every exposed broker must have, checked on what its image will really run with.

Shared by the unit tier (pods from the engine) and the cluster tier (pods as stored by the API server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.imagesim import Broker, evaluate
from webhook.core.settings import Settings

MANIFESTS = Path(__file__).parents[1] / "manifests"


def own_manifest(name: str) -> list[dict[str, Any]]:
    with open(MANIFESTS / name, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]


def kafka_container(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if "kafka" in c.get("image", ""))


def port_of(entry: str) -> int:
    return int(entry.rsplit(":", 1)[1])


def client_listener_of(broker: Broker) -> str | None:
    """The documented rule: CLIENT if advertised, else the first advertised listener that is not the
    inter-broker one (default PLAINTEXT) nor a controller one, else the inter-broker one."""
    names = list(broker.advertised())
    controllers = broker.properties.get("controller.listener.names", "").upper().split(",")
    inter = broker.properties.get("inter.broker.listener.name", "PLAINTEXT").upper()
    candidates = [n for n in names if n not in controllers]
    if "CLIENT" in candidates:
        return "CLIENT"
    return next((n for n in candidates if n != inter), candidates[0] if candidates else None)


def assert_exposed(
    original: dict[str, Any],
    mutated: dict[str, Any],
    settings: Settings,
    docs: list[dict[str, Any]] | None,
    host: str,
    port: int = 9094,
    name: str = "EXTERNAL",
) -> Broker:
    """`mutated` advertises exactly one `name://host:port`, binds it on a free declared container
    port, maps its protocol (that of the client listener), and keeps every original listener."""
    before = evaluate(original, settings, docs)
    after = evaluate(mutated, settings, docs)
    advertised = after.advertised()
    assert advertised.get(name) == f"{name}://{host}:{port}", (advertised, after.log)
    raw = after.properties["advertised.listeners"]
    assert raw.upper().count(f"{name}://") == 1, raw
    for other, entry in before.advertised().items():
        if other != name:
            assert advertised[other] == entry, (
                f"advertised {other} changed: {entry} -> {advertised.get(other)}"
            )
    bound = after.bound()
    for other, entry in before.bound().items():
        if other != name:
            assert bound[other] == entry, f"listener {other} changed: {entry} -> {bound.get(other)}"
    external_port = port_of(bound[name])
    others = [port_of(e) for n, e in bound.items() if n != name]
    assert external_port not in others, f"port {external_port} collides with {bound}"
    declared = {p["containerPort"]: p.get("name") for p in kafka_container(mutated).get("ports", [])}
    assert declared.get(external_port) == name.lower(), (
        f"{external_port} not declared as {name.lower()}: {declared}"
    )
    protocols = after.protocol_map()
    if protocols:
        client = client_listener_of(before)
        assert name in protocols, protocols
        kept = before.protocol_map().get(name)  # replacing an existing entry keeps its protocol
        if settings.listener.security_protocol is None:
            expected = kept or (protocols.get(client, client) if client else None)
            assert expected is None or protocols[name] == expected, protocols
    for key, value in before.properties.items():
        if key.startswith("listener.name.client."):
            copied = "listener.name." + name.lower() + key[len("listener.name.client") :]
            assert after.properties.get(copied) == value, f"{copied} not carried over"
    return after
