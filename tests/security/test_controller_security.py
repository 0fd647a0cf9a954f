"""Issue 15, the controller's part, through the real API server: each attack done as the tenant's own
ServiceAccount (a namespaced `edit` RoleBinding), against `kafka-expose controller` as a process.

One controller for the module, with the settings a platform team would give it: internal AWS load
balancers, at most 2 LoadBalancer Services per namespace, the policy enforced, the audit repairing.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest

from tests.cluster.controller_fixtures import (
    EXTERNAL_DNS,
    RESYNC_SECONDS,
    Controller,
    all_services,
    broker_statefulset,
    create_namespace,
    delete_namespaces,
    event_reasons,
    events,
    lease_holder,
    managed_services,
    pods,
)
from tests.security.tenant import Tenant, tenant
from tests.support.controlplane import ControlPlane, NodeAgentStandIn, wait_for
from tests.support.harness import free_port

pytestmark = pytest.mark.cluster

CAP = 2
SETTINGS_TEXT = f"""\
domain: kafka.example.com
loadBalancer:
  cloud: aws
  sourceRanges: [10.0.0.0/8]
controller:
  resyncSeconds: {RESYNC_SECONDS}
  audit:
    repair: true
policy:
  mode: enforce
  maxLoadBalancersPerNamespace: {CAP}
