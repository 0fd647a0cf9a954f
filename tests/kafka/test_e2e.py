"""The whole story on this machine: stock chart renders installed unchanged, brokers exposed by
kafka-expose, and a real Kafka client OUTSIDE the cluster producing and consuming through each
broker's own load balancer and DNS name.

1. A stock render from the shared fixtures is applied unchanged into a namespace of the real control
   plane (etcd, kube-apiserver, kube-controller-manager); the StatefulSet controller creates the
   pods through the webhook (`kafka-expose serve`, registered as the manifests register it); the
   controller (`kafka-expose controller`) creates one LoadBalancer Service per broker.
2. Stand-ins, named so (tests/support/e2e.py): the cloud's load-balancer controller gives each
   Service a loopback address (127.0.0.11, .12, ...) in its status and forwards its port through
   the Service's EndpointSlices (written by the real EndpointSlice controller); the cluster DNS
   resolves the pods' headless-Service names for the brokers; the CNI gives each pod its own
   loopback address as pod IP. NOT stood in for: external-dns (the real one, `--source=service`,
   TXT registry, `coredns` provider) and the DNS server (CoreDNS over etcd) it writes to
   (tests/support/ecosystem.py).
3. One real Kafka process per Kafka pod (Kafka 4.1 KRaft for bitnami/kafka 32.4.4, Kafka 3.9 in
   ZooKeeper mode for incubator/kafka 0.21.5), configured from the pod AS STORED by the API server
   after mutation, evaluated as its image would (tests/imagesim.py) plus the chart's own init steps.
   Rewritten, and printed, is only what cannot exist here: data directories, the bind address of
   each listener (the pod's IP), and quorum / ZooKeeper addresses where they could not resolve.
4. The client (confluent-kafka, in its own mount namespace whose /etc/resolv.conf names only
   that CoreDNS, and whose /etc/hosts names only localhost) bootstraps from one broker's DNS name, gets every broker's
   `<pod>.<namespace>.kafka.example.com:9094` in metadata, creates a topic with a partition led by
   every broker (replication factor 3), produces 10,000 keyed messages with acks=all, consumes them
   all back, and nothing is lost or duplicated; every broker's load balancer carried connections.
5. Negative control: the same chart in a namespace that did not opt in: brokers run with their
   unmutated configuration, there is no load balancer and no DNS name, and what the brokers hand
   out are in-cluster names a client outside cannot resolve: it cannot produce.

Run: `python -m pytest -m kafka -v -s` (prints rewrites, message counts and timings).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from tests.support import ecosystem, imagesim, kafkarun
from tests.support.controlplane import ControlPlane
from tests.support.e2e import (
    BrokerConfig,
    CloudLoadBalancerStandIn,
    OutsideView,
    PodNetworkStandIn,
    bound_node_agent,
    broker_config,
    list_objects,
    pod_ip_for_downward_api,
    secret_data,
    service_dns_names,
)
from tests.support.podfactory import load_render, statefulsets
from tests.support.webhookcluster import (
    ControllerProcess,
    RegisteredWebhook,
    apply_objects,
    ensure_namespace,
    wait_for,
)
from webhook.config import load_settings_text
from webhook.core.flavors import INIT_CONTAINER
from webhook.core.images import image_family
from webhook.core.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

DOMAIN = "kafka.example.com"
MESSAGES = 10_000
LB_POOL = (f"127.0.0.{n}" for n in itertools.count(11))  # the cloud stand-in's addresses, never reused
EXPOSED_LABEL = "kafka-expose.io/exposed"
BROKER_NAMESPACES = (
    "kafka",
    "kafka-optout",
    "incubator",
    "kafka-start",
)  # every namespace a test installs into
LB_ANNOTATION = "kafka-expose.io/load-balancer"


@dataclass
class World:
    api: kubernetes.client.ApiClient
    settings: Settings
    workdir: Path
    dists: dict[str, kafkarun.KafkaDist]
    cluster_view: kafkarun.PrivateHosts
    outside: OutsideView
    pod_network: PodNetworkStandIn
    cloud: CloudLoadBalancerStandIn
    dns: ecosystem.Ecosystem
    controller: ControllerProcess
    namespaces: set[str] = field(default_factory=set)

    def log_tails(self) -> str:
        return kafkarun.tail(self.controller.log_path, 30)


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    node_agent: Any,
    cluster_view: kafkarun.PrivateHosts,
    kafka_dists: dict[str, kafkarun.KafkaDist],
) -> Iterator[World]:
    """The webhook and controller against the control plane, the stand-ins, an outside view; at the
    end everything stopped and every namespace of this module deleted (also on failure)."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="kafka-expose-e2e-"))
    api = control_plane.api_client()
    namespaces: set[str] = set()
    probe_namespace = "e2e-webhook-probe"
    with contextlib.ExitStack() as stack:
        if os.environ.get("KAFKA_EXPOSE_KEEP_TMP") != "1":
            stack.callback(shutil.rmtree, workdir, True)
        else:
            print(f"\n[e2e] keeping {workdir} (KAFKA_EXPOSE_KEEP_TMP=1)")
        # the brokers' pods on a Node, so that the EndpointSlice controller publishes them; stopped
        # after the namespaces are gone (it finishes the deletion of the pods it bound)
        agent = bound_node_agent(control_plane, BROKER_NAMESPACES, "e2e-node")
        stack.callback(agent.stop)
        stack.callback(delete_namespaces, api, namespaces)
        webhook = RegisteredWebhook(api)
        namespaces.add(probe_namespace)
        stack.callback(webhook.stop)
        webhook.start(probe_namespace=probe_namespace)
        controller = ControllerProcess(control_plane.kubeconfig_path, webhook.settings_path, workdir).start()
        stack.callback(controller.stop)
        pod_network = PodNetworkStandIn("127.0.1.", 10)
        cloud = CloudLoadBalancerStandIn(control_plane.api_client(), namespaces, LB_POOL, pod_network)
        stack.callback(cloud.stop)
        cloud.start()
        dns = stack.enter_context(ecosystem.Ecosystem(workdir / "ecosystem", control_plane, DOMAIN))
        outside = OutsideView(workdir / "outside", dns.dns.address)
        print(
            f"\n[timing] webhook registered, controller and stand-ins started in {time.monotonic() - started:.1f}s"
        )
        yield World(
            api=api,
            settings=load_settings_text(webhook.settings_path.read_text()),
            workdir=workdir,
            dists=kafka_dists,
            cluster_view=cluster_view,
            outside=outside,
            pod_network=pod_network,
            cloud=cloud,
            dns=dns,
            controller=controller,
            namespaces=namespaces,
        )
        if cloud.errors:
            print(f"[e2e] {cloud.name} errors (retried): {cloud.errors[-5:]}")
    print(f"[timing] e2e world torn down; {time.monotonic() - started:.1f}s in all")


