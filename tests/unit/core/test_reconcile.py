"""The controller's pure planning (webhook.core.reconcile): every lifecycle rule without a cluster."""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
from typing import Any

import pytest

from tests.support.podfactory import load_render, pod_from_statefulset, render_names, services, statefulsets
from webhook.core import mutate
from webhook.core.actions import (
    AnnotationsIgnored,
    AuditViolation,
    CapReached,
    ChartLoadBalancer,
    Conflict,
    Create,
    NamespacePlan,
    NamespaceState,
    ReportAddress,
    Unexposed,
)
from webhook.core.clouds import IMMUTABLE_ANNOTATIONS
from webhook.core.drift import desired_service, drift, owned_fields, recorded_immutable_settings
from webhook.core.names import (
    CREATED_WITH,
    EXTERNAL_DNS,
    FIELD_MANAGER,
    LOAD_BALANCER,
    OWNED_LABEL,
    STS_POD_NAME_LABEL,
)
from webhook.core.reconcile import (
    is_opted_in,
    load_balancer_address,
    plan_from_pod,
    plan_namespace,
    recorded_differences,
    replicas_of,
    unexposed_pod_selectors,
)
from webhook.core.services import broker_service, is_managed
from webhook.core.settings import Settings, parse_settings

pytestmark = pytest.mark.unit

NS = "kafka"
AWS_INTERNAL = "service.beta.kubernetes.io/aws-load-balancer-internal"
SETTINGS = parse_settings(
    {
        "domain": "kafka.example.com",
        "loadBalancer": {"cloud": "aws", "sourceRanges": ["10.0.0.0/8"]},
    },
    version="v1",
)


def with_settings(**controller: Any) -> Settings:
    document: dict[str, Any] = {
        "domain": "kafka.example.com",
        "loadBalancer": {"cloud": "aws", "sourceRanges": ["10.0.0.0/8"]},
        "controller": controller,
    }
    return parse_settings(document, version="v1")


@functools.cache
def _render(name: str) -> list[dict[str, Any]]:
    return load_render(name)


def render(name: str) -> list[dict[str, Any]]:
    return copy.deepcopy(_render(name))


def broker_statefulset(replicas: int = 3) -> dict[str, Any]:
    """The bitnami broker StatefulSet as stored: namespace, uid (the one podfactory's pods point at)."""
    sts = next(
        s
        for s in statefulsets(render("bitnami-kafka-32.4.4-brokers3"))
        if s["metadata"]["name"] == "kafka-broker"
    )
    sts = copy.deepcopy(sts)
    sts["spec"]["replicas"] = replicas
    sts["metadata"]["namespace"] = NS
    sts["metadata"]["uid"] = pod_from_statefulset(sts, 0, NS)["metadata"]["ownerReferences"][0]["uid"]
    return sts


def exposed_pod(sts: dict[str, Any], ordinal: int, settings: Settings = SETTINGS) -> dict[str, Any]:
    """A broker pod as the webhook left it (label and per-pod annotations), uid set."""
    pod = mutate(pod_from_statefulset(sts, ordinal, NS), settings, NS).result
    pod["metadata"]["uid"] = f"pod-uid-{ordinal}"
    return pod


def template_pod(sts: dict[str, Any], ordinal: int, settings: Settings = SETTINGS) -> dict[str, Any]:
    """A pod created from a template that `render` exposed: the label, no per-pod annotations."""
    rendered = mutate(sts, settings, NS).result
    pod = pod_from_statefulset(rendered, ordinal, NS)
    pod["metadata"]["uid"] = f"pod-uid-{ordinal}"
    pod.pop("kind")  # items of a list carry no kind
    return pod


def _fields_v1(service: dict[str, Any]) -> dict[str, Any]:
    """managedFields' fieldsV1 of an apply of `service` (the parts the planner reads)."""
    meta, spec = service["metadata"], service["spec"]
    fields: dict[str, Any] = {
        "f:metadata": {
            "f:labels": {f"f:{k}": {} for k in meta.get("labels", {})},
            "f:annotations": {f"f:{k}": {} for k in meta.get("annotations", {})},
            "f:ownerReferences": {
                "k:" + json.dumps({"uid": r["uid"]}, separators=(",", ":")): {}
                for r in meta.get("ownerReferences", [])
            },
        },
        "f:spec": {f"f:{k}": {} for k in spec if k != "ports"},
    }
    fields["f:spec"]["f:ports"] = {
        "k:" + json.dumps({"port": p["port"], "protocol": p["protocol"]}, separators=(",", ":")): {}
        for p in spec.get("ports", [])
    }
    return fields


