"""The outcome every exposed broker must have, checked on what its image will really run with.

Shared by the unit tier (pods from the engine) and the cluster tier (pods as stored by the API server).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.imagesim import Broker, evaluate
from webhook.core.images import container_family
from webhook.core.settings import Settings, parse_settings

MANIFESTS = Path(__file__).parents[1] / "manifests"


def own_manifest(name: str) -> list[dict[str, Any]]:
    with open(MANIFESTS / name, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]


def kafka_container(pod: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """The broker container (sidecars may come first)."""
    return next(
        c
        for c in pod["spec"]["containers"]
        if container_family(c, settings or parse_settings({})) is not None
    )


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


def _serves_outside(entry: str, headless: str | None) -> bool:
    """The README's rule, written out for the tests: a host that, without variables, is a dotted
    name, not an IP, not a cluster name (.svc, .local, .internal)."""
    host = re.sub(
        r"\$\(\([^)]*\)\)|\$\([^)]*\)|\$\{[^}]*\}|\$\w+", "", entry.split("://", 1)[1].rsplit(":", 1)[0]
    )
    host = host.lower()
    if headless and headless in host.split("."):
        return False
    if not host or "." not in host or re.fullmatch(r"[0-9.]*", host) or "[" in host or ":" in host:
        return False
    return not re.search(r"(^|\.)svc(\.|$)|\.(local|internal|localdomain)$|^\.", host)


def expected_name(before: Broker, settings: Settings, headless: str | None = None) -> str:
    """The configured listener name, unless the chart already serves in-cluster clients on it."""
    name = settings.listener.name
    advertised, bound = before.advertised(), before.bound()
    controllers = before.properties.get("controller.listener.names", "").upper().split(",")
    inter = before.properties.get("inter.broker.listener.name", "PLAINTEXT").upper()
    if name not in advertised and name not in bound:
        return name
    inside = (
        name not in advertised
        or not _serves_outside(advertised[name], headless)
        or name in (inter, *controllers)
    )
    if not inside:
        return name
    taken = {*advertised, *bound, *controllers, inter}
    return next(n for n in settings.listener.fallback_names if n not in taken)


def assert_exposed(
    original: dict[str, Any],
    mutated: dict[str, Any],
    settings: Settings,
    docs: list[dict[str, Any]] | None,
    host: str,
    port: int = 9094,
    name: str | None = None,
) -> Broker:
    """`mutated` advertises exactly one `name://host:port` (name: the configured one, or the first
    free fallback when the chart serves in-cluster on it), binds it on a free declared container
    port, maps its protocol (that of the client listener), and keeps every original listener."""
    before = evaluate(original, settings, docs)
    after = evaluate(mutated, settings, docs)
    name = name or expected_name(before, settings, original["spec"].get("subdomain"))
    advertised = after.advertised()
    assert advertised.get(name) == f"{name}://{host}:{port}", (advertised, after.log)
    raw = after.properties["advertised.listeners"]
    assert raw.upper().count(f"{name}://") == 1, raw
    for other, entry in before.advertised().items():
        if other != name:
            assert advertised.get(other) == entry, (
                f"advertised {other} changed: {entry} -> {advertised.get(other)}"
            )
    bound = after.bound()
    for other, entry in before.bound().items():
        if other != name:
            assert bound[other] == entry, f"listener {other} changed: {entry} -> {bound.get(other)}"
    external_port = port_of(bound[name])
    others = [port_of(e) for n, e in bound.items() if n != name]
    assert external_port not in others, f"port {external_port} collides with {bound}"
    declared = {
        p["containerPort"]: p.get("name") for p in kafka_container(mutated, settings).get("ports", [])
    }
    # named for the listener (or for the configured one when the name is only chosen at start)
    names = {n.lower().replace("_", "-") for n in (name, settings.listener.name)}
    assert declared.get(external_port) in names, f"{external_port} not declared as {names}: {declared}"
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