def delete_namespaces(api: kubernetes.client.ApiClient, namespaces: set[str], timeout: float = 90) -> None:
    """Delete the namespaces and wait until they are gone (the namespace controller empties them;
    the PVCs of the StatefulSets wait for the PVC-protection stand-in)."""
    core = kubernetes.client.CoreV1Api(api)
    for name in sorted(namespaces):
        with contextlib.suppress(ApiException):
            core.delete_namespace(name)

    def gone() -> bool:
        remaining = []
        for name in namespaces:
            try:
                core.read_namespace(name)
                remaining.append(name)
            except ApiException as err:
                if err.status != 404:
                    raise
        return not remaining

    try:
        wait_for(gone, timeout=timeout, interval=0.5, what=f"namespaces {sorted(namespaces)} deleted")
    except AssertionError as err:
        states = {}
        for name in namespaces:
            with contextlib.suppress(ApiException):
                conditions = core.read_namespace(name).status.conditions or []
                states[name] = [c.message for c in conditions if c.status == "True"]
        raise AssertionError(f"{err}: {states}") from None


# ---------------------------------------------------------------------------------------- steps


@dataclass
class Installed:
    namespace: str
    docs: list[dict[str, Any]]
    pods: dict[str, dict[str, Any]]  # every pod of every StatefulSet, as stored

    def kafka_pods(self, settings: Settings) -> dict[str, dict[str, Any]]:
        return {
            name: pod
            for name, pod in self.pods.items()
            if any(image_family(c.get("image", ""), settings) for c in pod["spec"]["containers"])
        }


