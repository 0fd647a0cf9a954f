"""The per-broker LoadBalancer controller as a real process against the real control plane.

Broker pods come from stock-render StatefulSets whose template already carries the webhook's output
(see controller_fixtures); the real StatefulSet controller creates them and the node agent stand-in
makes them Ready. The controller runs with a 4 s Lease and a 5 s resync.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from tests.cluster.controller_fixtures import (
    AWS_INTERNAL,
    BROKER_RENDER,
    EXTERNAL_DNS,
    LB_ANNOTATION,
    LEASE_DURATION,
    OPT_IN_LABEL,
    RESYNC_SECONDS,
    SETTINGS_TEXT,
    STS_POD_NAME_LABEL,
    Controller,
    all_services,
    broker_statefulset,
    create_namespace,
    create_objects,
    delete_namespaces,
    event_reasons,
    events,
    lease_holder,
    managed_services,
    pods,
    render_objects,
    running,
    scale,
    selected_pods,
    settings_of,
)
from tests.support.controlplane import ControlPlane, NodeAgentStandIn, wait_for
from tests.support.expectations import kafka_container
from tests.support.harness import free_port
from tests.support.imagesim import evaluate
from tests.support.podfactory import load_render, pod_from_statefulset, render_names, statefulsets
from webhook.config import load_settings_text
from webhook.core import mutate
from webhook.core.services import selected_broker

pytestmark = pytest.mark.cluster


def created_in_events(api: kubernetes.client.ApiClient, namespace: str) -> list[str]:
    """The Services the ServiceCreated Events name ("Created a, b: ..."), sorted."""
    names = []
    for event in events(api, namespace):
        if event["reason"] == "ServiceCreated":
            names += event["message"].removeprefix("Created ").split(":", 1)[0].split(", ")
    return sorted(names)


@pytest.fixture(scope="module")
def lease_namespace(control_plane: ControlPlane) -> Iterator[str]:
    api = control_plane.api_client()
    name = create_namespace(api, "ctl-leases", opted_in=False)
    yield name
    delete_namespaces(api, [name])


@pytest.fixture(scope="module")
def settings_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("controller") / "settings.yaml"
    path.write_text(SETTINGS_TEXT)
    return path


@pytest.fixture
def namespaces(control_plane: ControlPlane) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    delete_namespaces(control_plane.api_client(), created)


@pytest.fixture
def api(control_plane: ControlPlane) -> kubernetes.client.ApiClient:
    return control_plane.api_client()


@pytest.fixture
def controller(
    control_plane: ControlPlane,
    node_agent: NodeAgentStandIn,
    settings_path: Path,
    lease_namespace: str,
    tmp_path: Path,
) -> Iterator[Controller]:
    process = Controller(control_plane, settings_path, lease_namespace, tmp_path, metrics_port=free_port())
    process.start()
    try:
        wait_for(lambda: lease_holder(control_plane.api_client(), lease_namespace, "kafka-expose-controller")
                 == process.identity, message="the controller to lead")  # fmt: skip
        yield process
    finally:
        assert process.terminate() == 0, process.log()
        print(process.log(200))  # shown when the test failed


def new_namespace(
    api: kubernetes.client.ApiClient, namespaces: list[str], prefix: str, opted_in: bool = True
) -> str:
    name = create_namespace(api, prefix, opted_in)
    namespaces.append(name)
    return name


def exactly(api: kubernetes.client.ApiClient, namespace: str, count: int, timeout: float = 30.0) -> dict:
    """Wait until the namespace has exactly `count` managed Services; return them."""

    def check() -> tuple[bool, dict] | None:
        services = managed_services(api, namespace)
        return (True, services) if len(services) == count else None

    return wait_for(check, timeout=timeout, message=f"{count} managed Services in {namespace}")[1]


def exposed_brokers(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    namespaces: list[str],
    prefix: str,
    replicas: int,
) -> tuple[str, dict]:
    """A new opted-in namespace with `replicas` brokers, once each has its Service: (namespace, Services)."""
    ns = new_namespace(api, namespaces, prefix)
    create_objects(control_plane, [broker_statefulset(ns, replicas=replicas)])
    return ns, exactly(api, ns, replicas)


def leader_and_follower(
    api: kubernetes.client.ApiClient, lease_namespace: str, lease: str, a: Controller, b: Controller
) -> tuple[Controller, Controller]:
    """Once one of the two controllers holds the Lease: (the leader, the other)."""
    holder = wait_for(lambda: lease_holder(api, lease_namespace, lease), message="a leader")
    return (a, b) if holder == a.identity else (b, a)


def uids(services: dict) -> dict[str, str]:
    return {name: s["metadata"]["uid"] for name, s in services.items()}


# ---------------------------------------------------------------------------------------- creating


def test_a_stock_render_gets_one_internal_load_balancer_per_broker(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    ns = new_namespace(api, namespaces, "ctl-render")
    chart_objects = render_objects(BROKER_RENDER, ns)
    create_objects(control_plane, chart_objects)
    services = exactly(api, ns, 3)
    wait_for(lambda: len(pods(api, ns)) == 6, message="3 brokers and 3 controllers")
    assert selected_pods(services) == ["kafka-broker-0", "kafka-broker-1", "kafka-broker-2"]
    for name, service in services.items():
        pod = service["spec"]["selector"][STS_POD_NAME_LABEL]
        assert name == f"{pod}-external"
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["spec"]["selector"] == {STS_POD_NAME_LABEL: pod}  # exactly one broker
        assert service["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
        assert service["spec"]["ports"][0]["port"] == 9094
        annotations = service["metadata"]["annotations"]
        assert annotations[AWS_INTERNAL] == "true"
        assert annotations[EXTERNAL_DNS] == f"{pod}.{ns}.kafka.example.com"
        assert annotations["kafka-expose.io/advertised"] == f"EXTERNAL://{pod}.{ns}.kafka.example.com:9094"
        owner = service["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("StatefulSet", "kafka-broker")
        # the Service reaches the port the broker listens on for its external listener
        container = next(c for c in pods(api, ns)[pod]["spec"]["containers"] if c["name"] == "kafka")
        external = next(p for p in container["ports"] if p["name"] == "external")
        assert service["spec"]["ports"][0]["targetPort"] == external["containerPort"]
    # the chart's own Services are not touched
    chart_services = {o["metadata"]["name"] for o in chart_objects if o["kind"] == "Service"}
    assert set(all_services(api, ns)) == chart_services | set(services)
    assert created_in_events(api, ns) == sorted(services)  # each named once, in as few Events as reconciles
    # steady: a resync later, the same three objects
    time.sleep(RESYNC_SECONDS + 1)
    assert uids(managed_services(api, ns)) == uids(services)
    assert "ServiceUpdated" not in event_reasons(api, ns), "what we apply is what the API server keeps"
    assert controller.metrics()["kafka_expose_controller_services_managed"] >= 3
    assert controller.metrics()["kafka_expose_controller_reconcile_errors_total"] == 0


# ------------------------------------------------------------------------------------- the lifetime


def test_the_service_follows_the_slot_not_the_pod(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    ns, services = exposed_brokers(control_plane, api, namespaces, "ctl-life", 3)
    first = uids(services)
    core = kubernetes.client.CoreV1Api(api)

    old_pod = pods(api, ns)["kafka-broker-1"]["metadata"]["uid"]
    core.delete_namespaced_pod("kafka-broker-1", ns)
    wait_for(
        lambda: (p := pods(api, ns).get("kafka-broker-1")) and p["metadata"]["uid"] != old_pod,
        message="the StatefulSet controller to recreate kafka-broker-1",
    )
    time.sleep(2)
    assert uids(managed_services(api, ns)) == first, "a pod restart must keep its Service (and address)"

    scale(api, ns, "kafka-broker", 1)
    assert uids(exactly(api, ns, 1)) == {"kafka-broker-0-external": first["kafka-broker-0-external"]}
    assert "ServiceDeleted" in event_reasons(api, ns)

    scale(api, ns, "kafka-broker", 3)
    back = uids(exactly(api, ns, 3))
    assert back["kafka-broker-0-external"] == first["kafka-broker-0-external"]
    assert sorted(back) == sorted(first)

    kubernetes.client.AppsV1Api(api).delete_namespaced_stateful_set(
        "kafka-broker", ns, propagation_policy="Background"
    )
    exactly(api, ns, 0)  # the garbage collector follows the ownerReferences
    time.sleep(2)
    assert managed_services(api, ns) == {}, "nothing is recreated for the pods going away"


def test_hand_edits_are_repaired(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    ns, services = exposed_brokers(control_plane, api, namespaces, "ctl-drift", 2)
    core = kubernetes.client.CoreV1Api(api)
    name = "kafka-broker-0-external"
    core.patch_namespaced_service(
        name,
        ns,
        [
            {"op": "remove", "path": "/metadata/annotations/" + AWS_INTERNAL.replace("/", "~1")},
            {"op": "add", "path": "/metadata/annotations/team", "value": "data"},
        ],
        field_manager="kubectl-edit",
    )
    assert AWS_INTERNAL not in core.read_namespaced_service(name, ns).metadata.annotations
    repaired = wait_for(
        lambda: (
            (s := managed_services(api, ns)[name])["metadata"]["annotations"].get(AWS_INTERNAL) == "true"
            and s
        ),
        message="the internal annotation to be restored",
    )
    assert repaired["metadata"]["uid"] == services[name]["metadata"]["uid"]
    assert repaired["metadata"]["annotations"]["team"] == "data", "fields of others are left alone"
    assert "ServiceUpdated" in event_reasons(api, ns)


def test_a_foreign_service_with_the_same_name_is_left_intact(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    ns = new_namespace(api, namespaces, "ctl-foreign")
    core = kubernetes.client.CoreV1Api(api)
    foreign = core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "kafka-broker-0-external", "labels": {"team": "mine"}},
            "spec": {"type": "ClusterIP", "selector": {"app": "other"}, "ports": [{"port": 80}]},
        },
    )
    create_objects(control_plane, [broker_statefulset(ns, replicas=2)])
    exactly(api, ns, 1)
    conflict = wait_for(
        lambda: [e for e in events(api, ns) if e["reason"] == "ServiceNameConflict"],
        message="a conflict Event",
    )[0]
    assert conflict["type"] == "Warning"
    assert conflict["involvedObject"]["kind"] == "StatefulSet"
    assert (
        "kafka-broker-0-external" in conflict["message"]
        and "not created by kafka-expose" in conflict["message"]
    )
    time.sleep(RESYNC_SECONDS + 1)  # a resync later, still untouched
    after = core.read_namespaced_service("kafka-broker-0-external", ns)
    assert after.metadata.uid == foreign.metadata.uid
    assert after.metadata.resource_version == foreign.metadata.resource_version
    assert set(managed_services(api, ns)) == {"kafka-broker-1-external"}
    assert controller.metrics()["kafka_expose_controller_conflicts_total"] == 1


def test_the_charts_own_per_broker_load_balancers_are_used(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    # incubator/kafka with external access: one LoadBalancer per broker named like ours (kafka-N-external)
    ns = new_namespace(api, namespaces, "ctl-chartlb")
    objects = render_objects("incubator-kafka-0.21.5-external-lb", ns)
    create_objects(
        control_plane, [o for o in objects if o["kind"] in ("Service", "StatefulSet", "ConfigMap")]
    )
    wait_for(lambda: {"kafka-0", "kafka-1", "kafka-2"} <= set(pods(api, ns)), timeout=60, message="3 brokers")
    reasons = wait_for(
        lambda: [e["message"] for e in events(api, ns) if e["reason"] == "ChartLoadBalancer"],
        message="ChartLoadBalancer events",
    )
    assert any("uses the chart's own load balancer kafka-0-external" in m for m in reasons)
    wait_for(lambda: len([e for e in events(api, ns) if e["reason"] == "ChartLoadBalancer"]) >= 3)
    assert managed_services(api, ns) == {}
    assert "ServiceNameConflict" not in event_reasons(api, ns)


# --------------------------------------------------------------------------------------- leadership


def lease_spec(api: kubernetes.client.ApiClient, namespace: str, name: str) -> Any:
    return kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(name, namespace).spec


def test_one_leader_and_a_takeover_once_the_lease_expires(
    control_plane: ControlPlane,
    node_agent: NodeAgentStandIn,
    api: kubernetes.client.ApiClient,
    settings_path: Path,
    lease_namespace: str,
    tmp_path: Path,
    namespaces: list[str],
) -> None:
    lease = "ha-test"
    a = Controller(control_plane, settings_path, lease_namespace, tmp_path, identity="ctl-a", lease_name=lease,
                   metrics_port=free_port())  # fmt: skip
    b = Controller(control_plane, settings_path, lease_namespace, tmp_path, identity="ctl-b", lease_name=lease,
                   metrics_port=free_port())  # fmt: skip
    with running(a, b):
        leader, follower = leader_and_follower(api, lease_namespace, lease, a, b)
        wait_for(
            lambda: follower.metrics().get("kafka_expose_controller_leader") == 0, message="follower metrics"
        )
        assert leader.metrics()["kafka_expose_controller_leader"] == 1
        ns, _ = exposed_brokers(control_plane, api, namespaces, "ctl-ha", 3)
        time.sleep(1)
        assert lease_holder(api, lease_namespace, lease) == leader.identity, "the leader keeps its Lease"

        leader.kill()
        killed = time.monotonic()
        last_term = lease_spec(api, lease_namespace, lease)  # the killed leader renews no more
        # How soon the follower takes over depends on the machine's load; that it waits for the
        # lease to expire, and takes a released one at once, is checked with a clock of its own in
        # tests/unit/core/test_reconcile.py (test_leader_election_one_leader_takeover_and_release).
        wait_for(
            lambda: lease_holder(api, lease_namespace, lease) == follower.identity,
            timeout=LEASE_DURATION + 120,
            interval=0.1,
            message="the follower to take over",
        )
        took = time.monotonic() - killed
        new_term = lease_spec(api, lease_namespace, lease)
        print(f"takeover {took:.1f} s after the kill (lease duration {LEASE_DURATION} s)")
        assert last_term.holder_identity == leader.identity
        assert new_term.acquire_time > last_term.renew_time, (last_term, new_term)
        assert new_term.lease_transitions == (last_term.lease_transitions or 0) + 1
        assert wait_for(lambda: follower.metrics().get("kafka_expose_controller_leader") == 1)

        scale(api, ns, "kafka-broker", 5)
        services = exactly(api, ns, 5)
        assert selected_pods(services) == [f"kafka-broker-{i}" for i in range(5)]  # one per broker
        time.sleep(RESYNC_SECONDS + 1)
        assert uids(managed_services(api, ns)) == uids(services)
        print(a.log(100), b.log(100))


def test_a_leader_shutting_down_hands_over_at_once(
    control_plane: ControlPlane,
    node_agent: NodeAgentStandIn,
    api: kubernetes.client.ApiClient,
    settings_path: Path,
    lease_namespace: str,
    tmp_path: Path,
) -> None:
    lease = "handover-test"
    a = Controller(
        control_plane, settings_path, lease_namespace, tmp_path, identity="ctl-c", lease_name=lease
    )
    b = Controller(
        control_plane, settings_path, lease_namespace, tmp_path, identity="ctl-d", lease_name=lease
    )
    with running(a, b):
        leader, follower = leader_and_follower(api, lease_namespace, lease, a, b)
        held = lease_spec(api, lease_namespace, lease)
        stopped = time.monotonic()
        assert leader.terminate() == 0
        released = lease_spec(api, lease_namespace, lease)
        # Released: no holder and a 1 s duration, so that the follower need not wait the term out
        # (unless it was quicker than this read and holds it already).
        assert released.holder_identity == follower.identity or (
            released.holder_identity is None and released.lease_duration_seconds == 1
        ), released
        wait_for(
            lambda: lease_holder(api, lease_namespace, lease) == follower.identity,
            timeout=LEASE_DURATION + 120,
        )
        print(f"handover {time.monotonic() - stopped:.1f} s after the leader was told to stop")
        assert lease_spec(api, lease_namespace, lease).lease_transitions == (held.lease_transitions or 0) + 1
        assert "released the lease" in leader.log()


# ------------------------------------------------------------------------------------------- scale


def test_twenty_brokers_across_four_namespaces(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    spaces = [new_namespace(api, namespaces, f"ctl-many{i}") for i in range(4)]
    create_objects(control_plane, [broker_statefulset(ns, replicas=5) for ns in spaces])
    for ns in spaces:
        services = exactly(api, ns, 5, timeout=60)
        assert selected_pods(services) == [f"kafka-broker-{i}" for i in range(5)]
    time.sleep(RESYNC_SECONDS + 1)
    assert sum(len(managed_services(api, ns)) for ns in spaces) == 20
    assert all(
        created_in_events(api, ns) == [f"kafka-broker-{i}-external" for i in range(5)] for ns in spaces
    )


# ------------------------------------------------------------------------------- no side effects


def test_a_dry_run_pod_creates_no_service(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    ns = new_namespace(api, namespaces, "ctl-dry")
    settings = load_settings_text(SETTINGS_TEXT)
    sts = broker_statefulset(ns, replicas=3)
    # The StatefulSet controller is paused, so the slots exist but no pod does.
    control_plane.stop_component("kube-controller-manager")
    try:
        create_objects(control_plane, [sts])
        stored = kubernetes.client.AppsV1Api(api).read_namespaced_stateful_set("kafka-broker", ns)
        sts["metadata"]["uid"] = stored.metadata.uid
        broker_pods = []
        for ordinal in range(3):
            pod = pod_from_statefulset(sts, ordinal, ns)
            pod["metadata"]["ownerReferences"][0]["uid"] = stored.metadata.uid
            broker_pods.append(mutate(pod, settings, ns).result)  # as the webhook answers
        create_objects(control_plane, broker_pods, dry_run=True)
        time.sleep(RESYNC_SECONDS + 1)
        assert pods(api, ns) == {}
        assert managed_services(api, ns) == {}
        # the same pod, really created, does get its Service: the controller was watching
        create_objects(control_plane, broker_pods[:1])
        assert set(exactly(api, ns, 1)) == {"kafka-broker-0-external"}
    finally:
        control_plane.start_component("kube-controller-manager")


# -------------------------------------------------------------------------------------- opting out


def test_a_namespace_opting_out_loses_its_services(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    ns, _ = exposed_brokers(control_plane, api, namespaces, "ctl-optout", 2)
    kubernetes.client.CoreV1Api(api).patch_namespace(ns, {"metadata": {"labels": {OPT_IN_LABEL: None}}})
    exactly(api, ns, 0)
    assert len(pods(api, ns)) == 2, "the brokers themselves stay"
    time.sleep(RESYNC_SECONDS + 1)
    assert managed_services(api, ns) == {}, "nothing comes back while opted out"
    kubernetes.client.CoreV1Api(api).patch_namespace(ns, {"metadata": {"labels": {OPT_IN_LABEL: "enabled"}}})
    exactly(api, ns, 2)


def test_a_namespace_cloud_override_shapes_its_load_balancers(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    """A namespace may ask for another cloud preset within policy.namespaceOverrides.allowedClouds
    (here gke): its Services get that preset's internal-LB annotation, as the webhook's decisions for
    its pods do. A cloud the policy does not allow (azure) keeps the platform's (aws)."""
    core = kubernetes.client.CoreV1Api(api)
    gke = new_namespace(api, namespaces, "ctl-gke")
    core.patch_namespace(gke, {"metadata": {"annotations": {"kafka-expose.io/cloud": "gke"}}})
    refused = new_namespace(api, namespaces, "ctl-azure")
    core.patch_namespace(refused, {"metadata": {"annotations": {"kafka-expose.io/cloud": "azure"}}})
    create_objects(
        control_plane, [broker_statefulset(gke, replicas=1), broker_statefulset(refused, replicas=1)]
    )
    [overridden] = exactly(api, gke, 1).values()
    annotations = overridden["metadata"]["annotations"]
    assert annotations["networking.gke.io/load-balancer-type"] == "Internal"
    assert AWS_INTERNAL not in annotations
    [kept] = exactly(api, refused, 1).values()
    assert kept["metadata"]["annotations"][AWS_INTERNAL] == "true"
    assert "service.beta.kubernetes.io/azure-load-balancer-internal" not in kept["metadata"]["annotations"]


