"""Hostile request bodies for `POST /mutate` and `POST /validate`, and the judge of the answers.

`Hostile(seed).case()` makes one request: a seeded random generator (fast, reproducible: the seed and
the case number name a body) starting from real broker pods and Services (every shared chart render
and our own test manifests, as the StatefulSet controller would send them) and breaking them:

* raw: truncated or bit-flipped JSON, random bytes, invalid UTF-8, a BOM, NaN/Infinity, 5,000-digit
  integers, duplicate keys, trailing garbage, JSON scalars;
* envelope: every field of the AdmissionReview (apiVersion, kind, request.uid/kind/operation/
  namespace/dryRun/object...) deleted or given a value of the wrong type;
* spec: any field of the Pod or Service (containers, env, ports, command, volumes, metadata...)
  deleted, retyped, duplicated or extended;
* listeners: listener, advertised-listener and protocol-map values with odd names, hosts (IPv6 with
  and without brackets, zone ids, `$(VAR)`, unicode, empty) and ports (0, 65536, 2^64, `٩٠٩٢`...);
* names: unicode (RTL overrides, zero-width, emoji, combining marks, controls, lone surrogates) in
  names, namespaces, label and annotation keys and values, container and env names;
* deep: nesting just under and over the limit, inside the object and as the whole body;
* huge: long strings, thousands of env entries, containers, ports or listener entries, and bodies
  just under and over the 7 MiB limit;
* headers: wrong or decorated content types.

`judge(case, status, headers, data)` says what is wrong with an answer (nothing, for a good one):
a 2xx must be an AdmissionReview answering that request (same apiVersion, uid; a base64 JSONPatch
only from /mutate, strict JSON, that `jsonpatch` applies to the object it was made for without
changing apiVersion or kind); anything else must be a clean 4xx (one text line, no traceback);
no 5xx. `run_fuzz` sends cases over a few kept-alive HTTPS connections in threads and adds it up.
"""

from __future__ import annotations

import base64
import binascii
import copy
import http.client
import json
import random
import re
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from tests.support import podfactory
from webhook.admission import wire as admission
from webhook.admission.wire import MAX_BODY_BYTES, MAX_JSON_DEPTH

JSON = Any
Path_ = tuple[str | int, ...]

LISTENER_VARS = (
    "KAFKA_ADVERTISED_LISTENERS",
    "KAFKA_LISTENERS",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
    "KAFKA_INTER_BROKER_LISTENER_NAME",
    "KAFKA_CONTROLLER_LISTENER_NAMES",
    "KAFKA_PROCESS_ROLES",
    "KAFKA_CFG_ADVERTISED_LISTENERS",
    "KAFKA_CFG_LISTENERS",
    "KAFKA_CFG_LISTENER_SECURITY_PROTOCOL_MAP",
    "KAFKA_CFG_INTER_BROKER_LISTENER_NAME",
    "KAFKA_CFG_PROCESS_ROLES",
    "KAFKA_CFG_CONTROLLER_LISTENER_NAMES",
)
LISTENER_NAMES = (
    "PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT", "EXTERNAL", "external", "CLIENT", "INTERNAL",
    "CONTROLLER", "REPLICATION", "", "EXTERNAL EXTERNAL", "ÉXTERNAL", "EXT-ERNAL", "A" * 300, "0", "_",
)  # fmt: skip
HOSTS = (
    "", "0.0.0.0", "[::]", "[::1]", "::1", "[fe80::1%eth0]", "[fe80::1%25eth0]", "[2001:db8::1]",
    "2001:db8::1", "[2001:db8::1", "2001:db8::1]", "[[::1]]", "$(POD_IP)", "${POD_IP}", "$(POD_NAME).x.svc",
    "$((1+1))", "`id`", "$(id)", "kafka-0.kafka.svc.cluster.local", "xn--bcher-kva.example", "bücher.example",
    "exa mple", "a..b", ".", "-", "a" * 64 + ".example", ("a" * 63 + ".") * 5 + "com", "localhost:1234",
    "host:port:more", "EXTERNAL://nested:1", "h\nX=1", "h\x00", "h,EVIL://x:1", "h'\"", "例え.テスト",
)  # fmt: skip
PORTS = (
    "9092", "0", "1", "65535", "65536", "-1", "99999999999999999999999", "", "abc", "9092.5", "+9092",
    "0x10", " 9092", "9092 ", "٩٠٩٢", "9092²", "²", "1e3", "$(PORT)", "${PORT:-9092}", "9092]", "[9092]",
)  # fmt: skip
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT", "plaintext", "TLS", "", "SASL_SSL ", "X")
STRINGS = (
    "", " ", "\t", "\n", "\r\n", "\x00", "\x7f", "\u202e", "\u200b", "\ufeff", "\ufffd", "\uffff",
    "\U0010ffff", "😀", "e\u0301", "Ω≈ç√", "例え", "مرحبا", "${IFS}", "$(rm -rf /)", "`reboot`", "'\";",
    "\\", "\\\\\\", "%s%n%x", "{pod}", "{0}", "{__class__}", "../../etc/passwd", "null", "true", "0",
    "-0", "1e309", "NaN", "<script>", "&amp;", "~1", "/", "~0~1/", "a/b~c", "EXTERNAL", "kafka",
    "kafka-expose.io/exposed", "apache/kafka:4.1.0", "bitnami/kafka:3.9", "confluentinc/cp-kafka:7.7.0",
    "PLAINTEXT://x:9092", "EXTERNAL://[::1]:9094", "broker,controller", "controller", "broker",
)  # fmt: skip
SURROGATES = ("\ud800", "\udfff", "a\udc80b", "\udbff")
CONTENT_TYPES: tuple[tuple[str, int], ...] = (
    ("application/json; charset=utf-8", 200),
    ("APPLICATION/JSON", 200),
    ("application/json;charset=UTF-8; foo=bar", 200),
    ("", 415),
    ("text/plain", 415),
    ("application/yaml", 415),
    ("application/json-patch+json", 415),
    ("application/x-www-form-urlencoded", 415),
    ("multipart/form-data; boundary=x", 415),
    ("application/jsonx", 415),
)
UNICODE_RANGES = (
    (0x20, 0x7E), (0xA0, 0xFF), (0x100, 0x24F), (0x370, 0x3FF), (0x590, 0x6FF), (0x0300, 0x036F),
    (0x2000, 0x206F), (0x3040, 0x30FF), (0x4E00, 0x4E80), (0xFE00, 0xFE0F), (0xFFF0, 0xFFFF),
    (0x1F300, 0x1F64F), (0x10FFF0, 0x10FFFF), (0x00, 0x1F),
)  # fmt: skip


# ------------------------------------------------------------------------------------- the seeds