def kafka_container(pod: dict[str, Any], settings: Settings) -> dict[str, Any]:
    container: dict[str, Any] = next(
        c for c in pod["spec"]["containers"] if image_family(c.get("image", ""), settings)
    )
    return container


def install(
    world: World, render: str, namespace: str, opted_in: bool, docs: list[dict[str, Any]] | None = None
) -> Installed:
    """`helm install` of a stock render (or of `docs`, named `render`): its objects created
    unchanged; wait for every pod."""
    t0 = time.monotonic()
    world.namespaces.add(namespace)
    ensure_namespace(world.api, namespace, opted_in=opted_in)
    docs = load_render(render) if docs is None else docs
    created, skipped = apply_objects(world.api, docs, namespace)
    expected = {
        f"{s['metadata']['name']}-{i}" for s in statefulsets(docs) for i in range(s["spec"]["replicas"])
    }

    def all_pods() -> dict[str, dict[str, Any]] | None:
        pods = {p["metadata"]["name"]: p for p in list_objects(world.api, "pods", namespace)}
        return pods if expected <= set(pods) else None

    pods = wait_for(all_pods, timeout=120, interval=0.5, what=f"pods {sorted(expected)} in {namespace}")
    print(
        f"\n[install] {render} -> namespace {namespace} ({'opted in' if opted_in else 'NOT opted in'}): "
        f"{len(created)} objects created unchanged (skipped, no longer served: {skipped or 'none'}); "
        f"{len(expected)} pods created by the StatefulSet controller in {time.monotonic() - t0:.1f}s"
    )
    return Installed(namespace, docs, {name: pods[name] for name in sorted(expected)})


def wait_for_load_balancers(world: World, installed: Installed, brokers: list[str]) -> dict[str, Any]:
    """The controller's Service per broker, the cloud stand-in's address in its status, the DNS
    record of the external-dns stand-in, and the controller's pod annotation with that address."""
    t0 = time.monotonic()
    ns = installed.namespace

    def ready() -> dict[str, Any] | None:
        services = {s["metadata"]["name"]: s for s in list_objects(world.api, "services", ns)}
        balancers = {b.pod: b for b in world.cloud.in_namespace(ns)}
        pods = {p["metadata"]["name"]: p for p in list_objects(world.api, "pods", ns)}
        if not all(b in balancers for b in brokers):
            return None
        for pod in brokers:
            annotations = pods[pod]["metadata"].get("annotations") or {}
            if annotations.get(LB_ANNOTATION) != balancers[pod].address:
                return None
            # what the DNS server answers: the record the real external-dns wrote
            if world.dns.dns.a(f"{pod}.{ns}.{DOMAIN}") != [balancers[pod].address]:
                return None
        return {"services": services, "balancers": balancers, "pods": pods}

    try:
        found: dict[str, Any] = wait_for(ready, timeout=90, interval=0.5, what=f"load balancers of {brokers}")
    except AssertionError as err:
        raise AssertionError(
            f"{err}\ncloud stand-in errors: {world.cloud.errors[-5:]}\ncontroller log:\n{world.log_tails()}"
        ) from None
    print(f"[load balancers] in {time.monotonic() - t0:.1f}s after the pods:")
    for pod in brokers:
        balancer = found["balancers"][pod]
        service = found["services"][balancer.service]
        annotations = service["metadata"].get("annotations") or {}
        port = service["spec"]["ports"][0]
        print(
            f"  {pod}: Service {balancer.service} ({service['spec']['type']}, selector {service['spec']['selector']}, "
            f"port {port['port']} -> targetPort {port['targetPort']}), external-dns "
            f"{annotations.get('external-dns.alpha.kubernetes.io/hostname')} -> {balancer.address}, forwards "
            + ", ".join(f"{balancer.address}:{p} -> {ip}:{t}" for p, ip, t in balancer.forwards)
        )
    return found


def resolve_secret_env(container: dict[str, Any], docs: list[dict[str, Any]], name: str) -> str | None:
    for entry in container.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if entry["name"] == name and ref:
            return secret_data(docs, ref["name"])[ref["key"]]
    return None


