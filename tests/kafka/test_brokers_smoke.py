"""Smoke tests of tests/kafkarun.py: real Kafka brokers on loopback, reached by a
confluent-kafka client through advertised EXTERNAL DNS names that resolve only via the
test process's private /etc/hosts.

Needs: Java 17, the jars from tools/build-kafka.sh (run automatically; Maven Central
on a cold cache), root (mount namespace), confluent-kafka.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import kafkarun
from tests.support.kafkarun import KafkaCluster, KafkaNode, LoadBalancer, ZooKeeper
from tests.support.podfactory import load_render

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

N_MESSAGES = 1000


def ext_name(i: int) -> str:
    return f"kafka-{i}.kafka.kafka.example.com"


@pytest.fixture(scope="module")
def dists() -> dict[str, kafkarun.KafkaDist]:
    t = time.monotonic()
    d = kafkarun.ensure_dists()
    print(f"\n[timing] ensure_dists: {time.monotonic() - t:.1f}s -> {d}")
    return d


_outside: subprocess.Popen[bytes] | None = None  # a child still in the machine's mount namespace


@pytest.fixture(scope="module")
def hosts() -> Iterator[kafkarun.PrivateHosts]:
    global _outside
    ok, why = kafkarun.private_hosts_available()
    if not ok:
        pytest.skip(f"no private mount namespace here: {why}")
    if _outside is None and not kafkarun.private_hosts_entered():
        _outside = subprocess.Popen(["sleep", "600"])  # forked before the unshare
    yield kafkarun.enter_private_hosts()
    if _outside is not None:
        _outside.kill()
        _outside.wait()
        _outside = None


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def exercise(
    bootstrap: str,
    expected: dict[int, tuple[str, int]],
    extra: dict[str, str] | None = None,
    n_messages: int = N_MESSAGES,
) -> None:
    """Bootstrap via DNS names, check metadata, create a 3x3 topic, produce `n_messages` keyed
    messages with acks=all, consume them back: none lost, none duplicated."""
    N_MESSAGES = n_messages
    conf = {"bootstrap.servers": bootstrap, **(extra or {})}
    t0 = time.monotonic()
    admin = AdminClient(conf)
    md = admin.list_topics(timeout=30)
    got = {b.id: (b.host, b.port) for b in md.brokers.values()}
    print(f"[metadata] {got}")
    assert got == expected

    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    fut = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic]
    fut.result(timeout=60)
    # wait until every partition has a leader and 3 in-sync replicas
    deadline = time.monotonic() + 60
    while True:
        tmd = admin.list_topics(topic=topic, timeout=10).topics[topic]
        parts = tmd.partitions
        if (
            tmd.error is None
            and len(parts) == 3
            and all(p.leader >= 0 and len(p.isrs) == 3 for p in parts.values())
        ):
            break
        assert time.monotonic() < deadline, f"topic not ready: {tmd.error} {parts}"
        time.sleep(0.5)
    t1 = time.monotonic()

    producer = Producer({**conf, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    errors: list[object] = []
    delivered: list[int] = []

    def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg.partition())

    for i in range(N_MESSAGES):
        producer.produce(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not errors, (remaining, errors[:5])
    assert len(delivered) == N_MESSAGES
    assert set(delivered) == {0, 1, 2}, "keyed messages should spread over all 3 partitions"
    t2 = time.monotonic()

    consumer = Consumer(
        {**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    seen: dict[str, str] = {}
    received = 0  # more than seen: a message came twice
    deadline = time.monotonic() + 90
    try:
        while len(seen) < N_MESSAGES and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            seen[msg.key().decode()] = msg.value().decode()
            received += 1
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert len(seen) == received == N_MESSAGES
    assert all(seen[f"key-{i}"] == f"value-{i}" for i in range(N_MESSAGES))
    t3 = time.monotonic()
    print(f"[timing] client: metadata+topic {t1 - t0:.1f}s, produce {t2 - t1:.1f}s, consume {t3 - t2:.1f}s")


def show(cluster: KafkaCluster, started: float, t_prep: float) -> None:
    print("[rewrites]\n" + cluster.describe_rewrites())
    print(f"[timing] prepare+format {t_prep - started:.1f}s, start->all up {time.monotonic() - t_prep:.1f}s")


def timed_stop(cluster: KafkaCluster) -> None:
    t = time.monotonic()
    cluster.stop()
    print(f"[timing] graceful stop {time.monotonic() - t:.1f}s")


def run_and_exercise(cluster: KafkaCluster, started: float, bootstrap: int) -> None:
    """Prepare and start the three brokers, check that only data dirs and bind hosts were rewritten
    (voters and ZooKeeper resolve through the hosts file), and exercise them from outside,
    bootstrapping from broker `bootstrap`'s external name; the brokers are always stopped."""
    cluster.prepare()
    prepared = time.monotonic()
    try:
        cluster.start()
        show(cluster, started, prepared)
        assert {r.key for r in cluster.rewrites} == {"log.dirs", "listeners"}
        exercise(f"{ext_name(bootstrap)}:9094", {i: (ext_name(i), 9094) for i in range(3)})
    finally:
        timed_stop(cluster)