def seed_objects() -> list[dict[str, Any]]:
    """Real objects to break: every broker (and non-broker) pod of every shared render and of our own
    manifests, as the StatefulSet controller sends them, and every Service of the renders."""
    objects: list[dict[str, Any]] = []
    for name in podfactory.render_names():
        docs = podfactory.load_render(name)
        for sts in podfactory.statefulsets(docs):
            objects += [podfactory.pod_from_statefulset(sts, ordinal, "kafka") for ordinal in (0, 2)]
        objects += [s for s in podfactory.services(docs) if isinstance(s.get("spec"), dict)]
    for manifest in sorted((Path(__file__).parents[1] / "manifests").glob("*.yaml")):
        with manifest.open(encoding="utf-8") as handle:
            docs = [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]
        for sts in podfactory.statefulsets(docs):
            objects.append(podfactory.pod_from_statefulset(sts, 1, "kafka"))
    return objects


def json_depth(value: JSON) -> int:
    """Nesting depth of arrays and objects, as the server counts it (a scalar is 0). Iterative."""
    deepest = 0
    stack: list[tuple[JSON, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((child, depth) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def copy_json(value: JSON) -> JSON:
    """A deep copy of decoded JSON (faster than copy.deepcopy: no memo)."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def strict_json(data: bytes | str) -> JSON:
    """json.loads refusing NaN and Infinity (what Go's encoding/json, the API server's, accepts)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(data, parse_constant=refuse)


# ---------------------------------------------------------------------------------- the generator


@dataclass
class Case:
    """One request: where, what, and which HTTP statuses are right for it (None: 200 or a clean 4xx)."""

    path: str
    body: bytes
    content_type: str
    category: str
    expect: frozenset[int] | None = None
    note: str = ""

    @property
    def document(self) -> JSON:
        """The body as the server decodes it (raises ValueError if it is not JSON)."""
        return json.loads(self.body.decode("utf-8"))


class Hostile:
    """A reproducible stream of hostile cases (seeded)."""

    CATEGORIES: tuple[tuple[str, float], ...] = (
        ("valid", 3),
        ("raw", 9),
        ("envelope", 16),
        ("spec", 30),
        ("listeners", 16),
        ("names", 11),
        ("deep", 5),
        ("huge", 6),
        ("headers", 3),
        ("operations", 1),
    )

    def __init__(
        self, seed: int, objects: list[dict[str, Any]] | None = None, huge_scale: float = 1.0
    ) -> None:
        self.rng = random.Random(seed)
        self.objects = objects if objects is not None else seed_objects()
        self.huge_scale = huge_scale  # < 1 makes the 'huge' cases smaller (a quick run)
        names, weights = zip(*self.CATEGORIES, strict=True)
        self.category_names: list[str] = list(names)
        self.category_weights: list[float] = list(weights)

    # -- entry point -------------------------------------------------------------------------------

    def case(self, category: str | None = None) -> Case:
        category = category or self.rng.choices(self.category_names, self.category_weights)[0]
        make: Callable[[], Case] = getattr(self, "_" + category)
        return make()

    def cases(self, count: int) -> Iterator[Case]:
        for _ in range(count):
            yield self.case()

    # -- helpers -----------------------------------------------------------------------------------

    def path(self) -> str:
        return "/mutate" if self.rng.random() < 0.7 else "/validate"

    def review(self) -> dict[str, Any]:
        obj = copy_json(self.rng.choice(self.objects))
        namespace = self.rng.choice(("kafka", "team-a", "default", "x" * 63))
        operation = "CREATE" if self.rng.random() < 0.9 else "UPDATE"
        old = copy_json(obj) if operation == "UPDATE" else None
        doc = podfactory.admission_review(
            obj, operation=operation, namespace=namespace, dry_run=self.rng.random() < 0.1, old_object=old
        )
        doc["request"]["uid"] = f"fuzz-{self.rng.getrandbits(64):016x}"
        return doc

    def dumps(self, doc: JSON) -> bytes:
        """JSON text (UTF-8, or ASCII with escapes: lone surrogates can only be sent escaped)."""
        indent = 2 if self.rng.random() < 0.05 else None
        if self.rng.random() < 0.5:
            try:
                return json.dumps(doc, ensure_ascii=False, indent=indent).encode("utf-8")
            except UnicodeEncodeError:
                pass
        return json.dumps(doc, indent=indent).encode("ascii")

    def finish(self, doc: dict[str, Any], category: str, note: str = "", path: str | None = None) -> Case:
        """The case for a document whose envelope may or may not still be valid."""
        body = self.dumps(doc)
        expect = expected_for(doc, body)
        return Case(path or self.path(), body, "application/json", category, expect, note)

    def unicode_text(self, length: int | None = None) -> str:
        length = length if length is not None else self.rng.choice((1, 2, 5, 20, 63, 64, 253, 300))
        chars = []
        for _ in range(length):
            if self.rng.random() < 0.02:
                chars.append(self.rng.choice(SURROGATES))
                continue
            low, high = self.rng.choice(UNICODE_RANGES)
            chars.append(chr(self.rng.randint(low, high)))
        return "".join(chars)

    def text(self) -> str:
        roll = self.rng.random()
        if roll < 0.45:
            return self.rng.choice(STRINGS)
        if roll < 0.7:
            return self.unicode_text()
        if roll < 0.85:
            return self.listener_list()
        if roll < 0.95:
            return self.rng.choice(STRINGS) * self.rng.randint(2, 2000)
        return self.rng.choice(SURROGATES)

    def scalar(self) -> JSON:
        return self.rng.choice(
            (
                None, True, False, 0, -1, 1, 9094, 65536, -(2**63), 2**63, 2**64 + 1, 10**4000, 0.5, -0.0,
                1e308, 5e-324, "", self.text(), self.text(),
            )
        )  # fmt: skip

    def value(self, depth: int = 0) -> JSON:
        roll = self.rng.random()
        if depth > 4 or roll < 0.6:
            return self.scalar()
        if roll < 0.8:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        return {self.text(): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}

    def listener(self) -> str:
        name = self.rng.choice(LISTENER_NAMES)
        host = self.rng.choice(HOSTS)
        port = self.rng.choice(PORTS)
        separator = self.rng.choice(("://", "://", "://", ":/", "//", ":///", ""))
        return f"{name}{separator}{host}:{port}" if self.rng.random() < 0.9 else f"{name}{separator}{host}"

    def listener_list(self, count: int | None = None) -> str:
        count = count if count is not None else self.rng.choice((0, 1, 1, 2, 3, 4, 8))
        entries = [self.listener() for _ in range(count)]
        if entries and self.rng.random() < 0.2:
            entries.append(self.rng.choice(entries))  # a duplicate name
        joiner = self.rng.choice((",", ",", ", ", " , ", ",,", ";", "\n"))
        text = joiner.join(entries)
        return text + ("," if self.rng.random() < 0.1 else "")

    def protocol_map(self) -> str:
        count = self.rng.choice((0, 1, 2, 4))
        return ",".join(
            f"{self.rng.choice(LISTENER_NAMES)}{self.rng.choice((':', ':', '::', '='))}"
            f"{self.rng.choice(PROTOCOLS)}"
            for _ in range(count)
        )

    def all_paths(self, root: JSON, prefix: Path_ = (), limit: int = 4000) -> list[Path_]:
        """Every path into `root` (breadth first, at most `limit`)."""
        found: list[Path_] = []
        queue: deque[tuple[Path_, JSON]] = deque([(prefix, root)])
        while queue and len(found) < limit:
            path, node = queue.popleft()
            items: list[tuple[str | int, JSON]] = (
                list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            )
            for key, child in items:
                found.append((*path, key))
                if isinstance(child, dict | list):
                    queue.append(((*path, key), child))
        return found

    def mutate_at(self, doc: JSON, path: Path_) -> None:
        """Delete, retype, duplicate or extend the node at `path`."""
        parent = get(doc, path[:-1])
        key = path[-1]
        roll = self.rng.random()
        if roll < 0.25:
            if isinstance(parent, dict):
                parent.pop(key, None)
            elif isinstance(parent, list) and isinstance(key, int) and key < len(parent):
                del parent[key]
        elif roll < 0.75:
            set_(doc, path, self.value())
        elif roll < 0.85:
            node = get(doc, path)
            if isinstance(node, list):
                node.extend(copy.deepcopy(node[: self.rng.randint(1, 3)]))
            elif isinstance(node, dict):
                node[self.text()] = self.value()
            else:
                set_(doc, path, [node, node])
        else:
            node = get(doc, path)
            swapped = {"0": node} if not isinstance(node, dict) else list(node.values())
            set_(doc, path, swapped)

    # -- categories --------------------------------------------------------------------------------

    def _valid(self) -> Case:
        doc = self.review()
        return Case(self.path(), self.dumps(doc), "application/json", "valid", frozenset({200}))

    def _raw(self) -> Case:
        body = self.dumps(self.review())
        roll = self.rng.randrange(12)
        expect: frozenset[int] | None = frozenset({400})
        note = ""
        if roll == 0:
            cut = self.rng.randrange(len(body))
            body, note = body[:cut], f"truncated at {cut}"
        elif roll == 1:
            raw = bytearray(body)
            for _ in range(self.rng.randint(1, 8)):
                raw[self.rng.randrange(len(raw))] = self.rng.randrange(256)
            body, expect, note = bytes(raw), None, "bytes flipped"
        elif roll == 2:
            body = self.rng.randbytes(self.rng.choice((1, 16, 300, 4096, 65536)))
            expect, note = None, "random bytes"
        elif roll == 3:
            at = body.index(b'"name"') + 8
            body, note = (
                body[:at] + self.rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8")) + body[at:],
                "invalid UTF-8 in a string",
            )
        elif roll == 4:
            body, note = b"\xef\xbb\xbf" + body, "UTF-8 BOM"
        elif roll == 5:
            constant = self.rng.choice((b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"))
            body = body.replace(b'"dryRun": false', b'"dryRun": false, "x": ' + constant, 1)
            body = body.replace(b'"containerPort": ', b'"containerPort": ' + constant + b', "y": ', 1)
            expect, note = None, "non-finite number"
        elif roll == 6:
            digits = self.rng.choice((4000, 4300, 4301, 100_000))
            body = body.replace(b'"uid": "', b'"big": ' + b"7" * digits + b', "uid": "', 1)
            expect, note = (
                (frozenset({200}) if digits <= 4300 else frozenset({400})),
                f"{digits}-digit integer",
            )
        elif roll == 7:
            body = body.replace(b'"kind": "AdmissionReview"', b'"kind": "AdmissionReview", "kind": "Pod"', 1)
            note = "duplicate key (last wins)"
        elif roll == 8:
            body, note = body + self.rng.choice((b"x", b"{}", b"\x00", b",", b"]")), "trailing garbage"
        elif roll == 9:
            body = self.rng.choice(
                (b"", b" ", b"\n\t ", b"null", b"true", b"0", b'""', b"[]", b"{}", b"[{}]")
            )
            note = "not an object"
        elif roll == 10:
            body = json.dumps(self.value()).encode()
            note = "random JSON"
        else:
            body = body.replace(b'"', b"'")
            note = "single quotes"
        return Case(self.path(), body, "application/json", "raw", expect, note)

    ENVELOPE_FIELDS: tuple[Path_, ...] = (
        ("apiVersion",), ("kind",), ("request",), ("request", "uid"), ("request", "kind"),
        ("request", "kind", "group"), ("request", "kind", "kind"), ("request", "kind", "version"),
        ("request", "resource"), ("request", "requestKind"), ("request", "operation"),
        ("request", "subResource"), ("request", "name"), ("request", "namespace"), ("request", "dryRun"),
        ("request", "object"), ("request", "oldObject"), ("request", "options"), ("request", "userInfo"),
        ("request", "userInfo", "username"), ("request", "userInfo", "groups"), ("response",),
        ("request", "object", "metadata"), ("request", "object", "kind"), ("request", "object", "apiVersion"),
    )  # fmt: skip

    def _envelope(self) -> Case:
        doc = self.review()
        for _ in range(self.rng.randint(1, 3)):
            path = self.rng.choice(self.ENVELOPE_FIELDS)
            if get(doc, path[:-1]) is MISSING or not isinstance(get(doc, path[:-1]), dict):
                continue
            if self.rng.random() < 0.3:
                get(doc, path[:-1]).pop(path[-1], None)
            else:
                set_(doc, path, self.value())
        if self.rng.random() < 0.2:
            doc[self.text()] = self.value()
        return self.finish(doc, "envelope")

    def _operations(self) -> Case:
        doc = self.review()
        request = doc["request"]
        request["operation"] = self.rng.choice(("CREATE", "UPDATE", "DELETE", "CONNECT"))
        if self.rng.random() < 0.5:
            request["subResource"] = self.rng.choice(("status", "binding", "ephemeralcontainers", "exec"))
        if self.rng.random() < 0.5:
            request["object"] = None
        if self.rng.random() < 0.5:
            request["oldObject"] = copy.deepcopy(request["object"]) if self.rng.random() < 0.5 else None
        kind = self.rng.choice(("Pod", "Service", "StatefulSet", "Deployment", "Binding", "Namespace", "pod"))
        request["kind"] = {"group": self.rng.choice(("", "apps", "x.io")), "version": "v1", "kind": kind}
        return self.finish(doc, "operations")

    def _spec(self) -> Case:
        doc = self.review()
        obj = doc["request"]["object"]
        paths = self.all_paths(obj, ("request", "object"))
        focus = [p for p in paths if any(k in p for k in ("containers", "initContainers", "ports", "env"))]
        for _ in range(self.rng.randint(1, 4)):
            pool = focus if focus and self.rng.random() < 0.6 else paths
            if not pool:
                break
            path = self.rng.choice(pool)
            if get(doc, path) is MISSING:
                continue
            self.mutate_at(doc, path)
        return self.finish(doc, "spec")

    def kafka_containers(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        found = [
            c
            for field_ in ("containers", "initContainers")
            for c in (spec.get(field_) or [])
            if isinstance(c, dict)
        ]
        return [c for c in found if "kafka" in str(c.get("image", ""))] or found

    def _listeners(self) -> Case:
        doc = self.review()
        obj = doc["request"]["object"]
        targets = self.kafka_containers(obj)
        if not targets:
            return self.finish(doc, "listeners", "no container")
        for _ in range(self.rng.randint(1, 4)):
            container = self.rng.choice(targets)
            roll = self.rng.random()
            if roll < 0.6:
                env = container.setdefault("env", [])
                if not isinstance(env, list):
                    continue
                name = self.rng.choice(LISTENER_VARS)
                if "PROTOCOL_MAP" in name:
                    value = self.protocol_map()
                elif "ROLES" in name:
                    value = self.rng.choice(("broker", "controller", "broker,controller", "", "BROKER", "x"))
                elif name.endswith("_NAME") or name.endswith("_NAMES"):
                    value = self.rng.choice(LISTENER_NAMES)
                else:
                    value = self.listener_list()
                existing = [e for e in env if isinstance(e, dict) and e.get("name") == name]
                if existing and self.rng.random() < 0.7:
                    existing[-1]["value"] = value
                    existing[-1].pop("valueFrom", None)
                else:
                    env.insert(self.rng.randint(0, len(env)), {"name": name, "value": value})
            elif roll < 0.8:
                script = (
                    f"export KAFKA_ADVERTISED_LISTENERS={self.listener_list()} && "
                    f"{self.rng.choice(('exec /etc/confluent/docker/run', 'exec /run.sh', 'echo'))}"
                )
                container["command"] = self.rng.choice(
                    (["sh", "-exc", script], ["/bin/bash", "-c", script], ["sh", "-c"], ["sh", "-c", ""])
                )
            else:
                ports = container.setdefault("ports", [])
                if isinstance(ports, list):
                    ports.append(
                        {
                            "name": self.rng.choice(("external", "client", "EXTERNAL", "", "x" * 20)),
                            "containerPort": self.rng.choice((9094, 9095, 0, 65535, 65536, -1, 2**31)),
                        }
                    )
        return self.finish(doc, "listeners")

    def _names(self) -> Case:
        doc = self.review()
        request, obj = doc["request"], doc["request"]["object"]
        metadata = dict_at(obj, "metadata")
        for _ in range(self.rng.randint(1, 4)):
            roll = self.rng.randrange(9)
            if roll == 0:
                metadata["name"] = self.unicode_text() + self.rng.choice(("-0", "-1", "", "-01", "-²"))
            elif roll == 1:
                request["namespace"] = self.unicode_text()
            elif roll == 2:
                dict_at(metadata, "labels")[self.unicode_text()] = self.unicode_text()
            elif roll == 3:
                dict_at(metadata, "annotations")[self.unicode_text()] = self.text()
            elif roll == 4:
                labels = dict_at(metadata, "labels")
                labels["apps.kubernetes.io/pod-index"] = self.rng.choice(("²", "٣", "01", "-1", "", "9" * 30))
            elif roll == 5:
                for container in self.kafka_containers(obj)[:1]:
                    container["name"] = self.unicode_text()
            elif roll == 6:
                for container in self.kafka_containers(obj)[:1]:
                    env = container.setdefault("env", [])
                    if isinstance(env, list):
                        env.append({"name": self.unicode_text(), "value": self.unicode_text()})
            elif roll == 7:
                metadata["generateName"] = self.unicode_text()
                metadata.pop("name", None)
            else:
                request["name"] = self.unicode_text()
        return self.finish(doc, "names")

    def _deep(self) -> Case:
        roll = self.rng.randrange(4)
        depth = self.rng.choice(
            (MAX_JSON_DEPTH - 8, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 500)
        )
        if roll == 0:  # the whole body
            opener, closer = self.rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
            tail = closer * depth if self.rng.random() < 0.8 else b""
            body = opener * depth + b"1" + tail
            return Case(self.path(), body, "application/json", "deep", frozenset({400}), f"depth {depth}")
        doc = self.review()
        nested: JSON = "bottom"
        for _ in range(max(0, depth - 6)):
            nested = [nested] if self.rng.random() < 0.5 else {"k": nested}
        paths = self.all_paths(doc["request"]["object"], ("request", "object"))
        if roll == 1:
            paths = [p for p in paths if "annotations" in p or "env" in p] or paths
        set_(doc, self.rng.choice(paths), nested)
        return self.finish(doc, "deep", f"depth {json_depth(doc)}")

    def _huge(self) -> Case:
        doc = self.review()
        obj = doc["request"]["object"]
        scale = self.huge_scale
        roll = self.rng.randrange(9)
        targets = self.kafka_containers(obj) or [{}]
        container = targets[0]
        if roll == 0:  # one long string somewhere
            size = int(self.rng.choice((10_000, 100_000, 1_000_000, 3_000_000)) * scale)
            paths = self.all_paths(obj, ("request", "object"))
            set_(doc, self.rng.choice(paths), self.rng.choice(("x", "é", "😀", "\\", '"')) * size)
            note = f"string of {size}"
        elif roll == 1:  # many env entries
            count = int(self.rng.choice((1000, 10_000, 50_000)) * scale)
            container["env"] = [{"name": f"E{i}", "value": str(i)} for i in range(count)]
            note = f"{count} env entries"
        elif roll == 2:  # many containers
            count = int(self.rng.choice((100, 1000, 5000)) * scale)
            dict_at(obj, "spec")["containers"] = [copy.deepcopy(container) for _ in range(count)]
            note = f"{count} containers"
        elif roll == 3:  # many ports
            count = int(self.rng.choice((1000, 10_000, 30_000)) * scale)
            container["ports"] = [{"containerPort": 9000 + i, "name": f"p{i}"} for i in range(count)]
            note = f"{count} container ports"
        elif roll == 4:  # a long listener list
            count = int(self.rng.choice((100, 500, 2000)) * scale)
            env = container.setdefault("env", [])
            entries = ",".join(f"L{i}://h{i}:{9000 + i}" for i in range(count))
            env.append({"name": self.rng.choice(LISTENER_VARS[:2]), "value": entries})
            note = f"{count} listener entries"
        elif roll == 5:  # many annotations
            count = int(self.rng.choice((1000, 20_000)) * scale)
            dict_at(obj, "metadata")["annotations"] = {f"k{i}.x/y": "v" * 10 for i in range(count)}
            note = f"{count} annotations"
        elif roll == 6:  # a long shell command
            size = int(self.rng.choice((10_000, 500_000)) * scale)
            container["command"] = [
                "sh",
                "-c",
                "export A=1 && " * (size // 14) + "exec /etc/confluent/docker/run",
            ]
            note = f"shell command of {size}"
        elif roll == 7:  # just under the body limit
            body = self.dumps(doc)
            pad = MAX_BODY_BYTES - len(body) - self.rng.randint(200, 5000)
            dict_at(dict_at(obj, "metadata"), "annotations")["pad"] = "p" * max(0, int(pad * scale))
            note = "just under 7 MiB"
        else:  # over the limit
            dict_at(dict_at(obj, "metadata"), "annotations")["pad"] = "p" * (MAX_BODY_BYTES + 10)
            body = self.dumps(doc)
            return Case(self.path(), body, "application/json", "huge", frozenset({413}), "over 7 MiB")
        return self.finish(doc, "huge", note)

    def _headers(self) -> Case:
        content_type, status = self.rng.choice(CONTENT_TYPES)
        doc = self.review()
        return Case(self.path(), self.dumps(doc), content_type, "headers", frozenset({status}), content_type)


def dict_at(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """parent[key], made an (empty) object first if it is not one."""
    if not isinstance(parent.get(key), dict):
        parent[key] = {}
    value: dict[str, Any] = parent[key]
    return value


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def get(doc: JSON, path: Path_) -> JSON:
    node = doc
    for key in path:
        if (isinstance(node, dict) and key in node) or (
            isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node)
        ):
            node = node[key]
        else:
            return MISSING
    return node


def set_(doc: JSON, path: Path_, value: JSON) -> None:
    parent = get(doc, path[:-1])
    key = path[-1]
    if isinstance(parent, dict) or (
        isinstance(parent, list) and isinstance(key, int) and -len(parent) <= key < len(parent)
    ):
        parent[key] = value


def envelope_ok(doc: JSON) -> bool:
    """Whether the server must answer this decoded document with an AdmissionReview (the documented
    rules of webhook.admission.wire.review_from_document: what the API server always sends)."""
    if not isinstance(doc, dict) or doc.get("kind") != "AdmissionReview":
        return False
    if doc.get("apiVersion") != "admission.k8s.io/v1" or not isinstance(doc.get("request"), dict):
        return False
    request = doc["request"]
    uid, gvk, obj = request.get("uid"), request.get("kind"), request.get("object")
    if (
        not isinstance(uid, str)
        or not uid
        or request.get("operation") not in ("CREATE", "UPDATE", "DELETE", "CONNECT")
    ):
        return False
    if (
        not isinstance(gvk, dict)
        or not isinstance(gvk.get("kind"), str)
        or not isinstance(gvk.get("group", ""), str)
    ):
        return False
    for key in ("subResource", "namespace", "name"):
        if not isinstance(request.get(key) or "", str):
            return False
    if not isinstance(request.get("dryRun", False), bool):
        return False
    if obj is not None and not isinstance(obj, dict):
        return False
    if request["operation"] in ("CREATE", "UPDATE") and not request.get("subResource") and obj is None:
        return False
    return obj is None or obj.get("metadata") is None or isinstance(obj.get("metadata"), dict)


# A cap on the number of JSON values, if the server has one (see the report of tests/reliability).
MAX_JSON_VALUES: int | None = getattr(admission, "MAX_JSON_VALUES", None)


def json_values(value: JSON) -> int:
    """How many values (objects, arrays, scalars, members) a document holds. Iterative."""
    count = 0
    stack = [value]
    while stack:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def expected_for(doc: JSON, body: bytes) -> frozenset[int] | None:
    """The right statuses for a JSON body: 413 over the limit, 400 too deep (or, near a cap on the
    number of values, 400 allowed too), else by the envelope."""
    if len(body) > MAX_BODY_BYTES:
        return frozenset({413})
    if json_depth(doc) > MAX_JSON_DEPTH:
        return frozenset({400})
    if MAX_JSON_VALUES is not None and json_values(doc) > MAX_JSON_VALUES * 0.8:
        return frozenset({200, 400}) if envelope_ok(doc) else frozenset({400})
    return frozenset({200}) if envelope_ok(doc) else frozenset({400})


# ------------------------------------------------------------------------------------- the judge


def judge(case: Case, status: int, headers: dict[str, str], data: bytes) -> tuple[list[str], JSON]:
    """What is wrong with this answer (short, stable signatures), and the patched object if any."""
    problems: list[str] = []
    endpoint = case.path.strip("/")
    if status >= 500:
        return [f"{endpoint}: HTTP {status}"], None
    if case.expect is not None and status not in case.expect:
        problems.append(
            f"{endpoint}: HTTP {status} for a {case.category} case, expected {sorted(case.expect)}"
        )
    if status != 200:
        if not 400 <= status < 500:
            return [*problems, f"{endpoint}: HTTP {status} is neither 200 nor 4xx"], None
        content_type = headers.get("content-type", "")
        text = data.decode("utf-8", "replace")
        if not content_type.startswith("text/plain"):
            problems.append(f"{endpoint}: {status} with content type {content_type!r}")
        if text.count("\n") != 1 or not text.endswith("\n") or "Traceback" in text or len(text) > 2000:
            problems.append(f"{endpoint}: {status} body is not one clean line")
        return problems, None
    try:
        request_doc = case.document
    except ValueError:
        return [*problems, f"{endpoint}: 200 for a body that is not JSON"], None
    if not headers.get("content-type", "").startswith("application/json"):
        problems.append(f"{endpoint}: 200 with content type {headers.get('content-type')!r}")
    try:
        answer = strict_json(data)
    except ValueError:
        return [*problems, f"{endpoint}: 200 body is not strict JSON"], None
    if not isinstance(request_doc, dict) or not isinstance(request_doc.get("request"), dict):
        return [*problems, f"{endpoint}: 200 for a body that is not an AdmissionReview"], None
    request = request_doc["request"]
    if not isinstance(answer, dict) or set(answer) != {"apiVersion", "kind", "response"}:
        return [*problems, f"{endpoint}: answer is not {{apiVersion, kind, response}}"], None
    if answer["apiVersion"] != request_doc.get("apiVersion") or answer["kind"] != "AdmissionReview":
        problems.append(f"{endpoint}: answer apiVersion/kind do not echo the request")
    response = answer["response"]
    if not isinstance(response, dict) or response.get("uid") != request.get("uid"):
        return [*problems, f"{endpoint}: response.uid is not request.uid"], None
    if not isinstance(response.get("allowed"), bool):
        problems.append(f"{endpoint}: response.allowed is not a boolean")
    unknown = set(response) - {
        "uid",
        "allowed",
        "status",
        "patchType",
        "patch",
        "warnings",
        "auditAnnotations",
    }
    if unknown:
        problems.append(f"{endpoint}: unknown response fields {sorted(unknown)}")
    warnings = response.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) and 0 < len(w) <= 256 for w in warnings):
        problems.append(f"{endpoint}: warnings are not short strings")
    elif any(w.startswith("kafka-expose: internal error") for w in warnings):
        problems.append(f"{endpoint}: internal error (an exception in the core; admitted unchanged)")
    if "status" in response and not isinstance(response["status"], dict):
        problems.append(f"{endpoint}: status is not an object")
    if "patch" not in response and "patchType" not in response:
        return problems, None
    if endpoint == "validate":
        return [*problems, "validate: answered with a patch"], None
    if response.get("patchType") != "JSONPatch":
        problems.append("mutate: patchType is not JSONPatch")
    try:
        operations = strict_json(base64.b64decode(response.get("patch", ""), validate=True))
    except (binascii.Error, ValueError, TypeError):
        return [*problems, "mutate: patch is not base64 of strict JSON"], None
    if not isinstance(operations, list) or not operations:
        return [*problems, "mutate: patch is not a non-empty list of operations"], None
    original = request.get("object")
    try:
        patched = jsonpatch.apply_patch(copy_json(original), operations)
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        TypeError,
        KeyError,
        IndexError,
    ) as err:
        return [*problems, f"mutate: patch does not apply to its object ({type(err).__name__})"], None
    if not isinstance(patched, dict) or not isinstance(original, dict):
        return [*problems, "mutate: patch replaced the object by a non-object"], None
    for key in ("apiVersion", "kind"):
        if patched.get(key) != original.get(key):
            problems.append(f"mutate: patch changed {key}")
    if patched == original:
        problems.append("mutate: patch changes nothing")
    return problems, patched


# -------------------------------------------------------------------------------------- the runner


@dataclass
class Finding:
    signature: str
    count: int = 0
    examples: list[str] = field(default_factory=list)  # saved body files or short descriptions


@dataclass
class Slow:
    seconds: float
    size: int
    category: str
    note: str
    path: str
    status: int


@dataclass
class FuzzReport:
    bodies: int = 0
    seconds: float = 0.0
    requests: int = 0  # bodies + idempotency re-checks
    statuses: Counter[int] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    patched: int = 0
    rechecked: int = 0
    reconnects: int = 0
    bytes_sent: int = 0
    findings: dict[str, Finding] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    slowest: list[Slow] = field(default_factory=list)
    biggest: Slow | None = None

    @property
    def rate(self) -> float:
        return self.bodies / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.bodies} bodies ({self.requests} requests, {self.bytes_sent / 2**20:.0f} MiB) in "
            f"{self.seconds:.1f} s: {self.rate:.0f} bodies/s; p50 {self.percentile(0.5) * 1000:.2f} ms, "
            f"p99 {self.percentile(0.99) * 1000:.2f} ms, max {max(self.latencies, default=0) * 1000:.0f} ms",
            f"statuses {dict(sorted(self.statuses.items()))}; categories {dict(sorted(self.categories.items()))}",
            f"patched {self.patched} (re-sent for idempotency {self.rechecked}); reconnects {self.reconnects}",
        ]
        for slow in self.slowest[:5]:
            lines.append(
                f"slow: {slow.seconds * 1000:.0f} ms {slow.path} {slow.status} {slow.size} bytes "
                f"{slow.category} ({slow.note})"
            )
        if self.biggest:
            b = self.biggest
            lines.append(
                f"biggest answered: {b.size} bytes in {b.seconds * 1000:.0f} ms ({b.category}: {b.note})"
            )
        for finding in sorted(self.findings.values(), key=lambda f: -f.count):
            lines.append(f"FINDING x{finding.count}: {finding.signature}  e.g. {finding.examples[:2]}")
        return "\n".join(lines)


class _Client:
    """One kept-alive HTTPS connection; a request on a connection the server closed is retried once
    on a new one (what the API server's HTTP client does too)."""

    def __init__(self, port: int, context: ssl.SSLContext, timeout: float) -> None:
        self.port, self.context, self.timeout = port, context, timeout
        self.conn: http.client.HTTPSConnection | None = None
        self.reconnects = 0

    def send(self, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in (0, 1):
            fresh = self.conn is None
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.context, timeout=self.timeout
                )
            try:
                if not content_type:
                    self.conn.putrequest("POST", path, skip_accept_encoding=True)
                    self.conn.putheader("Content-Length", str(len(body)))
                    self.conn.endheaders(body)
                else:
                    self.conn.request("POST", path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                self.close()
                if attempt == 1 or fresh:
                    raise
                self.reconnects += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_fuzz(
    port: int,
    context: ssl.SSLContext,
    total: int,
    *,
    seed: int = 0,
    threads: int = 4,
    recheck: bool = True,
    save_dir: Path | None = None,
    huge_scale: float = 1.0,
    timeout: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> FuzzReport:
    """Send `total` hostile cases over `threads` kept-alive connections; judge every answer. A patched
    object is sent again (new uid) and must come back without a patch (reinvocation, idempotency)."""
    report = FuzzReport()
    lock = threading.Lock()
    objects = seed_objects()
    counter = iter(range(total))

    def record(case: Case, signature: str, index: int) -> None:
        finding = report.findings.setdefault(signature, Finding(signature))
        finding.count += 1
        if len(finding.examples) < 3:
            example = f"seed {seed} case {index} {case.category} {case.path} ({case.note or 'no note'})"
            if save_dir is not None:
                save_dir.mkdir(parents=True, exist_ok=True)
                target = save_dir / f"finding-{len(report.findings)}-{finding.count}.json"
                target.write_bytes(case.body[:8_000_000])
                example += f" -> {target}"
            finding.examples.append(example)

    def worker(offset: int) -> None:
        generator = Hostile(seed * 1000 + offset, objects, huge_scale)
        client = _Client(port, context, timeout)
        try:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                case = generator.case()
                started = time.perf_counter()
                try:
                    status, headers, data = client.send(case.path, case.body, case.content_type)
                except (OSError, http.client.HTTPException) as err:
                    elapsed = time.perf_counter() - started
                    if case.expect == frozenset({413}) and isinstance(err, ConnectionError | ssl.SSLError):
                        status, headers, data = 413, {"content-type": "text/plain"}, b"closed\n"
                    else:
                        with lock:
                            report.bodies += 1
                            report.categories[case.category] += 1
                            record(case, f"{case.path}: no answer ({type(err).__name__})", index)
                        client.close()
                        continue
                elapsed = time.perf_counter() - started
                problems, patched = judge(case, status, headers, data)
                recheck_problems: list[str] = []
                if recheck and patched is not None:
                    recheck_problems = _recheck(client, case, patched)
                with lock:
                    report.bodies += 1
                    report.requests += 1 + (patched is not None and recheck)
                    report.bytes_sent += len(case.body)
                    report.statuses[status] += 1
                    report.categories[case.category] += 1
                    report.latencies.append(elapsed)
                    report.patched += patched is not None
                    report.rechecked += patched is not None and recheck
                    slow = Slow(elapsed, len(case.body), case.category, case.note, case.path, status)
                    report.slowest = sorted([*report.slowest, slow], key=lambda s: -s.seconds)[:10]
                    if status == 200 and (report.biggest is None or slow.size > report.biggest.size):
                        report.biggest = slow
                    for problem in problems + recheck_problems:
                        record(case, problem, index)
                    done = report.bodies
                if progress is not None and done % 1000 == 0:
                    progress(done)
        finally:
            with lock:
                report.reconnects += client.reconnects
            client.close()

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,), name=f"fuzz-{i}") for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    report.seconds = time.perf_counter() - started
    return report


def _recheck(client: _Client, case: Case, patched: dict[str, Any]) -> list[str]:
    """Send the patched object again, as on reinvocation: it must come back with nothing to change."""
    doc = case.document
    doc["request"]["object"] = patched
    doc["request"]["uid"] = str(doc["request"]["uid"]) + "-again"
    body = json.dumps(doc, separators=(",", ":")).encode("ascii")
    expect = expected_for(doc, body)  # a patched body just under the limit may be over it now
    if expect != frozenset({200}):
        return []
    again = Case(case.path, body, "application/json", case.category, expect, case.note)
    try:
        status, headers, data = client.send(case.path, body, "application/json")
    except (OSError, http.client.HTTPException) as err:
        client.close()
        return [f"{case.path}: no answer on reinvocation ({type(err).__name__})"]
    problems, patched_again = judge(again, status, headers, data)
    if patched_again is not None and patched_again != patched:
        problems.append("mutate: not idempotent (the patched object is patched again)")
    return [p + " [reinvocation]" for p in problems]


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')


def server_errors(log_path: Path) -> Counter[str]:
    """Exceptions the server logged (the core's, admitted unchanged, and unexpected ones), grouped by
    type and the innermost frame of the project: `TypeError at webhook/core/flavors.py:87 (_source)`."""
    found: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("level") not in ("ERROR", "CRITICAL"):
            continue
        if "traceback" not in entry:
            continue
        frames = [m for m in _FRAME.finditer(str(entry["traceback"])) if "/webhook/" in m["file"]]
        where = ""
        if frames:
            last = frames[-1]
            where = f" at webhook/{last['file'].split('/webhook/', 1)[1]}:{last['line']} ({last['func']})"
        error = str(entry.get("error", "")).split(":", 1)[0]
        found[f"{entry.get('message')}: {error}{where}"] += 1
    return found


# ------------------------------------------------------------------------------- the worst cases


def _pod(render: str, statefulset: str | None = None) -> dict[str, Any]:
    docs = podfactory.load_render(render)
    sts = next(s for s in podfactory.statefulsets(docs) if statefulset in (None, s["metadata"]["name"]))
    return podfactory.pod_from_statefulset(sts, 0, "kafka")


def _own_pod(manifest: str) -> dict[str, Any]:
    with (Path(__file__).parents[1] / "manifests" / manifest).open(encoding="utf-8") as handle:
        docs = [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]
    return podfactory.pod_from_statefulset(podfactory.statefulsets(docs)[0], 0, "kafka")


def _fill(template: str, budget: int) -> int:
    """How many copies of `template` fit in `budget` bytes."""
    return max(1, budget // len(template))


def worst_cases(budget: int = MAX_BODY_BYTES - 64 * 1024) -> list[tuple[str, bytes]]:
    """Bodies built to cost the server the most per request within the limits: as big as allowed
    (`budget` bytes of payload) and shaped at what the server parses, copies, diffs and logs."""
    bitnami = _pod("bitnami-kafka-32.4.4-brokers3")
    shell = _pod("incubator-kafka-0.21.5-brokers3", "kafka")
    env = _own_pod("apache-kraft-env.yaml")
    cases: list[tuple[str, bytes]] = []

    def add(name: str, pod: dict[str, Any], edit: Callable[[dict[str, Any]], object]) -> None:
        pod = copy_json(pod)
        edit(pod)
        doc = podfactory.admission_review(pod, uid=f"worst-{len(cases)}")
        cases.append((name, json.dumps(doc, separators=(",", ":")).encode("ascii")))

    def kafka(pod: dict[str, Any]) -> dict[str, Any]:
        container: dict[str, Any] = next(c for c in pod["spec"]["containers"] if "kafka" in c["image"])
        return container

    add(
        "an annotation value as long as allowed",
        bitnami,
        lambda p: p["metadata"].setdefault("annotations", {}).update(big="x" * budget),
    )
    add(
        "an annotation of escaped emoji (\\ud83d\\ude00), as long as allowed",
        bitnami,
        lambda p: p["metadata"].setdefault("annotations", {}).update(big="\U0001f600" * (budget // 12)),
    )
    add(
        "an annotation of escaped lone surrogates, as long as allowed",
        bitnami,
        lambda p: p["metadata"].setdefault("annotations", {}).update(big="\ud800" * (budget // 6)),
    )
    add(
        "annotations: as many as allowed (200k at 7 MiB)",
        bitnami,
        lambda p: p["metadata"].update(
            annotations={f"k{i}": "v" for i in range(_fill('"k123456":"v",', budget))}
        ),
    )

    def fill_env(pod: dict[str, Any]) -> None:
        kafka(pod).setdefault("env", []).extend(
            {"name": f"E{i}", "value": "v"} for i in range(_fill('{"name":"E123456","value":"v"},', budget))
        )

    add("env: as many entries as allowed (prepared-file flavor)", bitnami, fill_env)
    add("env: as many entries as allowed (env flavor)", env, fill_env)
    add(
        "env: as many listener.name.client.* entries to copy as allowed",
        env,
        lambda p: (
            kafka(p)
            .setdefault("env", [])
            .extend(
                [
                    {
                        "name": "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                        "value": "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    },
                    {"name": "KAFKA_ADVERTISED_LISTENERS", "value": "CLIENT://c:9092,PLAINTEXT://p:9093"},
                    {
                        "name": "KAFKA_LISTENERS",
                        "value": "CLIENT://:9092,PLAINTEXT://:9093,CONTROLLER://:9094",
                    },
                    *(
                        {"name": f"KAFKA_LISTENER_NAME_CLIENT_X{i}", "value": "v"}
                        for i in range(
                            _fill('{"name":"KAFKA_LISTENER_NAME_CLIENT_X123456","value":"v"},', budget)
                        )
                    ),
                ]
            )
        ),
    )
    add(
        "containers: the broker container 1,000 times",
        bitnami,
        lambda p: p["spec"].update(containers=[copy_json(kafka(p)) for _ in range(1000)]),
    )
    add(
        "containers: as many tiny non-Kafka ones as allowed, then the broker",
        bitnami,
        lambda p: p["spec"].update(
            containers=[
                *(
                    {"name": f"c{i}", "image": "busybox"}
                    for i in range(_fill('{"name":"c1234567","image":"busybox"},', budget))
                ),
                kafka(p),
            ]
        ),
    )
    add(
        "ports: as many container ports as allowed",
        bitnami,
        lambda p: kafka(p).update(
            ports=[
                {"containerPort": 1 + i % 65535, "name": f"p{i}"}
                for i in range(_fill('{"containerPort":12345,"name":"p123456"},', budget))
            ]
        ),
    )
    add(
        "volumes: as many emptyDir volumes and mounts as allowed",
        bitnami,
        lambda p: (
            p["spec"]
            .setdefault("volumes", [])
            .extend({"name": f"v{i}", "emptyDir": {}} for i in range(budget // 80)),
            kafka(p)
            .setdefault("volumeMounts", [])
            .extend({"name": f"v{i}", "mountPath": f"/m/{i}"} for i in range(budget // 80)),
        ),
    )
    add(
        "nesting 100 deep, as wide as allowed",
        bitnami,
        lambda p: (
            p["metadata"].setdefault("annotations", {})
            and p["spec"].update(x=[json.loads("[" * 90 + "]" * 90) for _ in range(budget // 182)])
        ),
    )
    add(
        "integers of 4,300 digits, as many as allowed",
        bitnami,
        lambda p: p["spec"].update(x=[int("9" * 4300) for _ in range(budget // 4302)]),
    )
    add(
        "shell command: a script as long as allowed, exec of the run script at the end",
        shell,
        lambda p: kafka(p).update(
            command=["sh", "-exc", "export A=1 && " * (budget // 14) + "exec /etc/confluent/docker/run"]
        ),
    )
    add(
        "shell command: 'exec' followed by blanks, as long as allowed",
        shell,
        lambda p: kafka(p).update(command=["sh", "-exc", "exec" + " " * budget + "x"]),
    )
    add(
        "shell command: 'exec ' repeated as often as allowed",
        shell,
        lambda p: kafka(p).update(command=["sh", "-exc", "exec " * (budget // 5)]),
    )
    add(
        "a pod name of half the limit (in metadata.name and request.name)",
        bitnami,
        lambda p: p["metadata"].update(name="a-" * (budget // 4) + "0"),
    )
    add("a request uid as long as allowed", bitnami, lambda p: None)
    cases[-1] = (cases[-1][0], cases[-1][1].replace(b'"uid":"worst-', b'"uid":"' + b"u" * budget + b"-", 1))
    add(
        "a namespace of half the limit (in metadata and request)",
        bitnami,
        lambda p: p["metadata"].update(namespace="n" * (budget // 2)),
    )
    for count in (5_000, 20_000):
        add(
            f"advertised listeners: {count:,} entries (env flavor)",
            env,
            lambda p, n=count: kafka(p)["env"].append(
                {
                    "name": "KAFKA_ADVERTISED_LISTENERS",
                    "value": ",".join(f"L{i}://h:{i % 60000 + 1}" for i in range(n)),
                }
            ),
        )
    add(
        "advertised listeners x controller names: 10,000 x 10,000 (env flavor)",
        env,
        lambda p: kafka(p)["env"].extend(
            [
                {
                    "name": "KAFKA_ADVERTISED_LISTENERS",
                    "value": ",".join(f"L{i}://h:{i % 60000 + 1}" for i in range(10_000)),
                },
                {
                    "name": "KAFKA_CONTROLLER_LISTENER_NAMES",
                    "value": ",".join(f"C{i}" for i in range(10_000)),
                },
            ]
        ),
    )
    add(
        "protocol map: as many entries as allowed (env flavor)",
        env,
        lambda p: kafka(p)["env"].append(
            {
                "name": "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "value": ",".join(f"N{i}:SSL" for i in range(budget // 12)),
            }
        ),
    )
    return cases  # fmt: skip


@dataclass
class Cost:
    """What one request cost the (single-worker, single-thread) server."""

    name: str
    size: int
    status: int
    seconds: float  # wall time, client side: grows with whatever else the machine runs
    cpu_seconds: float  # the worker's CPU time for it: what the request itself costs
    rss_before_mib: float
    peak_mib: float  # the worker's VmHWM during the request (reset before it)
    log_bytes: int  # what the server logged for it
    problems: list[str]

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.rss_before_mib

    def row(self) -> str:
        return (
            f"{self.name:<72} {self.size / 2**20:5.2f} MiB  HTTP {self.status}  {self.seconds * 1000:8.0f} ms  "
            f"peak {self.peak_mib:6.0f} MiB (+{self.growth_mib:4.0f})  log {self.log_bytes:>9} B"
        )


def measure_worst(
    port: int,
    context: ssl.SSLContext,
    worker_pid: int,
    log_path: Path,
    cases: list[tuple[str, bytes]],
    path: str = "/mutate",
    timeout: float = 120.0,
) -> list[Cost]:
    """Send each worst case alone and measure time, the worker's peak RSS and the log it caused."""
    from tests.reliability.procinfo import cpu_seconds, memory, reset_peak

    costs = []
    for name, body in cases:
        before = memory(worker_pid)
        assert before is not None, "the worker is gone"
        reset_peak(worker_pid)
        log_size = log_path.stat().st_size
        cpu_before = cpu_seconds(worker_pid) or 0.0
        client = _Client(port, context, timeout)
        started = time.perf_counter()
        try:
            status, headers, data = client.send(path, body, "application/json")
        except (OSError, http.client.HTTPException) as err:
            status, headers, data = 0, {}, f"no answer: {type(err).__name__}".encode()
        finally:
            client.close()
        seconds = time.perf_counter() - started
        time.sleep(0.05)  # the log line follows the answer
        after = memory(worker_pid)
        cpu = (cpu_seconds(worker_pid) or cpu_before) - cpu_before
        case = Case(path, body, "application/json", "worst", None, name)
        problems = judge(case, status, headers, data)[0] if status else [data.decode()]
        costs.append(
            Cost(
                name,
                len(body),
                status,
                seconds,
                cpu,
                before.rss_kib / 1024,
                (after.hwm_kib if after else 0) / 1024,
                log_path.stat().st_size - log_size,
                problems,
            )
        )
    return costs
