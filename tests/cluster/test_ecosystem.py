"""The real ecosystem around the post-renderer, through the real API server: Helm 3 and Helm 4
install, upgrade and uninstall a chart through `kafka-expose render` (Helm 4 as its postrenderer/v1
plugin, plugins/kafka-expose-render), the real EndpointSlice controller publishes the brokers'
endpoints, the cloud load-balancer STAND-IN (tests/support/e2e.py) gives each per-broker Service an
address, and the REAL external-dns (`--source=service`, the README's domain filter, TXT registry,
`coredns` provider) writes their names into the REAL DNS server (CoreDNS over its etcd), which a
client whose only resolver is that server resolves (tests/support/ecosystem.py)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client import ApiException

from tests.cluster.controller_fixtures import (
    OPT_IN_LABEL,
    Controller,
    broker_statefulset,
    create_objects,
    running,
)
from tests.support import ecosystem
from tests.support.controlplane import REPO_ROOT, ControlPlane, NodeAgentStandIn
from tests.support.e2e import CloudLoadBalancerStandIn, PodNetworkStandIn, bound_node_agent, list_objects
from tests.support.podfactory import FIXTURES
from tests.support.webhookcluster import ensure_namespace

pytestmark = pytest.mark.cluster

DOMAIN = "kafka.example.com"
EXTERNAL_DNS = "external-dns.alpha.kubernetes.io/hostname"
SETTINGS = f"""\
domain: {DOMAIN}
bootstrapHostTemplate: "bootstrap.{{namespace}}.{{domain}}"
loadBalancer:
  cloud: aws
