"""The test control plane is a real one: real release binaries, real controllers,
helm against it. Needs tools/build-controlplane.sh to have run."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client
from kubernetes.client import ApiException

from tests.support.controlplane import REPO_ROOT, ControlPlane, NodeAgentStandIn, wait_for

pytestmark = pytest.mark.cluster


def _pinned(gomod: Path, module: str) -> str:
    m = re.search(rf"^\s*{re.escape(module)} (v\S+)", gomod.read_text(), re.M)
    assert m, f"{module} not in {gomod}"
    return m.group(1)


KUBE_VERSION = _pinned(REPO_ROOT / "tools" / "k8s" / "go.mod", "k8s.io/kubernetes")
ETCD_VERSION = _pinned(REPO_ROOT / "tools" / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3")


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api_client)
    name = f"cp-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as e:
        if e.status != 404:
            raise


def _statefulset(name: str, replicas: int) -> client.V1StatefulSet:
    sts = client.V1StatefulSet.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                # podManagementPolicy left unset: the default is OrderedReady
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": "registry.invalid/none:1"}]},
                },
            },
        }
    )
    assert sts is not None
    return sts


def _pod_names(core: client.CoreV1Api, ns: str, app: str) -> list[str]:
    pods = core.list_namespaced_pod(ns, label_selector=f"app={app}").items
    return sorted(p.metadata.name for p in pods if p.metadata and p.metadata.name)


def test_version_is_the_real_release(control_plane: ControlPlane, api_client: client.ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    assert info.git_version == KUBE_VERSION
    assert (info.major, info.minor) == ("1", KUBE_VERSION.split(".")[1])
    assert info.git_tree_state == "clean"
    for binary in ("kube-apiserver", "kube-controller-manager"):
        out = subprocess.run(
            [str(control_plane.bin_dir / binary), "--version"], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == f"Kubernetes {KUBE_VERSION}"
    etcd = requests.get(f"{control_plane.etcd_url}/version", timeout=5).json()
    assert etcd["etcdserver"] == ETCD_VERSION.lstrip("v")


def test_statefulset_ordered_ready_creates_every_ordinal(
    control_plane: ControlPlane, api_client: client.ApiClient, node_agent: NodeAgentStandIn, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    sts = apps.create_namespaced_stateful_set(namespace, _statefulset("web", 3))
    assert sts.spec is not None and sts.spec.pod_management_policy == "OrderedReady"

    def ready() -> bool:
        s = apps.read_namespaced_stateful_set("web", namespace).status
        return s is not None and s.ready_replicas == 3

    wait_for(ready, timeout=60, message="3 ready replicas")
    assert _pod_names(core, namespace, "web") == ["web-0", "web-1", "web-2"]
    for pod in core.list_namespaced_pod(namespace).items:
        assert pod.status is not None and pod.status.phase == "Running"
        assert pod.status.pod_ip == "127.0.0.1"
    # OrderedReady: the controller only made ordinal n+1 after n was Ready.
    made_ready = [p.split("/")[1] for p in node_agent.patched if p.startswith(f"{namespace}/")]
    assert list(dict.fromkeys(made_ready)) == ["web-0", "web-1", "web-2"]
    # The agent is session-wide: only errors about this test's pods concern it (another test may
    # restart the API server and leave a connection error behind).
    assert not [e for e in node_agent.errors if f"{namespace}/" in e]


def test_deleting_statefulset_garbage_collects_pods(
    api_client: client.ApiClient, node_agent: NodeAgentStandIn, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_stateful_set(namespace, _statefulset("gc", 2))
    wait_for(lambda: len(_pod_names(core, namespace, "gc")) == 2, timeout=60, message="2 pods")
    pod = core.read_namespaced_pod("gc-0", namespace)
    assert pod.metadata is not None and pod.metadata.owner_references
    assert pod.metadata.owner_references[0].kind == "StatefulSet"

    # Background propagation: the StatefulSet goes at once, the garbage
    # collector (in kube-controller-manager) removes the pods.
    apps.delete_namespaced_stateful_set(
        "gc", namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )
    wait_for(lambda: _pod_names(core, namespace, "gc") == [], timeout=60, message="pods collected")


def test_namespace_deletion_completes(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    name = f"cp-del-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"), data={"a": "b"})
    )
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as e:
            return bool(e.status == 404)
        return False

    wait_for(gone, timeout=60, message=f"namespace {name} deleted")


def test_kubeconfig_for_other_user_is_subject_to_rbac(
    control_plane: ControlPlane, api_client: client.ApiClient, namespace: str
) -> None:
    kc = control_plane.kubeconfig_for("alice", ["devs"])
    with closing(control_plane.api_client(kc)) as alice:
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(alice).list_namespaced_config_map(namespace)
        assert exc.value.status == 403
        assert 'User "alice"' in json.loads(exc.value.body or "{}").get("message", "")

        binding = client.V1RoleBinding.from_dict(
            {
                "metadata": {"name": "devs-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"}],
            }
        )
        assert binding is not None
        client.RbacAuthorizationV1Api(api_client).create_namespaced_role_binding(namespace, binding)

        def allowed() -> bool:
            try:
                client.CoreV1Api(alice).list_namespaced_config_map(namespace)
            except ApiException as e:
                if e.status == 403:
                    return False
                raise
            return True

        wait_for(allowed, timeout=30, message="alice allowed by the aggregated 'view' role")
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(alice).create_namespaced_config_map(
                namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="nope"))
            )
        assert exc.value.status == 403


CHART_YAML = """\
apiVersion: v2
name: tiny
version: 0.1.0
kubeVersion: ">= {minor}.0-0"
"""

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-info
data:
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
  greeting: {{ .Values.greeting | quote }}
"""


