"""Load against the real control plane: broker StatefulSets created concurrently in many opted-in
namespaces while an open-loop client hammers the webhook; what every pod came out as; memory.

Shared by tests/reliability/test_load.py (a reduced scenario) and bench/load.py (the full one).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import http.client
import json
import multiprocessing
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client
import requests
import yaml

from tests.reliability.procinfo import Memory, memory
from tests.support import podfactory
from tests.support.webhookcluster import ControllerProcess, wait_for

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
OPT_IN = {"kafka-expose.io/inject": "enabled"}
EXPOSED_LABEL = "kafka-expose.io/exposed"
ADVERTISED = "kafka-expose.io/advertised"
STS_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
MANAGED_SELECTOR = "kafka-expose.io/managed-by=kafka-expose"
HAMMER_RENDER = "bitnami-kafka-32.4.4-brokers3"


# ----------------------------------------------------------------------------------- the hammer


def percentile_of(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class HammerResult:
    rate: float
    seconds: float
    latencies: list[float]  # from each request's scheduled time (no coordinated omission)
    errors: int
    error_samples: list[str] = field(default_factory=list)
    series: list[tuple[float, float]] = field(default_factory=list)  # (due time from start, latency)
    start_wall: float = 0.0  # time.time() of the first due time

    def between(self, start: float, end: float, inside: bool = True) -> list[float]:
        """Latencies of the requests due between two time.time() instants (or outside them)."""
        return [latency for due, latency in self.series if (start <= self.start_wall + due <= end) == inside]

    def per_second(self) -> list[tuple[int, float, float]]:
        """(second, p50, max) of the requests due in each second of the run."""
        buckets: dict[int, list[float]] = {}
        for due, latency in self.series:
            buckets.setdefault(int(due), []).append(latency)
        return [
            (second, sorted(values)[len(values) // 2], max(values))
            for second, values in sorted(buckets.items())
        ]

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def percentile(self, fraction: float) -> float:
        return percentile_of(self.latencies, fraction)

    def summary(self) -> str:
        return (
            f"{self.requests} requests at {self.rate:g}/s over {self.seconds:.1f} s "
            f"(achieved {self.requests / self.seconds if self.seconds else 0:.0f}/s): "
            f"p50 {self.percentile(0.5) * 1000:.2f} ms, p99 {self.percentile(0.99) * 1000:.2f} ms, "
            f"p99.9 {self.percentile(0.999) * 1000:.2f} ms, max {max(self.latencies, default=0) * 1000:.1f} ms, "
            f"errors {self.errors}"
        )


def hammer_body() -> bytes:
    """The AdmissionReview of the first broker pod of the bitnami 32.4.4 brokers3 render."""
    docs = podfactory.load_render(HAMMER_RENDER)
    sts = next(s for s in podfactory.statefulsets(docs) if s["metadata"]["name"] == "kafka-broker")
    pod = podfactory.pod_from_statefulset(sts, 0, "kafka")
    return json.dumps(podfactory.admission_review(pod, uid="hammer-0")).encode()


def _hammer_process(
    port: int, ca_pem: str, body: bytes, rate: float, connections: int, stop: Any, out: Any
) -> None:
    """In its own process (its own GIL): request i is due at start + i/rate, sent by thread
    i mod connections on its kept-alive connection, until `stop` is set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca_pem)
    start = time.perf_counter() + 0.2
    start_wall = time.time() + 0.2
    latencies: list[float] = []
    series: list[tuple[float, float]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run(offset: int) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        mine: list[float] = []
        dues: list[float] = []
        failed: list[str] = []
        i = offset
        while not stop.is_set():
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                if response.status != 200 or b'"uid":"hammer-0"' not in data:
                    failed.append(f"HTTP {response.status}: {data[:100]!r}")
            except (OSError, http.client.HTTPException) as err:
                failed.append(f"{type(err).__name__}: {err}")
                conn.close()
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
            mine.append(time.perf_counter() - due)
            dues.append(due - start)
            i += connections
        conn.close()
        with lock:
            latencies.extend(mine)
            series.extend(zip(dues, mine, strict=True))
            errors.extend(failed)

    threads = [threading.Thread(target=run, args=(j,)) for j in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((time.perf_counter() - start, latencies, errors, sorted(series), start_wall))


class Hammer:
    """An open-loop client in a separate process (so the test's own work does not delay it)."""

    def __init__(self, port: int, ca_pem: bytes, rate: float = 200.0, connections: int = 4) -> None:
        self.rate = rate
        context = multiprocessing.get_context("spawn")
        self.stop_event = context.Event()
        self.queue: Any = context.Queue()
        self.process = context.Process(
            target=_hammer_process,
            args=(port, ca_pem.decode(), hammer_body(), rate, connections, self.stop_event, self.queue),
            daemon=True,
        )

    def __enter__(self) -> Hammer:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.stop_event.set()
            with contextlib.suppress(Exception):
                self.result = self.stop()

    def stop(self) -> HammerResult:
        self.stop_event.set()
        seconds, latencies, errors, series, start_wall = self.queue.get(timeout=60)
        self.process.join(10)
        self.result = HammerResult(self.rate, seconds, latencies, len(errors), errors[:5], series, start_wall)
        return self.result


def _tasks(pid: int) -> list[int]:
    """Every thread of a process (Linux applies niceness and affinity per thread)."""
    try:
        return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []


def isolate(favoured: Iterable[int], background: Iterable[int] = (), niceness: int = 10) -> bool:
    """Give the `favoured` processes (the webhook and its client) the CPU first: every thread of them
    gets niceness -`niceness`, and the scheduling autogroups of the `background` processes (the
    control plane: each runs in a session of its own) +`niceness` (with autogroups, the default
    on Linux desktops and these VMs, niceness only orders threads within one group). Needs root;
    False if refused."""
    import os

    try:
        for pid in favoured:
            for task in _tasks(pid):
                os.setpriority(os.PRIO_PROCESS, task, -niceness)
        for pid in background:
            with contextlib.suppress(FileNotFoundError):
                Path(f"/proc/{pid}/autogroup").write_text(str(niceness))
    except (PermissionError, ProcessLookupError, OSError):
        return False
    return True


def release(favoured: Iterable[int], background: Iterable[int] = ()) -> None:
    """Undo `isolate` (niceness 0 everywhere), as far as the processes still exist."""
    import os

    for pid in favoured:
        for task in _tasks(pid):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, task, 0)
    for pid in background:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text("0")


def control_plane_pids(plane: Any) -> list[int]:
    """The pids of etcd, kube-apiserver and kube-controller-manager of a tests.controlplane plane."""
    procs = getattr(plane, "_procs", {})
    return [p.popen.pid for p in procs.values() if getattr(p, "popen", None) is not None]


BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def server_histogram(server: Any, endpoint: str = "mutate") -> dict[float, float]:
    """Cumulative counts of kafka_expose_admission_duration_seconds per bucket bound (all workers)."""
    name = "kafka_expose_admission_duration_seconds_bucket"
    counts = {le: server.metric(name, endpoint=endpoint, le=str(le)) for le in BUCKETS}
    counts[float("inf")] = server.metric(name, endpoint=endpoint, le="+Inf")
    return counts


def histogram_quantile(before: dict[float, float], after: dict[float, float], fraction: float) -> float:
    """The bucket bound under which `fraction` of the requests between two scrapes were answered."""
    total = after[float("inf")] - before[float("inf")]
    for le in sorted(after):
        if total and after[le] - before[le] >= fraction * total:
            return le
    return float("nan")


def webhook_call_failures(plane: Any) -> int:
    """Admission webhook calls the API server could not complete (timeout, refused, reset, bad
    answer) and so failed open (every kafka-expose hook has failurePolicy Ignore), since it started:
    its log's "Failed calling webhook, failing open" lines (its metric
    apiserver_admission_webhook_fail_open_count is not exposed by this build)."""
    try:
        text = plane.log_paths()["kube-apiserver"].read_text(errors="replace")
    except OSError:
        return 0
    return text.count("Failed calling webhook, failing open")


# ------------------------------------------------------------------------------------ the processes


def start_controller(
    plane: Any, settings: Path, log_dir: Path, kubeconfig: Path | None = None
) -> ControllerProcess:
    """`kafka-expose controller` with its own Lease (short timings), leading before it returns;
    as the plane's admin unless `kubeconfig` says who."""
    controller = ControllerProcess(kubeconfig or plane.kubeconfig_path, settings, log_dir)
    lease = f"reliability-{uuid.uuid4().hex[:6]}"
    controller.command += [
        "--lease-name", lease, "--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5",
    ]  # fmt: skip
    controller.start()
    coordination = kubernetes.client.CoordinationV1Api(plane.api_client())

    def leading() -> bool:
        assert controller.proc is not None and controller.proc.poll() is None, controller.log_path.read_text()
        try:
            spec = coordination.read_namespaced_lease(lease, "kube-system").spec
        except kubernetes.client.ApiException:
            return False
        return spec is not None and spec.holder_identity == controller.identity

    wait_for(leading, timeout=60, what="the controller to lead")
    return controller


# ------------------------------------------------------------------------------------ the objects


def kafka_statefulset(namespace: str, name: str = "kafka", replicas: int = 10) -> dict[str, Any]:
    """A small apache/kafka StatefulSet configured by env (tests/manifests/apache-kraft-env.yaml),
    podManagementPolicy Parallel so that every replica is created at once without a kubelet."""
    with (MANIFESTS / "apache-kraft-env.yaml").open(encoding="utf-8") as handle:
        sts: dict[str, Any] = copy.deepcopy(next(d for d in yaml.safe_load_all(handle) if d))
    sts["metadata"] = {"name": name, "namespace": namespace}
    spec = sts["spec"]
    spec["replicas"] = replicas
    spec["podManagementPolicy"] = "Parallel"
    spec["serviceName"] = f"{name}-headless"
    spec["selector"] = {"matchLabels": {"app": name}}
    spec["template"]["metadata"]["labels"] = {"app": name}
    return sts


def unrelated_pod(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "unrelated"}},
        "spec": {
            "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
            "terminationGracePeriodSeconds": 0,
        },
    }


