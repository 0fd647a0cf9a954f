# ruff: noqa: F811  (pytest fixtures imported from test_controller are parameters by design)
"""`kafka-expose status` against real objects: the controller running, brokers exposed by it, a load
balancer address assigned the way a cloud does (the Service's status subresource), and a broker
StatefulSet that came in unexposed."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from tests.cluster.controller_fixtures import (
    BROKER_RENDER,
    Controller,
    broker_statefulset,
    create_objects,
    managed_services,
)
from tests.cluster.test_controller import (  # noqa: F401 - the fixtures this module shares
    api,
    controller,
    exactly,
    lease_namespace,
    namespaces,
    new_namespace,
    settings_path,
)
from tests.support.controlplane import ControlPlane, wait_for
from tests.support.podfactory import load_render, statefulsets

pytestmark = pytest.mark.cluster


def status(plane: ControlPlane, settings: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "webhook", "status", "--kubeconfig", str(plane.kubeconfig_path)]
    return subprocess.run(
        [*command, "--config", str(settings), *args], capture_output=True, text=True, timeout=120
    )


def brokers(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {row["pod"]: row for row in json.loads(result.stdout)["brokers"]}


def assign_address(api: kubernetes.client.ApiClient, namespace: str, name: str, ip: str) -> None:
    kubernetes.client.CoreV1Api(api).patch_namespaced_service_status(
        name, namespace, {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
    )


def test_status_reports_each_broker_and_what_needs_a_person(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
    settings_path: Path,
) -> None:
    ns = new_namespace(api, namespaces, "status")
    create_objects(control_plane, [broker_statefulset(ns, replicas=2)])
    services = exactly(api, ns, 2)

    waiting = status(control_plane, settings_path, "-n", ns, "-o", "json")
    assert waiting.returncode == 1, waiting.stderr  # no load balancer address yet: a person should know
    rows = brokers(waiting)
    assert set(rows) == {"kafka-broker-0", "kafka-broker-1"}
    for pod, row in rows.items():
        assert row["service"] == f"{pod}-external" and row["service"] in services
        assert row["advertised"] == f"EXTERNAL://{pod}.{ns}.kafka.example.com:9094"
        assert row["dnsName"] == f"{pod}.{ns}.kafka.example.com"
        assert row["internal"] is True  # the aws preset's annotation is on the Service
        assert row["address"] is None and any("no address" in p for p in row["problems"])

    for index, name in enumerate(sorted(services)):
        assign_address(api, ns, name, f"10.20.0.{index + 1}")
    ready = status(control_plane, settings_path, "-n", ns, "-o", "json")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert {row["address"] for row in brokers(ready).values()} == {"10.20.0.1", "10.20.0.2"}
    table = status(control_plane, settings_path, "-A")
    print(table.stdout)  # the README's example (pytest -s)
    assert table.returncode == 0, table.stdout + table.stderr
    assert f"kafka-broker-0.{ns}.kafka.example.com" in table.stdout and "10.20.0.1" in table.stdout

    # A hand edit that makes the load balancer public is reported until the controller repairs it.
    core = kubernetes.client.CoreV1Api(api)
    service = core.read_namespaced_service("kafka-broker-0-external", ns)
    public = {"metadata": {"annotations": {a: None for a in service.metadata.annotations if "internal" in a}}}
    core.patch_namespaced_service("kafka-broker-0-external", ns, public)
    result = status(control_plane, settings_path, "-n", ns, "-o", "json")
    row = brokers(result)["kafka-broker-0"]
    if row["internal"] is False:  # else the controller repaired it first: both are right
        assert result.returncode == 1 and "not internal" in " ".join(row["problems"])
    wait_for(lambda: brokers(status(control_plane, settings_path, "-n", ns, "-o", "json"))["kafka-broker-0"]
             ["internal"] is True, timeout=60, message="the controller to repair the hand edit")  # fmt: skip
    assert len(managed_services(api, ns)) == 2


def test_status_names_brokers_that_run_unexposed(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    namespaces: list[str],
    settings_path: Path,
    node_agent: Any,
) -> None:
    ns = new_namespace(api, namespaces, "status-unexposed")
    sts = copy.deepcopy(
        next(s for s in statefulsets(load_render(BROKER_RENDER)) if s["metadata"]["name"] == "kafka-broker")
    )
    sts["metadata"]["namespace"] = ns
    sts["spec"]["replicas"] = 1
    create_objects(control_plane, [sts])  # no webhook here: the pod comes in as the chart wrote it
    wait_for(lambda: kubernetes.client.CoreV1Api(api).list_namespaced_pod(ns).items, message="the broker pod")
    result = status(control_plane, settings_path, "-n", ns, "-o", "yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "kafka-broker-0" in result.stdout and "unexposed" in result.stdout


def test_status_says_something_without_brokers_and_fails_clearly_without_a_cluster(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    namespaces: list[str],
    settings_path: Path,
    tmp_path: Path,
) -> None:
    ns = new_namespace(api, namespaces, "status-empty")
    empty = status(control_plane, settings_path, "-n", ns)
    assert empty.returncode == 0 and f"no Kafka broker in namespace {ns}" in empty.stdout
    broken = tmp_path / "kubeconfig"
    broken.write_text("not: a kubeconfig\n")
    unreachable = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "status",
            "--kubeconfig",
            str(broken),
            "--config",
            str(settings_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 2 and unreachable.stderr.startswith("kafka-expose status: ")