# ---------------------------------------------------------------------------
# cheap checks (no JVM): private hosts file, rewrite rules
# ---------------------------------------------------------------------------


def test_private_hosts(hosts, tmp_path) -> None:
    name = f"probe-{uuid.uuid4().hex[:6]}.kafka.example.com"
    ino = os.stat("/etc/hosts").st_ino
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(name, None)
    hosts.add(name, "127.0.0.77")
    assert socket.gethostbyname(name) == "127.0.0.77"  # this thread
    got: list[str] = []
    th = threading.Thread(target=lambda: got.append(socket.gethostbyname(name)))
    th.start()
    th.join()
    assert got == ["127.0.0.77"]  # a new thread
    out = subprocess.run(["getent", "hosts", name], capture_output=True, text=True).stdout
    assert out.split()[:1] == ["127.0.0.77"]  # a child process
    hosts.add(name, "127.0.0.78")  # change in place
    assert socket.gethostbyname(name) == "127.0.0.78"
    assert os.stat("/etc/hosts").st_ino == ino == os.stat(hosts.path).st_ino
    hosts.remove(name)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(name, None)
    # the machine's /etc/hosts, seen through a process outside this mount namespace
    if _outside is not None:
        hosts.add(name, "127.0.0.79")
        assert name in Path("/etc/hosts").read_text()
        assert name not in Path(f"/proc/{_outside.pid}/root/etc/hosts").read_text()
        hosts.remove(name)


def test_rewrite_rules(dists, tmp_path) -> None:
    """Without a private hosts file, names in voters / bootstrap servers /
    zookeeper.connect are rewritten to the nodes' IPs; advertised listeners never."""
    svc = "kafka-headless.kafka.svc.cluster.local"
    nodes = [
        KafkaNode(
            f"kafka-{i}",
            f"127.0.0.{11 + i}",
            hostnames=[f"kafka-{i}.{svc}"],
            props={
                "process.roles": "broker,controller",
                "node.id": str(i),
                "controller.quorum.voters": ",".join(f"{j}@kafka-{j}.{svc}:9093" for j in range(2)),
                "controller.quorum.bootstrap.servers": f"kafka-1.{svc}:9093",
                "listeners": "PLAINTEXT://:9092,CONTROLLER://[::]:9093",
                "advertised.listeners": f"PLAINTEXT://kafka-{i}.{svc}:9092",
                "log.dirs": "/a,/b",
            },
        )
        for i in range(2)
    ]
    c = KafkaCluster(dists["kraft"], tmp_path, nodes)
    rw = {(r.node, r.key): r.new for r in c.plan()}
    assert rw[("kafka-0", "listeners")] == "PLAINTEXT://127.0.0.11:9092,CONTROLLER://127.0.0.11:9093"
    assert rw[("kafka-1", "controller.quorum.voters")] == "0@127.0.0.11:9093,1@127.0.0.12:9093"
    assert rw[("kafka-1", "controller.quorum.bootstrap.servers")] == "127.0.0.12:9093"
    assert rw[("kafka-0", "log.dirs")] == f"{tmp_path}/kafka-0/data0,{tmp_path}/kafka-0/data1"
    assert ("kafka-0", "advertised.listeners") not in rw
    print("[rewrites]\n" + c.describe_rewrites())

    zk = ZooKeeper(dists["zk"], tmp_path, ip="127.0.0.2", port=2181, hostnames=["kafka-zookeeper"])
    zn = [
        KafkaNode(
            "kafka-0",
            "127.0.0.11",
            props={"broker.id": "0", "zookeeper.connect": "kafka-zookeeper:2181,other:2181/chroot"},
        )
    ]
    c = KafkaCluster(dists["zk"], tmp_path, zn, zookeeper=zk)
    rw = {(r.node, r.key): r.new for r in c.plan()}
    assert rw[("kafka-0", "zookeeper.connect")] == "127.0.0.2:2181/chroot"
    # cp-kafka style: no listeners property -> PLAINTEXT on port (9092)
    assert rw[("kafka-0", "listeners")] == "PLAINTEXT://127.0.0.11:9092"

    bad = [
        KafkaNode(
            "kafka-0",
            "127.0.0.11",
            props={
                "process.roles": "broker",
                "node.id": "0",
                "listeners": "PLAINTEXT://:9092",
                "controller.quorum.bootstrap.servers": "unknown-host:9093",
            },
        )
    ]
    with pytest.raises(ValueError, match="unknown-host"):
        KafkaCluster(dists["kraft"], tmp_path, bad).plan()


