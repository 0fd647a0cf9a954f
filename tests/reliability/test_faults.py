"""Faults injected with the real API server, the webhook registered as the manifests register it
(failurePolicy Ignore, timeoutSeconds 5) and the controller running:

* a webhook worker killed in the middle of a request the API server is waiting on;
* the API server stopped while the controller is creating Services, then started again;
* the settings file replaced by an invalid one (and then by a valid new one);
* the certificate files replaced by garbage;
* the webhook down altogether: what happens to a broker pod, and to a namespace that did not opt in.

Each test says what it saw (stderr) so that `-s` shows what happens, not only that it passed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.loadkit import (
    EXPOSED_LABEL,
    MANAGED_SELECTOR,
    Api,
    Exposure,
    check_exposure,
    in_parallel,
    kafka_statefulset,
    start_controller,
    webhook_call_failures,
)
from tests.reliability.procinfo import children, gunicorn_events
from tests.support import podfactory
from tests.support.controlplane import ControlPlane, WaitTimeout
from tests.support.tlsutil import atomic_swap_dir, peer_serial
from tests.support.webhookcluster import ControllerProcess, RegisteredWebhook, wait_for

pytestmark = pytest.mark.cluster

INVALID_SETTINGS = "domain: [this is, not a domain\nlistener:\n  port: seventy\n"
OTHER_SETTINGS = "domain: other.example.com\nloadBalancer:\n  cloud: gke\ncontroller:\n  resyncSeconds: 5\n"


def say(text: str) -> None:
    sys.stderr.write(text.rstrip() + "\n")


@pytest.fixture
def controller(
    control_plane: ControlPlane, webhook: RegisteredWebhook, tmp_path: Path
) -> Iterator[ControllerProcess]:
    process = start_controller(control_plane, webhook.settings_path, tmp_path)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[Api]:
    client = Api(control_plane)
    created: list[str] = []
    original = client.namespace

    def namespace(prefix: str, opted_in: bool = True) -> str:
        name = original(prefix, opted_in)
        created.append(name)
        return name

    client.namespace = namespace  # type: ignore[method-assign]
    try:
        yield client
    finally:
        for name in created:
            client.delete(f"/api/v1/namespaces/{name}")


def broker_pod(namespace: str, name: str = "probe") -> dict[str, Any]:
    """A broker pod as the StatefulSet controller would send it (no StatefulSet object behind it)."""
    pod = podfactory.pod_from_statefulset(kafka_statefulset(namespace, name), 0, namespace)
    pod["metadata"]["ownerReferences"] = []
    return pod


def is_exposed(pod: dict[str, Any]) -> bool:
    return (pod["metadata"].get("labels") or {}).get(EXPOSED_LABEL) == "true"


def stored_pods(api: Api, namespace: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in api.items(f"/api/v1/namespaces/{namespace}/pods")}


def managed(api: Api, namespace: str) -> list[str]:
    services = api.items(f"/api/v1/namespaces/{namespace}/services", labelSelector=MANAGED_SELECTOR)
    return sorted(s["metadata"]["name"] for s in services)


# ------------------------------------------------------------------------------ a worker dies


def apiserver_lines(control_plane: ControlPlane, *needles: str, since: int = 0) -> list[str]:
    """kube-apiserver log lines (after byte offset `since`) that mention every needle."""
    path = control_plane.log_paths()["kube-apiserver"]
    with path.open("rb") as handle:
        handle.seek(since)
        text = handle.read().decode(errors="replace")
    return [line for line in text.splitlines() if all(n in line for n in needles)]


def test_a_worker_killed_mid_request(
    control_plane: ControlPlane, webhook: RegisteredWebhook, api: Api
) -> None:
    """Both workers are frozen (SIGSTOP), a broker pod is created (the API server's call to /mutate
    is then in flight, unanswered), and both workers are SIGKILLed 1 s into it. gunicorn boots new
    workers; the API server retries a reset connection (a request still in the accept queue is served
    by a new worker) within its 5 s timeout, so the pod is created exposed. Had no answer come in 5 s,
    failurePolicy Ignore would have created it unexposed: a pod is created either way."""
    server = webhook.server
    assert server.proc is not None
    namespace = api.namespace("fault-kill")
    workers = children(server.proc.pid)
    assert len(workers) == server.workers
    log_offset = control_plane.log_paths()["kube-apiserver"].stat().st_size
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    outcome: dict[str, Any] = {}

    def create() -> None:
        started = time.monotonic()
        try:
            outcome["pod"] = api.post(f"/api/v1/namespaces/{namespace}/pods", broker_pod(namespace))
        except AssertionError as err:
            outcome["error"] = str(err)
        outcome["seconds"] = time.monotonic() - started

    creating = threading.Thread(target=create)
    try:
        creating.start()
        time.sleep(1.0)
        in_flight = creating.is_alive()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    finally:
        for pid in workers:  # in case a kill above failed: never leave a frozen worker behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    creating.join(120)  # bounded by the API server's webhook timeout; this only catches a hang
    assert not creating.is_alive(), "the pod creation never returned"
    wait_for(lambda: len(children(server.proc.pid)) == server.workers, 60, what="new workers")
    events = gunicorn_events(server.log_path)
    exposed = "pod" in outcome and is_exposed(outcome["pod"])
    why = apiserver_lines(control_plane, "pods.mutate.kafka-expose.io", since=log_offset)
    say(
        f"\nworker killed mid-request: the create was in flight at the kill: {in_flight}; it returned after "
        f"{outcome.get('seconds', 0):.2f} s, {'EXPOSED (retried / served by a new worker)' if exposed else 'created UNEXPOSED (failurePolicy Ignore)' if 'pod' in outcome else outcome}; "
        f"gunicorn {events}\nkube-apiserver: {[line[:400] for line in why[:3]]}"
    )
    assert in_flight
    assert "pod" in outcome, outcome  # failurePolicy Ignore: never a failed pod creation
    assert events["Booting worker"] == 2 * server.workers, events
    # and the server serves again: the next broker pod comes out exposed
    again = api.post(f"/api/v1/namespaces/{namespace}/pods", broker_pod(namespace, "after"))
    assert is_exposed(again)


# --------------------------------------------------------------- the API server goes away


def test_the_api_server_stops_while_the_controller_reconciles(
    control_plane: ControlPlane, webhook: RegisteredWebhook, controller: ControllerProcess, api: Api
) -> None:
    """Four StatefulSets of 8 brokers are created at once; as soon as the first Services appear (the
    controller is mid-way), kube-apiserver is stopped for 5 s and started again. The controller
    relists and converges: one Service per broker, none twice, none left over; then a scale-down
    while it is at it removes exactly the Services of the removed ordinals."""
    namespaces = [api.namespace("fault-apiserver") for _ in range(4)]
    in_parallel(
        [
            lambda ns=ns: api.post(
                f"/apis/apps/v1/namespaces/{ns}/statefulsets", kafka_statefulset(ns, replicas=8)
            )
            for ns in namespaces
        ]
    )

    def some_services() -> int:
        return sum(len(managed(api, ns)) for ns in namespaces)

    at_stop = wait_for(some_services, timeout=60, interval=0.05, what="the first Services")
    control_plane.stop_apiserver()
    say(f"\nkube-apiserver stopped with {at_stop}/32 Services made")
    time.sleep(5)
    control_plane.start_apiserver()
    started = time.monotonic()
    expected = dict.fromkeys(namespaces, 8)
    last: list[Exposure] = []

    def converged() -> Exposure | None:
        last[:] = [check_exposure(api, expected)]
        return last[0] if last[0].complete else None

    try:
        exposure = wait_for(converged, timeout=120, interval=1, what="convergence")
    except WaitTimeout:
        problems = last[0].problems if last else []
        raise AssertionError(
            f"not converged: {problems[:20]}\n{controller.log_path.read_text()[-4000:]}"
        ) from None
    say(f"converged {time.monotonic() - started:.1f} s after the restart: {exposure.services} Services")
    assert exposure.services == 32

    patch = json.dumps({"spec": {"replicas": 3}})
    api.session.patch(
        api.url(f"/apis/apps/v1/namespaces/{namespaces[0]}/statefulsets/kafka/scale"),
        data=patch,
        headers={"Content-Type": "application/merge-patch+json"},
        timeout=30,
    ).raise_for_status()
    expected[namespaces[0]] = 3
    wait_for(lambda: check_exposure(api, expected).complete, timeout=60, what="scale-down to 3")
    assert managed(api, namespaces[0]) == [f"kafka-{i}-external" for i in range(3)]
    assert controller.proc is not None and controller.proc.poll() is None
    log = controller.log_path.read_text(errors="replace")
    assert "watch failed" in log or "reconcile failed" in log or "listing again" in log, log[-3000:]


# --------------------------------------------------------------------------- bad files


def test_invalid_settings_keep_the_old_ones_serving(
    webhook: RegisteredWebhook, controller: ControllerProcess, api: Api
) -> None:
    """The settings file (shared by the server and the controller) is replaced by an invalid one:
    both keep the settings they had (readiness and a metric say a file was rejected) and brokers are
    still exposed under the old domain; a valid new file is then taken by both."""
    server = webhook.server
    failures = server.metric("kafka_expose_settings_reloads_total", result="failure")
    server.set_settings(INVALID_SETTINGS)
    wait_for(
        lambda: server.metric("kafka_expose_settings_reloads_total", result="failure") > failures,
        timeout=15,
        what="the invalid settings to be rejected",
    )
    # Each worker polls the file on its own: wait until the one that answers has seen it too.
    status, _, body = wait_for(
        lambda: (answer := server.request("GET", "/readyz")) and b"rejected" in answer[2] and answer,
        timeout=15,
        what="readiness to report the rejected file",
    )
    say(f"\ninvalid settings: /readyz {status}: {body.decode().strip()!r}")
    assert status == 200

    namespace = api.namespace("fault-settings")
    api.post(f"/apis/apps/v1/namespaces/{namespace}/statefulsets", kafka_statefulset(namespace, replicas=2))
    exposure = wait_for(
        lambda: (e := check_exposure(api, {namespace: 2})).complete and e, timeout=60, what="exposure"
    )
    assert exposure.services == 2  # the controller too kept its settings (the old domain, checked above)
    # The controller checks its settings file on its own clock: wait for it to have seen the file.
    wait_for(
        lambda: "settings reload rejected" in controller.log_path.read_text(errors="replace"),
        timeout=30,
        what="the controller to reject the invalid settings",
    )

    server.set_settings(OTHER_SETTINGS)
    wait_for(
        lambda: (
            b"other.example.com"
            in json.dumps(
                api.post(f"/api/v1/namespaces/{namespace}/pods?dryRun=All", broker_pod(namespace, "probe"))
            ).encode()
        ),
        timeout=20,
        what="the new settings",
    )
    status, _, body = wait_for(
        lambda: (answer := server.request("GET", "/readyz")) and b"rejected" not in answer[2] and answer,
        timeout=15,
        what="every worker to take the valid file",
    )
    assert status == 200


def test_garbage_certificate_files_keep_the_old_certificate(webhook: RegisteredWebhook, api: Api) -> None:
    """tls.crt and tls.key replaced by garbage: the certificate in use keeps serving (new TLS
    connections get it, the API server's calls keep succeeding), /readyz says the new files were
    rejected, and kafka_expose_certificate_reloads_total{result="failure"} counts it."""
    server = webhook.server
    conn = server.connection()
    conn.connect()
    serial = peer_serial(conn.sock)
    conn.close()
    failures = server.metric("kafka_expose_certificate_reloads_total", result="failure")
    atomic_swap_dir(server.secret_dir, {"tls.crt": b"garbage", "tls.key": b"garbage", "ca.crt": b""})
    wait_for(
        lambda: server.metric("kafka_expose_certificate_reloads_total", result="failure") > failures,
        timeout=15,
        what="the garbage to be rejected",
    )
    time.sleep(1.5)  # every worker has polled the files by now
    status, _, body = server.request("GET", "/readyz")
    say(f"\ngarbage certificate: /readyz {status}: {body.decode().strip()!r}")
    assert status == 200 and b"rejected" in body
    conn = server.connection()
    conn.connect()
    assert peer_serial(conn.sock) == serial
    conn.close()
    namespace = api.namespace("fault-cert")
    for i in range(5):  # through the API server, on new and kept-alive connections
        pod = api.post(f"/api/v1/namespaces/{namespace}/pods?dryRun=All", broker_pod(namespace, f"p{i}"))
        assert is_exposed(pod)
    expiry = server.metric("kafka_expose_certificate_expiry_timestamp_seconds")
    assert expiry == pytest.approx(server.leaf.not_after.timestamp(), abs=1)
    assert server.leaf.not_after > dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- no webhook at all


def test_the_webhook_down_with_failure_policy_ignore(
    control_plane: ControlPlane, webhook: RegisteredWebhook, controller: ControllerProcess, api: Api
) -> None:
    """Every webhook replica down (the registration still points at it): a broker StatefulSet's
    pods are created, unexposed, and get no Service, and the controller reports each of them (a
    BrokerNotExposed Event on the StatefulSet); a namespace that did not opt in is not affected
    at all (the API server does not call the webhook there). With the webhook back, a re-created
    broker pod is exposed and gets its Service."""
    server = webhook.server
    opted = api.namespace("fault-down")
    plain = api.namespace("fault-down-plain", opted_in=False)
    server.stop()
    try:
        failed_before = webhook_call_failures(control_plane)
        started = time.monotonic()
        api.post(f"/apis/apps/v1/namespaces/{opted}/statefulsets", kafka_statefulset(opted, replicas=3))
        pods = wait_for(lambda: len(p := stored_pods(api, opted)) == 3 and p, timeout=60, what="3 pods")
        created_in = time.monotonic() - started
        failed_calls = webhook_call_failures(control_plane)
        failed_opted = failed_calls - failed_before
        timings = []
        for i in range(3):
            begin = time.monotonic()
            api.post(f"/api/v1/namespaces/{plain}/pods", broker_pod(plain, f"plain{i}"))
            timings.append(time.monotonic() - begin)
        # The API server did not even try the webhook for them (its namespaceSelector): no failed call
        # more, whereas each of the opted-in pods above failed open (this count can fail).
        failed_plain = webhook_call_failures(control_plane) - failed_calls
        time.sleep(7)  # a controller resync (5 s) has looked at the namespace
        services = managed(api, opted)
        say(
            f"\nwebhook down: 3 broker pods created in {created_in:.1f} s, exposed: "
            f"{[is_exposed(p) for p in pods.values()]}, Services: {services}; "
            f"pods in a namespace that did not opt in created in {max(timings) * 1000:.0f} ms at most "
            f"(webhook calls failed open: {failed_opted:g} for the opted-in pods, {failed_plain:g} for these), "
            f"exposed: {[is_exposed(p) for p in stored_pods(api, plain).values()]}"
        )
        assert not any(is_exposed(p) for p in pods.values())
        assert services == []
        # the controller tells which brokers run unexposed, and what to do
        reported = [
            e for e in api.items(f"/api/v1/namespaces/{opted}/events") if e["reason"] == "BrokerNotExposed"
        ]
        assert sorted(e["message"].split()[2] for e in reported) == ["kafka-0", "kafka-1", "kafka-2"]
        assert not any(is_exposed(p) for p in stored_pods(api, plain).values())
        assert failed_opted >= 3 and failed_plain == 0, (failed_opted, failed_plain)
    finally:
        server.start()
    api.delete(f"/api/v1/namespaces/{opted}/pods/kafka-0")
    wait_for(
        lambda: (
            (p := stored_pods(api, opted).get("kafka-0")) is not None
            and not p["metadata"].get("deletionTimestamp")
            and is_exposed(p)
        ),
        timeout=60,
        what="kafka-0 re-created exposed",
    )
    wait_for(lambda: managed(api, opted) == ["kafka-0-external"], timeout=30, what="its Service")
    still = stored_pods(api, opted)
    assert not is_exposed(still["kafka-1"]) and not is_exposed(still["kafka-2"])
