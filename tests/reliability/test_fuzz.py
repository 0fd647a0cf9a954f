"""Hostile input over real HTTPS: `kafka-expose serve` (gunicorn gthread, TLS) against generated bodies.

* `test_hostile_bodies`: a short run of the seeded generator of `hostile.py` (12,000 bodies by
  default, about 40 s; `KAFKA_EXPOSE_FUZZ_BODIES` / `KAFKA_EXPOSE_FUZZ_SEED` change it). The long
  run (100,000 bodies) is `bench/fuzz_long.py` (`make fuzz-long`).
* `test_envelope_fields_of_any_type`: hypothesis, every field of the AdmissionReview and of the
  broker container drawn from good values and values of every other JSON type (shrinks a finding).
* `test_found_inputs_are_answered_cleanly`: the smallest reproductions of what the fuzzer found.
* `test_worst_case_requests_are_bounded`: bodies built to cost the most within the limits; each one
  alone on a single-thread worker: the worker's CPU time for it (wall time printed), its peak
  RSS, the log it caused.

Every answer must be an AdmissionReview answering the request (a JSONPatch only from /mutate, one
that `jsonpatch` applies to the object it was made for), or a clean one-line 4xx; never a 5xx, never
an internal error of the core, never a worker that dies.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.hostile import (
    MISSING,
    Case,
    _Client,
    expected_for,
    get,
    judge,
    measure_worst,
    run_fuzz,
    seed_objects,
    server_errors,
    worst_cases,
)
from tests.reliability.procinfo import gunicorn_events, memory, server_memory, worker_pids
from tests.support import podfactory
from tests.support.harness import WebhookServer, running_server

pytestmark = pytest.mark.unit

BODIES = int(os.environ.get("KAFKA_EXPOSE_FUZZ_BODIES", "12000"))
SEED = int(os.environ.get("KAFKA_EXPOSE_FUZZ_SEED", "20261126"))
# One request may not cost a worker more CPU time than the API server waits for its answer
# (timeoutSeconds: 5 in manifests/base/webhooks.yaml): given a CPU, it is answered in time. CPU time,
# not wall time, so that other work on a shared machine cannot fail the test (wall time is printed).
# Nor may it grow the worker by more than this: the server container's limit is 256 MiB for the
# gunicorn master and 2 workers (manifests/base/deployment.yaml), about 150 MiB idle.
MAX_CPU_SECONDS = 5.0
MAX_GROWTH_MIB = 96.0
MAX_LOG_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    with running_server(tmp_path_factory.mktemp("fuzz"), show_log=False) as srv:
        yield srv


def assert_workers_intact(server: WebhookServer, workers: int = 2) -> None:
    events = gunicorn_events(server.log_path)
    assert server.alive(), server.log_tail()
    assert events["Booting worker"] == workers, events
    assert (
        events["Worker exiting"] == events["WORKER TIMEOUT"] == events["Exception in worker process"] == 0
    ), events


def test_hostile_bodies(server: WebhookServer) -> None:
    report = run_fuzz(
        server.port,
        server.context(),
        BODIES,
        seed=SEED,
        threads=4,
        huge_scale=0.1,  # long strings and lists up to ~0.7 MiB here; the long run goes to 7 MiB
        save_dir=Path(server.root) / "findings",
    )
    summary = report.summary()
    errors = server_errors(server.log_path)
    sys.stderr.write(f"\n--- fuzz (seed {SEED}) ---\n{summary}\n{dict(errors)}\n")
    memory_now = server_memory(server.proc.pid if server.proc else 0, server.log_path)
    sys.stderr.write(
        "server RSS/peak MiB: " + ", ".join(f"{m.rss_mib:.0f}/{m.hwm_mib:.0f}" for m in memory_now)
    )
    assert report.bodies == BODIES
    assert not report.findings, summary
    assert not errors, errors
    assert server.metric("kafka_expose_admission_requests_total", outcome="error") == 0
    assert_workers_intact(server)


# --- hypothesis: every field, every type ------------------------------------------------------------

SEEDS = seed_objects()
ANY_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=()), max_size=40),  # every code point, lone surrogates too
)
ANY_JSON = st.recursive(
    ANY_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ENVELOPE = (
    ("apiVersion",), ("kind",), ("request", "uid"), ("request", "kind"), ("request", "kind", "kind"),
    ("request", "kind", "group"), ("request", "operation"), ("request", "subResource"), ("request", "name"),
    ("request", "namespace"), ("request", "dryRun"), ("request", "object"), ("request", "oldObject"),
    ("request", "object", "metadata"), ("request", "object", "metadata", "name"),
    ("request", "object", "metadata", "labels"), ("request", "object", "metadata", "annotations"),
    ("request", "object", "metadata", "ownerReferences"), ("request", "object", "spec"),
    ("request", "object", "spec", "containers"), ("request", "object", "spec", "initContainers"),
    ("request", "object", "spec", "volumes"), ("request", "object", "spec", "ports"),
    ("request", "object", "spec", "type"), ("request", "object", "spec", "selector"),
)  # fmt: skip
CONTAINER = ("name", "image", "env", "ports", "command", "args", "volumeMounts")


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = doc
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        node = node[key]
    if value is MISSING:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


@st.composite
def reviews(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    obj = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    doc = podfactory.admission_review(obj, namespace="kafka", uid="hypothesis")
    for path in draw(st.lists(st.sampled_from(ENVELOPE), max_size=3, unique=True)):
        _set(doc, path, draw(st.one_of(st.just(MISSING), ANY_JSON)))
    containers = get(doc, ("request", "object", "spec", "containers"))
    if isinstance(containers, list) and containers and isinstance(containers[0], dict):
        for key in draw(st.lists(st.sampled_from(CONTAINER), max_size=3, unique=True)):
            containers[0][key] = draw(st.one_of(ANY_JSON, st.lists(ANY_JSON, max_size=3)))
        env = containers[0].get("env")
        if isinstance(env, list) and draw(st.booleans()):
            env.append(
                {
                    "name": draw(st.sampled_from(("KAFKA_ADVERTISED_LISTENERS", "KAFKA_LISTENERS"))),
                    "value": draw(
                        st.one_of(st.text(st.characters(exclude_categories=()), max_size=60), ANY_SCALAR)
                    ),
                }
            )
    return draw(st.sampled_from(("/mutate", "/validate"))), doc


@settings(
    max_examples=int(os.environ.get("KAFKA_EXPOSE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(reviews())
def test_envelope_fields_of_any_type(server: WebhookServer, request_case: tuple[str, dict[str, Any]]) -> None:
    path, doc = request_case
    try:
        body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates can only travel escaped
        body = json.dumps(doc).encode("ascii")
    case = Case(path, body, "application/json", "hypothesis", expected_for(doc, body))
    client = _Client(server.port, server.context(), 30)
    try:
        status, headers, data = client.send(path, body, "application/json")
    finally:
        client.close()
    problems, _ = judge(case, status, headers, data)
    assert not problems, (problems, status, data[:500])


# --- what the fuzzer found ------------------------------------------------------------------------


def _broker_review(edit: Any) -> dict[str, Any]:
    pod = podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0]
    doc = podfactory.admission_review(pod, uid="found-0")
    edit(doc)
    return doc


def _env_pod_review(edit: Any) -> dict[str, Any]:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "kafka", "namespace": "kafka"},
        "spec": {
            "serviceName": "kafka-headless",
            "template": {
                "metadata": {"labels": {"app": "kafka"}},
                "spec": {
                    "containers": [
                        {
                            "name": "kafka",
                            "image": "apache/kafka:4.1.0",
                            "env": [{"name": "KAFKA_ADVERTISED_LISTENERS", "value": "PLAINTEXT://k:9092"}],
                        }
                    ]
                },
            },
        },
    }
    doc = podfactory.admission_review(podfactory.pod_from_statefulset(sts, 0, "kafka"), uid="found-1")
    edit(doc)
    return doc


def _spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["request"]["object"]["spec"]
    return spec


FOUND = [
    pytest.param(
        _broker_review(lambda d: d["request"].update(uid="\ud800")),
        id="lone-surrogate-uid-500",  # admission.encode: UnicodeEncodeError -> HTTP 500
    ),
    pytest.param(
        _broker_review(lambda d: d["request"]["object"]["metadata"].update(name="kafka-controller-\udc80")),
        id="lone-surrogate-in-a-warning",  # admission.encode of the warning -> internal error
    ),
    pytest.param(
        _env_pod_review(
            lambda d: _spec(d)["containers"][0]["env"].append(
                {"name": "KAFKA_ADVERTISED_LISTENERS", "value": "PLAINTEXT://k\ud800:9092"}
            )
        ),
        id="lone-surrogate-in-a-patched-env-value",  # admission.patch_response -> internal error
    ),
    pytest.param(
        _broker_review(
            lambda d: d["request"]["object"]["metadata"]["labels"].update(
                {"apps.kubernetes.io/pod-index": "²"}
            )
        ),
        id="pod-index-superscript-digit",  # engine.pod_identity: "²".isdigit() but int("²") raises
    ),
    pytest.param(
        _broker_review(lambda d: d["request"]["object"]["metadata"].update(labels=None)),
        id="labels-null",  # engine.expose: metadata.setdefault("labels", {}) returns None
    ),
    pytest.param(
        _broker_review(lambda d: d["request"]["object"]["metadata"].update(annotations=None)),
        id="annotations-null",  # engine.expose: metadata.setdefault("annotations", {}) returns None
    ),
    pytest.param(
        _broker_review(lambda d: _spec(d)["volumes"].append({"name": ["a list"], "emptyDir": {}})),
        id="volume-name-not-a-string",  # flavors.PreparedFile._source: unhashable dict key
    ),
    pytest.param(
        _broker_review(
            lambda d: _spec(d)["containers"][0]["volumeMounts"].insert(
                0,
                {"name": {"a": "dict"}, "mountPath": "/x/server.properties", "subPath": "server.properties"},
            )
        ),
        id="volume-mount-name-not-a-string",  # flavors.PreparedFile._source: volumes.get(unhashable)
    ),
    pytest.param(
        _env_pod_review(
            lambda d: _spec(d)["containers"][0]["env"].append(
                {"name": "KAFKA_ADVERTISED_LISTENERS", "value": "PLAINTEXT://k:9092²"}
            )
        ),
        id="listener-port-superscript-digit",  # listeners.Listener.port_number: int("9092²")
    ),
]


@pytest.mark.parametrize("doc", FOUND)
@pytest.mark.parametrize("path", ["/mutate", "/validate"])
def test_found_inputs_are_answered_cleanly(server: WebhookServer, doc: dict[str, Any], path: str) -> None:
    body = json.dumps(doc).encode("ascii")
    case = Case(path, body, "application/json", "found", frozenset({200}))
    status, headers, data = server.post(path, body)
    problems, _ = judge(case, status, headers, data)
    assert not problems, (problems, data[:300])


# --- the worst a single request can do --------------------------------------------------------------


def test_worst_case_requests_are_bounded(tmp_path: Path) -> None:
    """Each body alone, on a server with one worker and one thread: the request's time, the worker's
    peak RSS above what it had before (VmHWM reset per request) and the bytes it made the server log."""
    with running_server(tmp_path, show_log=False, workers=1, threads=1) as server:
        assert server.proc is not None
        (worker,) = worker_pids(server.log_path)
        idle = server_memory(server.proc.pid, server.log_path)
        costs = measure_worst(server.port, server.context(), worker, server.log_path, worst_cases())
        final = memory(worker)
        events = gunicorn_events(server.log_path)
    table = "\n".join(cost.row() for cost in costs)
    sys.stderr.write(
        "\n--- worst cases (1 worker, 1 thread) ---\n"
        + f"idle RSS MiB: master {idle[0].rss_mib:.0f}, worker {idle[1].rss_mib:.0f}\n{table}\n"
    )
    assert final is not None and events["Booting worker"] == 1, events
    over = [
        f"{c.name}: {c.cpu_seconds:.1f} CPU s, +{c.growth_mib:.0f} MiB, {c.log_bytes} log bytes {c.problems}"
        for c in costs
        if c.problems
        or c.status >= 500
        or c.cpu_seconds > MAX_CPU_SECONDS
        or c.growth_mib > MAX_GROWTH_MIB
        or c.log_bytes > MAX_LOG_BYTES
    ]
    assert not over, (
        f"over {MAX_CPU_SECONDS} CPU s, {MAX_GROWTH_MIB} MiB or {MAX_LOG_BYTES} log bytes:\n"
        + "\n".join(over)
    )
