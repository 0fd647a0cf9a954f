"""manifests/ against the real API server.

- The rendered base and overlays are accepted object by object (server-side apply, dryRun=All).
- The pod template passes the `restricted` Pod Security Standard the namespace enforces.
- As the kafka-expose ServiceAccount (a client certificate with its user name, RBAC from the base
  created for real), every call the server and controller make is allowed, broader calls are not,
  and the guardrail ValidatingAdmissionPolicy confines Service writes and pod patches.
- The webhook configurations' selectors and CEL matchConditions, evaluated by the API server: only
  Kafka pods and foreign Services in opted-in namespaces reach the webhook.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.test_selfcerts import WebhookStub, call, create_namespace, delete, ok, pod
from tests.support.controlplane import ControlPlane, wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kafka-expose"
SERVER_USER = f"system:serviceaccount:{NAMESPACE}:kafka-expose"  # reads only
CONTROLLER_USER = f"system:serviceaccount:{NAMESPACE}:kafka-expose-controller"
LEASE = "kafka-expose-controller"  # webhook/cli/controller.py DEFAULT_LEASE_NAME
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def _close(api: Any) -> None:
    api.close()


def render(path: str) -> list[dict[str, Any]]:
    built = subprocess.run(
        ["bash", str(REPO / "tools" / "build-kustomize.sh")], capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, built.stderr
    kustomize = built.stdout.strip().splitlines()[-1]
    result = subprocess.run(
        [kustomize, "build", str(REPO / path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def collection(obj: dict[str, Any]) -> str:
    """The REST collection path of a manifest."""
    group_version = obj["apiVersion"]
    prefix = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    kind = obj["kind"].lower()
    plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
    if obj["kind"] in CLUSTER_SCOPED:
        return f"{prefix}/{plural}"
    return f"{prefix}/namespaces/{obj['metadata']['namespace']}/{plural}"


def apply(api: client.ApiClient, obj: dict[str, Any], dry_run: bool) -> tuple[int, Any]:
    query = {"fieldManager": "kafka-expose-test", "force": "true"}
    if dry_run:
        query["dryRun"] = "All"
    return call(
        api,
        "PATCH",
        f"{collection(obj)}/{obj['metadata']['name']}",
        json.dumps(obj),
        query,
        content_type="application/apply-patch+yaml",
    )


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render("manifests/base")


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, base: list[dict[str, Any]]) -> Iterator[client.ApiClient]:
    """The namespace, ServiceAccount, RBAC and guardrails of the base, for real; removed afterwards."""
    admin = control_plane.api_client()
    kinds = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    kinds |= {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    objects = [o for o in base if o["kind"] in kinds]
    objects.sort(key=lambda o: o["kind"] != "Namespace")
    try:
        for obj in objects:
            ok(apply(admin, obj, dry_run=False))
        yield admin
    finally:
        for obj in reversed(objects):
            delete(admin, f"{collection(obj)}/{obj['metadata']['name']}")
        wait_for(
            lambda: call(admin, "GET", f"/api/v1/namespaces/{NAMESPACE}")[0] == 404,
            timeout=60,
            message="namespace kafka-expose to be deleted",
        )
        _close(admin)


def _as(control_plane: ControlPlane, user: str) -> client.ApiClient:
    kubeconfig = control_plane.kubeconfig_for(
        user, ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"]
    )
    return control_plane.api_client(kubeconfig)


@pytest.fixture(scope="module")
def as_sa(control_plane: ControlPlane, installed: client.ApiClient) -> Iterator[client.ApiClient]:
    """The controller's ServiceAccount (the one that writes)."""
    api = _as(control_plane, CONTROLLER_USER)
    yield api
    _close(api)


@pytest.fixture(scope="module")
def as_server(control_plane: ControlPlane, installed: client.ApiClient) -> Iterator[client.ApiClient]:
    """The network-facing server's ServiceAccount."""
    api = _as(control_plane, SERVER_USER)
    yield api
    _close(api)


@pytest.fixture
def workspace(installed: client.ApiClient) -> Iterator[str]:
    """A namespace with a broker-like pod and a StatefulSet in it (created as admin)."""
    name = f"brokers-{uuid.uuid4().hex[:6]}"
    create_namespace(installed, name, {"kafka-expose.io/inject": "enabled"})
    ok(call(installed, "POST", f"/api/v1/namespaces/{name}/pods", pod("kafka-0", "apache/kafka:4.1.0")))
    yield name
    delete(installed, f"/api/v1/namespaces/{name}")


