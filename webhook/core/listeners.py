"""Kafka listener lists and security protocol maps, as Kafka reads them.

`listeners` and `advertised.listeners` are comma-separated `NAME://host:port` entries (the host may be
empty, an IPv6 literal in brackets, or a `$(VAR)`/`${VAR}` reference that the image expands later).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from webhook.core.names import SECURITY_PROTOCOLS

# Kafka's default listener.security.protocol.map (KafkaConfig / SocketServerConfigs).
DEFAULT_PROTOCOL_MAP = (
    ("PLAINTEXT", "PLAINTEXT"),
    ("SSL", "SSL"),
    ("SASL_PLAINTEXT", "SASL_PLAINTEXT"),
    ("SASL_SSL", "SASL_SSL"),
)
# Kafka configs have a handful of listeners; far more is hostile input, refused before the work.
MAX_ENTRIES = 1000
_ENTRY_RE = re.compile(r"^(?P<name>[A-Za-z0-9_]+)://(?P<host>.*):(?P<port>[^:\]]+)$")


class ListenerError(ValueError):
    pass


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: str  # a string: it may be a `$(VAR)` or `$((...))` shell expression

    def __str__(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"

    @property
    def port_number(self) -> int | None:
        return int(self.port) if self.port.isascii() and self.port.isdigit() else None


def _entries(value: str) -> list[str]:
    """The non-empty comma-separated entries of a Kafka list setting (at most MAX_ENTRIES)."""
    if value.count(",") >= MAX_ENTRIES:
        raise ListenerError(f"more than {MAX_ENTRIES} entries")
    return [entry for entry in (raw.strip() for raw in value.split(",")) if entry]


def parse_listeners(value: str) -> list[Listener]:
    """Parse a listener list; raise ListenerError on an entry Kafka would refuse."""
    listeners = []
    for entry in _entries(value):
        match = _ENTRY_RE.match(entry)
        if not match:
            raise ListenerError(f"listener entry {entry!r} is not NAME://host:port")
        listeners.append(Listener(match["name"].upper(), match["host"], match["port"]))
    names = [entry.name for entry in listeners]
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ListenerError(f"listener name(s) {', '.join(duplicates)} appear more than once")
    return listeners


def format_listeners(listeners: list[Listener]) -> str:
    return ",".join(str(entry) for entry in listeners)


def parse_protocol_map(value: str) -> list[tuple[str, str]]:
    pairs = []
    for entry in _entries(value):
        name, sep, protocol = entry.partition(":")
        if not sep or protocol.strip().upper() not in SECURITY_PROTOCOLS:
            raise ListenerError(f"protocol map entry {entry!r} is not NAME:PROTOCOL")
        pairs.append((name.strip().upper(), protocol.strip().upper()))
    return pairs


def format_protocol_map(pairs: list[tuple[str, str]]) -> str:
    return ",".join(f"{name}:{protocol}" for name, protocol in pairs)


def default_protocol_map(controller_names: list[str]) -> list[tuple[str, str]]:
    """Kafka's default map; in KRaft an unmapped controller listener defaults to PLAINTEXT."""
    pairs = list(DEFAULT_PROTOCOL_MAP)
    pairs += [(name, "PLAINTEXT") for name in controller_names if name not in dict(pairs)]
    return pairs


def derive_listeners(advertised: list[Listener]) -> list[Listener]:
    """What Confluent and Apache images bind when only advertised listeners are set."""
    return [Listener(entry.name, "0.0.0.0", entry.port) for entry in advertised]


def client_listener(
    advertised: list[Listener], inter_broker: str | None, controllers: list[str]
) -> str | None:
    """The listener clients use: CLIENT if present, else the first that is neither inter-broker nor a
    controller listener, else the inter-broker one (single-listener charts)."""
    excluded = set(controllers)
    names = [entry.name for entry in advertised if entry.name not in excluded]
    if "CLIENT" in names:
        return "CLIENT"
    others = [name for name in names if name != inter_broker]
    if others:
        return others[0]
    return names[0] if names else None


def protocol_of(name: str, pairs: list[tuple[str, str]]) -> str | None:
    mapped = dict(pairs).get(name)
    if mapped:
        return mapped
    return name if name in SECURITY_PROTOCOLS else None