def rewrite_render_namespace(
    config: BrokerConfig, render_namespace: str, namespace: str, known: set[str]
) -> list[kafkarun.Rewrite]:
    """Quorum addresses a render carries for the namespace it was rendered for (`helm template
    --namespace kafka`) name pods of THAT namespace; installed elsewhere, `helm install -n <ns>` would
    have rendered <ns>: rewritten to that, when the name then is one of this namespace's pods."""
    rewrites = []
    key = "controller.quorum.bootstrap.servers"
    value = config.properties.get(key)
    if value and render_namespace != namespace:
        old_part, new_part = f".{render_namespace}.svc.", f".{namespace}.svc."
        new = ",".join(
            replaced if (replaced := hp.replace(old_part, new_part)).rsplit(":", 1)[0] in known else hp
            for hp in value.split(",")
        )
        if new != value:
            config.properties[key] = new
            rewrites.append(kafkarun.Rewrite(config.pod, key, value, new))
    return rewrites


@dataclass
class Brokers:
    cluster: kafkarun.KafkaCluster
    configs: dict[str, BrokerConfig]
    extra_rewrites: list[kafkarun.Rewrite]
    zookeeper: kafkarun.ZooKeeper | None = None

    def stop(self) -> None:
        self.cluster.stop(graceful=False)
        if self.zookeeper is not None:
            self.zookeeper.stop()


def real_start(
    world: World, installed: Installed, dist: kafkarun.KafkaDist, config: BrokerConfig
) -> kafkarun.StartCommand:
    """The stored pod's own command, ending in the real kafka-server-start.sh of a distribution
    layout (tests/support/kafka-bin): volumes as directories, mount paths and tool paths mapped."""
    ns = installed.namespace
    bin_dir = kafkarun.distribution_layout(dist, world.workdir / ns / "kafka-dist")
    root = world.workdir / ns / "pods" / config.pod
    with pod_ip_for_downward_api(config.ip):
        argv, env, log = imagesim.real_start_command(
            copy.deepcopy(installed.pods[config.pod]), world.settings, installed.docs, root, bin_dir
        )
    if log.strip():
        print(f"  {config.pod}: init containers: {log.strip()}")
    return kafkarun.StartCommand(argv, env, root)