# ---- every object is accepted ----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["manifests/base", "manifests/overlays/self-managed"])
def test_rendered_manifests_are_accepted_by_the_api_server(overlay: str, installed: client.ApiClient) -> None:
    docs = render(overlay)
    assert docs
    for obj in docs:
        status, body = apply(installed, obj, dry_run=True)
        assert status in (200, 201), f"{obj['kind']}/{obj['metadata']['name']}: {status} {body}"


def test_cert_manager_overlay_is_accepted_apart_from_its_crds(installed: client.ApiClient) -> None:
    for obj in render("manifests/overlays/cert-manager"):
        if obj["apiVersion"].startswith("cert-manager.io/"):
            continue  # no cert-manager CRDs in the test cluster
        status, body = apply(installed, obj, dry_run=True)
        assert status in (200, 201), f"{obj['kind']}/{obj['metadata']['name']}: {status} {body}"


def test_pod_template_passes_the_restricted_pod_security_standard(
    installed: client.ApiClient, base: list[dict[str, Any]]
) -> None:
    template = next(o for o in base if o["kind"] == "Deployment")["spec"]["template"]
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "pss"},
    }
    manifest["spec"] = template["spec"]
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    status, body = call(installed, "POST", path, manifest, {"dryRun": "All"})
    assert status == 201, body
    # control: the namespace really enforces it
    weaker = copy.deepcopy(manifest)
    weaker["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    status, body = call(installed, "POST", path, weaker, {"dryRun": "All"})
    assert status == 403 and "restricted" in json.dumps(body), body


# ---- RBAC, as the ServiceAccount -------------------------------------------------------------------


def _service(name: str, managed: bool) -> dict[str, Any]:
    labels = {"kafka-expose.io/managed-by": "kafka-expose", "app.kubernetes.io/managed-by": "kafka-expose"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels if managed else {}},
        "spec": {"type": "LoadBalancer", "selector": {"x": "y"}, "ports": [{"port": 9094}]},
    }


def test_the_server_can_read_what_it_reads_and_write_nothing(
    as_server: client.ApiClient, workspace: str
) -> None:
    """Issue 15, item 6: the network-facing server holds no write permission at all."""
    ns = workspace
    ok(call(as_server, "GET", "/api/v1/namespaces"))
    ok(call(as_server, "GET", f"/api/v1/namespaces/{ns}"))
    ok(call(as_server, "GET", "/api/v1/namespaces", None, {"watch": "true", "timeoutSeconds": "1"}))
    ok(call(as_server, "GET", f"/api/v1/namespaces/{ns}/services"))
    forbidden = [
        ("POST", f"/api/v1/namespaces/{ns}/services", _service("kafka-0-external", managed=True)),
        ("PATCH", f"/api/v1/namespaces/{ns}/pods/kafka-0", {"metadata": {"annotations": {"a": "b"}}}),
        ("GET", "/api/v1/pods", None),
        ("GET", "/apis/apps/v1/statefulsets", None),
        ("POST", f"/api/v1/namespaces/{ns}/events", {"metadata": {"name": "x"}}),
        (
            "POST",
            f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases",
            {"metadata": {"name": LEASE}},
        ),
    ]
    for method, path, body in forbidden:
        kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
        status, answer = call(as_server, method, path, body, content_type=kind)
        assert status == 403, f"server: {method} {path} should be forbidden, got {status}: {answer}"