_VARIABLE = re.compile(r"\$\(\([^)]*\)\)|\$\([A-Za-z0-9_]*\)|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_IP = re.compile(r"^[0-9.]*$")
_CLUSTER_NAME = re.compile(r"(^|\.)svc(\.|$)|\.(local|internal|localdomain)$|^\.")


def is_outside(entry: Listener, headless: str | None = None) -> bool:
    """The documented rule for "this advertised listener is the chart's own outside access" (the
    runtime program, listener.awk, applies the same): its host, with shell and Kubernetes variables
    taken out, is still a dotted DNS name that is neither an IP address nor a cluster name (`.svc`,
    `.local`, `.internal`, a label that is the pod's headless Service). Pod IPs, pod host names and
    headless-Service names serve inside."""
    host = _VARIABLE.sub("", entry.host.lower())
    if not host or "." not in host or _IP.match(host) or "[" in host or ":" in host:
        return False
    if headless and headless.lower() in host.split("."):
        return False
    return not _CLUSTER_NAME.search(host)


def choose_name(
    name: str,
    fallbacks: tuple[str, ...],
    advertised: list[Listener],
    bound: list[Listener],
    inter_broker: str | None,
    controllers: list[str],
    host: str | None = None,
    headless: str | None = None,
) -> str:
    """`name`, unless the chart already uses it for in-cluster clients (an inside advertised host, a
    bound-only listener, the inter-broker or a controller listener): then the first fallback name the
    chart does not use. Raises ListenerError when none is free."""
    taken = {entry.name for entry in [*advertised, *bound]} | set(controllers)
    if name not in taken or any(e.name == name and e.host == host for e in advertised):
        return name  # free, or ours from an earlier pass
    ours = [entry for entry in advertised if entry.name == name]
    serves_inside = (
        not ours
        or not all(is_outside(e, headless) for e in ours)
        or name == inter_broker
        or name in controllers
    )
    if not serves_inside:
        return name
    for candidate in fallbacks:
        if any(entry.name == candidate and entry.host == host for entry in advertised):
            return candidate  # ours, from an earlier pass
        if candidate not in taken and candidate != inter_broker:
            return candidate
    raise ListenerError(
        f"the chart serves in-cluster clients on {name} and none of listener.fallbackNames "
        f"{list(fallbacks)} is free"
    )


@dataclass(frozen=True)
class ListenerEdit:
    """Inputs and result of adding (or replacing) the external listener on one broker."""

    name: str  # the listener name used (a fallback when the chart serves in-cluster on the configured one)
    advertised: str
    listeners: str
    protocol_map: str
    client: str | None
    protocol: str
    replaced_existing: bool


@dataclass(frozen=True)
class BrokerListeners:
    """A broker's listener settings as the chart wrote them (None: not set)."""

    advertised: str
    listeners: str | None
    protocol_map: str | None
    inter_broker: str | None
    controllers: list[str]


def add_external_listener(
    current: BrokerListeners,
    *,
    name: str,
    host: str,
    port: int,
    container_port: int,
    protocol: str | None,
    on_existing: str,
    fallbacks: tuple[str, ...] = (),
    headless: str | None = None,
) -> ListenerEdit | None:
    """Add `name://host:port` to the advertised listeners and `name://:container_port` to the bound ones.

    `current.listeners=None` means "derived from the advertised ones" (Confluent/Apache images);
    `current.protocol_map=None` means Kafka's default. Returns None when `on_existing == "keep"` and the
    broker already advertises `name`. Raises ListenerError when the edit would stop Kafka.
    """
    inter_broker, controllers = current.inter_broker, current.controllers
    advertised_entries = parse_listeners(current.advertised)
    bound = (
        parse_listeners(current.listeners)
        if current.listeners is not None
        else derive_listeners(advertised_entries)
    )
    pairs = (
        parse_protocol_map(current.protocol_map)
        if current.protocol_map is not None
        else default_protocol_map(controllers)
    )
    name = choose_name(name, fallbacks, advertised_entries, bound, inter_broker, controllers, host, headless)
    existing = any(entry.name == name for entry in advertised_entries)
    if existing and on_existing == "keep":
        return None
    for entry in bound:
        if entry.name != name and entry.port_number == container_port:
            raise ListenerError(f"container port {container_port} is already used by listener {entry.name}")
    client = client_listener(advertised_entries, inter_broker, controllers)
    chosen = protocol or (protocol_of(client, pairs) if client else None) or "PLAINTEXT"

    ours = Listener(name, host, str(port))
    new_advertised = [ours if entry.name == name else entry for entry in advertised_entries]
    if not existing:
        new_advertised.append(ours)
    ours_bound = Listener(name, "", str(container_port))
    new_bound = [ours_bound if entry.name == name else entry for entry in bound]
    if all(entry.name != name for entry in bound):
        new_bound.append(ours_bound)
    if name not in dict(pairs):
        pairs = [*pairs, (name, chosen)]
    elif protocol:
        pairs = [(key, protocol if key == name else value) for key, value in pairs]
    return ListenerEdit(
        name=name,
        advertised=format_listeners(new_advertised),
        listeners=format_listeners(new_bound),
        protocol_map=format_protocol_map(pairs),
        client=client,
        protocol=dict(pairs)[name],
        replaced_existing=existing,
    )
