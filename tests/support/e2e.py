"""The end-to-end tier's pieces (tests/kafka/test_e2e.py): what a cloud gives a cluster, stood in for
on this machine, and the step from a broker pod AS STORED by the API server to a real Kafka process.

Stand-ins (each one is named so, and does only what its real counterpart does):

* `PodNetworkStandIn`, for the CNI: every pod gets its own loopback address as its pod IP. The
  kubelet stand-in (tests/controlplane.py) reports 127.0.0.1 for every pod, so the pod IP used
  wherever a pod's IP matters (its `status.podIP` env, the address its listeners bind, the
  endpoint behind its Services, its cluster DNS names) comes from here.
* `ClusterDnsStandIn`, for the cluster DNS: `<hostname>.<subdomain>.<ns>.svc.cluster.local` of a
  pod behind a headless Service (and any Service name a test names) -> the pod IP, written to the
  test process's private /etc/hosts (tests/kafkarun.py `enter_private_hosts`), which the brokers
  inherit. Only the brokers and the test process see it: it is the view from INSIDE the cluster.
* `CloudLoadBalancerStandIn`, for the cloud's load-balancer controller: watches Services of type
  LoadBalancer in the test's namespaces, gives each one a distinct loopback address in
  `status.loadBalancer.ingress`, and forwards every port of the Service at that address through
  the Service's EndpointSlices (written by the real EndpointSlice controller), as kube-proxy
  routes: the one ready endpoint's pod and the port the slice names for that Service port. A
  wrong targetPort or selector leaves the broker unreachable.
* external-dns and the DNS server are NOT stood in for: the real external-dns writes the records
  into a real CoreDNS (tests/support/ecosystem.py).
* `OutsideView`: a client outside the cluster, whose only resolver is that DNS server (its own
  /etc/resolv.conf and an /etc/hosts with only localhost, bind-mounted inside `unshare --mount`);
  the client is `python -m tests.support.e2e client ...` (confluent-kafka), which prints one JSON
  line.

Never is the machine's /etc/hosts edited.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STS_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
CLUSTER_DOMAIN = "cluster.local"


def _log(msg: str) -> None:
    print(f"[e2e] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------- API


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A kubernetes-client call's answer as the API server sent it (plain dicts, no model classes)."""
    return json.loads(call(*args, _preload_content=False, **kwargs).data)


def list_objects(
    api: Any, kind: str, namespace: str, label_selector: str | None = None
) -> list[dict[str, Any]]:
    import kubernetes.client

    core = kubernetes.client.CoreV1Api(api)
    calls = {"pods": core.list_namespaced_pod, "services": core.list_namespaced_service}
    kwargs = {"label_selector": label_selector} if label_selector else {}
    items: list[dict[str, Any]] = raw(calls[kind], namespace, **kwargs)["items"]
    return items


