"""Encrypted external listeners end to end (issue 16): real cert-manager, real Kafka, a real client that
verifies the brokers' names.

The bitnami/kafka 32.4.4 brokers3 chart (SASL_PLAINTEXT client listener, prepared-file flavor) in
KRaft: its brokers' server.properties are what the chart's own init container prepares, then what
kafka-expose's init container makes of it: the very script the webhook puts in the pod, run with the
very env it sets (tls.mode cert-manager). The Certificate kafka-expose plans for the StatefulSet is
issued by cert-manager v1.11.5 on the test control plane from a CA ClusterIssuer; its Secret's
files are what the kubelet would mount at /kafka-expose/tls (that one path is the only rewrite).

The outside client (librdkafka) trusts only the issuer's CA, with hostname verification on
(`ssl.endpoint.identification.algorithm=https`), bootstraps through the bootstrap name, and produces
and consumes 10,000 messages through every broker. Negative controls: the same client trusting
another CA is refused, and reaching a broker by an address its certificate does not name fails
hostname verification. Renewal: the Certificate made short-lived is renewed by cert-manager, each
broker is restarted one at a time (what the controller's eviction does), each then serves the new
serial, and a producer sending all along loses and duplicates nothing.
"""

from __future__ import annotations

import copy
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client

from tests.kafka.test_brokers_smoke import (
    BITNAMI_BROKER_PROPERTIES,
    BITNAMI_CONTROLLER_PROPERTIES,
    bitnami_props,
    exercise,
    show,
    timed_stop,
)
from tests.support import certmanager, kafkarun
from tests.support.controlplane import ControlPlane, wait_for
from tests.support.expectations import own_manifest
from tests.support.imagesim import container_env, evaluate
from tests.support.kafkarun import KafkaCluster, KafkaNode, LoadBalancer
from tests.support.podfactory import load_render, pod_from_statefulset, statefulsets
from tests.support.tlsutil import CA
from webhook.core import mutate
from webhook.core.certificates import MOUNT_PATH, planned_objects
from webhook.core.flavors import INIT_CONTAINER
from webhook.core.settings import parse_settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import (  # noqa: E402
    Consumer,
    KafkaException,
    Producer,
)
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

NS = "kafka"
N_MESSAGES = 10_000
SETTINGS = parse_settings(
    {
        "domain": "kafka.example.com",
        "bootstrapHostTemplate": "{statefulset}.{namespace}.{domain}",
        "tls": {"mode": "cert-manager", "issuerRef": {"name": certmanager.CA_ISSUER}},
    }
)
SASL = {"sasl.mechanism": "PLAIN", "sasl.username": "user1", "sasl.password": "user1-pw"}


def ext_name(i: int) -> str:
    return f"kafka-broker-{i}.{NS}.kafka.example.com"


BOOTSTRAP = f"kafka-broker.{NS}.kafka.example.com"


@pytest.fixture(scope="module")
def issuer(control_plane: ControlPlane) -> Iterator[tuple[client.ApiClient, bytes]]:
    """cert-manager running with the CA ClusterIssuer; (an admin client, the CA's PEM)."""
    with certmanager.running_cert_manager(control_plane), closing(control_plane.api_client()) as api:
        ca = certmanager.bootstrap_ca_issuer(api)
        core = client.CoreV1Api(api)
        if NS not in {n.metadata.name for n in core.list_namespace().items}:
            core.create_namespace({"metadata": {"name": NS}})
        yield api, ca


def issue(api: client.ApiClient, cert: dict[str, Any], mount: Path) -> Path:
    """Apply a Certificate, wait until cert-manager issued it, write its Secret's files to `mount`
    (what the kubelet mounts)."""
    certmanager.apply(api, cert)
    certmanager.wait_certificate_ready(api, NS, cert["metadata"]["name"])
    for key, value in certmanager.secret_data(api, NS, cert["spec"]["secretName"]).items():
        (mount / key).write_bytes(value)
    return mount


@pytest.fixture(scope="module")
def issued(
    issuer: tuple[client.ApiClient, bytes], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, bytes]:
    """The bitnami broker StatefulSet's Certificate issued by cert-manager; (its Secret as mounted, the CA)."""
    api, ca = issuer
    sts = next(
        s
        for s in statefulsets(load_render("bitnami-kafka-32.4.4-brokers3"))
        if s["metadata"]["name"] == "kafka-broker"
    )
    [cert] = planned_objects(mutate(sts, SETTINGS, NS).plans, SETTINGS)
    return issue(api, cert, tmp_path_factory.mktemp("kafka-expose-tls")), ca