def test_service_account_can_do_what_the_controller_does(as_sa: client.ApiClient, workspace: str) -> None:
    ns = workspace
    allowed = [
        ("GET", "/api/v1/namespaces", None, {}),
        ("GET", f"/api/v1/namespaces/{ns}", None, {}),
        ("GET", "/api/v1/pods", None, {"labelSelector": "kafka-expose.io/exposed=true"}),
        ("GET", "/apis/apps/v1/statefulsets", None, {}),
        ("GET", f"/apis/apps/v1/namespaces/{ns}/statefulsets", None, {}),
        ("GET", "/api/v1/services", None, {}),
        ("GET", f"/api/v1/namespaces/{ns}/services", None, {}),
    ]
    for method, path, body, query in allowed:
        ok(call(as_sa, method, path, body, query))
    for path in ("/api/v1/namespaces", "/api/v1/pods", "/apis/apps/v1/statefulsets", "/api/v1/services"):
        ok(call(as_sa, "GET", path, None, {"watch": "true", "timeoutSeconds": "1"}))

    # Services: the whole life cycle of a managed one
    services = f"/api/v1/namespaces/{ns}/services"
    ok(call(as_sa, "POST", services, _service("kafka-0-external", managed=True)))
    ok(call(as_sa, "GET", f"{services}/kafka-0-external"))
    patch = {"metadata": {"annotations": {"kafka-expose.io/settings-version": "2"}}}
    ok(
        call(
            as_sa, "PATCH", f"{services}/kafka-0-external", patch, content_type="application/merge-patch+json"
        )
    )
    ok(call(as_sa, "DELETE", f"{services}/kafka-0-external"))

    # Pods: annotate with the load balancer address
    patch = {"metadata": {"annotations": {"kafka-expose.io/load-balancer": "10.1.2.3"}}}
    ok(call(as_sa, "PATCH", f"/api/v1/namespaces/{ns}/pods/kafka-0", patch,
            content_type="application/merge-patch+json"))  # fmt: skip

    # Events, both APIs
    involved = {"kind": "Pod", "namespace": ns, "name": "kafka-0", "apiVersion": "v1"}
    core_event = {
        "metadata": {"name": f"kafka-0.{uuid.uuid4().hex[:8]}"},
        "involvedObject": involved,
        "reason": "Exposed",
        "message": "test",
        "type": "Normal",
        "source": {"component": "kafka-expose"},
    }
    ok(call(as_sa, "POST", f"/api/v1/namespaces/{ns}/events", core_event))

    # Leader election: its own Lease only
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
    lease = {"metadata": {"name": LEASE}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    created = ok(call(as_sa, "POST", leases, lease))
    created["spec"]["holderIdentity"] = "b"
    ok(call(as_sa, "PUT", f"{leases}/{LEASE}", created))
    ok(call(as_sa, "GET", f"{leases}/{LEASE}"))


def test_the_controller_has_no_unused_grant(
    as_sa: client.ApiClient, installed: client.ApiClient, workspace: str
) -> None:
    """Issue 15, item 6: services update, events.k8s.io, StatefulSets get, another Lease: never called."""
    ns = workspace
    services = f"/api/v1/namespaces/{ns}/services"
    ok(call(installed, "POST", services, _service("kafka-9-external", managed=True)))
    current = ok(call(installed, "GET", f"{services}/kafka-9-external"))
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
    other = {"metadata": {"name": "someone-elses"}, "spec": {"holderIdentity": "x"}}
    other = ok(call(installed, "POST", leases, other))
    involved = {"kind": "Pod", "namespace": ns, "name": "kafka-0", "apiVersion": "v1"}
    new_event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": f"kafka-0.{uuid.uuid4().hex[:8]}"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "kafka-expose.io/controller",
        "reportingInstance": "kafka-expose-0",
        "action": "Expose",
        "reason": "Exposed",
        "regarding": involved,
        "type": "Normal",
    }
    for method, path, body in (
        ("PUT", f"{services}/kafka-9-external", current),
        ("POST", f"/apis/events.k8s.io/v1/namespaces/{ns}/events", new_event),
        ("GET", f"/apis/apps/v1/namespaces/{ns}/statefulsets/kafka", None),
        ("GET", f"{leases}/someone-elses", None),
        ("PUT", f"{leases}/someone-elses", other),
    ):
        status, answer = call(as_sa, method, path, body)
        assert status == 403, f"controller: {method} {path} should be forbidden, got {status}: {answer}"


