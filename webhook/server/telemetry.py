"""Prometheus metrics of the webhook server.

With several gunicorn workers each process counts on its own; prometheus-client's multiprocess mode
adds them up at scrape time. `kafka-expose serve` sets PROMETHEUS_MULTIPROC_DIR before this module is
imported (the value class is chosen at import time) and marks dead workers from gunicorn's
`child_exit` hook. Without that variable (tests, a single process) the default registry is used.

Import this module only in processes that serve requests: in the gunicorn arbiter it would create
value files for a process that never counts anything.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from webhook import __version__

ENDPOINTS = ("mutate", "validate")
OUTCOMES = ("mutated", "unchanged", "skipped", "warned", "allowed", "denied", "error", "invalid")

ADMISSION_REQUESTS = Counter(
    "kafka_expose_admission_requests",
    "Admission requests answered, by endpoint and outcome (invalid: the request was rejected with 4xx).",
    ["endpoint", "outcome"],
)
ADMISSION_DURATION = Histogram(
    "kafka_expose_admission_duration_seconds",
    "Time to answer an admission request, from the body read to the answer built.",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ADMISSION_INVALID = Counter(
    "kafka_expose_admission_invalid_requests",
    "Requests rejected before admission (bad content type, too large, not JSON, not an AdmissionReview).",
    ["endpoint", "reason"],
)
ADMISSION_WARNINGS = Counter(
    "kafka_expose_admission_warnings",
    "Warnings returned to the API server (a broker that cannot be exposed, an internal error).",
    ["endpoint"],
)
ADMISSION_DRY_RUN = Counter(
    "kafka_expose_admission_dry_run_requests",
    "Admission requests with dryRun set (answered exactly like the others: the webhook has no side effects).",
    ["endpoint"],
)
SETTINGS_RELOADS = Counter(
    "kafka_expose_settings_reloads",
    "Reloads of the settings file after it changed (failure: the previous settings keep serving).",
    ["result"],
)
CERTIFICATE_RELOADS = Counter(
    "kafka_expose_certificate_reloads",
    "Reloads of the serving certificate after its files changed (failure: the previous one keeps serving).",
    ["result"],
)
POLICY_DECISIONS = Counter(
    "kafka_expose_policy_decisions",
    "Policy rule decisions by rule and outcome.",
    ["rule", "outcome"],
)
CONNECTIONS_CUT = Counter(
    "kafka_expose_connections_cut",
    "Connections shut down because they did not complete a request within the read deadline (slow clients).",
)
POLICY_FAILURES = Counter(
    "kafka_expose_policy_failures",
    "Policy checks that could not be made, by what failed (hook_error: the policy raised, the object was "
    "denied; cap_lookup: the LoadBalancer count could not be read, the LoadBalancer was denied).",
    ["failure"],
)
BUILD_INFO = Gauge(
    "kafka_expose_build_info",
    "Always 1: the version of kafka-expose this process runs.",
    ["version", "component"],
    multiprocess_mode="max",  # one sample however many workers
)
BUILD_INFO.labels(__version__, "webhook").set(1)
CERTIFICATE_EXPIRY = Gauge(
    "kafka_expose_certificate_expiry_timestamp_seconds",
    "Expiry (notAfter, Unix time) of the serving certificate; the earliest one served by a live worker.",
    multiprocess_mode="livemin",
)

for _endpoint in ENDPOINTS:
    ADMISSION_DURATION.labels(_endpoint)
    ADMISSION_WARNINGS.labels(_endpoint)
    ADMISSION_DRY_RUN.labels(_endpoint)
    for _outcome in OUTCOMES:
        ADMISSION_REQUESTS.labels(_endpoint, _outcome)
for _failure in ("hook_error", "cap_lookup"):
    POLICY_FAILURES.labels(_failure)
for _result in ("success", "failure"):
    SETTINGS_RELOADS.labels(_result)
    CERTIFICATE_RELOADS.labels(_result)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def render() -> tuple[bytes, str]:
    """The exposition text of every worker (multiprocess mode) or of this process, and its content type."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