def broker_properties(ordinal: int, mount: Path, workdir: Path) -> tuple[dict[str, str], int]:
    """(server.properties as the broker starts with it, the external listener's container port)."""
    docs = load_render("bitnami-kafka-32.4.4-brokers3")
    sts = copy.deepcopy(next(s for s in statefulsets(docs) if s["metadata"]["name"] == "kafka-broker"))
    pod = mutate(pod_from_statefulset(sts, ordinal, NS), SETTINGS, NS).result
    fqdn = f"kafka-broker-{ordinal}.kafka-broker-headless.{NS}.svc.cluster.local"
    prepared = bitnami_props(BITNAMI_BROKER_PROPERTIES, 100 + ordinal, fqdn)  # the chart's init container
    path = workdir / f"server-{ordinal}.properties"
    path.write_text(kafkarun.format_properties(prepared))
    [ours] = [c for c in pod["spec"]["initContainers"] if c["name"] == INIT_CONTAINER]
    env = {**container_env(pod, ours), "KAFKAEXPOSE_PROPERTIES": str(path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(ours["command"], env=env, capture_output=True, text=True, check=True)
    props = kafkarun.parse_properties(path.read_text())
    assert props["listener.security.protocol.map"].endswith("EXTERNAL:SASL_SSL"), done.stdout + done.stderr
    props = {k: v.replace(MOUNT_PATH, str(mount)) for k, v in props.items()}  # the kubelet's mount
    return props, int(env["KAFKAEXPOSE_CONTAINER_PORT"])


def test_an_outside_client_verifies_every_broker_and_moves_10000_messages(
    cluster_view: kafkarun.PrivateHosts,
    kafka_dists: dict[str, kafkarun.KafkaDist],
    issuer: tuple[client.ApiClient, bytes],
    issued: tuple[Path, bytes],
    tmp_path: Path,
) -> None:
    mount, ca = issued
    hosts = cluster_view
    ctrl_ips = kafkarun.loopback_ips(3, start=121)
    broker_ips = kafkarun.loopback_ips(3, start=111)
    lb_ips = kafkarun.loopback_ips(3, start=131)
    nodes = []
    for i, ip in enumerate(ctrl_ips):
        fqdn = f"kafka-controller-{i}.kafka-controller-headless.{NS}.svc.cluster.local"
        props = bitnami_props(BITNAMI_CONTROLLER_PROPERTIES, i, fqdn)
        nodes.append(KafkaNode(f"kafka-controller-{i}", ip, props, hostnames=[fqdn], heap="256m"))
    ports = []
    for i, ip in enumerate(broker_ips):
        fqdn = f"kafka-broker-{i}.kafka-broker-headless.{NS}.svc.cluster.local"
        props, port = broker_properties(i, mount, tmp_path)
        ports.append(port)
        nodes.append(KafkaNode(f"kafka-broker-{i}", ip, props, hostnames=[fqdn]))
    started = time.monotonic()
    cluster = KafkaCluster(kafka_dists["kraft"], tmp_path / "cluster", nodes, hosts=hosts)
    cluster.prepare()
    prepared = time.monotonic()
    lbs = [LoadBalancer((lb, 9094), (b, p)) for lb, b, p in zip(lb_ips, broker_ips, ports, strict=True)]
    hosts.update({ext_name(i): lb for i, lb in enumerate(lb_ips)})
    hosts.add(BOOTSTRAP, lb_ips[1])  # the bootstrap name: any broker's load balancer
    ca_file = tmp_path / "issuer-ca.crt"
    ca_file.write_bytes(ca)
    verified = {
        "security.protocol": "SASL_SSL",
        **SASL,
        "ssl.ca.location": str(ca_file),
        "ssl.endpoint.identification.algorithm": "https",
    }
    try:
        for lb in lbs:
            lb.start()
        cluster.start()
        show(cluster, started, prepared)
        exercise(f"{BOOTSTRAP}:9094", {100 + i: (ext_name(i), 9094) for i in range(3)}, verified, N_MESSAGES)
        assert all(lb.connections > 0 for lb in lbs), [lb.connections for lb in lbs]

        # Negative controls: another CA is refused; an address the certificate does not name fails
        # hostname verification (the same address with verification off gets through).
        other_ca = tmp_path / "other-ca.crt"
        other_ca.write_bytes(CA(f"not-the-issuer-{uuid.uuid4().hex[:6]}").cert_pem)
        refused(f"{BOOTSTRAP}:9094", {**verified, "ssl.ca.location": str(other_ca)})
        refused(f"{lb_ips[0]}:9094", verified)
        accepted = AdminClient(
            {
                "bootstrap.servers": f"{lb_ips[0]}:9094",
                **verified,
                "ssl.endpoint.identification.algorithm": "none",
            }
        )
        assert accepted.list_topics(timeout=30).brokers

        # Renewal: a short-lived certificate, renewed by cert-manager; each broker restarted as the
        # controller's eviction does, one at a time; a producer sends all along and loses nothing.
        renew_across_restarts(issuer, cluster, lb_ips, mount, verified)
    finally:
        timed_stop(cluster)
        for lb in lbs:
            lb.stop()


SHORT = SETTINGS.model_copy(
    update={"tls": SETTINGS.tls.model_copy(update={"duration": "90s", "renew_before": "60s"})}
)


def served_serial(ip: str, name: str, ca_file: str) -> int:
    """The serial of the certificate a broker serves on its external listener (hostname checked)."""
    context = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection((ip, 9094), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def renew_across_restarts(
    issuer: tuple[client.ApiClient, bytes],
    cluster: KafkaCluster,
    lb_ips: list[str],
    mount: Path,
    conf: dict[str, str],
) -> None:
    api, _ca = issuer
    ca_file = conf["ssl.ca.location"]
    old = {served_serial(ip, ext_name(i), ca_file) for i, ip in enumerate(lb_ips)}
    assert len(old) == 1
    topic = f"renewal-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": f"{BOOTSTRAP}:9094", **conf})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic].result(timeout=60)
    producer = Producer(
        {"bootstrap.servers": f"{BOOTSTRAP}:9094", **conf, "acks": "all", "enable.idempotence": True}
    )
    delivered: list[str] = []
    errors: list[object] = []
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():

            def done(err: object, msg: Any) -> None:
                (errors.append(err) if err is not None else delivered.append(msg.key().decode()))

            producer.produce(topic, key=f"k-{i}".encode(), value=b"v", on_delivery=done)
            producer.poll(0.01)
            i += 1
        producer.flush(60)

    sender = threading.Thread(target=produce, daemon=True)
    sender.start()
    [cert] = planned_objects(mutate(statefulset("kafka-broker"), SHORT, NS).plans, SHORT)
    secret = cert["spec"]["secretName"]
    first = certmanager.secret_data(api, NS, secret)["tls.crt"]
    certmanager.apply(api, cert)
    reissued = certmanager.wait_secret_changed(api, NS, secret, "tls.crt", first, timeout=120)
    renewed = certmanager.wait_secret_changed(api, NS, secret, "tls.crt", reissued, timeout=120)  # by time
    for key, value in certmanager.secret_data(api, NS, secret).items():
        (mount / key).write_bytes(value)  # the kubelet refreshes the mounted Secret
    new = x509.load_pem_x509_certificate(renewed).serial_number
    for i, ip in enumerate(lb_ips):
        cluster.restart_node(f"kafka-broker-{i}")
        assert served_serial(ip, ext_name(i), ca_file) == new
        in_sync = lambda: all(  # noqa: E731
            len(p.isrs) == 3
            for p in admin.list_topics(topic=topic, timeout=10).topics[topic].partitions.values()
        )
        wait_for(in_sync, 90, 0.5, f"{topic} in sync again after kafka-broker-{i}")
    time.sleep(2)
    stop.set()
    sender.join(90)
    assert not errors, errors[:5]
    consumer = Consumer(
        {
            "bootstrap.servers": f"{BOOTSTRAP}:9094",
            **conf,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while len(seen) < len(delivered) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                seen.append(msg.key().decode())
    finally:
        consumer.close()
    print(f"[renewal] serial {old} -> {new}; {len(delivered)} messages sent across the restarts")
    assert len(delivered) > 0 and sorted(seen) == sorted(delivered) and len(set(seen)) == len(seen)


def statefulset(name: str) -> dict[str, Any]:
    return next(
        s for s in statefulsets(load_render("bitnami-kafka-32.4.4-brokers3")) if s["metadata"]["name"] == name
    )


def refused(bootstrap: str, conf: dict[str, str]) -> None:
    """The handshake fails (librdkafka's retries of it are not logged: they are the point)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **conf, "log_level": "0"})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=15)


# --------------------------------------------------------- clientAuth: required, an env-configured chart

MTLS = SETTINGS.model_copy(update={"tls": SETTINGS.tls.model_copy(update={"client_auth": "required"})})


def test_client_auth_required_refuses_a_client_without_the_issuers_certificate(
    cluster_view: kafkarun.PrivateHosts,
    kafka_dists: dict[str, kafkarun.KafkaDist],
    issuer: tuple[client.ApiClient, bytes],
    tmp_path: Path,
) -> None:
    """apache/kafka configured by env only (tests/manifests/apache-kraft-env.yaml, KRaft combined): the
    env flavor's SSL listener with `ssl.client.auth=required` trusting the issuer's CA. A client with a
    certificate from the issuer moves 10,000 messages; one without is refused."""
    api, ca = issuer
    hosts = cluster_view
    [sts] = [d for d in own_manifest("apache-kraft-env.yaml") if d.get("kind") == "StatefulSet"]
    [cert] = planned_objects(mutate(sts, MTLS, NS).plans, MTLS, replicas=3)
    (tmp_path / "mount").mkdir()
    (tmp_path / "client").mkdir()
    mount = issue(api, cert, tmp_path / "mount")
    outside = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "outside-client", "namespace": NS},
        "spec": {
            "secretName": "outside-client",
            "commonName": "outside-client",
            "usages": ["client auth", "digital signature", "key encipherment"],
            "privateKey": {"algorithm": "RSA", "size": 2048, "encoding": "PKCS8"},
            "issuerRef": {"name": certmanager.CA_ISSUER, "kind": "ClusterIssuer", "group": "cert-manager.io"},
        },
    }
    client_files = issue(api, outside, tmp_path / "client")

    ips = kafkarun.loopback_ips(3, start=141)
    svc = f"kafka-headless.{NS}.svc"
    voters = ",".join(f"{i}@kafka-{i}.{svc}:9093" for i in range(3))
    nodes = []
    for i, ip in enumerate(ips):
        pod = mutate(pod_from_statefulset(sts, i, NS), MTLS, NS).result
        props = {k: v.replace(MOUNT_PATH, str(mount)) for k, v in evaluate(pod, MTLS).properties.items()}
        assert props["listener.security.protocol.map"].endswith("EXTERNAL:SSL")
        assert props["listener.name.external.ssl.client.auth"] == "required"
        # What the chart would also set and the manifest leaves to the image: identity, quorum, storage.
        props |= {
            "node.id": str(i),
            "controller.quorum.voters": voters,
            "log.dirs": "/var/lib/kafka/data",
            "offsets.topic.replication.factor": "3",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
            "group.initial.rebalance.delay.ms": "0",
        }
        nodes.append(KafkaNode(f"kafka-{i}", ip, props, hostnames=[f"kafka-{i}.{svc}"]))
    hosts.update({f"kafka-{i}.{NS}.kafka.example.com": ip for i, ip in enumerate(ips)})
    ca_file = tmp_path / "issuer-ca.crt"
    ca_file.write_bytes(ca)
    verified = {
        "security.protocol": "SSL",
        "ssl.ca.location": str(ca_file),
        "ssl.endpoint.identification.algorithm": "https",
    }
    with_cert = {
        **verified,
        "ssl.certificate.location": str(client_files / "tls.crt"),
        "ssl.key.location": str(client_files / "tls.key"),
    }
    started = time.monotonic()
    cluster = KafkaCluster(kafka_dists["kraft"], tmp_path / "cluster", nodes, hosts=hosts)
    cluster.prepare()
    prepared = time.monotonic()
    try:
        cluster.start()
        show(cluster, started, prepared)
        bootstrap = f"kafka-0.{NS}.kafka.example.com:9094"
        refused(bootstrap, verified)
        exercise(
            bootstrap,
            {i: (f"kafka-{i}.{NS}.kafka.example.com", 9094) for i in range(3)},
            with_cert,
            N_MESSAGES,
        )
    finally:
        timed_stop(cluster)