def test_service_account_cannot_do_more(as_sa: client.ApiClient, workspace: str) -> None:
    ns = workspace
    forbidden = [
        ("GET", "/api/v1/secrets", None),
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets", None),
        ("GET", f"/api/v1/namespaces/{ns}/configmaps", None),
        ("DELETE", f"/api/v1/namespaces/{ns}", None),
        ("POST", f"/api/v1/namespaces/{ns}/pods", pod("intruder")),
        ("DELETE", f"/api/v1/namespaces/{ns}/pods/kafka-0", None),
        ("POST", "/apis/apps/v1/namespaces/" + ns + "/statefulsets", {"metadata": {"name": "x"}}),
        ("POST", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", {"metadata": {"name": "x"}}),
        ("GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", None),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {"metadata": {"name": "x"}}),
    ]
    for method, path, body in forbidden:
        status, answer = call(as_sa, method, path, body)
        assert status == 403, f"{method} {path} should be forbidden, got {status}: {answer}"


def test_guardrails_confine_service_writes_and_pod_patches(
    as_sa: client.ApiClient, installed: client.ApiClient, workspace: str
) -> None:
    ns = workspace
    services = f"/api/v1/namespaces/{ns}/services"

    # The policy takes effect asynchronously after its creation.
    def denied_unlabelled_create() -> bool:
        status, body = call(as_sa, "POST", services, _service("foreign", managed=False), {"dryRun": "All"})
        return status in (403, 422) and "kafka-expose may only" in json.dumps(body)

    wait_for(denied_unlabelled_create, timeout=60, interval=0.5, message="the guardrail policy")

    # a Service kafka-expose does not manage: no change, no delete
    ok(call(installed, "POST", services, _service("user-lb", managed=False)))
    patch = {"metadata": {"annotations": {"a": "b"}}}
    status, body = call(
        as_sa, "PATCH", f"{services}/user-lb", patch, content_type="application/merge-patch+json"
    )
    assert status in (403, 422) and "kafka-expose may only" in json.dumps(body), body
    status, body = call(as_sa, "DELETE", f"{services}/user-lb")
    assert status in (403, 422), body
    # nor take one over by labelling it
    adopt = {"metadata": {"labels": {"kafka-expose.io/managed-by": "kafka-expose"}}}
    status, body = call(
        as_sa, "PATCH", f"{services}/user-lb", adopt, content_type="application/merge-patch+json"
    )
    assert status in (403, 422), body
    # and a managed one may not lose its label
    ok(call(as_sa, "POST", services, _service("kafka-1-external", managed=True)))
    drop = {"metadata": {"labels": {"kafka-expose.io/managed-by": None}}}
    status, body = call(
        as_sa, "PATCH", f"{services}/kafka-1-external", drop, content_type="application/merge-patch+json"
    )
    assert status in (403, 422), body

    # pods: metadata yes, spec no
    pods = f"/api/v1/namespaces/{ns}/pods/kafka-0"
    status, body = call(as_sa, "PATCH", pods, {"spec": {"activeDeadlineSeconds": 5}},
                        content_type="application/merge-patch+json")  # fmt: skip
    assert status in (403, 422) and "pod metadata" in json.dumps(body), body
    ok(call(as_sa, "PATCH", pods, {"metadata": {"annotations": {"kafka-expose.io/x": "y"}}},
            content_type="application/merge-patch+json"))  # fmt: skip

    # the admin (not the ServiceAccount) is not concerned
    ok(call(installed, "PATCH", f"{services}/user-lb", patch, content_type="application/merge-patch+json"))


def test_nobody_but_kafka_expose_changes_its_own_pod_metadata(
    as_sa: client.ApiClient, installed: client.ApiClient, workspace: str
) -> None:
    """Issue 15, item 1: a forged kafka-expose.io/ pod annotation or label (by a tenant, or even the
    admin) is refused on update; the controller's ServiceAccount writes the load balancer address."""
    pods = f"/api/v1/namespaces/{workspace}/pods/kafka-0"
    merge = "application/merge-patch+json"

    def forged(patch: dict[str, Any]) -> tuple[int, Any]:
        return call(installed, "PATCH", pods, {"metadata": patch}, content_type=merge)

    attempts = iter(range(1, 250))  # a real change each time (a no-op patch is always allowed)
    wait_for(
        lambda: (
            forged({"annotations": {"kafka-expose.io/load-balancer": f"203.0.113.{next(attempts)}"}})[0]
            in (403, 422)
        ),
        timeout=60,
        interval=0.5,
        message="the kafka-expose-own-metadata policy",
    )
    for patch in (
        {"annotations": {"kafka-expose.io/advertised": "EXTERNAL://kafka-0.team-b.kafka.example.com:9094"}},
        {"annotations": {"kafka-expose.io/service": "someone-elses"}},
        {"labels": {"kafka-expose.io/exposed": "true"}},
    ):
        status, body = forged(patch)
        assert status in (403, 422) and "kafka-expose's own" in json.dumps(body), (patch, status, body)
    ok(call(as_sa, "PATCH", pods, {"metadata": {"annotations": {"kafka-expose.io/load-balancer": "10.0.0.7"}}},
            content_type=merge))  # fmt: skip
    status, body = forged({"annotations": {"kafka-expose.io/load-balancer": None}})
    assert status in (403, 422), body  # nor removed
    ok(forged({"annotations": {"team": "a"}}))  # everything else stays the owner's