# ---------------------------------------------------------------------------
# KRaft, 3 combined broker+controller nodes, static voters, PLAINTEXT,
# EXTERNAL bound directly on the advertised port.
# ---------------------------------------------------------------------------


def test_kraft_combined_3(dists, hosts, workdir) -> None:
    ips = kafkarun.loopback_ips(3, start=11)
    svc = "kafka-headless.kafka.svc.cluster.local"
    voters = ",".join(f"{i}@kafka-{i}.{svc}:9093" for i in range(3))
    nodes = []
    for i, ip in enumerate(ips):
        nodes.append(
            KafkaNode(
                name=f"kafka-{i}",
                ip=ip,
                hostnames=[f"kafka-{i}.{svc}"],
                props={
                    "process.roles": "broker,controller",
                    "node.id": str(i),
                    "controller.quorum.voters": voters,
                    "listeners": "INTERNAL://:9092,CONTROLLER://:9093,EXTERNAL://:9094",
                    "advertised.listeners": (
                        f"INTERNAL://kafka-{i}.{svc}:9092,EXTERNAL://{ext_name(i)}:9094"
                    ),
                    "listener.security.protocol.map": (
                        "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT"
                    ),
                    "inter.broker.listener.name": "INTERNAL",
                    "controller.listener.names": "CONTROLLER",
                    "log.dirs": "/var/lib/kafka/data",
                    "offsets.topic.replication.factor": "3",
                    "transaction.state.log.replication.factor": "3",
                    "transaction.state.log.min.isr": "2",
                    "group.initial.rebalance.delay.ms": "0",
                },
            )
        )
    # the external names: what the webhook's DNS records will do
    hosts.update({ext_name(i): ip for i, ip in enumerate(ips)})
    t0 = time.monotonic()
    cluster = KafkaCluster(dists["kraft"], workdir, nodes, hosts=hosts)
    run_and_exercise(cluster, t0, bootstrap=0)
    print(f"[timing] total {time.monotonic() - t0:.1f}s")


# ---------------------------------------------------------------------------
# KRaft shaped like bitnami/kafka 32.4.4 brokers3: 3 controller-only + 3 broker-only
# pods, dynamic quorum (controller.quorum.bootstrap.servers + --initial-controllers),
# SASL_PLAINTEXT/PLAIN everywhere, EXTERNAL container port 9095 behind a per-broker
# "LoadBalancer" on its own IP, port 9094.
# ---------------------------------------------------------------------------


# server.properties of the two ConfigMaps of the bitnami/kafka 32.4.4 brokers3 render, read from
# the shared fixtures (chart data is never copied into this repo).
def _chart_properties(configmap: str) -> str:
    docs = load_render("bitnami-kafka-32.4.4-brokers3")
    data: str = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == configmap)[
        "data"
    ]["server.properties"]
    return data


BITNAMI_BROKER_PROPERTIES = _chart_properties("kafka-broker-configuration")
BITNAMI_CONTROLLER_PROPERTIES = _chart_properties("kafka-controller-configuration")
PASSWORDS = {
    "controller-password-placeholder": "ctrl-pw",
    "interbroker-password-placeholder": "ib-pw",
    "password-placeholder-0": "user1-pw",
}


def bitnami_props(text: str, node_id: int, fqdn: str) -> dict[str, str]:
    """What bitnami's prepare-config init container does: node.id, passwords,
    advertised-address-placeholder -> the pod's headless FQDN."""
    props = kafkarun.parse_properties(text)
    for k, v in props.items():
        for ph, pw in PASSWORDS.items():
            v = v.replace(ph, pw)
        props[k] = v.replace("advertised-address-placeholder", fqdn)
    props["node.id"] = str(node_id)
    return props


def add_external(props: dict[str, str], advertised: str, port: int = 9095) -> dict[str, str]:
    """Add an EXTERNAL listener the way the chart's own external access does
    (container port 9095, SASL_PLAINTEXT, PLAIN user1)."""
    p = dict(props)
    p["listeners"] += f",EXTERNAL://:{port}"
    p["advertised.listeners"] += f",EXTERNAL://{advertised}"
    p["listener.security.protocol.map"] += ",EXTERNAL:SASL_PLAINTEXT"
    p["listener.name.external.plain.sasl.jaas.config"] = p["listener.name.client.plain.sasl.jaas.config"]
    for m in ("scram-sha-256", "scram-sha-512"):
        p[f"listener.name.external.{m}.sasl.jaas.config"] = p[f"listener.name.client.{m}.sasl.jaas.config"]
    return p