class Api:
    """Plain JSON over the admin session (fast, thread-safe enough with one session per thread)."""

    def __init__(self, plane: Any) -> None:
        self.plane = plane
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.plane.requests_session()
        return session

    def url(self, path: str) -> str:
        return f"{self.plane.api_url}{path}"

    def post(self, path: str, body: dict[str, Any], ok: Iterable[int] = (201,)) -> dict[str, Any]:
        response = self.session.post(self.url(path), json=body, timeout=60)
        if response.status_code not in tuple(ok):
            raise AssertionError(f"POST {path}: {response.status_code} {response.text[:400]}")
        decoded: dict[str, Any] = response.json()
        return decoded

    def get(self, path: str, **params: str) -> dict[str, Any]:
        response = self.session.get(self.url(path), params=params, timeout=60)
        response.raise_for_status()
        decoded: dict[str, Any] = response.json()
        return decoded

    def delete(self, path: str) -> None:
        with contextlib.suppress(requests.RequestException):
            self.session.delete(self.url(path), timeout=60)

    def namespace(self, prefix: str, opted_in: bool = True) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.post(
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": OPT_IN if opted_in else {}},
            },
        )
        return name

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(path, **params)["items"]
        return items


def in_parallel(calls: Iterable[Callable[[], Any]], workers: int = 16) -> list[Any]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