def start_brokers(world: World, installed: Installed, start_scripts: bool = False) -> Brokers:
    """One Kafka process per Kafka pod, from the pod as stored; prints what is rewritten.
    start_scripts: a pod whose broker runs kafka-server-start.sh runs its own command with the real
    script (else kafkarun starts kafka.Kafka with the properties the script would have read)."""
    t0 = time.monotonic()
    ns, docs = installed.namespace, installed.docs
    kafka_pods = installed.kafka_pods(world.settings)
    configs = {
        name: broker_config(pod, world.settings, docs, world.pod_network.ip(ns, name))
        for name, pod in kafka_pods.items()
    }
    render_ns = next((d["metadata"].get("namespace") for d in docs if d["metadata"].get("namespace")), ns)
    known = {n for c in configs.values() for n in c.dns_names}
    extra = [r for c in configs.values() for r in rewrite_render_namespace(c, render_ns, ns, known)]
    zk_mode = any("zookeeper.connect" in c.properties for c in configs.values())
    dist = world.dists["zk" if zk_mode else "kraft"]
    zookeeper = None
    if zk_mode:
        # One standalone ZooKeeper at the pod IP of the chart's first ZooKeeper pod stands in for the
        # chart's 3-node ensemble; the chart's `kafka-zookeeper` Service names resolve to it.
        zk_pod = next(n for n in installed.pods if n.startswith("kafka-zookeeper-"))
        zookeeper = kafkarun.ZooKeeper(
            dist,
            world.workdir / ns,
            ip=world.pod_network.ip(ns, zk_pod),
            port=2181,
            hostnames=service_dns_names("kafka-zookeeper", ns),
        )
    # bitnami: the KRaft cluster id and the controllers' directory ids come from the chart's Secret
    # (as its image formats storage with them); other charts: kafkarun picks them.
    cluster_id = next(
        (
            v
            for pod in kafka_pods.values()
            if (v := resolve_secret_env(kafka_container(pod, world.settings), docs, "KAFKA_KRAFT_CLUSTER_ID"))
        ),
        None,
    )
    nodes = []
    for name, config in configs.items():
        controller_only = config.properties.get("process.roles") == "controller"
        node = kafkarun.KafkaNode(
            name,
            config.ip,
            config.properties,
            hostnames=config.dns_names,
            heap="256m" if controller_only else "320m",
        )
        if start_scripts and config.flavor == "start-command":
            node.start = real_start(world, installed, dist, config)
        prepare = next(
            (
                c
                for c in kafka_pods[name]["spec"].get("initContainers") or []
                if c["name"] == "prepare-config"
            ),
            None,
        )
        if prepare is not None and "controller" in config.properties.get("process.roles", ""):
            ordinal = int(name.rsplit("-", 1)[1])
            dir_id = resolve_secret_env(prepare, docs, f"KAFKA_CONTROLLER_{ordinal}_DIR_ID")
            if dir_id:
                node.dir_id = dir_id
        nodes.append(node)
    cluster = kafkarun.KafkaCluster(
        dist, world.workdir / ns, nodes, hosts=world.cluster_view, zookeeper=zookeeper, cluster_id=cluster_id
    )
    brokers = Brokers(cluster, configs, extra, zookeeper)
    try:
        if zookeeper is not None:
            zookeeper.start()
        cluster.prepare()
        print(
            f"[brokers] {ns}: {len(nodes)} Kafka {dist.version} processes ({'ZooKeeper' if zk_mode else 'KRaft'} mode)"
        )
        for name, config in configs.items():
            advertised = config.properties.get("advertised.listeners", "(none: controller)")
            print(f"  {name} (pod IP {config.ip}, {config.flavor}): advertised.listeners={advertised}")
            if config.chart_steps:
                print(f"    chart init steps done here: {'; '.join(config.chart_steps)}")
        print(
            f"[rewrites] {ns}: the pod IP of each pod is its own loopback address (CNI stand-in); then only:"
        )
        for rewrite in [*extra, *cluster.rewrites]:
            print(f"  {rewrite}")
        if zookeeper is not None:
            print(
                f"  ZooKeeper: one standalone ZooKeeper {zookeeper.connect} for the chart's ensemble, as {zookeeper.hostnames[0]}"
            )
        for node in nodes:
            if node.start is not None:
                print(f"  {node.name}: its own command, run for real: {shlex.join(node.start.argv)}")
                print(
                    f"    and as the last overrides (JAVA_HOME/bin/java): {shlex.join(cluster.overrides(node))}"
                )
        t1 = time.monotonic()
        cluster.start(timeout=240)
        for node in nodes:
            if node.start is not None:
                print(f"  {node.name}: JVM environment set by the harness: {node.start.harness_env}")
    except BaseException:
        brokers.stop()
        raise
    print(
        f"[timing] {ns}: configs+format {t1 - t0:.1f}s, all {len(nodes)} processes up in {time.monotonic() - t1:.1f}s"
    )
    return brokers


def assert_no_unexpected_rewrites(brokers: Brokers, allowed: set[str]) -> None:
    keys = {r.key for r in [*brokers.extra_rewrites, *brokers.cluster.rewrites]}
    assert keys <= allowed, f"rewrote more than what cannot exist here: {sorted(keys - allowed)}"
    for rewrite in brokers.cluster.rewrites:
        if rewrite.key == "listeners":  # same listeners, same ports, only the bind host changed
            old = kafkarun.parse_listeners(rewrite.old or "")
            new = kafkarun.parse_listeners(rewrite.new)
            assert [(x.name, x.port) for x in old] == [(x.name, x.port) for x in new], rewrite


def roundtrip(world: World, bootstrap: str, topic: str, conf: dict[str, str]) -> dict[str, Any]:
    t0 = time.monotonic()
    answer = world.outside.run_client(
        {"bootstrap": bootstrap, "topic": topic, "messages": MESSAGES, "partitions": 3, "conf": conf}
    )
    assert "error" not in answer, answer.get("traceback") or answer
    print(
        f"[client outside] bootstrap {bootstrap}: metadata brokers {answer['brokers']}\n"
        f"  topic {topic}: {answer['partitions']}\n"
        f"  produced {answer['produced']}, delivered {answer['delivered']} "
        f"(per partition {answer['delivered_per_partition']}), consumed {answer['consumed']} "
        f"({answer['consumed_distinct']} distinct keys, {answer['duplicates']} duplicates, "
        f"{answer['missing']} missing)\n"
        f"  per-broker connections (librdkafka): producer {answer['stats']['producer']}, consumer {answer['stats']['consumer']}\n"
        f"[timing] client: {answer['timings']}, {time.monotonic() - t0:.1f}s with process start"
    )
    return answer