def test_kraft_split_bitnami_shape(dists, hosts, workdir) -> None:
    ctrl_ips = kafkarun.loopback_ips(3, start=21)
    broker_ips = kafkarun.loopback_ips(3, start=11)
    lb_ips = kafkarun.loopback_ips(3, start=31)
    nodes = []
    for i, ip in enumerate(ctrl_ips):
        fqdn = f"kafka-controller-{i}.kafka-controller-headless.kafka.svc.cluster.local"
        props = bitnami_props(BITNAMI_CONTROLLER_PROPERTIES, i, fqdn)
        nodes.append(KafkaNode(f"kafka-controller-{i}", ip, props, hostnames=[fqdn], heap="256m"))
    for i, ip in enumerate(broker_ips):
        fqdn = f"kafka-broker-{i}.kafka-broker-headless.kafka.svc.cluster.local"
        props = bitnami_props(BITNAMI_BROKER_PROPERTIES, 100 + i, fqdn)  # KAFKA_MIN_ID=100 for brokers
        props = add_external(props, f"{ext_name(i)}:9094")
        nodes.append(KafkaNode(f"kafka-broker-{i}", ip, props, hostnames=[fqdn]))
    t0 = time.monotonic()
    cluster = KafkaCluster(dists["kraft"], workdir, nodes, hosts=hosts)
    cluster.prepare()
    t1 = time.monotonic()
    print("[format] --initial-controllers", cluster.format_commands["kafka-controller-0"][-1])
    lbs = [LoadBalancer((lb_ip, 9094), (b_ip, 9095)) for lb_ip, b_ip in zip(lb_ips, broker_ips, strict=False)]
    hosts.update({ext_name(i): lb_ip for i, lb_ip in enumerate(lb_ips)})
    try:
        for lb in lbs:
            lb.start()
        cluster.start()
        show(cluster, t0, t1)
        assert {r.key for r in cluster.rewrites} == {"log.dir", "listeners"}
        exercise(
            f"{ext_name(1)}:9094",
            {100 + i: (ext_name(i), 9094) for i in range(3)},
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "user1",
                "sasl.password": "user1-pw",
            },
        )
        assert all(lb.connections > 0 for lb in lbs), [lb.connections for lb in lbs]
    finally:
        timed_stop(cluster)
        for lb in lbs:
            lb.stop()
    print(f"[timing] total {time.monotonic() - t0:.1f}s")


# ---------------------------------------------------------------------------
# ZooKeeper mode (Kafka 3.9), shaped like incubator/kafka 0.21.5 (cp-kafka 5.0.1):
# zookeeper.connect=kafka-zookeeper:2181, listeners = advertised ones on 0.0.0.0.
# ---------------------------------------------------------------------------


def test_zookeeper_mode_3(dists, hosts, workdir) -> None:
    ips = kafkarun.loopback_ips(3, start=11)
    svc = "kafka-headless.kafka.svc.cluster.local"
    nodes = []
    for i, ip in enumerate(ips):
        nodes.append(
            KafkaNode(
                name=f"kafka-{i}",
                ip=ip,
                hostnames=[f"kafka-{i}.{svc}"],
                props={
                    "broker.id": str(i),
                    "zookeeper.connect": "kafka-zookeeper:2181",
                    "log.dirs": "/opt/kafka/data/logs",
                    "offsets.topic.replication.factor": "3",
                    "listeners": "PLAINTEXT://0.0.0.0:9092,EXTERNAL://0.0.0.0:9094",
                    "advertised.listeners": f"PLAINTEXT://kafka-{i}.{svc}:9092,EXTERNAL://{ext_name(i)}:9094",
                    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
                    "inter.broker.listener.name": "PLAINTEXT",
                    "group.initial.rebalance.delay.ms": "0",
                },
            )
        )
    t0 = time.monotonic()
    zk = ZooKeeper(dists["zk"], workdir, ip="127.0.0.2", port=2181, hostnames=["kafka-zookeeper"])
    hosts.update({ext_name(i): ip for i, ip in enumerate(ips)})
    cluster = KafkaCluster(dists["zk"], workdir, nodes, hosts=hosts, zookeeper=zk)
    with zk:
        t_zk = time.monotonic()
        print(f"[timing] zookeeper up {t_zk - t0:.1f}s")
        run_and_exercise(cluster, t0, bootstrap=2)
    print(f"[timing] total {time.monotonic() - t0:.1f}s")