@dataclass
class Exposure:
    """What the cluster shows for the brokers of some StatefulSets."""

    pods: int = 0
    exposed: int = 0
    services: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems


def check_exposure(api: Api, namespaces: dict[str, int], domain: str = "kafka.example.com") -> Exposure:
    """Every expected pod exists, came out exposed (label, advertised annotation, the env value the
    broker reads), and has exactly one LoadBalancer Service `<pod>-external` selecting it, owned by
    its StatefulSet; no other managed Service exists in those namespaces."""
    result = Exposure()
    for namespace, replicas in namespaces.items():
        pods = {p["metadata"]["name"]: p for p in api.items(f"/api/v1/namespaces/{namespace}/pods")}
        services = {
            s["metadata"]["name"]: s
            for s in api.items(f"/api/v1/namespaces/{namespace}/services", labelSelector=MANAGED_SELECTOR)
        }
        statefulsets = {
            s["metadata"]["name"]: s for s in api.items(f"/apis/apps/v1/namespaces/{namespace}/statefulsets")
        }
        expected = {
            f"{name}-{i}" for name, sts in statefulsets.items() for i in range(sts["spec"]["replicas"])
        }
        if len(expected) != replicas:
            result.problems.append(f"{namespace}: {len(expected)} replicas planned, {replicas} expected")
        for pod_name in sorted(expected):
            pod = pods.get(pod_name)
            if pod is None:
                result.problems.append(f"{namespace}/{pod_name}: no pod")
                continue
            result.pods += 1
            host = f"EXTERNAL://{pod_name}.{namespace}.{domain}:9094"
            labels = pod["metadata"].get("labels") or {}
            annotations = pod["metadata"].get("annotations") or {}
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
            if labels.get(EXPOSED_LABEL) != "true" or annotations.get(ADVERTISED) != host:
                result.problems.append(f"{namespace}/{pod_name}: not exposed ({annotations.get(ADVERTISED)})")
                continue
            advertised = str(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
            if "EXTERNAL://$(" not in advertised or advertised.count("EXTERNAL://") != 1:
                result.problems.append(f"{namespace}/{pod_name}: advertised listeners {advertised!r}")
                continue
            result.exposed += 1
            service = services.get(f"{pod_name}-external")
            if service is None:
                result.problems.append(f"{namespace}/{pod_name}: no Service")
                continue
            owner = statefulsets[pod_name.rsplit("-", 1)[0]]["metadata"]["uid"]
            owners = [o.get("uid") for o in service["metadata"].get("ownerReferences", [])]
            if (
                service["spec"].get("type") != "LoadBalancer"
                or service["spec"].get("selector", {}).get(STS_POD_NAME_LABEL) != pod_name
                or owners != [owner]
            ):
                result.problems.append(
                    f"{namespace}/{pod_name}: Service {service['metadata']['name']} is wrong"
                )
                continue
            result.services += 1
        extra = set(services) - {f"{p}-external" for p in expected}
        if extra:
            result.problems.append(f"{namespace}: orphaned or duplicate Services {sorted(extra)}")
    return result


def sample_memory(pid: int, seconds: float = 3.0, interval: float = 0.5) -> Memory:
    """The process's RSS after letting it settle: the lowest of a few samples, and its peak."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = memory(pid)
        if found is None:
            raise AssertionError(f"process {pid} is gone")
        samples.append(found)
        time.sleep(interval)
    return min(samples, key=lambda m: m.rss_kib)


# ---------------------------------------------------------------------------------- the scenario


@dataclass
class LoadFigures:
    namespaces: int
    brokers: int
    unrelated: int
    hammer: HammerResult | None = None
    create_seconds: float = 0.0  # from the first StatefulSet POST to every Service in place
    burst: tuple[float, float] = (
        0.0,
        0.0,
    )  # time.time() from the first StatefulSet POST to every pod exposed
    exposure: Exposure | None = None
    controller_rss_mib: dict[str, float] = field(default_factory=dict)  # stage -> settled VmRSS
    controller_peak_mib: float = 0.0
    server_peak_mib: list[float] = field(default_factory=list)  # master, workers (VmHWM)
    server_rss_mib: list[float] = field(default_factory=list)
    admissions: float = 0.0
    server_p99_bound: float = float("nan")  # the webhook's own time (body read to answer), bucket bound
    webhook_call_failures: int = 0  # calls the API server could not complete during the scenario
    prioritized: bool = False

    def hammer_split(self) -> str:
        """The hammer's p99 while the pods were being created, and outside that window."""
        if self.hammer is None:
            return "no hammer"
        during = self.hammer.between(*self.burst)
        outside = self.hammer.between(*self.burst, inside=False)
        return (
            f"hammer p99 while the brokers were created ({self.burst[1] - self.burst[0]:.1f} s): "
            f"{percentile_of(during, 0.99) * 1000:.1f} ms over {len(during)} requests; before and after: "
            f"{percentile_of(outside, 0.99) * 1000:.1f} ms over {len(outside)} requests"
        )

    def summary(self) -> str:
        lines = [
            f"{self.brokers} brokers in {self.namespaces} namespaces exposed in {self.create_seconds:.1f} s "
            f"({self.exposure.exposed if self.exposure else 0} pods exposed, "
            f"{self.exposure.services if self.exposure else 0} Services)",
            f"hammer: {self.hammer.summary() if self.hammer else 'none'}",
            self.hammer_split(),
            "controller RSS MiB: "
            + ", ".join(f"{k} {v:.1f}" for k, v in self.controller_rss_mib.items())
            + f"; peak {self.controller_peak_mib:.1f}",
            "server MiB (master, workers): RSS "
            + ", ".join(f"{v:.0f}" for v in self.server_rss_mib)
            + "; peak "
            + ", ".join(f"{v:.0f}" for v in self.server_peak_mib)
            + f"; sum of peaks {sum(self.server_peak_mib):.0f}",
            f"admission requests answered by the server: {self.admissions:.0f}; server-side p99 (body read "
            f"to answer) <= {self.server_p99_bound * 1000:g} ms during creation; webhook calls the API "
            f"server could not complete: {self.webhook_call_failures:g}; webhook and client given "
            f"CPU priority: {self.prioritized}",
        ]
        if self.exposure and self.exposure.problems:
            lines.append(f"problems: {self.exposure.problems[:10]}")
        return "\n".join(lines)


def run_load_scenario(
    plane: Any,
    server: Any,
    controller_pid: int,
    *,
    namespaces: int,
    per_namespace: int,
    unrelated: int,
    rate: float = 200.0,
    log: Callable[[str], None] = print,
    timeout: float = 180.0,
    isolated: bool = True,
) -> LoadFigures:
    """Brokers: one namespace of `per_namespace` first (the controller's memory at that size), then
    the other namespaces' StatefulSets all at once while the hammer runs, until every pod is exposed
    and has its Service; then `unrelated` non-Kafka pods (half in an opted-in namespace) and the
    controller's memory again after a resync. `server` is the WebhookServer the API server calls.

    `isolated`: while the hammer runs, the webhook's processes and the hammer get the CPU before
    kube-apiserver, etcd and kube-controller-manager, which share the machine with them here (in a
    cluster they run elsewhere); see `isolate`.
    """
    from tests.reliability.procinfo import children, server_memory

    api = Api(plane)
    figures = LoadFigures(namespaces, namespaces * per_namespace, unrelated)
    failures_before = webhook_call_failures(plane)
    created: dict[str, int] = {}
    figures.controller_rss_mib["idle"] = sample_memory(controller_pid).rss_mib

    first = api.namespace("load")
    api.post(
        f"/apis/apps/v1/namespaces/{first}/statefulsets", kafka_statefulset(first, replicas=per_namespace)
    )
    created[first] = per_namespace
    _wait_exposed(api, created, timeout)
    figures.controller_rss_mib[f"{per_namespace} brokers"] = sample_memory(controller_pid).rss_mib
    log(f"first namespace exposed; controller {figures.controller_rss_mib}")

    rest = in_parallel([lambda: api.namespace("load") for _ in range(namespaces - 1)])
    histogram = server_histogram(server)
    favoured: list[int] = []
    background = control_plane_pids(plane) if isolated else []
    with Hammer(server.port, server.ca.cert_pem, rate) as hammer:
        if isolated:
            time.sleep(0.5)  # its threads exist
            favoured = [server.proc.pid, *children(server.proc.pid), hammer.process.pid or 0]
            figures.prioritized = isolate(favoured, background)
        time.sleep(2.0)  # the hammer alone first
        started = time.monotonic()
        burst_start = time.time()
        in_parallel(
            [
                lambda ns=ns: api.post(
                    f"/apis/apps/v1/namespaces/{ns}/statefulsets",
                    kafka_statefulset(ns, replicas=per_namespace),
                )
                for ns in rest
            ]
        )
        created.update(dict.fromkeys(rest, per_namespace))
        figures.exposure = _wait_exposed(api, created, timeout)
        figures.create_seconds = time.monotonic() - started
        figures.burst = (burst_start, time.time())
        time.sleep(max(0.0, 15.0 - figures.create_seconds))  # at least ~15 s of samples
        figures.hammer = hammer.stop()
    release(favoured, background)
    figures.server_p99_bound = histogram_quantile(histogram, server_histogram(server), 0.99)
    log(f"all exposed in {figures.create_seconds:.1f} s; {figures.hammer.summary()}")
    log(
        "hammer per second (s, p50 ms, max ms): "
        + ", ".join(f"{s}:{p50 * 1000:.0f}/{top * 1000:.0f}" for s, p50, top in figures.hammer.per_second())
    )
    figures.controller_rss_mib[f"{figures.brokers} brokers"] = sample_memory(controller_pid).rss_mib

    if unrelated:
        plain, opted = api.namespace("unrelated", opted_in=False), api.namespace("unrelated")
        in_parallel(
            [
                lambda i=i: api.post(
                    f"/api/v1/namespaces/{plain if i % 2 else opted}/pods",
                    unrelated_pod(plain if i % 2 else opted, f"app-{i}"),
                )
                for i in range(unrelated)
            ],
            workers=24,
        )
        time.sleep(8.0)  # a resync (resyncSeconds: 5 in the test settings) has run over everything
        figures.controller_rss_mib[f"{figures.brokers} brokers + {unrelated} unrelated pods"] = sample_memory(
            controller_pid
        ).rss_mib
        created_pods = len(api.items(f"/api/v1/namespaces/{plain}/pods")) + len(
            api.items(f"/api/v1/namespaces/{opted}/pods")
        )
        assert created_pods == unrelated, created_pods
        figures.exposure = check_exposure(api, created)

    final = memory(controller_pid)
    figures.controller_peak_mib = final.hwm_mib if final else 0.0
    processes = server_memory(server.proc.pid, server.log_path)
    figures.server_rss_mib = [m.rss_mib for m in processes]
    figures.server_peak_mib = [m.hwm_mib for m in processes]
    figures.admissions = server.metric("kafka_expose_admission_requests_total")
    figures.webhook_call_failures = webhook_call_failures(plane) - failures_before
    return figures


def _wait_exposed(api: Api, namespaces: dict[str, int], timeout: float) -> Exposure:
    deadline = time.monotonic() + timeout
    while True:
        exposure = check_exposure(api, namespaces)
        if exposure.complete:
            return exposure
        if time.monotonic() > deadline:
            raise AssertionError(f"not exposed after {timeout} s: {exposure.problems[:20]}")
        time.sleep(1.0)


def delete_namespaces(plane: Any, prefixes: tuple[str, ...] = ("load-", "unrelated-")) -> None:
    api = Api(plane)
    for namespace in api.items("/api/v1/namespaces"):
        name = namespace["metadata"]["name"]
        if name.startswith(prefixes):
            api.delete(f"/api/v1/namespaces/{name}")