def assert_roundtrip(answer: dict[str, Any], expected_brokers: dict[str, str]) -> None:
    assert answer["brokers"] == expected_brokers, "metadata must carry every broker's external name"
    partitions = answer["partitions"]
    ids = sorted(int(i) for i in expected_brokers)
    assert len(partitions) == 3, partitions
    assert sorted(p["leader"] for p in partitions.values()) == ids, (
        f"a partition led by every broker: {partitions}"
    )
    assert all(sorted(p["replicas"]) == ids and sorted(p["isrs"]) == ids for p in partitions.values()), (
        partitions
    )
    assert answer["unflushed"] == 0 and not answer["delivery_errors"], answer["delivery_errors"]
    assert answer["delivered"] == MESSAGES
    assert answer["consumed"] == MESSAGES and answer["consumed_distinct"] == MESSAGES, "nothing lost"
    assert answer["duplicates"] == 0 and answer["missing"] == 0 and answer["wrong_values"] == 0
    assert not answer["consume_errors"], answer["consume_errors"]
    for role in ("producer", "consumer"):
        seen = answer["stats"][role]
        assert sorted(seen) == sorted(expected_brokers.values()), f"{role} talked to {sorted(seen)}"
        assert all(s["connects"] >= 1 for s in seen.values()), seen


def sasl_client_conf(installed: Installed, world: World) -> dict[str, str]:
    """bitnami: the client listener is SASL_PLAINTEXT with PLAIN (inherited by EXTERNAL); the user
    is the chart's first client user, its password the first of the chart's Secret."""
    pod = next(iter(installed.kafka_pods(world.settings).values()))
    env = {e["name"]: e.get("value") for e in kafka_container(pod, world.settings).get("env") or []}
    user = (env.get("KAFKA_CLIENT_USERS") or "").split(",")[0]
    password = secret_data(installed.docs, "kafka-user-passwords")["client-passwords"].split(",")[0]
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
    }


def exposed_brokers(installed: Installed) -> list[str]:
    return sorted(
        n
        for n, p in installed.pods.items()
        if (p["metadata"].get("labels") or {}).get(EXPOSED_LABEL) == "true"
    )


# ------------------------------------------------------------------------------------------ tests


def test_bitnami_kraft_brokers_reached_from_outside_through_their_own_load_balancers(world: World) -> None:
    t0 = time.monotonic()
    installed = install(world, "bitnami-kafka-32.4.4-brokers3", "kafka", opted_in=True)
    brokers = exposed_brokers(installed)
    assert brokers == ["kafka-broker-0", "kafka-broker-1", "kafka-broker-2"], (
        "controller-only pods stay untouched"
    )
    found = wait_for_load_balancers(world, installed, brokers)
    running = start_brokers(world, installed)
    try:
        assert_no_unexpected_rewrites(running, {"log.dir", "listeners"})
        expected = {running.configs[p].properties["node.id"]: f"{p}.kafka.{DOMAIN}:9094" for p in brokers}
        for pod in brokers:
            advertised = running.configs[pod].properties["advertised.listeners"]
            assert f"EXTERNAL://{pod}.kafka.{DOMAIN}:9094" in advertised.split(","), advertised
        answer = roundtrip(
            world, f"{brokers[0]}.kafka.{DOMAIN}:9094", "e2e-bitnami", sasl_client_conf(installed, world)
        )
        assert_roundtrip(answer, expected)
        balancers = found["balancers"]
        counts = {p: balancers[p].connections for p in brokers}
        print(f"[load balancers] connections through each broker's LB forwarder: {counts}")
        assert all(c > 0 for c in counts.values()), counts
    finally:
        running.stop()
        world.cloud.release("kafka")
    print(f"[timing] bitnami/kafka 32.4.4 end to end: {time.monotonic() - t0:.1f}s")