@pytest.fixture
def tiny_chart(tmp_path: Path) -> Path:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    minor = ".".join(KUBE_VERSION.lstrip("v").split(".")[:2])
    (chart / "Chart.yaml").write_text(CHART_YAML.format(minor=minor))
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(CONFIGMAP)
    return chart


def test_helm_version(control_plane: ControlPlane) -> None:
    out = control_plane.helm("version", "--short").stdout
    assert out.startswith("v3."), out


def test_helm_template_offline(control_plane: ControlPlane, tiny_chart: Path) -> None:
    # No cluster involved: the default KubeVersion comes from helm's build
    # (stamped by build-controlplane.sh), which satisfies kubeVersion: >= 1.<minor>.
    out = control_plane.helm("template", "demo", str(tiny_chart), "--set", "greeting=hi").stdout
    assert "name: demo-info" in out
    assert 'greeting: "hi"' in out
    minor = KUBE_VERSION.split(".")[1]
    assert re.search(rf'kubeVersion: "v1\.{minor}\.\d+"', out), out


def _helm_failure(e: subprocess.CalledProcessError) -> str:
    return f"{e.cmd}\nstdout:\n{e.stdout}\nstderr:\n{e.stderr}"


def test_helm_install_against_the_plane(
    control_plane: ControlPlane, api_client: client.ApiClient, tiny_chart: Path
) -> None:
    ns = f"helm-{uuid.uuid4().hex[:6]}"
    try:
        control_plane.helm("install", "demo", str(tiny_chart), "-n", ns, "--create-namespace")
    except subprocess.CalledProcessError as e:
        pytest.fail(_helm_failure(e))
    core = client.CoreV1Api(api_client)
    cm = core.read_namespaced_config_map("demo-info", ns)
    assert cm.data == {"kubeVersion": KUBE_VERSION, "greeting": "hello"}  # from the live /version
    listed = control_plane.helm("list", "-n", ns, "-o", "json").stdout
    assert '"name":"demo"' in listed and '"status":"deployed"' in listed
    control_plane.helm("uninstall", "demo", "-n", ns)
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_config_map("demo-info", ns)
    assert exc.value.status == 404
    core.delete_namespace(ns)


def test_apiserver_restart_keeps_state(control_plane: ControlPlane, api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    name = f"cp-restart-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    control_plane.stop_apiserver()
    assert not control_plane.is_running("kube-apiserver")
    with pytest.raises(requests.ConnectionError):
        control_plane.requests_session().get(f"{control_plane.api_url}/readyz", timeout=2)
    control_plane.start_apiserver()
    ns: Any = core.read_namespace(name)  # same port, same etcd: still there
    assert ns.metadata.name == name
    core.delete_namespace(name)


def test_node_agent_bind_mode(
    control_plane: ControlPlane, api_client: client.ApiClient, namespace: str
) -> None:
    """With node_name, pods are bound to a stand-in Node and deletions are finished."""
    core = client.CoreV1Api(api_client)
    with NodeAgentStandIn(control_plane, [namespace], node_name="stand-in-node") as agent:
        pod = client.V1Pod.from_dict(
            {
                "metadata": {"name": "solo"},
                "spec": {"containers": [{"name": "main", "image": "registry.invalid/none:1"}]},
            }
        )
        assert pod is not None
        core.create_namespaced_pod(namespace, pod)

        def running() -> bool:
            p = core.read_namespaced_pod("solo", namespace)
            return (
                p.spec is not None
                and p.spec.node_name == "stand-in-node"
                and p.status is not None
                and p.status.phase == "Running"
            )

        wait_for(running, timeout=30, message="pod bound and Running")
        core.delete_namespaced_pod("solo", namespace)  # default grace period: 30 s
        wait_for(lambda: _pod_names_all(core, namespace) == [], timeout=15, message="deletion finished")
        assert not agent.errors


def _pod_names_all(core: client.CoreV1Api, ns: str) -> list[str]:
    return [p.metadata.name for p in core.list_namespaced_pod(ns).items if p.metadata and p.metadata.name]