def test_the_self_managed_server_may_change_only_the_ca_bundle(
    control_plane: ControlPlane, as_server: client.ApiClient, installed: client.ApiClient
) -> None:
    """Issue 15, item 6: with the self-managed overlay's RBAC and policy, the server's ServiceAccount
    patches caBundle into its webhook configurations, and nothing else."""
    overlay = render("manifests/overlays/self-managed")
    wanted = {
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    objects = [
        o
        for o in overlay
        if (
            o["kind"] in wanted
            and ("self-managed" in o["metadata"]["name"] or "cabundle" in o["metadata"]["name"])
        )
        or o["kind"] == "ValidatingWebhookConfiguration"
    ]
    for obj in objects:
        ok(apply(installed, obj, dry_run=False))
    path = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/kafka-expose"
    json_patch = "application/json-patch+json"
    bundle = base64.b64encode(control_plane.ca_pem).decode()
    try:
        attempts = iter(range(6, 30))

        def refused_failure_policy() -> bool:
            # a real change each time: one that slipped through before the policy was in force must
            # not make the next attempt a no-op (which the policy allows)
            change = [{"op": "replace", "path": "/webhooks/1/timeoutSeconds", "value": next(attempts)}]
            status, _ = call(as_server, "PATCH", path, change, content_type=json_patch)
            return status in (403, 422)

        wait_for(
            refused_failure_policy, timeout=60, interval=0.5, message="the kafka-expose-cabundle-only policy"
        )
        for change in (
            [{"op": "replace", "path": "/webhooks/1/failurePolicy", "value": "Ignore"}],
            [{"op": "replace", "path": "/webhooks/0/timeoutSeconds", "value": 30}],
            [{"op": "remove", "path": "/webhooks/1/matchConditions"}],
            [{"op": "replace", "path": "/webhooks/0/clientConfig/service/name", "value": "elsewhere"}],
            [{"op": "remove", "path": "/webhooks/1"}],
        ):
            status, body = call(as_server, "PATCH", path, change, content_type=json_patch)
            assert status in (403, 422) and "only clientConfig.caBundle" in json.dumps(body), (change, body)
        ok(call(as_server, "PATCH", path, [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}],
                content_type=json_patch))  # fmt: skip
    finally:
        for obj in reversed(objects):
            delete(installed, f"{collection(obj)}/{obj['metadata']['name']}")


# ---- what reaches the webhook ----------------------------------------------------------------------