"""
MANAGED_LABELS = {
    "kafka-expose.io/managed-by": "kafka-expose",
    "app.kubernetes.io/managed-by": "kafka-expose",
}


@pytest.fixture(scope="module")
def lease_namespace(control_plane: ControlPlane) -> Iterator[str]:
    api = control_plane.api_client()
    name = create_namespace(api, "sec-leases", opted_in=False)
    yield name
    delete_namespaces(api, [name])


@pytest.fixture(scope="module")
def controller(
    control_plane: ControlPlane,
    node_agent: NodeAgentStandIn,
    lease_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Controller]:
    folder = tmp_path_factory.mktemp("security")
    settings = folder / "settings.yaml"
    settings.write_text(SETTINGS_TEXT)
    process = Controller(control_plane, settings, lease_namespace, folder, metrics_port=free_port())
    process.start()
    try:
        wait_for(lambda: lease_holder(control_plane.api_client(), lease_namespace, "kafka-expose-controller")
                 == process.identity, message="the controller to lead")  # fmt: skip
        yield process
    finally:
        assert process.terminate() == 0, process.log()
        print(process.log(200))


@pytest.fixture
def api(control_plane: ControlPlane) -> kubernetes.client.ApiClient:
    return control_plane.api_client()


@pytest.fixture
def namespaces(control_plane: ControlPlane) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    delete_namespaces(control_plane.api_client(), created)


def team(control_plane: ControlPlane, namespaces: list[str], prefix: str, opted_in: bool = True) -> Tenant:
    name = create_namespace(control_plane.api_client(), prefix, opted_in)
    namespaces.append(name)
    return tenant(control_plane, name)


def a_resync_later() -> None:
    time.sleep(RESYNC_SECONDS + 2)


def busybox_statefulset(namespace: str) -> dict[str, Any]:
    """Not Kafka at all, its pods carrying kafka-expose's label and forged annotations."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "serviceName": "web",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {
                    "labels": {"app": "web", "kafka-expose.io/exposed": "true"},
                    "annotations": {
                        "kafka-expose.io/advertised": "EXTERNAL://login.bank.example:9094",
                        "kafka-expose.io/service": "login",
                        "kafka-expose.io/container-port": "8080",
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "busybox:1.36",
                            "command": ["sleep", "3600"],
                            "ports": [{"name": "external", "containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }


# ------------------------------------------------------------------------------- item 1: names


def test_forged_annotations_get_no_service_and_no_foreign_name(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    a = team(control_plane, namespaces, "team-a")
    a.create(busybox_statefulset(a.namespace))
    broker = broker_statefulset(a.namespace, replicas=1)
    broker["spec"]["template"]["metadata"]["annotations"].update(
        {
            "kafka-expose.io/advertised": "EXTERNAL://kafka-0.team-b.kafka.example.com:9094",
            "kafka-expose.io/service": "kafka-broker-0-external",
        }
    )
    a.create(broker)
    wait_for(lambda: "web-0" in pods(api, a.namespace), message="the busybox pod")
    [service] = wait_for(lambda: list(managed_services(api, a.namespace).values()) or None,
                         message="the broker's Service")  # fmt: skip
    assert (
        service["metadata"]["annotations"][EXTERNAL_DNS] == f"kafka-broker-0.{a.namespace}.kafka.example.com"
    )
    wait_for(lambda: "BrokerAnnotationsIgnored" in event_reasons(api, a.namespace), message="the report")
    a_resync_later()
    assert set(all_services(api, a.namespace)) == {"kafka-broker-0-external"}, "busybox got nothing"
    assert controller.metrics()["kafka_expose_controller_annotations_ignored_total"] >= 1


# -------------------------------------------------------------------- item 5: others' Services


def test_a_labelled_web_frontend_is_never_deleted(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    web_frontend = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web-frontend",
            "labels": {
                **MANAGED_LABELS,
                "kafka-expose.io/statefulset": "gone",
                "kafka-expose.io/pod": "gone-0",
            },
        },
        "spec": {"type": "ClusterIP", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    opted_in = team(control_plane, namespaces, "web-in")
    opted_in.create(broker_statefulset(opted_in.namespace, replicas=1))
    never = team(control_plane, namespaces, "web-out", opted_in=False)
    created = {t.namespace: t.create(copy.deepcopy(web_frontend)) for t in (opted_in, never)}
    wait_for(lambda: managed_services(api, opted_in.namespace).get("kafka-broker-0-external"),
             message="the broker's Service (the namespace was reconciled)")  # fmt: skip
    a_resync_later()
    for namespace, service in created.items():
        kept = all_services(api, namespace).get("web-frontend")
        assert kept is not None, f"web-frontend deleted in {namespace}"
        assert kept["metadata"]["resourceVersion"] == service["metadata"]["resourceVersion"]


def test_a_field_another_manager_took_is_reported_not_forced(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    a = team(control_plane, namespaces, "fields")
    a.create(broker_statefulset(a.namespace, replicas=1))
    name = "kafka-broker-0-external"
    wait_for(lambda: managed_services(api, a.namespace).get(name), message="the broker's Service")
    answer = a.patch(
        "Service",
        name,
        {"spec": {"externalTrafficPolicy": "Local"}},
        "application/merge-patch+json",
        manager="team-a-tuning",
    )
    assert answer.status_code == 200, answer.text
    wait_for(lambda: "ServiceFieldConflict" in event_reasons(api, a.namespace), message="the conflict Event")
    assert all_services(api, a.namespace)[name]["spec"]["externalTrafficPolicy"] == "Local"
    assert controller.metrics()["kafka_expose_controller_field_conflicts_total"] >= 1


# ------------------------------------------------------------------------- item 4: the LB cap


def test_the_load_balancer_cap_binds_the_controller(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    a = team(control_plane, namespaces, "cap")
    a.create(broker_statefulset(a.namespace, replicas=CAP + 2))
    wait_for(lambda: len(managed_services(api, a.namespace)) == CAP or None, message=f"{CAP} Services")
    wait_for(lambda: "LoadBalancerCapReached" in event_reasons(api, a.namespace), message="the cap Event")
    a_resync_later()
    assert len(managed_services(api, a.namespace)) == CAP
    assert controller.metrics()['kafka_expose_controller_load_balancers_refused_total{reason="cap"}'] >= 2


def test_a_quota_refusal_is_reported_and_backed_off(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    a = team(control_plane, namespaces, "quota")
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_resource_quota(
        a.namespace, {"metadata": {"name": "lbs"}, "spec": {"hard": {"services.loadbalancers": "1"}}}
    )
    # No resourcequota controller runs here: give the quota its status as that controller would.
    core.replace_namespaced_resource_quota_status(
        "lbs",
        a.namespace,
        {
            "metadata": {"name": "lbs"},
            "spec": {"hard": {"services.loadbalancers": "1"}},
            "status": {"hard": {"services.loadbalancers": "1"}, "used": {"services.loadbalancers": "0"}},
        },
    )
    a.create(broker_statefulset(a.namespace, replicas=2))
    wait_for(
        lambda: "LoadBalancerQuotaExceeded" in event_reasons(api, a.namespace), message="the quota Event"
    )
    assert len(managed_services(api, a.namespace)) == 1
    refused = controller.metrics()['kafka_expose_controller_load_balancers_refused_total{reason="quota"}']
    assert refused >= 1
    [event] = [e for e in events(api, a.namespace) if e["reason"] == "LoadBalancerQuotaExceeded"]
    assert "services.loadbalancers" in event["message"]


# --------------------------------------------------------------------------- item 2: the audit


def test_the_audit_repairs_a_public_load_balancer_in_front_of_the_brokers(
    control_plane: ControlPlane,
    api: kubernetes.client.ApiClient,
    controller: Controller,
    namespaces: list[str],
) -> None:
    """Created while the webhook was down (here: there is none): the audit finds and repairs it."""
    a = team(control_plane, namespaces, "audit")
    a.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kafka-public",
                "annotations": {EXTERNAL_DNS: "kafka-0.team-b.kafka.example.com"},
            },
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app.kubernetes.io/name": "kafka"},
                "ports": [{"port": 9094}],
            },
        }
    )
    repaired = wait_for(
        lambda: (s := all_services(api, a.namespace)["kafka-public"])["spec"]["type"] == "ClusterIP" and s,
        message="the Service to be made ClusterIP",
    )
    assert "nodePort" not in repaired["spec"]["ports"][0]
    reasons = [e["reason"] for e in events(api, a.namespace) if e["involvedObject"]["kind"] == "Service"]
    assert "PolicyViolationRepaired" in reasons
    samples = controller.metrics()
    assert samples['kafka_expose_controller_audit_violations_total{rule="internalLoadBalancer"}'] >= 1
    assert samples["kafka_expose_controller_audit_repairs_total"] >= 1