"""
STOCK_RENDER = FIXTURES / "bitnami-kafka-32.4.4-brokers3.yaml"
SYNC = 60  # seconds for external-dns (2 s interval, events) to follow a change

# A chart the way charts are written: no namespace in its objects (Helm's -n decides).
TINY_CHART = {
    "Chart.yaml": "apiVersion: v2\nname: tiny-kafka\nversion: 0.1.0\n",
    "values.yaml": "replicas: 3\n",
    "templates/statefulset.yaml": textwrap.dedent(
        """\
        apiVersion: apps/v1
        kind: StatefulSet
        metadata:
          name: {{ .Release.Name }}
        spec:
          serviceName: {{ .Release.Name }}-headless
          replicas: {{ .Values.replicas }}
          podManagementPolicy: Parallel
          selector: {matchLabels: {app: {{ .Release.Name }}}}
          template:
            metadata: {labels: {app: {{ .Release.Name }}}}
            spec:
              containers:
              - name: kafka
                image: apache/kafka:4.1.0
                ports: [{name: client, containerPort: 9092}]
                env:
                - {name: KAFKA_LISTENERS, value: "PLAINTEXT://:9092,CONTROLLER://:9093"}
                - {name: KAFKA_ADVERTISED_LISTENERS, value: "PLAINTEXT://{{ .Release.Name }}:9092"}
                - {name: KAFKA_CONTROLLER_LISTENER_NAMES, value: CONTROLLER}
                - {name: KAFKA_LISTENER_SECURITY_PROTOCOL_MAP, value: "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"}
        """
    ),
}


def write_chart(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


class Helm:
    """One Helm (3 or 4) against the plane, with its own HELM_*_HOME and kafka-expose on PATH."""

    def __init__(self, name: str, binary: Path, control_plane: ControlPlane, home: Path) -> None:
        self.name, self.binary, self.cp = name, binary, control_plane
        self.env = control_plane.env()
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            self.env[var] = str(home / var.lower())
        # kafka-expose as a user has it installed: its console script on PATH
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.env.pop("HELM_NAMESPACE", None)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), "--kubeconfig", str(self.cp.kubeconfig_path), *args]
        # from the checkout, as the README's lines are written (relative plugin paths)
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def post_renderer(self, settings: Path) -> list[str]:
        """The README's post-renderer flags for this Helm (namespace not repeated: Helm's -n)."""
        if self.name == "helm4":
            return ["--post-renderer", "kafka-expose-render", f"--post-renderer-args=--config={settings}"]
        return [
            "--post-renderer",
            "./plugins/kafka-expose-render/kafka-expose-render",
            f"--post-renderer-args=--config={settings}",
        ]


NAMESPACES = ("eco-helm3", "eco-helm4", "eco-control", "eco-stock", "eco-optout")


@pytest.fixture(scope="module")
def node_agent_with_node(control_plane: ControlPlane) -> Iterator[NodeAgentStandIn]:
    agent = bound_node_agent(control_plane, NAMESPACES, "ecosystem-node")
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def eco(
    control_plane: ControlPlane,
    node_agent_with_node: NodeAgentStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ecosystem.Ecosystem]:
    try:
        world = ecosystem.Ecosystem(tmp_path_factory.mktemp("ecosystem"), control_plane, DOMAIN)
        world.__enter__()
    except ecosystem.EcosystemMissing as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield world
    finally:
        world.__exit__(None, None, None)


@pytest.fixture(scope="module")
def cloud(control_plane: ControlPlane) -> Iterator[CloudLoadBalancerStandIn]:
    pool = (f"127.0.{third}.{fourth}" for third in itertools.count(60) for fourth in range(10, 250))
    lbs = CloudLoadBalancerStandIn(control_plane.api_client(), set(), pool, PodNetworkStandIn("127.0.59."))
    lbs.start()
    try:
        yield lbs
    finally:
        lbs.stop()


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "settings.yaml"
    path.write_text(SETTINGS)
    return path


def helm_for(name: str, control_plane: ControlPlane, home: Path) -> Helm:
    if name == "helm3":
        return Helm(name, control_plane.helm_path, control_plane, home)
    try:
        helm = Helm(name, ecosystem.tool_path("helm4"), control_plane, home)
    except ecosystem.EcosystemMissing as err:
        pytest.fail(str(err), pytrace=False)
    out = helm("plugin", "install", "./plugins/kafka-expose-render")
    assert "kafka-expose-render" in out.stdout + out.stderr, out
    return helm


def lb_services(api: Any, namespace: str) -> dict[str, dict[str, Any]]:
    return {
        s["metadata"]["name"]: s
        for s in list_objects(api, "services", namespace)
        if (s.get("spec") or {}).get("type") == "LoadBalancer"
    }


def lb_address(service: dict[str, Any]) -> str | None:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return next((i.get("ip") for i in ingress if i.get("ip")), None)


def published(
    eco: ecosystem.Ecosystem, api: Any, namespace: str, brokers: list[str]
) -> dict[str, Any] | None:
    """{name: A records} once every broker's name answers with its Service's LB address, else None."""
    services = lb_services(api, namespace)
    wanted = {f"{b}-external": f"{b}.{namespace}.{DOMAIN}" for b in brokers}
    if sorted(services) != sorted(wanted):
        return None
    got: dict[str, Any] = {}
    for service, name in wanted.items():
        address = lb_address(services[service])
        answer = eco.dns.a(name)
        if address is None or answer != [address]:
            return None
        got[name] = answer
    return got


def names_under(eco: ecosystem.Ecosystem, namespace: str) -> dict[str, dict[str, Any]]:
    """The skydns records external-dns keeps for names under `<namespace>.<domain>`."""
    path = ecosystem.SKYDNS_PREFIX + "/".join(reversed(f"{namespace}.{DOMAIN}".split("."))) + "/"
    return {k: v for k, v in eco.dns.records().items() if k.startswith(path)}


def record_name(key: str) -> str:
    """The DNS name of a skydns key (`/skydns/com/example/kafka/ns/tiny-0/<id>`)."""
    labels = key[len(ecosystem.SKYDNS_PREFIX) :].split("/")[:-1]
    return ".".join(reversed(labels))


def only_stale_bootstrap(eco: ecosystem.Ecosystem, namespace: str, bootstrap: str) -> bool:
    """No record under the namespace but, at most, A records of the bootstrap name without owner."""
    left = names_under(eco, namespace)
    return all(record_name(k) == bootstrap and not v.get("text") for k, v in left.items())


def assert_owned(eco: ecosystem.Ecosystem, namespace: str) -> None:
    """external-dns's TXT registry: ownership records for the namespace's names, served over DNS."""
    txt = {record_name(k): v["text"] for k, v in names_under(eco, namespace).items() if v.get("text")}
    assert txt, f"no TXT ownership records under {namespace}.{DOMAIN}: {names_under(eco, namespace)}"
    for name, text in txt.items():
        assert f"external-dns/owner={ecosystem.TXT_OWNER_ID}" in text, (name, text)
        served = eco.dns.txt(name)
        assert any(f"external-dns/owner={ecosystem.TXT_OWNER_ID}" in t for t in served), (name, served)


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
def test_external_dns_publishes_what_the_post_rendered_chart_exposes(
    helm_name: str,
    control_plane: ControlPlane,
    eco: ecosystem.Ecosystem,
    cloud: CloudLoadBalancerStandIn,
    settings_file: Path,
    tmp_path: Path,
) -> None:
    api = control_plane.api_client()
    namespace = f"eco-{helm_name}"
    ensure_namespace(api, namespace, opted_in=False)  # no webhook: the post-renderer does it all
    cloud.namespaces.add(namespace)
    helm = helm_for(helm_name, control_plane, tmp_path / "home")
    chart = write_chart(tmp_path / "tiny-kafka", TINY_CHART)
    post = helm.post_renderer(settings_file)
    bootstrap = f"bootstrap.{namespace}.{DOMAIN}"
    try:
        # install: three brokers, each with its LoadBalancer Service and its name in the DNS server
        helm("install", "tiny", str(chart), "-n", namespace, *post)
        brokers = ["tiny-0", "tiny-1", "tiny-2"]
        services = ecosystem.wait_until(
            lambda: len(lb_services(api, namespace)) == 3 and lb_services(api, namespace), 60, "3 Services"
        )
        for broker in brokers:
            names = services[f"{broker}-external"]["metadata"]["annotations"][EXTERNAL_DNS]
            assert names == f"{broker}.{namespace}.{DOMAIN},{bootstrap}", names
        records = ecosystem.wait_until(
            lambda: published(eco, api, namespace, brokers), SYNC, "records of 3 brokers"
        )
        addresses = {a for answer in records.values() for a in answer}
        # the bootstrap name, claimed by every broker's Service: external-dns answers with an LB address
        # of a broker (its planner gives one resource a name of several)
        boot = ecosystem.wait_until(lambda: eco.dns.a(bootstrap), SYNC, bootstrap)
        assert boot and set(boot) <= addresses, (boot, addresses)
        assert_owned(eco, namespace)
        # a client outside, whose only resolver is the DNS server, gets exactly those addresses
        outside = ecosystem.resolve_outside(tmp_path / "outside", eco.dns.address, [*records, bootstrap])
        assert {n: outside[n] for n in records} == {n: a[0] for n, a in records.items()}, outside
        assert outside[bootstrap] in boot, outside

        # the cloud moves tiny-1's load balancer: the record follows
        moved = cloud.readdress(namespace, "tiny-1-external")
        name1 = f"tiny-1.{namespace}.{DOMAIN}"
        ecosystem.wait_until(lambda: eco.dns.a(name1) == [moved], SYNC, f"{name1} -> {moved}")

        # upgrade to 2 replicas: Helm deletes tiny-2's Service, external-dns its records
        helm("upgrade", "tiny", str(chart), "-n", namespace, "--set", "replicas=2", *post)
        ecosystem.wait_until(
            lambda: published(eco, api, namespace, brokers[:2]), SYNC, "records of 2 brokers"
        )
        gone = f"tiny-2.{namespace}.{DOMAIN}"
        ecosystem.wait_until(lambda: ecosystem.query(eco.dns.address, gone)[0] == 3, SYNC, f"{gone} NXDOMAIN")
        assert not [k for k in names_under(eco, namespace) if record_name(k).endswith(gone)]

        # uninstall: every Service gone, and with them every broker's records and every ownership
        # (TXT) record under the namespace
        helm("uninstall", "tiny", "-n", namespace)
        assert lb_services(api, namespace) == {}
        ecosystem.wait_until(lambda: only_stale_bootstrap(eco, namespace, bootstrap), SYNC, "records removed")
        for name in records:
            assert ecosystem.query(eco.dns.address, name)[0] == 3, name  # NXDOMAIN
        stale = names_under(eco, namespace)
        if stale:
            # external-dns v0.20.0's coredns provider deletes one etcd key per name, so of a name with
            # several targets (the bootstrap name) all but one A record stay behind, unowned
            # (README, "DNS"); the test shows it rather than hide it
            print(f"[ecosystem] left behind by external-dns's coredns provider: {stale}")
    except BaseException:
        print(eco.diagnostics())
        raise
    finally:
        cloud.namespaces.discard(namespace)


def test_without_the_post_renderer_nothing_is_published(
    control_plane: ControlPlane, eco: ecosystem.Ecosystem, cloud: CloudLoadBalancerStandIn, tmp_path: Path
) -> None:
    """Negative control: the same chart without the post-renderer gets no Service and no name,
    while a Service annotated in the same namespace does (external-dns did sync it), and a name
    outside the domain filter is never written."""
    api = control_plane.api_client()
    namespace = "eco-control"
    ensure_namespace(api, namespace, opted_in=False)
    cloud.namespaces.add(namespace)
    helm = helm_for("helm4", control_plane, tmp_path / "home")
    chart = write_chart(tmp_path / "tiny-kafka", TINY_CHART)
    core = kubernetes.client.CoreV1Api(api)
    try:
        helm("install", "tiny", str(chart), "-n", namespace)
        marker = f"marker.{namespace}.{DOMAIN}"
        foreign = f"tiny-0.{namespace}.other.example.org"
        ecosystem.wait_until(lambda: len(list_objects(api, "pods", namespace)) == 3, 60, "3 pods")
        core.create_namespaced_service(
            namespace,
            {
                "metadata": {"name": "marker", "annotations": {EXTERNAL_DNS: f"{marker},{foreign}"}},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"statefulset.kubernetes.io/pod-name": "tiny-0"},
                    "ports": [{"port": 9092, "targetPort": "client"}],
                },
            },
        )
        ecosystem.wait_until(lambda: eco.dns.a(marker), SYNC, f"{marker} published")
        assert sorted(lb_services(api, namespace)) == ["marker"]
        for broker in ("tiny-0", "tiny-1", "tiny-2"):
            assert ecosystem.query(eco.dns.address, f"{broker}.{namespace}.{DOMAIN}")[0] == 3
        assert not [k for k in eco.dns.records() if "other/example/org" in k or "org/example/other" in k]
    except BaseException:
        print(eco.diagnostics())
        raise
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_service("marker", namespace)
        helm("uninstall", "tiny", "-n", namespace, check=False)
        cloud.namespaces.discard(namespace)


def test_stock_render_as_a_chart_through_the_helm4_plugin(
    control_plane: ControlPlane,
    eco: ecosystem.Ecosystem,
    cloud: CloudLoadBalancerStandIn,
    settings_file: Path,
    tmp_path: Path,
) -> None:
    """bitnami/kafka 32.4.4's stock render (three brokers), its namespace made the release's as the
    chart's source writes it, as one chart's template: installed through the Helm 4 plugin, every
    broker is published; uninstalled, nothing is left."""
    if not STOCK_RENDER.exists():
        pytest.fail(f"shared chart render missing: {STOCK_RENDER}", pytrace=False)
    api = control_plane.api_client()
    namespace = "eco-stock"
    ensure_namespace(api, namespace, opted_in=False)
    cloud.namespaces.add(namespace)
    helm = helm_for("helm4", control_plane, tmp_path / "home")
    template = STOCK_RENDER.read_text().replace(
        'namespace: "kafka"', "namespace: {{ .Release.Namespace | quote }}"
    )
    chart = write_chart(
        tmp_path / "stock",
        {
            "Chart.yaml": "apiVersion: v2\nname: stock-kafka\nversion: 32.4.4\n",
            "templates/all.yaml": template,
        },
    )
    brokers = [f"kafka-broker-{i}" for i in range(3)]
    try:
        helm("install", "kafka", str(chart), "-n", namespace, *helm.post_renderer(settings_file))
        ecosystem.wait_until(
            lambda: published(eco, api, namespace, brokers), SYNC * 2, "records of 3 brokers"
        )
        assert_owned(eco, namespace)
        helm("uninstall", "kafka", "-n", namespace)
        assert lb_services(api, namespace) == {}
        bootstrap = f"bootstrap.{namespace}.{DOMAIN}"
        ecosystem.wait_until(lambda: only_stale_bootstrap(eco, namespace, bootstrap), SYNC, "records removed")
        for broker in brokers:
            assert ecosystem.query(eco.dns.address, f"{broker}.{namespace}.{DOMAIN}")[0] == 3, broker
    except BaseException:
        print(eco.diagnostics())
        raise
    finally:
        cloud.namespaces.discard(namespace)


def test_the_plugin_is_a_helm4_postrenderer_v1_plugin(control_plane: ControlPlane, tmp_path: Path) -> None:
    helm = helm_for("helm4", control_plane, tmp_path / "home")
    listed = helm("plugin", "list").stdout
    assert "kafka-expose-render" in listed and "postrenderer/v1" in listed, listed
    assert shutil.which("unshare"), "the outside resolver needs util-linux unshare"


def test_a_namespace_opting_out_loses_its_names(
    control_plane: ControlPlane,
    eco: ecosystem.Ecosystem,
    cloud: CloudLoadBalancerStandIn,
    settings_file: Path,
    tmp_path: Path,
) -> None:
    """The webhook's path: brokers whose pods are exposed, `kafka-expose controller` making their
    Services; external-dns publishes them; the namespace drops the opt-in label, the controller
    deletes the Services, and external-dns their names."""
    api = control_plane.api_client()
    namespace = "eco-optout"
    ensure_namespace(api, namespace, opted_in=True)
    cloud.namespaces.add(namespace)
    brokers = ["kafka-broker-0", "kafka-broker-1"]
    with running(Controller(control_plane, settings_file, namespace, tmp_path)) as (controller,):
        try:
            create_objects(control_plane, [broker_statefulset(namespace, replicas=2)])
            ecosystem.wait_until(
                lambda: published(eco, api, namespace, brokers), SYNC, "records of 2 brokers"
            )
            assert_owned(eco, namespace)
            kubernetes.client.CoreV1Api(api).patch_namespace(
                namespace, {"metadata": {"labels": {OPT_IN_LABEL: None}}}
            )
            ecosystem.wait_until(lambda: lb_services(api, namespace) == {}, SYNC, "Services deleted")
            bootstrap = f"bootstrap.{namespace}.{DOMAIN}"
            ecosystem.wait_until(
                lambda: only_stale_bootstrap(eco, namespace, bootstrap), SYNC, "records removed"
            )
            for broker in brokers:
                assert ecosystem.query(eco.dns.address, f"{broker}.{namespace}.{DOMAIN}")[0] == 3, broker
        except BaseException:
            print(eco.diagnostics(), controller.log(), sep="\n")
            raise
        finally:
            cloud.namespaces.discard(namespace)