@pytest.fixture
def webhooks_to_stub(
    control_plane: ControlPlane, installed: client.ApiClient, base: list[dict[str, Any]], tmp_path: Path
) -> Iterator[WebhookStub]:
    """The base's two webhook configurations, for real, with clientConfig pointed at a local stub."""
    cert, key = control_plane.issue_serving_cert("127.0.0.1")
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    stub = WebhookStub(tmp_path / "tls.crt", tmp_path / "tls.key").start()
    bundle = base64.b64encode(control_plane.ca_pem).decode()
    configs = []
    for obj in base:
        if obj["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            obj = copy.deepcopy(obj)
            for hook in obj["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"{stub.url}{path}", "caBundle": bundle}
            ok(apply(installed, obj, dry_run=False))
            configs.append(obj)
    try:
        yield stub
    finally:
        for obj in configs:
            delete(installed, f"{collection(obj)}/{obj['metadata']['name']}")
        stub.stop()


def test_only_kafka_pods_and_foreign_services_in_opted_in_namespaces_reach_the_webhook(
    webhooks_to_stub: WebhookStub, installed: client.ApiClient, as_sa: client.ApiClient
) -> None:
    stub = webhooks_to_stub
    suffix = uuid.uuid4().hex[:6]
    opted_in, other = f"mc-in-{suffix}", f"mc-out-{suffix}"
    create_namespace(installed, opted_in, {"kafka-expose.io/inject": "enabled"})
    create_namespace(installed, other)
    kube_system = "/api/v1/namespaces/kube-system"
    ok(call(installed, "PATCH", kube_system, {"metadata": {"labels": {"kafka-expose.io/inject": "enabled"}}},
            content_type="application/merge-patch+json"))  # fmt: skip
    try:

        def create(ns: str, obj: dict[str, Any]) -> None:
            plural = "pods" if obj["kind"] == "Pod" else "services"
            ok(call(installed, "POST", f"/api/v1/namespaces/{ns}/{plural}", obj, {"dryRun": "All"}))

        # wait until the API server uses the new configurations
        n = 0

        def first_call_seen() -> bool:
            nonlocal n
            n += 1
            create(opted_in, pod(f"warmup-{n}", "apache/kafka:4.1.0"))
            return bool(stub.seen(name=f"warmup-{n}"))

        wait_for(first_call_seen, timeout=60, interval=0.5, message="the webhook configurations to be used")

        expected = {
            "cp-kafka": ("confluentinc/cp-kafka:7.6.1", {}),
            "cp-server": ("confluentinc/cp-server:7.6.1", {}),
            "apache-kafka": ("apache/kafka:4.1.0", {}),
            "apache-kafka-native": ("apache/kafka-native:4.1.0", {}),
            "bitnami-kafka": ("docker.io/bitnami/kafka:3.9", {}),
            "labelled": ("registry.example/custom-broker:1", {"kafka-expose.io/broker": "true"}),
        }
        skipped = {
            "nginx": ("nginx:1.27", {}),
            "labelled-false": ("registry.example/custom-broker:1", {"kafka-expose.io/broker": "false"}),
            "zookeeper": ("bitnami/zookeeper:3.9", {}),
        }
        for name, (image, labels) in {**expected, **skipped}.items():
            create(opted_in, pod(name, image, labels))
        create(other, pod("kafka-elsewhere", "apache/kafka:4.1.0"))
        create("kube-system", pod("kafka-in-kube-system", "apache/kafka:4.1.0"))
        create(opted_in, _service("user-service", managed=False))
        create(opted_in, _service("our-labels", managed=True))  # a label skips nothing (issue 15, item 2)
        ok(call(as_sa, "POST", f"/api/v1/namespaces/{opted_in}/services", _service("our-service", managed=True),
                {"dryRun": "All"}))  # fmt: skip
        create(opted_in, pod("forged", "nginx:1.27") | {"metadata": {"name": "forged", "annotations": {
            "kafka-expose.io/load-balancer": "203.0.113.9"}}})  # fmt: skip
        create(other, _service("service-elsewhere", managed=False))
        # a last positive call, so that everything before it has been decided
        create(opted_in, pod("last", "apache/kafka:4.1.0"))
        wait_for(lambda: len(stub.seen(name="last")) == 2, timeout=30, message="the last pod")

        for name in expected:
            paths = sorted(r["path"] for r in stub.seen(kind="Pod", name=name))
            assert paths == ["/mutate", "/validate"], (name, paths)
        for name in [*skipped, "kafka-elsewhere", "kafka-in-kube-system"]:
            assert not stub.seen(name=name), name
        assert sorted(r["path"] for r in stub.seen(kind="Service", name="user-service")) == [
            "/mutate",
            "/validate",
        ]
        assert not stub.seen(name="our-service"), "the controller's own writes are skipped by identity"
        for name in ("our-labels", "forged"):
            assert "/mutate" in [r["path"] for r in stub.seen(name=name)], name
        assert not stub.seen(name="service-elsewhere")
        assert all(r["dryRun"] for r in stub.requests)
    finally:
        ok(call(installed, "PATCH", kube_system, {"metadata": {"labels": {"kafka-expose.io/inject": None}}},
                content_type="application/merge-patch+json"))  # fmt: skip
        for ns in (opted_in, other):
            delete(installed, f"/api/v1/namespaces/{ns}")
