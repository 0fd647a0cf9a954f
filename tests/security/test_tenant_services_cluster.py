"""A tenant with `edit` in one opted-in namespace tries to get a public load balancer or another
team's DNS name (issue 15, items 1 and 2), through the real API server, as its own ServiceAccount
(a namespaced RoleBinding to the `edit` ClusterRole), with the shipped webhook configurations."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
import yaml

from tests.support.controlplane import ControlPlane
from tests.support.webhookcluster import Answer, RegisteredWebhook, create_object

pytestmark = pytest.mark.cluster

SETTINGS = yaml.safe_dump(
    {
        "domain": "kafka.example.com",
        "listener": {"name": "EXTERNAL", "port": 9094},
        "loadBalancer": {"cloud": "gke"},
        "policy": {"mode": "enforce", "allowedDomains": ["kafka.example.com"]},
    }
)
INTERNAL = {"networking.gke.io/load-balancer-type": "Internal"}
DNS = "external-dns.alpha.kubernetes.io/"


@pytest.fixture(scope="module")
def webhook(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegisteredWebhook]:
    with RegisteredWebhook(
        control_plane.api_client(),
        SETTINGS,
        root=tmp_path_factory.mktemp("tenant-webhook"),
        kubeconfig=control_plane.kubeconfig_path,
        isolated=True,
    ) as hook:
        yield hook


@pytest.fixture(scope="module")
def team_a(webhook: RegisteredWebhook) -> str:
    return webhook.namespace("team-a")


@pytest.fixture(scope="module")
def tenant(
    control_plane: ControlPlane, webhook: RegisteredWebhook, team_a: str
) -> Iterator[kubernetes.client.ApiClient]:
    """team-a's own ServiceAccount, bound to `edit` in team-a only."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(webhook.api)
    rbac.create_namespaced_role_binding(
        team_a,
        {
            "metadata": {"name": "tenant-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": team_a}],
        },
    )
    kubeconfig = control_plane.kubeconfig_for(
        f"system:serviceaccount:{team_a}:tenant",
        ["system:serviceaccounts", f"system:serviceaccounts:{team_a}", "system:authenticated"],
    )
    api = control_plane.api_client(kubeconfig)
    yield api
    api.close()


def svc(
    name: str, kind: str = "LoadBalancer", annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": dict(annotations or {}), "labels": spec.pop("labels", {})},
        "spec": {"type": kind, "selector": spec.pop("selector", {"component": "broker"}),
                 "ports": [{"port": 9094}], **spec},
    }  # fmt: skip


def as_tenant(tenant: kubernetes.client.ApiClient, namespace: str, obj: dict[str, Any]) -> Answer:
    return create_object(tenant, namespace, copy.deepcopy(obj), dry_run=True)


def denied(answer: Answer, *words: str) -> bool:
    return answer.status in (400, 403) and all(w in answer.message for w in words)


def test_the_tenant_can_create_services_at_all(tenant: kubernetes.client.ApiClient, team_a: str) -> None:
    assert as_tenant(tenant, team_a, svc("web", "ClusterIP")).status == 201
    own = svc("kafka-0-lb", annotations={**INTERNAL, DNS + "hostname": f"kafka-0.{team_a}.kafka.example.com"})
    assert as_tenant(tenant, team_a, own).status == 201


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(svc("public", selector={"component": "broker"}), id="lb-selector-without-kafka"),
        pytest.param(svc("no-selector", selector={}), id="lb-without-selector"),
        pytest.param(svc("by-index", selector={"apps.kubernetes.io/pod-index": "0"}), id="lb-pod-index"),
        pytest.param(
            svc(
                "labelled",
                labels={
                    "app.kubernetes.io/managed-by": "kafka-expose",
                    "kafka-expose.io/managed-by": "kafka-expose",
                },
            ),
            id="lb-with-kafka-expose-labels",
        ),
        pytest.param(svc("node-port", "NodePort", annotations=INTERNAL), id="nodeport"),
        pytest.param(svc("ext-ip", "ClusterIP", externalIPs=["203.0.113.7"]), id="external-ips"),
    ],
)
def test_a_public_entry_point_is_refused_whatever_it_selects_or_is_labelled(
    tenant: kubernetes.client.ApiClient, team_a: str, attack: dict[str, Any]
) -> None:
    answer = as_tenant(tenant, team_a, attack)
    assert denied(answer, "policy rule internalLoadBalancer"), (answer.status, answer.message)


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        ("hostname", "kafka-0.team-b.kafka.example.com"),
        ("hostname", "login.bank.example"),
        ("internal-hostname", "kafka-0.team-b.kafka.example.com"),
        ("target", "login.bank.example"),
    ],
)
def test_another_namespaces_name_or_a_foreign_one_is_refused(
    tenant: kubernetes.client.ApiClient, team_a: str, annotation: str, name: str
) -> None:
    for kind, extra in (("LoadBalancer", INTERNAL), ("ClusterIP", {})):
        attack = svc(f"steal-{kind.lower()}", kind, annotations={**extra, DNS + annotation: name})
        answer = as_tenant(tenant, team_a, attack)
        assert denied(answer, name, "policy rule allowedDomains"), (kind, answer.status, answer.message)


def test_a_load_balancer_created_while_the_webhook_is_down_is_refused(
    webhook: RegisteredWebhook, tenant: kubernetes.client.ApiClient, team_a: str
) -> None:
    """failurePolicy Fail, narrowed by matchConditions: with every replica down, the LoadBalancer (and
    a name-publishing Service) cannot be created; a plain ClusterIP Service still can."""
    webhook.server.stop()
    try:
        compliant = svc("later", annotations=INTERNAL)
        answer = as_tenant(tenant, team_a, compliant)
        assert answer.status >= 400 and "services.validate.kafka-expose.io" in answer.message, answer
        named = svc("named", "ClusterIP", annotations={DNS + "hostname": f"x.{team_a}.kafka.example.com"})
        assert as_tenant(tenant, team_a, named).status >= 400
        assert as_tenant(tenant, team_a, svc("plain", "ClusterIP")).status == 201
    finally:
        webhook.server.start()