def test_a_broker_that_started_without_the_webhook_is_reported(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    """No webhook is registered in these tests, so a stock (unexposed) broker StatefulSet's pods
    start as the chart wrote them, as they would with the webhook down (failurePolicy Ignore). The
    controller says so once per pod: a Warning Event on the StatefulSet, a log line and a metric."""
    ns = new_namespace(api, namespaces, "ctl-missed")
    stock = copy.deepcopy(
        next(s for s in statefulsets(load_render(BROKER_RENDER)) if s["metadata"]["name"] == "kafka-broker")
    )
    stock["metadata"]["namespace"] = ns
    stock["spec"]["replicas"] = 2
    create_objects(control_plane, [stock])

    def reported() -> list[str] | None:
        messages = [e["message"] for e in events(api, ns) if e["reason"] == "BrokerNotExposed"]
        return messages if len(messages) == 2 else None

    messages = wait_for(reported, timeout=30, message="two BrokerNotExposed events")
    assert sorted(m.split()[2] for m in messages) == ["kafka-broker-0", "kafka-broker-1"]
    assert all("delete it to have StatefulSet kafka-broker recreate it" in m for m in messages)
    assert controller.metrics()["kafka_expose_controller_unexposed_brokers_total"] >= 2
    assert managed_services(api, ns) == {}
    time.sleep(RESYNC_SECONDS + 1)  # said once per pod, not at every resync
    assert [e["count"] for e in events(api, ns) if e["reason"] == "BrokerNotExposed"] == [1, 1]


# ------------------------------------------------------------------------------------------ address


def test_the_load_balancer_address_is_recorded_on_the_broker_pod(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    ns, _ = exposed_brokers(control_plane, api, namespaces, "ctl-address", 2)
    core = kubernetes.client.CoreV1Api(api)
    # a stand-in for the cloud's load balancer controller
    core.patch_namespaced_service_status(
        "kafka-broker-0-external", ns, {"status": {"loadBalancer": {"ingress": [{"ip": "10.20.30.40"}]}}}
    )
    core.patch_namespaced_service_status(
        "kafka-broker-1-external",
        ns,
        {"status": {"loadBalancer": {"ingress": [{"hostname": "lb-1.example.com"}]}}},
    )
    wait_for(
        lambda: (
            {n: p["metadata"].get("annotations", {}).get(LB_ANNOTATION) for n, p in pods(api, ns).items()}
            == {"kafka-broker-0": "10.20.30.40", "kafka-broker-1": "lb-1.example.com"}
        ),
        message="the addresses on the pods",
    )
    assert "LoadBalancerAddress" in event_reasons(api, ns)
    # a pod recreated gets the address again
    core.delete_namespaced_pod("kafka-broker-0", ns)
    wait_for(
        lambda: (
            pods(api, ns)
            .get("kafka-broker-0", {})
            .get("metadata", {})
            .get("annotations", {})
            .get(LB_ANNOTATION)
            == "10.20.30.40"
        ),
        message="the address on the recreated pod",
    )


# ---------------------------------------------------------------------------------------- resilience


def test_the_controller_survives_an_api_server_restart(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    ns, _ = exposed_brokers(control_plane, api, namespaces, "ctl-restart", 1)
    control_plane.restart_apiserver()
    api = control_plane.api_client()
    create_objects(control_plane, [broker_statefulset(ns, replicas=2, name="second")])
    services = exactly(api, ns, 3, timeout=45)
    assert selected_pods(services) == ["kafka-broker-0", "second-0", "second-1"]
    assert controller.alive()


# incubator/kafka 0.9.0 is apps/v1beta1 and no longer installs: its render is checked in the unit tier.
EXTERNAL_LB_RENDERS = [
    r
    for r in render_names("external-lb", "external-lb-autodiscovery")
    if all(s["apiVersion"] == "apps/v1" for s in statefulsets(load_render(r)))
]


@pytest.mark.parametrize("render", EXTERNAL_LB_RENDERS)
def test_external_lb_renders_are_consistent_end_to_end(
    render: str,
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    """A chart that exposes each broker itself, with onExistingListener replace: the controller
    adopts the chart's LB; as stored, its external-dns name is the one the broker advertises and its
    LB port leads to the container port where the broker listens with that listener."""
    settings = settings_of()
    ns = new_namespace(api, namespaces, "ctl-extlb")
    objects = render_objects(render, ns, settings)
    kinds = ("Service", "StatefulSet", "ConfigMap", "Secret")
    # the chart's Services as the Service webhook answers them
    objects = [
        mutate(o, settings, ns).result if o["kind"] == "Service" else o for o in objects if o["kind"] in kinds
    ]
    create_objects(control_plane, objects)
    docs = load_render(render)
    brokers = [
        f"{s['metadata']['name']}-{i}"
        for s in statefulsets(docs)
        if mutate(s, settings, ns).plans
        for i in range(s["spec"]["replicas"])
    ]
    wait_for(lambda: set(brokers) <= set(pods(api, ns)), timeout=90, message="broker pods")
    wait_for(
        lambda: len([e for e in events(api, ns) if e["reason"] == "ChartLoadBalancer"]) >= len(brokers),
        message="ChartLoadBalancer events",
    )
    assert managed_services(api, ns) == {}  # no second LB next to the chart's
    stored_pods, stored_services = pods(api, ns), all_services(api, ns)
    for name in brokers:
        pod = stored_pods[name]
        [lb] = [s for s in stored_services.values() if selected_broker(s) == name]
        decision = mutate({**pod, "kind": "Pod"}, settings, ns)
        [plan] = decision.plans
        broker = evaluate(
            {**pod, "kind": "Pod"},
            settings,
            [{**d, "metadata": {**d["metadata"], "namespace": ns}} for d in docs],
        )
        host, port = broker.advertised()[plan.listener_name].split("://", 1)[1].rsplit(":", 1)
        assert host == f"{name}.{ns}.kafka.example.com"
        assert lb["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"] == host
        [entry] = [p for p in lb["spec"]["ports"] if p["port"] == int(port)]
        declared = {p.get("name"): p["containerPort"] for p in kafka_container(pod, settings)["ports"]}
        target = entry["targetPort"]
        target_port = target if isinstance(target, int) else declared[target]
        assert target_port == int(broker.bound()[plan.listener_name].rsplit(":", 1)[1])