def stored(service: dict[str, Any], uid: str = "svc-uid", address: str | None = None) -> dict[str, Any]:
    """`service` as the API server keeps it after our apply: uid, resourceVersion, managedFields,
    defaulted fields, a node port; optionally the address a cloud assigned."""
    result = copy.deepcopy(service)
    result["metadata"].update(
        {
            "uid": uid,
            "resourceVersion": "42",
            "managedFields": [
                {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": _fields_v1(service)},
            ],
        }
    )
    spec = result["spec"]
    spec.pop("publishNotReadyAddresses", None)  # false is omitted
    spec.update({"clusterIP": "10.0.0.9", "sessionAffinity": "None", "allocateLoadBalancerNodePorts": True})
    for port in spec["ports"]:
        port["nodePort"] = 31000
    result["status"] = {"loadBalancer": {"ingress": [{"ip": address}]} if address else {}}
    return result


def state(
    pods: list[dict[str, Any]],
    sts: list[dict[str, Any]],
    services: list[dict[str, Any]],
    opted_in: bool = True,
    pending: dict[str, float] | None = None,
    now: float = 1000.0,
) -> NamespaceState:
    return NamespaceState(NS, opted_in, pods, sts, services, pending or {}, now)


def kinds(plan: NamespacePlan) -> list[tuple[str, str]]:
    return [(a.kind, a.service) for a in plan.actions]


def steady(
    sts: dict[str, Any], settings: Settings = SETTINGS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pods and the Services the controller made for them (an already converged namespace)."""
    pods = [exposed_pod(sts, i, settings) for i in range(sts["spec"]["replicas"])]
    created = plan_namespace(state(pods, [sts], []), settings).of(Create)
    services = [stored(a.desired or {}, uid=f"svc-{i}") for i, a in enumerate(created)]
    return pods, services


# ------------------------------------------------------------------------------------- plan_from_pod


def test_plan_from_pod_derives_from_the_settings_and_the_identity() -> None:
    sts = broker_statefulset()
    pod = exposed_pod(sts, 1)
    plan = plan_from_pod(pod, sts, SETTINGS, NS)
    assert plan is not None
    assert (plan.pod, plan.statefulset, plan.ordinal, plan.namespace) == (
        "kafka-broker-1",
        "kafka-broker",
        1,
        NS,
    )
    assert plan.host == "kafka-broker-1.kafka.kafka.example.com"
    assert plan.service_name == "kafka-broker-1-external"
    assert plan.advertised == pod["metadata"]["annotations"]["kafka-expose.io/advertised"]
    assert plan.container_port == int(pod["metadata"]["annotations"]["kafka-expose.io/container-port"])
    assert plan.container_port_name == "external"
    assert recorded_differences(pod, plan) == []


def test_plan_from_pod_follows_the_settings_not_the_recorded_annotations() -> None:
    sts = broker_statefulset()
    pod = exposed_pod(sts, 0)
    changed = parse_settings({"domain": "other.example.com"})
    plan = plan_from_pod(pod, sts, changed, NS)
    assert plan is not None and plan.host == "kafka-broker-0.kafka.other.example.com"
    assert recorded_differences(pod, plan) == [
        "kafka-expose.io/advertised='EXTERNAL://kafka-broker-0.kafka.kafka.example.com:9094' "
        "(derived: 'EXTERNAL://kafka-broker-0.kafka.other.example.com:9094')"
    ]


def test_plan_from_pod_recomputes_for_pods_of_a_rendered_template() -> None:
    sts = broker_statefulset()
    pod = template_pod(sts, 2)
    assert "kafka-expose.io/advertised" not in pod["metadata"].get("annotations", {})
    plan = plan_from_pod(pod, sts, SETTINGS, NS)
    assert plan is not None
    assert (plan.host, plan.service_name) == (
        "kafka-broker-2.kafka.kafka.example.com",
        "kafka-broker-2-external",
    )


def test_plan_from_pod_ignores_pods_not_exposed() -> None:
    sts = broker_statefulset()
    assert plan_from_pod(pod_from_statefulset(sts, 0, NS), sts, SETTINGS, NS) is None
    pod = exposed_pod(sts, 0)
    pod["metadata"]["labels"]["kafka-expose.io/exposed"] = "false"
    assert plan_from_pod(pod, sts, SETTINGS, NS) is None


def test_forged_annotations_never_choose_a_name() -> None:
    """Issue 15 item 1: another team's broker name, a bank's host, another Service, another port."""
    sts = broker_statefulset()
    pod = exposed_pod(sts, 0)
    pod["metadata"]["annotations"].update(
        {
            "kafka-expose.io/advertised": "EXTERNAL://login.bank.example:9094",
            "kafka-expose.io/service": "web-frontend",
            "kafka-expose.io/container-port": "22",
        }
    )
    [create] = plan_namespace(state([pod], [sts], []), SETTINGS).of(Create)
    annotations = create.desired["metadata"]["annotations"]
    assert annotations[EXTERNAL_DNS] == "kafka-broker-0.kafka.kafka.example.com"
    assert create.service == "kafka-broker-0-external"
    assert create.desired["spec"]["ports"][0]["targetPort"] != 22
    [ignored] = plan_namespace(state([pod], [sts], []), SETTINGS).of(AnnotationsIgnored)
    assert "login.bank.example" in ignored.reason and ignored.pod == "kafka-broker-0"


def test_only_a_broker_a_real_statefulset_controls_gets_a_service() -> None:
    sts = broker_statefulset()
    busybox = exposed_pod(sts, 0)
    for container in busybox["spec"]["containers"]:
        container["image"] = "busybox:1.36"
    orphan = exposed_pod(sts, 1)
    orphan["metadata"]["ownerReferences"] = []
    other_uid = exposed_pod(sts, 2)
    other_uid["metadata"]["ownerReferences"][0]["uid"] = "someone-elses"
    not_controller = exposed_pod(sts, 0)
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    renamed = exposed_pod(sts, 1)
    renamed["metadata"]["name"] = "kafka-broker-7"  # not a slot of the StatefulSet (3 replicas)
    wrong_index = exposed_pod(sts, 2)
    wrong_index["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = "1"
    no_port = exposed_pod(sts, 0)
    for container in no_port["spec"]["containers"]:
        container["ports"] = [p for p in container.get("ports", []) if p.get("name") != "external"]
    for pod in (busybox, orphan, other_uid, not_controller, renamed, wrong_index, no_port):
        assert plan_namespace(state([pod], [sts], []), SETTINGS).actions == (), pod["metadata"]["name"]


# ------------------------------------------------------------------------------------------ creating


def test_every_exposed_broker_slot_gets_its_service() -> None:
    sts = broker_statefulset()
    pods = [exposed_pod(sts, i) for i in range(3)]
    plan = plan_namespace(state(pods, [sts], []), SETTINGS)
    assert kinds(plan) == [("create", f"kafka-broker-{i}-external") for i in range(3)]
    for i, action in enumerate(plan.actions):
        service = action.desired
        assert service is not None
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["spec"]["selector"] == {STS_POD_NAME_LABEL: f"kafka-broker-{i}"}
        annotations = service["metadata"]["annotations"]
        assert annotations[AWS_INTERNAL] == "true"
        assert annotations[EXTERNAL_DNS] == f"kafka-broker-{i}.kafka.kafka.example.com"
        assert json.loads(annotations[CREATED_WITH]) == {"annotations": {AWS_INTERNAL: "true"}}
        assert service["metadata"]["ownerReferences"][0]["uid"] == sts["metadata"]["uid"]
        assert is_managed(service)
        assert action.statefulset == "kafka-broker"
    assert plan.pending_deletions == {}


def test_pods_of_a_rendered_template_get_the_same_services() -> None:
    sts = broker_statefulset()
    direct = plan_namespace(state([exposed_pod(sts, i) for i in range(3)], [sts], []), SETTINGS)
    rendered = plan_namespace(state([template_pod(sts, i) for i in range(3)], [sts], []), SETTINGS)
    assert [a.desired for a in direct.actions] == [a.desired for a in rendered.actions]


def test_a_converged_namespace_needs_nothing() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    assert plan_namespace(state(pods, [sts], services), SETTINGS).actions == ()


def test_nothing_is_created_for_pods_beyond_replicas_or_of_another_statefulset() -> None:
    sts = broker_statefulset(replicas=2)
    pods = [exposed_pod(broker_statefulset(), i) for i in range(3)]
    assert kinds(plan_namespace(state(pods, [sts], []), SETTINGS)) == [
        ("create", "kafka-broker-0-external"),
        ("create", "kafka-broker-1-external"),
    ]
    replaced = copy.deepcopy(sts)
    replaced["metadata"]["uid"] = "a-new-statefulset"
    assert plan_namespace(state(pods, [replaced], []), SETTINGS).actions == ()
    assert plan_namespace(state(pods, [], []), SETTINGS).actions == ()


def test_nothing_is_created_in_a_namespace_that_did_not_opt_in() -> None:
    sts = broker_statefulset()
    pods = [exposed_pod(sts, i) for i in range(3)]
    assert plan_namespace(state(pods, [sts], [], opted_in=False), SETTINGS).actions == ()


def test_opt_in_is_the_webhook_label() -> None:
    assert is_opted_in({"metadata": {"labels": {"kafka-expose.io/inject": "enabled"}}})
    assert not is_opted_in({"metadata": {"labels": {"kafka-expose.io/inject": "disabled"}}})
    assert not is_opted_in({"metadata": {}})
    assert not is_opted_in(None)


# ------------------------------------------------------------------------------------- the lifetime


def test_a_missing_pod_keeps_its_service() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    plan = plan_namespace(state(pods[:1], [sts], services), SETTINGS)
    assert plan.actions == ()


def test_scaling_down_removes_the_services_of_removed_ordinals() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    scaled = broker_statefulset(replicas=1)
    plan = plan_namespace(state(pods, [scaled], services), SETTINGS)
    assert kinds(plan) == [("delete", "kafka-broker-1-external"), ("delete", "kafka-broker-2-external")]
    assert plan.actions[0].uid == "svc-1"
    assert "scaled down to 1" in plan.actions[0].reason


def test_scale_down_grace_period() -> None:
    settings = with_settings(scaleDownGraceSeconds=60)
    sts = broker_statefulset()
    pods, services = steady(sts, settings)
    scaled = broker_statefulset(replicas=2)
    first = plan_namespace(state(pods[:2], [scaled], services, now=1000.0), settings)
    assert kinds(first) == [("wait", "kafka-broker-2-external")]
    assert first.requeue_after == 60.0
    assert first.pending_deletions == {"kafka-broker-2-external": 1000.0}
    later = plan_namespace(
        state(pods[:2], [scaled], services, pending=first.pending_deletions, now=1030.0), settings
    )
    assert kinds(later) == [("wait", "kafka-broker-2-external")] and later.requeue_after == 30.0
    due = plan_namespace(
        state(pods[:2], [scaled], services, pending=later.pending_deletions, now=1060.0), settings
    )
    assert kinds(due) == [("delete", "kafka-broker-2-external")]
    # scaled back up within the grace period: nothing is deleted and the clock resets
    back = plan_namespace(state(pods, [sts], services, pending=first.pending_deletions, now=1030.0), settings)
    assert back.actions == () and back.pending_deletions == {}


def test_a_deleted_statefulset_leaves_its_services_to_the_garbage_collector() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    assert plan_namespace(state(pods, [], services), SETTINGS).actions == ()


def test_orphaned_services_are_no_longer_provably_ours_and_are_left_alone() -> None:
    """Issue 15 item 5: without an ownerReference to a StatefulSet here, the label is no proof."""
    sts = broker_statefulset()
    _, services = steady(sts)
    for service in services:
        del service["metadata"]["ownerReferences"]  # deleted with --cascade=orphan
    assert plan_namespace(state([], [], services), SETTINGS).actions == ()
    assert plan_namespace(state([], [sts], services), SETTINGS).actions == ()


def test_opting_out_removes_the_services_unless_kept() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    plan = plan_namespace(state(pods, [sts], services, opted_in=False), SETTINGS)
    assert [k for k, _ in kinds(plan)] == ["delete"] * 3
    assert "opted out" in plan.actions[0].reason
    keep = with_settings(keepOnOptOut=True)
    assert plan_namespace(state(pods, [sts], services, opted_in=False), keep).actions == ()


def test_services_being_deleted_are_left_to_finish() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    for service in services:
        service["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"  # a cloud finalizer holds it
    assert plan_namespace(state(pods, [sts], services), SETTINGS).actions == ()  # not created again yet
    assert plan_namespace(state(pods, [broker_statefulset(1)], services), SETTINGS).actions == ()
    assert plan_namespace(state(pods, [sts], services, opted_in=False), SETTINGS).actions == ()


# ------------------------------------------------------------------------------ never touch others'


def foreign(name: str, selector: dict[str, str] | None = None, kind: str = "ClusterIP") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": f"foreign-{name}", "resourceVersion": "7"},
        "spec": {"type": kind, "selector": selector or {"app": "other"}, "ports": [{"port": 80}]},
    }


def test_a_foreign_service_with_the_planned_name_is_a_conflict_and_left_alone() -> None:
    sts = broker_statefulset()
    pods = [exposed_pod(sts, i) for i in range(3)]
    plan = plan_namespace(state(pods, [sts], [foreign("kafka-broker-1-external")]), SETTINGS)
    assert kinds(plan) == [
        ("create", "kafka-broker-0-external"),
        ("conflict", "kafka-broker-1-external"),
        ("create", "kafka-broker-2-external"),
    ]
    conflict = plan.of(Conflict)[0]
    assert conflict.uid == "foreign-kafka-broker-1-external" and not hasattr(conflict, "desired")
    assert "not created by kafka-expose" in conflict.reason


def test_foreign_services_are_never_deleted() -> None:
    services = [
        foreign("kafka-broker-2-external"),
        foreign("x", {STS_POD_NAME_LABEL: "kafka-broker-2"}, "LoadBalancer"),
    ]
    for sts in ([broker_statefulset(1)], []):
        # the audit reports the public LoadBalancer "x" (no repair unless configured), nothing else
        assert kinds(plan_namespace(state([], sts, services), SETTINGS)) == [("audit-violation", "x")]
    assert plan_namespace(state([], [], services, opted_in=False), SETTINGS).actions == ()


def test_a_managed_service_of_another_broker_is_a_conflict() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    services[1]["metadata"]["labels"]["kafka-expose.io/pod"] = "kafka-broker-7"
    assert kinds(plan_namespace(state(pods, [sts], services), SETTINGS)) == [
        ("conflict", "kafka-broker-1-external")
    ]


def test_a_service_name_template_without_the_pod_is_a_conflict() -> None:
    settings = parse_settings({"loadBalancer": {"serviceNameTemplate": "{statefulset}-lb"}})
    sts = broker_statefulset()
    pods = [template_pod(sts, i, settings) for i in range(2)]
    assert kinds(plan_namespace(state(pods, [sts], []), settings)) == [
        ("create", "kafka-broker-lb"),
        ("conflict", "kafka-broker-lb"),
    ]


def test_the_charts_own_broker_load_balancer_is_used() -> None:
    sts = broker_statefulset()
    pods = [exposed_pod(sts, i) for i in range(3)]
    chart = foreign("kafka-broker-0-external-chart", {STS_POD_NAME_LABEL: "kafka-broker-0"}, "LoadBalancer")
    chart["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb-0.elb.example.com"}]}}
    plan = plan_namespace(state(pods, [sts], [chart]), SETTINGS)
    assert kinds(plan)[:3] == [
        ("chart-load-balancer", "kafka-broker-0-external-chart"),
        ("create", "kafka-broker-1-external"),
        ("create", "kafka-broker-2-external"),
    ]
    assert "uses the chart's own load balancer" in plan.actions[0].reason
    report = plan.of(ReportAddress)
    assert [(a.pod, a.address) for a in report] == [("kafka-broker-0", "lb-0.elb.example.com")]
    # a chart ClusterIP Service selecting the pod is not a load balancer
    cluster_ip = foreign("kafka-broker-0-internal", {STS_POD_NAME_LABEL: "kafka-broker-0"})
    assert not plan_namespace(state(pods, [sts], [cluster_ip]), SETTINGS).of(ChartLoadBalancer)


# ---------------------------------------------------------------------------------------------- drift


def test_hand_edits_of_our_fields_are_repaired() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    edits = {
        0: lambda s: s["metadata"]["annotations"].pop(AWS_INTERNAL),
        1: lambda s: s["spec"].update(selector={STS_POD_NAME_LABEL: "kafka-broker-0"}),
        2: lambda s: s["spec"]["ports"][0].update(targetPort=1234),
    }
    for index, edit in edits.items():
        edit(services[index])
    plan = plan_namespace(state(pods, [sts], services), SETTINGS)
    assert kinds(plan) == [("update", f"kafka-broker-{i}-external") for i in range(3)]
    assert f"annotation {AWS_INTERNAL}" in plan.actions[0].reason
    assert "spec.selector" in plan.actions[1].reason
    assert "port 9094/TCP" in plan.actions[2].reason
    assert plan.actions[0].resource_version == "42" and plan.actions[0].uid == "svc-0"
    assert plan.actions[0].desired is not None
    assert plan.actions[0].desired["metadata"]["annotations"][AWS_INTERNAL] == "true"


def test_fields_others_add_are_not_drift() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    services[0]["metadata"]["annotations"]["cloud.example.com/lb-id"] = "abc"
    services[0]["metadata"]["labels"]["team"] = "data"
    services[0]["metadata"]["finalizers"] = ["service.kubernetes.io/load-balancer-cleanup"]
    services[0]["spec"]["healthCheckNodePort"] = 30000
    services[0]["spec"]["ports"].append(
        {"name": "metrics", "port": 9404, "protocol": "TCP", "targetPort": 9404}
    )
    services[0]["metadata"]["managedFields"].append(
        {"manager": "cloud", "operation": "Update", "fieldsV1": {"f:metadata": {"f:annotations": {}}}}
    )
    assert plan_namespace(state(pods, [sts], services), SETTINGS).actions == ()


def test_fields_we_no_longer_plan_are_pruned() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    no_ranges = parse_settings(
        {"domain": "kafka.example.com", "loadBalancer": {"cloud": "aws"}}, version="v1"
    )
    plan = plan_namespace(state(pods, [sts], services), no_ranges)
    assert [k for k, _ in kinds(plan)] == ["update"] * 3
    assert "spec loadBalancerSourceRanges no longer planned" in plan.actions[0].reason
    assert "loadBalancerSourceRanges" not in (plan.actions[0].desired or {})["spec"]


def test_owned_fields_read_managed_fields() -> None:
    sts = broker_statefulset()
    _, services = steady(sts)
    owned = owned_fields(services[0])
    assert ("annotations", AWS_INTERNAL) in owned
    assert ("labels", OWNED_LABEL) in owned
    assert ("ownerReferences", sts["metadata"]["uid"]) in owned
    assert ("ports", "9094/TCP") in owned
    assert ("spec", "selector") in owned
    assert owned_fields(services[0], manager="someone-else") == set()


def test_ownership_left_by_the_create_is_converted_only_when_an_update_is_needed() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    services[0]["metadata"]["managedFields"][0]["operation"] = "Update"
    plan = plan_namespace(state(pods, [sts], services), SETTINGS)
    assert kinds(plan) == []  # a Service that does not drift costs its create, nothing more
    services[0]["metadata"]["annotations"][AWS_INTERNAL] = "false"  # a hand edit: real drift
    plan = plan_namespace(state(pods, [sts], services), SETTINGS)
    assert kinds(plan) == [("update", "kafka-broker-0-external")]
    assert plan.actions[0].convert_ownership


def test_a_new_statefulset_uid_moves_the_owner_reference() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    recreated = copy.deepcopy(sts)
    recreated["metadata"]["uid"] = "recreated"
    for pod in pods:
        pod["metadata"]["ownerReferences"][0]["uid"] = "recreated"  # adopted by the new StatefulSet
    plan = plan_namespace(state(pods, [recreated], services), SETTINGS)
    # The old StatefulSet's Services are not provably ours any more: the garbage collector removes
    # them (their owner is gone), then the slots get new ones.
    assert [k for k, _ in kinds(plan)] == ["conflict"] * 3
    assert (
        plan_namespace(state(pods, [recreated], []), SETTINGS)
        .of(Create)[0]
        .desired["metadata"]["ownerReferences"][0]["uid"]
        == "recreated"
    )


def test_drift_is_empty_for_the_same_service() -> None:
    sts = broker_statefulset()
    plan = plan_from_pod(exposed_pod(sts, 0), sts, SETTINGS, NS)
    assert plan is not None
    service = desired_service(plan, SETTINGS, sts)
    assert drift(service, stored(service)) == []


# ------------------------------------------------------------------------------- immutable settings


def test_an_immutable_change_is_kept_by_default() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    gke = parse_settings(
        {"domain": "kafka.example.com", "loadBalancer": {"cloud": "gke", "sourceRanges": ["10.1.0.0/16"]}},
        version="v1",
    )
    plan = plan_namespace(state(pods, [sts], services), gke)
    assert [k for k, _ in kinds(plan)] == ["immutable-kept", "update"] * 3
    kept = plan.actions[0]
    assert "replaceOnImmutableChange" in kept.reason and AWS_INTERNAL in kept.reason
    update = plan.actions[1].desired or {}
    annotations = update["metadata"]["annotations"]
    assert annotations[AWS_INTERNAL] == "true"  # what the load balancer was created with
    assert "networking.gke.io/load-balancer-type" not in annotations
    assert recorded_immutable_settings(update) == {"annotations": {AWS_INTERNAL: "true"}}
    assert update["spec"]["loadBalancerSourceRanges"] == ["10.1.0.0/16"]  # mutable settings still apply
    # only the immutable part changed: reported, nothing to update
    only_cloud = parse_settings(
        {"domain": "kafka.example.com", "loadBalancer": {"cloud": "gke", "sourceRanges": ["10.0.0.0/8"]}},
        version="v1",
    )
    assert [k for k, _ in kinds(plan_namespace(state(pods, [sts], services), only_cloud))] == [
        "immutable-kept"
    ] * 3


def test_an_immutable_change_replaces_when_the_settings_say_so() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    gke = parse_settings(
        {"loadBalancer": {"cloud": "gke"}, "controller": {"replaceOnImmutableChange": True}}, version="v1"
    )
    plan = plan_namespace(state(pods, [sts], services), gke)
    assert [k for k, _ in kinds(plan)] == ["replace"] * 3
    replace = plan.actions[0]
    assert replace.uid == "svc-0"
    assert (replace.desired or {})["metadata"]["annotations"][
        "networking.gke.io/load-balancer-type"
    ] == "Internal"
    assert "address changes" in replace.reason


def test_a_load_balancer_class_change_is_immutable() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    classy = parse_settings(
        {
            "loadBalancer": {
                "cloud": "aws",
                "sourceRanges": ["10.0.0.0/8"],
                "loadBalancerClass": "example.com/lb",
            }
        },
        version="v1",
    )
    assert "immutable-kept" in [k for k, _ in kinds(plan_namespace(state(pods, [sts], services), classy))]


def test_an_immutable_annotation_removed_by_hand_is_restored_not_replaced() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    del services[0]["metadata"]["annotations"][AWS_INTERNAL]
    replace = with_settings(replaceOnImmutableChange=True)
    plan = plan_namespace(state(pods, [sts], services), replace)
    assert kinds(plan) == [("update", "kafka-broker-0-external")]


def test_a_service_without_a_record_is_judged_as_it_is() -> None:
    sts = broker_statefulset()
    _, services = steady(sts)
    del services[0]["metadata"]["annotations"][CREATED_WITH]
    assert recorded_immutable_settings(services[0]) == {"annotations": {AWS_INTERNAL: "true"}}
    assert AWS_INTERNAL in IMMUTABLE_ANNOTATIONS


# ------------------------------------------------------------------------------------------ addresses


def test_the_load_balancer_address_is_reported_on_the_pod() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    services[0]["status"] = {"loadBalancer": {"ingress": [{"ip": "10.1.2.3"}]}}
    services[1]["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb-1.example.com"}]}}
    plan = plan_namespace(state(pods, [sts], services), SETTINGS)
    reports = [(a.pod, a.pod_uid, a.address) for a in plan.of(ReportAddress)]
    assert reports == [
        ("kafka-broker-0", "pod-uid-0", "10.1.2.3"),
        ("kafka-broker-1", "pod-uid-1", "lb-1.example.com"),
    ]
    pods[0]["metadata"]["annotations"][LOAD_BALANCER] = "10.1.2.3"
    pods[1]["metadata"]["annotations"][LOAD_BALANCER] = "lb-1.example.com"
    assert plan_namespace(state(pods, [sts], services), SETTINGS).actions == ()


def test_a_stale_address_is_removed() -> None:
    sts = broker_statefulset()
    pods, services = steady(sts)
    pods[2]["metadata"]["annotations"][LOAD_BALANCER] = "10.9.9.9"
    plan = plan_namespace(state(pods, [sts], services), SETTINGS)
    assert [(a.kind, a.pod, a.address) for a in plan.actions] == [("report-address", "kafka-broker-2", None)]


def test_load_balancer_address() -> None:
    assert load_balancer_address({"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}) == "1.2.3.4"
    assert load_balancer_address({"status": {"loadBalancer": {"ingress": [{"hostname": "a.b"}]}}}) == "a.b"
    assert load_balancer_address({"status": {"loadBalancer": {}}}) is None
    assert load_balancer_address({}) is None


def test_desired_service_is_the_core_plan_plus_the_record() -> None:
    sts = broker_statefulset()
    plan = plan_from_pod(exposed_pod(sts, 0), sts, SETTINGS, NS)
    assert plan is not None
    core = broker_service(plan, SETTINGS, owner=sts)
    ours = desired_service(plan, SETTINGS, sts)
    assert ours["metadata"]["annotations"].pop(CREATED_WITH)
    assert ours == core


@pytest.mark.parametrize("name", ["incubator-kafka-0.21.5-external-lb", "incubator-kafka-0.9.0-external-lb"])
def test_the_charts_own_load_balancers_under_our_names_are_not_conflicts(name: str) -> None:
    docs = render(name)
    sts = next(s for s in statefulsets(docs) if mutate(s, SETTINGS, NS).plans)
    sts["metadata"]["namespace"] = NS
    sts["metadata"]["uid"] = pod_from_statefulset(sts, 0, NS)["metadata"]["ownerReferences"][0]["uid"]
    # as stored: the chart's LoadBalancers went through the Service webhook (internal, the broker's name)
    chart = [
        mutate({**s, "metadata": {**s["metadata"], "namespace": NS}}, SETTINGS, NS).result
        for s in services(docs)
        if s["spec"].get("type") == "LoadBalancer"
    ]
    pods = [exposed_pod(sts, i) for i in range(3)]
    plan = plan_namespace(state(pods, [sts], chart), SETTINGS)
    assert kinds(plan) == [("chart-load-balancer", f"kafka-{i}-external") for i in range(3)]
    # as rendered, never admitted (created while the webhook was down): the audit reports them
    raw = [s for s in services(docs) if s["spec"].get("type") == "LoadBalancer"]
    audited = plan_namespace(state(pods, [sts], raw), SETTINGS)
    assert {kind for kind, _ in kinds(audited)} >= {"chart-load-balancer", "audit-violation"}


def test_statefulset_ordinals_start() -> None:
    sts = broker_statefulset(replicas=2)
    sts["spec"]["ordinals"] = {"start": 3}
    pods = [exposed_pod(sts, i) for i in (2, 3, 4, 5)]
    plan = plan_namespace(state(pods, [sts], []), SETTINGS)
    assert kinds(plan) == [("create", "kafka-broker-3-external"), ("create", "kafka-broker-4-external")]
    _, services = steady(broker_statefulset(replicas=5))
    plan = plan_namespace(state(pods, [sts], services), SETTINGS)
    assert sorted(kinds(plan)) == [("delete", f"kafka-broker-{i}-external") for i in (0, 1, 2)]


# ----------------------------------------------------------------- controller plumbing (no cluster)


def test_work_queue_deduplicates_and_delays() -> None:
    from webhook.controller.queue import WorkQueue

    queue = WorkQueue()
    for _ in range(3):
        queue.add("a")
    queue.add("b", delay=600)  # never due in this test, however slowly it runs
    assert len(queue) == 2
    assert queue.get(0.1) == "a"
    assert queue.get(0.05) is None  # b is not due yet, a is being processed
    queue.add("a")  # changed while processing: handed out again after done
    assert queue.get(0.05) is None
    queue.done("a")
    assert queue.get(0.1) == "a"
    queue.done("a")
    # A delayed item is handed out once due, never before (a busy machine can only make it later).
    started = time.monotonic()
    queue.add("d", delay=0.3)
    assert queue.get(60) == "d" and time.monotonic() - started >= 0.299  # (float rounding)
    queue.done("d")
    queue.add("c", delay=10)
    queue.add("c")  # an earlier due time wins
    assert queue.get(0.2) == "c"
    queue.close()
    assert queue.get(0.1) is None


class FakeLeases:
    """An in-memory Lease API with resourceVersion checks, shaped like webhook.kube.Kube."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.lock = threading.Lock()

    def get(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            return copy.deepcopy(self.lease)

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from webhook.kube.client import ApiError

        with self.lock:
            if self.lease is not None:
                raise ApiError(409, "AlreadyExists", "exists")
            self.version += 1
            self.lease = copy.deepcopy(body)
            self.lease["metadata"]["resourceVersion"] = str(self.version)
            return copy.deepcopy(self.lease)

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from webhook.kube.client import ApiError

        with self.lock:
            assert self.lease is not None
            if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "modified")
            self.version += 1
            self.lease = copy.deepcopy(body)
            self.lease["metadata"]["resourceVersion"] = str(self.version)
            return copy.deepcopy(self.lease)


def test_leader_election_one_leader_takeover_and_release() -> None:
    from webhook.kube.leader import LeaderElector, Lease

    leases = FakeLeases()
    now = [0.0]
    events: list[str] = []

    def elector(name: str) -> LeaderElector:
        return LeaderElector(
            leases,  # type: ignore[arg-type]
            Lease("ns", "lease", name, duration=4, renew_deadline=3, retry_period=1),
            on_started_leading=lambda: events.append(f"{name} leads"),
            on_stopped_leading=lambda: events.append(f"{name} stops"),
            clock=lambda: now[0],
        )

    a, b = elector("a"), elector("b")
    assert a._try_acquire_or_renew() and not b._try_acquire_or_renew()
    now[0] = 3.0
    assert a._try_acquire_or_renew()  # renewed
    assert not b._try_acquire_or_renew()  # b sees a new record: the lease is fresh again
    now[0] = 6.5
    assert not b._try_acquire_or_renew()  # 3.5 s since b saw a change: not expired yet
    now[0] = 7.5
    assert b._try_acquire_or_renew()  # a stopped renewing: expired, b takes it
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "b" and leases.lease["spec"]["leaseTransitions"] == 1
    assert not a._try_acquire_or_renew()  # a must not win it back while b renews
    b._leading.set()
    b.release()
    assert "holderIdentity" not in leases.lease["spec"]
    assert a._try_acquire_or_renew()  # a released Lease is taken at once


def test_api_errors_are_classified() -> None:
    from kubernetes.client.exceptions import ApiException

    from webhook.kube.client import ApiError

    body = json.dumps({"kind": "Status", "reason": "AlreadyExists", "message": 'services "x" already exists'})
    error = ApiError.from_exception(ApiException(status=409, reason="Conflict", body=body))
    assert (error.status, error.reason, error.retryable) == (409, "AlreadyExists", False)
    assert ApiError.from_exception(ApiException(status=503, reason="Unavailable")).retryable
    assert ApiError.from_exception(ConnectionRefusedError("refused")).retryable


# ------------------------------------------------------------------------------------ unexposed brokers


def test_pods_of_broker_statefulsets_are_checked_for_the_exposed_label() -> None:
    stock = broker_statefulset()
    rendered = mutate(stock, SETTINGS, NS).result  # `render` exposed the template: pods always carry it
    rendered["metadata"]["name"] = "rendered"
    controllers = next(
        s
        for s in statefulsets(render("bitnami-kafka-32.4.4-brokers3"))
        if s["metadata"]["name"] != "kafka-broker"
    )
    listed = [{k: v for k, v in s.items() if k != "kind"} for s in (stock, rendered, controllers)]
    selectors = unexposed_pod_selectors(listed, SETTINGS, NS)  # items of a LIST carry no kind
    assert list(selectors) == ["kafka-broker"]  # not the rendered one, not the KRaft controllers
    terms = selectors["kafka-broker"].split(",")
    assert terms[-1] == "!kafka-expose.io/exposed"
    assert {t.split("=")[0] for t in terms[:-1]} == set(stock["spec"]["selector"]["matchLabels"])


def test_an_unexposed_broker_pod_is_reported_once_with_what_to_do() -> None:
    sts = broker_statefulset(replicas=2)
    missed = pod_from_statefulset(sts, 1, NS)  # admitted while the webhook was down: as the chart wrote it
    missed["metadata"]["uid"] = "pod-uid-1"
    stranger = copy.deepcopy(missed)
    stranger["metadata"]["ownerReferences"][0]["uid"] = "another-statefulset"
    state = NamespaceState(
        NS, True, pods=[exposed_pod(sts, 0)], statefulsets=[sts], unexposed_pods=[missed, stranger]
    )
    [action] = plan_namespace(state, SETTINGS).of(Unexposed)
    assert (action.pod, action.pod_uid, action.statefulset) == ("kafka-broker-1", "pod-uid-1", "kafka-broker")
    assert "delete it" in action.reason
    opted_out = NamespaceState(NS, False, statefulsets=[sts], unexposed_pods=[missed])
    assert plan_namespace(opted_out, SETTINGS).of(Unexposed) == []


# ------------------------------------------------------------------------------ issue 15, controller


def test_a_labelled_plain_service_is_never_ours() -> None:
    """Item 5: `web-frontend` with kafka-expose's labels, opted in or not, is neither updated nor deleted."""
    sts = broker_statefulset()
    pods, services = steady(sts)
    web = foreign("web-frontend")
    web["metadata"]["labels"] = dict(services[0]["metadata"]["labels"])
    web["metadata"]["ownerReferences"] = list(services[0]["metadata"]["ownerReferences"])
    web["metadata"]["annotations"] = {CREATED_WITH: "{}"}
    web["metadata"]["managedFields"] = services[0]["metadata"]["managedFields"]
    for opted_in in (True, False):
        plan = plan_namespace(state(pods, [sts], [*services, web], opted_in=opted_in), SETTINGS)
        assert all(a.service != "web-frontend" for a in plan.actions), plan.actions
    for missing in ("ownerReferences", "managedFields"):  # each proof is required, on a LoadBalancer too
        lb = copy.deepcopy(services[0])
        lb["metadata"]["name"] = "kafka-broker-9-external"
        lb["metadata"]["labels"]["kafka-expose.io/pod"] = "kafka-broker-9"
        del lb["metadata"][missing]
        plan = plan_namespace(state(pods, [sts], [*services, lb], opted_in=False), SETTINGS)
        assert "kafka-broker-9-external" not in [a.service for a in plan.actions]


def test_the_load_balancer_cap_binds_the_controller() -> None:
    """Item 4: with a cap of 2 and one LoadBalancer already there, one broker gets a Service."""
    sts = broker_statefulset()
    pods = [exposed_pod(sts, i) for i in range(3)]
    capped = SETTINGS.model_copy(
        update={"policy": SETTINGS.policy.model_copy(update={"max_load_balancers_per_namespace": 2})}
    )
    other = foreign("someone-elses", kind="LoadBalancer")
    plan = plan_namespace(state(pods, [sts], [other]), capped)
    assert [a.service for a in plan.of(Create)] == ["kafka-broker-0-external"]
    assert [a.pod for a in plan.of(CapReached)] == ["kafka-broker-1", "kafka-broker-2"]
    assert "cap (policy.maxLoadBalancersPerNamespace) is 2" in plan.of(CapReached)[0].reason


def test_the_audit_reports_and_repairs_only_when_asked() -> None:
    """Item 2: a public LoadBalancer in front of the brokers, named in another team's space."""
    public = foreign("sneaky", {STS_POD_NAME_LABEL: "kafka-broker-0"}, "LoadBalancer")
    public["metadata"]["annotations"] = {EXTERNAL_DNS: "kafka-0.team-b.kafka.example.com"}
    enforce = parse_settings(
        {
            "domain": "kafka.example.com",
            "loadBalancer": {"cloud": "aws"},
            "policy": {"mode": "enforce"},
            "controller": {"audit": {"repair": True}},
        }
    )
    [found] = plan_namespace(state([], [], [public]), SETTINGS).of(AuditViolation)
    assert found.repair == () and "internal" in found.reason
    [repair] = plan_namespace(state([], [], [public]), enforce).of(AuditViolation)
    assert {"op": "replace", "path": "/spec/type", "value": "ClusterIP"} in repair.repair
    assert repair.repair[:2] == (
        {"op": "test", "path": "/metadata/uid", "value": "foreign-sneaky"},
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
    )
    assert plan_namespace(state([], [], [public], opted_in=False), enforce).actions == ()
    compliant = foreign("fine")  # a ClusterIP without external-dns names: out of scope
    assert plan_namespace(state([], [], [compliant]), enforce).actions == ()


@pytest.mark.parametrize("name", render_names())
def test_every_broker_the_webhook_exposes_gets_the_plan_it_advertises(name: str) -> None:
    """The controller derives, it does not read: for every shared render, the pods the webhook exposed
    must be derived to exactly what the webhook recorded on them (what the broker advertises)."""
    for sts in statefulsets(render(name)):
        sts["metadata"]["namespace"] = NS
        if not mutate(sts, SETTINGS, NS).plans:
            continue
        sts["metadata"]["uid"] = pod_from_statefulset(sts, 0, NS)["metadata"]["ownerReferences"][0]["uid"]
        for ordinal in range(min(replicas_of(sts), 3)):
            decision = mutate(pod_from_statefulset(sts, ordinal, NS), SETTINGS, NS)
            if not decision.plans:
                continue
            pod = decision.result
            plan = plan_from_pod(pod, sts, SETTINGS, NS)
            assert plan is not None, (name, ordinal)
            assert recorded_differences(pod, plan) == [], (name, ordinal)