def selector_string(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


# ------------------------------------------------------------------------------------ pod network


class PodNetworkStandIn:
    """STAND-IN for the CNI: `ip(namespace, pod)` is that pod's own loopback address, `<prefix><n>`
    with n counting up from `start` in the order pods are first asked for (thread-safe, stable)."""

    def __init__(self, prefix: str = "127.0.1.", start: int = 10) -> None:
        self.prefix, self.next = prefix, start
        self.assigned: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def ip(self, namespace: str, pod: str) -> str:
        with self._lock:
            key = (namespace, pod)
            if key not in self.assigned:
                if self.next > 254:
                    raise RuntimeError(f"pod network {self.prefix}0/24 exhausted")
                self.assigned[key] = f"{self.prefix}{self.next}"
                self.next += 1
            return self.assigned[key]


def pod_dns_names(pod: Mapping[str, Any]) -> list[str]:
    """The cluster DNS names of a pod: `<hostname>.<subdomain>.<ns>.svc.<domain>` when it has a
    hostname and a subdomain (a StatefulSet pod behind its headless Service)."""
    spec, meta = pod.get("spec") or {}, pod["metadata"]
    hostname, subdomain = spec.get("hostname"), spec.get("subdomain")
    if not hostname or not subdomain:
        return []
    ns = meta["namespace"]
    return [f"{hostname}.{subdomain}.{ns}.svc.{CLUSTER_DOMAIN}", f"{hostname}.{subdomain}.{ns}.svc"]


def service_dns_names(service: str, namespace: str) -> list[str]:
    """A Service's names as a pod of the same namespace resolves them (search path)."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}",
    ]


#: The pod IP the kubelet stand-in reports for pods it binds (`bound_node_agent`): TEST-NET-1
#: (RFC 5737), documentation only, never a target. The API server refuses loopback addresses in
#: EndpointSlices; nothing connects to it (the LB stand-in maps an endpoint's pod to its address on
#: the pod network stand-in).
STAND_IN_POD_IP = "192.0.2.10"


def bound_node_agent(control_plane: Any, namespaces: Sequence[str], node: str) -> Any:
    """A kubelet stand-in (tests/support/controlplane.py) for `namespaces` that binds their pods to
    the Node `node`: the EndpointSlice controller publishes only pods on a known Node with a
    non-loopback IP (and the agent then finishes their deletions, as a kubelet does). Started."""
    from tests.support.controlplane import NodeAgentStandIn

    return NodeAgentStandIn(control_plane, namespaces, node_name=node, pod_ip=STAND_IN_POD_IP).start()


# ---------------------------------------------------------------------------------- cloud LB


@dataclass
class ServiceLoadBalancer:
    namespace: str
    service: str
    address: str
    pod: str
    forwards: list[tuple[int, str, int]] = field(default_factory=list)  # (port, pod ip, target port)
    forwarders: list[Any] = field(default_factory=list)  # kafkarun.LoadBalancer

    @property
    def connections(self) -> int:
        return sum(f.connections for f in self.forwarders)


class _Poller:
    """A background loop calling `step()` every `interval` s until stopped; errors are kept."""

    name = "poller"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def step(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self.step()
            except Exception as err:  # keep going; the test reads self.errors
                self.errors.append(f"{type(err).__name__}: {err}")
                if len(self.errors) > 50:
                    del self.errors[:25]
            self._stop.wait(self.interval)

    def sync(self) -> None:
        """Run one step now (from the caller's thread)."""
        with self._lock:
            self.step()

    def start(self) -> _Poller:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


class CloudLoadBalancerStandIn(_Poller):
    """STAND-IN for the cloud's load-balancer controller (not part of kafka-expose).

    For every Service of type LoadBalancer in `namespaces` (a set the test may add to) whose
    EndpointSlices (`kubernetes.io/service-name`, written by the real EndpointSlice controller of
    kube-controller-manager) have exactly one ready endpoint: take the next address of `pool`,
    write it to `status.loadBalancer.ingress` (as cloud controllers do), and forward `address:port`
    to that endpoint's pod IP and the port the EndpointSlice gives for the Service port (named
    target ports resolved by the EndpointSlice controller, as kube-proxy reads them). The pod IP
    comes from the pod network stand-in (the kubelet stand-in reports one address for every pod),
    found by the endpoint's `targetRef`. Nothing of kafka-expose is read. A Service that goes away
    loses its forwarders; `readdress()` moves a load balancer to a new address, as a cloud may.
    """

    name = "cloud-lb-stand-in"

    def __init__(
        self,
        api: Any,
        namespaces: set[str],
        pool: Iterator[str],
        pod_network: PodNetworkStandIn,
        interval: float = 0.3,
    ) -> None:
        super().__init__(interval)
        self.api, self.namespaces, self.pool, self.pod_network = api, namespaces, pool, pod_network
        self.balancers: dict[tuple[str, str], ServiceLoadBalancer] = {}

    def _endpoint(self, namespace: str, service: Mapping[str, Any]) -> tuple[str, dict[str, int]] | None:
        """(pod name, {service port name: endpoint port}) of the Service's one ready endpoint."""
        import kubernetes.client

        discovery = kubernetes.client.DiscoveryV1Api(self.api)
        slices = raw(
            discovery.list_namespaced_endpoint_slice,
            namespace,
            label_selector=f"kubernetes.io/service-name={service['metadata']['name']}",
        )["items"]
        pods: set[str] = set()
        ports: dict[str, int] = {}
        for endpoint_slice in slices:
            for endpoint in endpoint_slice.get("endpoints") or []:
                ref = endpoint.get("targetRef") or {}
                if (endpoint.get("conditions") or {}).get("ready") and ref.get("kind") == "Pod":
                    pods.add(ref["name"])
            for port in endpoint_slice.get("ports") or []:
                ports[port.get("name") or ""] = int(port["port"])
        if len(pods) != 1:
            return None  # no endpoint yet (or several: not what this stand-in serves)
        return pods.pop(), ports

    def step(self) -> None:
        for namespace in sorted(self.namespaces):
            services = {s["metadata"]["name"]: s for s in list_objects(self.api, "services", namespace)}
            for key in [k for k in self.balancers if k[0] == namespace and k[1] not in services]:
                self._drop(key, "its Service is gone")
            for name, service in sorted(services.items()):
                if (service.get("spec") or {}).get("type") != "LoadBalancer" or (
                    namespace,
                    name,
                ) in self.balancers:
                    continue
                found = self._endpoint(namespace, service)
                if found is not None:
                    self._serve(namespace, service, found[0], found[1], next(self.pool))

    def _serve(
        self, namespace: str, service: Mapping[str, Any], pod: str, ports: Mapping[str, int], address: str
    ) -> None:
        import kubernetes.client

        from tests.support import kafkarun

        meta = service["metadata"]
        pod_ip = self.pod_network.ip(namespace, pod)
        balancer = ServiceLoadBalancer(namespace, meta["name"], address, pod)
        for port in service["spec"].get("ports") or []:
            target = ports.get(port.get("name") or "")
            if target is None:
                continue  # the EndpointSlice has no such port (no pod port of that name)
            forwarder = kafkarun.LoadBalancer((address, int(port["port"])), (pod_ip, target)).start()
            balancer.forwards.append((int(port["port"]), pod_ip, target))
            balancer.forwarders.append(forwarder)
        body = {"status": {"loadBalancer": {"ingress": [{"ip": address}]}}}
        kubernetes.client.CoreV1Api(self.api).patch_namespaced_service_status(meta["name"], namespace, body)
        self.balancers[(namespace, meta["name"])] = balancer
        forwards = ", ".join(f"{address}:{p} -> {ip}:{t}" for p, ip, t in balancer.forwards)
        _log(f"cloud-lb-stand-in: {namespace}/{meta['name']} gets {address} ({forwards})")

    def _drop(self, key: tuple[str, str], why: str) -> None:
        balancer = self.balancers.pop(key)
        for forwarder in balancer.forwarders:
            forwarder.stop()
        _log(f"cloud-lb-stand-in: {key[0]}/{key[1]} released {balancer.address} ({why})")

    def readdress(self, namespace: str, service: str) -> str:
        """Move one load balancer to the next address of the pool (a cloud re-creating it); the new one."""
        import kubernetes.client

        with self._lock:
            stored = raw(kubernetes.client.CoreV1Api(self.api).read_namespaced_service, service, namespace)
            found = self._endpoint(namespace, stored)
            if found is None:
                raise LookupError(f"{namespace}/{service} has no single ready endpoint")
            if (namespace, service) in self.balancers:
                self._drop((namespace, service), "moving")
            address = next(self.pool)
            self._serve(namespace, stored, found[0], found[1], address)
            return address

    def in_namespace(self, namespace: str) -> list[ServiceLoadBalancer]:
        with self._lock:
            return [b for (ns, _), b in sorted(self.balancers.items()) if ns == namespace]

    def release(self, namespace: str) -> None:
        """Stop the forwarders of one namespace's load balancers (their Services are going away)."""
        with self._lock:
            for key in [k for k in self.balancers if k[0] == namespace]:
                self._drop(key, "released")

    def stop(self) -> None:
        super().stop()
        for key in list(self.balancers):
            self._drop(key, "stopped")


# -------------------------------------------------------------------------------------- outside view


class OutsideView:
    """Name resolution of a client outside the cluster: the real DNS server external-dns writes to
    (tests/support/ecosystem.py) is its only resolver, in a mount namespace of its own whose
    /etc/resolv.conf names that server and whose /etc/hosts names only localhost."""

    def __init__(self, directory: Path, dns_server: str) -> None:
        self.directory, self.dns_server = directory, dns_server

    def argv(self, *words: str) -> list[str]:
        from tests.support import ecosystem

        return ecosystem.resolver_argv(
            self.directory, self.dns_server, [sys.executable, "-m", "tests.support.e2e", *words]
        )

    def run_client(self, request: Mapping[str, Any], timeout: float = 240) -> dict[str, Any]:
        """Run the confluent-kafka client (`main` below) in this view; its JSON answer."""
        proc = subprocess.run(
            self.argv("client", json.dumps(request)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise AssertionError(
                f"outside client failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        answer: dict[str, Any] = json.loads(lines[-1])
        return answer


# -------------------------------------------------------------------------- pods -> broker processes


@dataclass
class BrokerConfig:
    """One Kafka process from one stored pod: the properties its image would run with, and notes on
    what the chart's own init steps put in (done here as the chart's script does them)."""

    pod: str
    ip: str
    properties: dict[str, str]
    flavor: str
    chart_steps: list[str] = field(default_factory=list)
    dns_names: list[str] = field(default_factory=list)


@contextlib.contextmanager
def pod_ip_for_downward_api(ip: str) -> Iterator[None]:
    """imagesim fills `status.podIP` fieldRefs from its module constant: this pod's IP, for a while."""
    from tests.support import imagesim

    saved = imagesim.POD_IP
    imagesim.POD_IP = ip
    try:
        yield
    finally:
        imagesim.POD_IP = saved


def secret_data(docs: Sequence[Mapping[str, Any]], name: str) -> dict[str, str]:
    secret = next(d for d in docs if d.get("kind") == "Secret" and d["metadata"]["name"] == name)
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _init_container(pod: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = next(
        (c for c in pod["spec"].get("initContainers") or [] if c["name"] == name), None
    )
    return found


def _literal_env(container: Mapping[str, Any], name: str) -> str | None:
    for entry in container.get("env") or []:
        if entry["name"] == name and "value" in entry:
            return str(entry["value"])
    return None


def bitnami_prepare_config(
    pod: Mapping[str, Any], docs: Sequence[Mapping[str, Any]], props: dict[str, str]
) -> list[str]:
    """What bitnami/kafka 32.x's `prepare-config` init container does besides the advertised-address
    placeholder (which imagesim fills): `node.id` = the pod's ordinal + `KAFKA_MIN_ID` (its env),
    and `configure_kafka_sasl`: `interbroker-password-placeholder`, `controller-password-placeholder`
    and `password-placeholder-<i>"` replaced by the passwords in the Secret behind the pod's
    projected `kafka-sasl` volume (`inter-broker-password`, `controller-password`, the i-th of
    `client-passwords` split at `,;`). Edits `props` in place; returns what it did.

    The chart runs this before our init container, which copies the client listener's JAAS lines
    verbatim for the EXTERNAL listener; replacing the placeholders after that copy (as here) gives
    the same file."""
    init = _init_container(pod, "prepare-config")
    if init is None:
        return []
    steps: list[str] = []
    ordinal = int(pod["metadata"]["name"].rsplit("-", 1)[1])
    min_id = int(_literal_env(init, "KAFKA_MIN_ID") or "0")
    props["node.id"] = str(ordinal + min_id)
    steps.append(f"node.id={ordinal + min_id} (ordinal {ordinal} + KAFKA_MIN_ID {min_id})")
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    sources = (volumes.get("kafka-sasl") or {}).get("projected", {}).get("sources") or []
    secret_name = next((s["secret"]["name"] for s in sources if "secret" in s), None)
    if secret_name is None:
        return steps
    data = secret_data(docs, secret_name)
    clients = [p for p in data.get("client-passwords", "").replace(";", ",").split(",") if p]
    replacements = {
        "interbroker-password-placeholder": data.get("inter-broker-password", ""),
        "controller-password-placeholder": data.get("controller-password", ""),
        **{f'password-placeholder-{i}"': f'{pw}"' for i, pw in enumerate(clients)},
    }
    for key, value in list(props.items()):
        for placeholder, password in replacements.items():
            value = value.replace(placeholder, password)
        props[key] = value
    steps.append(f"password placeholders <- Secret {secret_name} ({', '.join(sorted(data))})")
    return steps


def broker_config(
    pod: Mapping[str, Any], settings: Any, docs: Sequence[Mapping[str, Any]], ip: str
) -> BrokerConfig:
    """The Kafka properties a STORED pod runs with (tests/imagesim.py: env expansion with this pod's
    IP for `status.podIP`, the chart's shell command run by `sh` with the image's run script stubbed,
    the prepared file edited by our init container run for real), plus the chart's init steps."""
    from tests.support import imagesim

    with pod_ip_for_downward_api(ip):
        broker = imagesim.evaluate(copy.deepcopy(dict(pod)), settings, [dict(d) for d in docs])
    props = dict(broker.properties)
    steps = bitnami_prepare_config(pod, docs, props) if broker.flavor == "prepared-file" else []
    return BrokerConfig(pod["metadata"]["name"], ip, props, broker.flavor, steps, pod_dns_names(pod))


# ------------------------------------------------------------------------------------ the client


def _stats_collector() -> tuple[dict[str, dict[str, Any]], Callable[[str], None]]:
    """librdkafka statistics: per broker (learned from metadata, not bootstrap) its name and connects."""
    seen: dict[str, dict[str, Any]] = {}

    def on_stats(text: str) -> None:
        for broker in json.loads(text).get("brokers", {}).values():
            if int(broker.get("nodeid", -1)) < 0:
                continue
            entry = seen.setdefault(broker["nodename"], {"nodeid": broker["nodeid"], "connects": 0})
            entry["connects"] = max(entry["connects"], int(broker.get("connects", 0)))
            entry["state"] = broker.get("state")

    return seen, on_stats


def client_roundtrip(request: Mapping[str, Any]) -> dict[str, Any]:
    """Bootstrap from DNS names; metadata; a topic with one partition per broker, RF 3; `messages`
    keyed messages with acks=all; consume them all back (a consumer group); per-broker stats."""
    from confluent_kafka import Consumer, KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    conf = {"bootstrap.servers": request["bootstrap"], **request.get("conf", {})}
    topic, n, partitions = request["topic"], int(request["messages"]), int(request["partitions"])
    out: dict[str, Any] = {"timings": {}}
    t0 = time.monotonic()
    admin = AdminClient(conf)
    metadata = admin.list_topics(timeout=60)
    out["brokers"] = {str(b.id): f"{b.host}:{b.port}" for b in metadata.brokers.values()}
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=3)])
    futures[topic].result(60)
    deadline = time.monotonic() + 60
    layout: dict[str, Any] = {}
    while time.monotonic() < deadline:
        described = admin.list_topics(topic, timeout=30).topics[topic]
        layout = {
            str(p.id): {"leader": p.leader, "replicas": list(p.replicas), "isrs": list(p.isrs)}
            for p in described.partitions.values()
        }
        if len(layout) == partitions and all(
            p["leader"] >= 0 and len(p["isrs"]) == 3 for p in layout.values()
        ):
            break
        time.sleep(0.3)
    out["partitions"] = layout
    out["timings"]["metadata+topic"] = round(time.monotonic() - t0, 2)

    t1 = time.monotonic()
    producer_stats, on_producer_stats = _stats_collector()
    producer = Producer(
        {
            **conf,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "statistics.interval.ms": 500,
            "stats_cb": on_producer_stats,
        }
    )
    delivered: dict[int, int] = {}
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered[msg.partition()] = delivered.get(msg.partition(), 0) + 1

    for i in range(n):
        producer.produce(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
    out["unflushed"] = producer.flush(120)
    time.sleep(0.6)
    producer.poll(0)  # one more statistics callback
    out["produced"] = n
    out["delivered"] = sum(delivered.values())
    out["delivered_per_partition"] = {str(k): v for k, v in sorted(delivered.items())}
    out["delivery_errors"] = errors[:5]
    out["timings"]["produce"] = round(time.monotonic() - t1, 2)

    t2 = time.monotonic()
    consumer_stats, on_consumer_stats = _stats_collector()
    consumer = Consumer(
        {
            **conf,
            "group.id": f"e2e-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "statistics.interval.ms": 500,
            "stats_cb": on_consumer_stats,
        }
    )
    consumer.subscribe([topic])
    counts: dict[str, int] = {}
    wrong_values = 0
    consume_errors: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while sum(counts.values()) < n and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    consume_errors.append(str(error))
                continue
            key = msg.key().decode()
            counts[key] = counts.get(key, 0) + 1
            wrong_values += msg.value().decode() != "value-" + key.removeprefix("key-")
        # anything beyond n (duplicates) would arrive now
        extra_until = time.monotonic() + 2
        while time.monotonic() < extra_until:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                key = msg.key().decode()
                counts[key] = counts.get(key, 0) + 1
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    out["consumed"] = sum(counts.values())
    out["consumed_distinct"] = len(counts)
    out["duplicates"] = sum(c - 1 for c in counts.values() if c > 1)
    out["missing"] = sum(1 for i in range(n) if f"key-{i}" not in counts)
    out["wrong_values"] = wrong_values
    out["consume_errors"] = consume_errors[:5]
    out["timings"]["consume"] = round(time.monotonic() - t2, 2)
    out["stats"] = {"producer": producer_stats, "consumer": consumer_stats}
    return out


def client_probe(request: Mapping[str, Any]) -> dict[str, Any]:
    """What an outside client gets from a cluster: do the bootstrap names resolve; what metadata
    does a broker it can reach (`reachable_bootstrap`) hand out; do those names resolve here; can one
    message be produced within `timeout_ms`."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    out: dict[str, Any] = {"resolves": {}}

    def resolves(host: str) -> str | None:
        try:
            return str(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0])
        except OSError as err:
            return None if isinstance(err, socket.gaierror) else str(err)

    for name in request.get("names", []):
        out["resolves"][name] = resolves(name)
    conf = {"bootstrap.servers": request["reachable_bootstrap"], **request.get("conf", {})}
    metadata = AdminClient(conf).list_topics(timeout=30)
    out["brokers"] = {str(b.id): f"{b.host}:{b.port}" for b in metadata.brokers.values()}
    for address in out["brokers"].values():
        host = address.rsplit(":", 1)[0]
        out["resolves"][host] = resolves(host)
    results: list[str] = []
    producer = Producer({**conf, "acks": "all", "message.timeout.ms": int(request.get("timeout_ms", 10000))})
    producer.produce(
        request["topic"],
        key=b"k",
        value=b"v",
        on_delivery=lambda err, msg: results.append(str(err) if err else "ok"),
    )
    producer.flush(int(request.get("timeout_ms", 10000)) / 1000 + 10)
    out["produce"] = results
    return out


def main(argv: Sequence[str]) -> int:
    """`python -m tests.e2e client '<json request>'`: one JSON line on stdout."""
    if len(argv) != 2 or argv[0] != "client":
        print("usage: python -m tests.e2e client '<json request>'", file=sys.stderr)
        return 2
    request = json.loads(argv[1])
    try:
        answer = client_probe(request) if request.get("mode") == "probe" else client_roundtrip(request)
    except Exception as err:
        answer = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