def test_namespace_not_opted_in_gives_an_outside_client_no_way_in(world: World) -> None:
    """Negative control: the same chart, unmutated, really running; an outside client has no name
    to bootstrap from, and even one that reaches a broker's pod IP gets in-cluster names only."""
    t0 = time.monotonic()
    ns = "kafka-optout"
    installed = install(world, "bitnami-kafka-32.4.4-brokers3", ns, opted_in=False)
    for name, pod in installed.pods.items():
        assert EXPOSED_LABEL not in (pod["metadata"].get("labels") or {}), name
        assert all(c["name"] != INIT_CONTAINER for c in pod["spec"].get("initContainers") or []), name
    running = start_brokers(world, installed)
    try:
        assert_no_unexpected_rewrites(
            running, {"log.dir", "listeners", "controller.quorum.bootstrap.servers"}
        )
        brokers = sorted(
            n for n, c in running.configs.items() if c.properties.get("process.roles") == "broker"
        )
        for broker in brokers:
            assert "EXTERNAL" not in running.configs[broker].properties["advertised.listeners"]
        # By now the controller has reconciled several times (resync 5 s): still no load balancer.
        lbs = [s for s in list_objects(world.api, "services", ns) if s["spec"].get("type") == "LoadBalancer"]
        assert lbs == [] and world.cloud.in_namespace(ns) == [], lbs
        published = world.dns.dns.published()
        assert not [n for n in published if n.endswith(f".{ns}.{DOMAIN}")], published
        client = running.configs[brokers[0]]
        client_port = next(
            x.port for x in kafkarun.parse_listeners(client.properties["listeners"]) if x.name == "CLIENT"
        )
        would_be = [f"{p}.{ns}.{DOMAIN}" for p in brokers]
        answer = world.outside.run_client(
            {
                "mode": "probe",
                "names": would_be,
                "reachable_bootstrap": f"{client.ip}:{client_port}",
                "topic": "e2e-optout",
                "timeout_ms": 8000,
                "conf": sasl_client_conf(installed, world),
            }
        )
        print(f"[negative control] outside client: {answer}")
        assert "error" not in answer, answer.get("traceback") or answer
        assert all(answer["resolves"][n] is None for n in would_be), "no DNS name outside for these brokers"
        hosts = [a.rsplit(":", 1)[0] for a in answer["brokers"].values()]
        assert len(hosts) == 3 and all(h.endswith(f".{ns}.svc.cluster.local") for h in hosts), hosts
        assert all(answer["resolves"][h] is None for h in hosts), "in-cluster names must not resolve outside"
        for host in hosts:  # ... while inside the cluster they do: the brokers use them
            assert socket.gethostbyname(host) == running.configs[host.split(".")[0]].ip
        assert answer["produce"] and answer["produce"] != ["ok"], answer["produce"]
    finally:
        running.stop()
    print(f"[timing] negative control: {time.monotonic() - t0:.1f}s")


def test_incubator_zookeeper_mode_brokers_reached_from_outside(world: World) -> None:
    t0 = time.monotonic()
    ns = "incubator"
    installed = install(world, "incubator-kafka-0.21.5-default", ns, opted_in=True)
    brokers = exposed_brokers(installed)
    assert brokers == ["kafka-0", "kafka-1", "kafka-2"]
    found = wait_for_load_balancers(world, installed, brokers)
    running = start_brokers(world, installed)
    try:
        assert_no_unexpected_rewrites(running, {"log.dirs", "listeners"})
        expected = {running.configs[p].properties["broker.id"]: f"{p}.{ns}.{DOMAIN}:9094" for p in brokers}
        answer = roundtrip(world, f"{brokers[0]}.{ns}.{DOMAIN}:9094", "e2e-incubator", {})
        assert_roundtrip(answer, expected)
        counts = {p: found["balancers"][p].connections for p in brokers}
        print(f"[load balancers] connections through each broker's LB forwarder: {counts}")
        assert all(c > 0 for c in counts.values()), counts
    finally:
        running.stop()
        world.cloud.release(ns)
    print(f"[timing] incubator/kafka 0.21.5 end to end: {time.monotonic() - t0:.1f}s")
