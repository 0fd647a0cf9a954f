"""Fleet scale on the real control plane: how kafka-expose's cost grows with the number of brokers.

For each size: broker StatefulSets of 3-10 replicas (apache/kafka, env-configured, podManagementPolicy
Parallel) in opted-in namespaces, their pods created by the real StatefulSet controller through the
webhook, the node stand-in making them Running; --unrelated non-Kafka pods beside them (created first).
The controller runs as its own user (`kafka-expose-controller`, in system:masters) so that the API
server's audit log (level Metadata for that user only) counts every request it makes.

Control plane sized as a large cluster would be: kube-controller-manager --kube-api-qps=100
--kube-api-burst=200 --concurrent-statefulset-syncs=20 (defaults 20, 30, 5); kube-apiserver
--max-requests-inflight=800 --max-mutating-requests-inflight=400 (defaults 400, 200; it has no
client QPS flag of its own). During each storm the webhook's processes get the CPU before etcd,
kube-apiserver and kube-controller-manager (niceness, as `make load` does; --no-isolate to share it
alike): in a cluster the webhook has its own CPU, here all share 2, and without it the API server's
5 s webhook timeout is what an overloaded machine measures.

Figures per size: time from each broker pod stored to its Service existing (p50, p99, max, as the
watches of this script see them) and from the last pod stored to all converged; the controller's
API requests per broker, reads and writes, during the storm and in a steady-state window of two
resyncs; the controller's CPU seconds per resync (steady window / resyncs, lease renewals included);
controller and webhook RSS; the webhook's server-side p99 during the storm (histogram bucket bound);
etcd's key count (etcd_debugging_mvcc_keys_total).

Run: python bench/fleet.py [--sizes 500,1000] [--unrelated 5000] [--resync 20]  (`make fleet`)
Targets (issue 19, at 5,000 brokers): converged within 60 s of the last pod; <= 1 Service write per
broker plus one pod annotation, none in steady state; a resync < 2 CPU s; controller RSS < 150 MiB,
< 20 KiB more per broker; webhook server-side p99 < 10 ms. Figures on a shared 2-CPU machine: the
times depend on what else runs; request counts and CPU seconds do not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability.loadkit import (  # noqa: E402
    MANAGED_SELECTOR,
    Api,
    check_exposure,
    control_plane_pids,
    histogram_quantile,
    in_parallel,
    isolate,
    kafka_statefulset,
    percentile_of,
    release,
    server_histogram,
    start_controller,
    unrelated_pod,
    webhook_call_failures,
)
from tests.reliability.procinfo import children, cpu_seconds, memory, server_memory  # noqa: E402
from tests.support.controlplane import ControlPlane, NodeAgentStandIn  # noqa: E402
from tests.support.webhookcluster import RegisteredWebhook  # noqa: E402

CONTROLLER_USER = "kafka-expose-controller"
READS = {"get", "list", "watch"}
AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: Metadata
  users: ["{CONTROLLER_USER}"]
- level: None
"""
KCM_ARGS = ("--kube-api-qps=100", "--kube-api-burst=200", "--concurrent-statefulset-syncs=20")
# A /16 for Services: the plane's /24 holds 254 ClusterIPs, and every broker gets a Service. And
# 12,768 node ports: the default range (30000-32767) holds 2,768, and each LoadBalancer Service takes
# one per port, so a first run stopped at ~2,700 brokers with "failed to allocate a nodePort: range
# is full". A cluster with thousands of LoadBalancers widens the range the same way, or uses a load
# balancer that routes to pods and sets allocateLoadBalancerNodePorts: false.
APISERVER_ARGS = (
    "--max-requests-inflight=800",
    "--max-mutating-requests-inflight=400",
    "--service-cluster-ip-range=10.0.0.0/16",
    "--service-node-port-range=20000-32767",
)
REPLICAS = (3, 4, 5, 6, 7, 8, 9, 10)


class Seen(threading.Thread):
    """Watches one kind (all namespaces, a label selector) and notes when each object first appears."""

    def __init__(self, api: Api, path: str, selector: str) -> None:
        super().__init__(daemon=True)
        self.api, self.path, self.selector = api, path, selector
        self.first: dict[tuple[str, str], float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                listed = self.api.get(self.path, labelSelector=self.selector)
                now = time.time()
                for item in listed["items"]:
                    self.first.setdefault(_key(item), now)
                params = {
                    "labelSelector": self.selector,
                    "watch": "1",
                    "resourceVersion": listed["metadata"]["resourceVersion"],
                    "timeoutSeconds": "300",
                }
                with self.api.session.get(
                    self.api.url(self.path), params=params, stream=True, timeout=400
                ) as r:
                    for line in r.iter_lines():
                        if self.stop.is_set():
                            return
                        event = json.loads(line) if line else {}
                        if event.get("type") == "ADDED":
                            self.first.setdefault(_key(event["object"]), time.time())
            except Exception:  # relist
                time.sleep(0.5)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def audit_counts(path: Path, start: float, end: float) -> Counter[str]:
    """The controller's requests completed between two time.time() instants: verb/resource -> count."""
    import datetime as dt

    counts: Counter[str] = Counter()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete":
                continue
            stamp = dt.datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")).timestamp()
            if start <= stamp <= end:
                resource = (event.get("objectRef") or {}).get("resource", "?")
                subresource = (event.get("objectRef") or {}).get("subresource")
                counts[f"{event['verb']} {resource}{'/' + subresource if subresource else ''}"] += 1
    return counts


def split(counts: Counter[str]) -> tuple[int, int]:
    reads = sum(n for key, n in counts.items() if key.split()[0] in READS)
    return reads, sum(counts.values()) - reads


def etcd_keys(plane: ControlPlane) -> float:
    text = plane.requests_session().get(f"{plane.etcd_url}/metrics", timeout=30).text
    return next(
        (
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("etcd_debugging_mvcc_keys_total")
        ),
        float("nan"),
    )


@dataclass
class Row:
    brokers: int  # created in this step (the storm)
    namespaces: int
    fleet: int = 0  # brokers in the cluster after this step
    to_service: list[float] = field(default_factory=list)
    converged: float = float("nan")
    storm: Counter[str] = field(default_factory=Counter)
    steady: Counter[str] = field(default_factory=Counter)
    resync_cpu: float = float("nan")
    controller_mib: float = 0.0
    webhook_mib: float = 0.0
    server_p99: float = float("nan")
    etcd_keys: float = float("nan")
    failed_open: int = 0  # webhook calls the API server gave up on (5 s timeout) during the storm
    complete: bool = False
    problems: list[str] = field(default_factory=list)
    prioritized: bool = False  # the webhook had the CPU first during the storm

    def cells(self) -> list[str]:
        storm_r, storm_w = split(self.storm)
        steady_r, steady_w = split(self.steady)
        per, total = self.brokers or 1, self.fleet or self.brokers or 1
        return [
            f"{total} (+{self.brokers} in {self.namespaces} ns)",
            "/".join(f"{percentile_of(self.to_service, q):.1f}" for q in (0.5, 0.99, 1.0)),
            f"{self.converged:.1f}",
            f"{storm_r / per:.2f} / {storm_w / per:.2f}",
            f"{steady_r / total:.2f} / {steady_w / total:.2f}",
            f"{self.resync_cpu:.2f}",
            f"{self.controller_mib:.0f}",
            f"{self.webhook_mib:.0f}",
            f"<= {self.server_p99 * 1000:g}",
            f"{self.etcd_keys:.0f}",
            f"{self.failed_open}",
            "yes" if self.complete else f"NO {self.problems[:3]}",
            "yes" if self.prioritized else "no",
        ]


HEADER = [
    "brokers",
    "pod to Service s p50/p99/max",
    "last pod to all converged s",
    "storm reads/writes per broker",
    "steady reads/writes per broker (2 resyncs)",
    "CPU s per resync",
    "controller RSS MiB",
    "webhook RSS MiB (master+workers)",
    "webhook server p99 ms",
    "etcd keys",
    "webhook calls failed open",
    "all exposed, one Service each",
    "webhook CPU first",
]


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def run_size(
    plane: ControlPlane,
    webhook: RegisteredWebhook,
    controller_pid: int,
    audit: Path,
    brokers: int,
    resync: float,
    isolated: bool = True,
) -> Row:
    api = Api(plane)
    plan: list[int] = []
    while sum(plan) < brokers:
        plan.append(min(REPLICAS[len(plan) % len(REPLICAS)], brokers - sum(plan)))
    plan = [max(3, n) for n in plan]
    row = Row(sum(plan), len(plan))
    namespaces = in_parallel([lambda: api.namespace("fleet") for _ in plan], workers=16)
    pods = Seen(api, "/api/v1/pods", "kafka-expose.io/exposed=true")
    services = Seen(api, "/api/v1/services", MANAGED_SELECTOR)
    for watch in (pods, services):
        watch.start()
    time.sleep(2.0)
    histogram = server_histogram(webhook.server)
    failed_before = webhook_call_failures(plane)
    # As its own pods' CPU would in a cluster, the webhook gets the CPU before the control plane
    # during the storm (as in `make load`); --no-isolate lets them all share it alike.
    assert webhook.server.proc is not None
    favoured = [webhook.server.proc.pid, *children(webhook.server.proc.pid)] if isolated else []
    background = control_plane_pids(plane) if isolated else []
    row.prioritized = isolated and isolate(favoured, background)
    start = time.time()
    in_parallel(
        [
            lambda ns=ns, n=n: api.post(
                f"/apis/apps/v1/namespaces/{ns}/statefulsets", kafka_statefulset(ns, replicas=n)
            )
            for ns, n in zip(namespaces, plan, strict=True)
        ],
        workers=16,
    )
    wanted = set(namespaces)
    # Until every broker has its Service, or none appeared for 60 s (a pod created unexposed, the
    # webhook call having failed open, never gets one: counted below, and check_exposure says which).
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < 60:
        count = sum(1 for k in services.first if k[0] in wanted)
        if count >= row.brokers:
            break
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        time.sleep(1.0)

    release(favoured, background)
    row.server_p99 = histogram_quantile(histogram, server_histogram(webhook.server), 0.99)
    row.failed_open = webhook_call_failures(plane) - failed_before
    pod_times = {k: t for k, t in pods.first.items() if k[0] in wanted}
    for (ns, name), t in pod_times.items():
        seen = services.first.get((ns, f"{name}-external"))
        if seen is not None:
            row.to_service.append(seen - t)
    if pod_times and services.first:
        row.converged = max(t for k, t in services.first.items() if k[0] in wanted) - max(pod_times.values())
    time.sleep(3.0)
    row.storm = audit_counts(audit, start, time.time())
    # steady state: two resyncs with nothing to do
    cpu_before, steady_start = cpu_seconds(controller_pid) or 0.0, time.time()
    time.sleep(2 * resync)
    cpu_after, steady_end = cpu_seconds(controller_pid) or 0.0, time.time()
    row.steady = audit_counts(audit, steady_start, steady_end)
    row.resync_cpu = (cpu_after - cpu_before) / 2
    exposure = check_exposure(api, dict(zip(namespaces, plan, strict=True)))
    row.complete, row.problems = exposure.complete, exposure.problems
    found = memory(controller_pid)
    row.controller_mib = found.rss_mib if found else 0.0
    assert webhook.server.proc is not None
    row.webhook_mib = sum(m.rss_mib for m in server_memory(webhook.server.proc.pid, webhook.server.log_path))
    row.etcd_keys = etcd_keys(plane)
    for watch in (pods, services):
        watch.stop.set()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="500,1000", help="total brokers per step, cumulative steps")
    parser.add_argument("--unrelated", type=int, default=5000)
    parser.add_argument("--resync", type=float, default=20.0, help="controller.resyncSeconds")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--no-isolate", action="store_true", help="the webhook shares the CPU with the control plane alike"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="kafka-expose-fleet-"))
    policy, audit = root / "audit-policy.yaml", root / "audit.log"
    policy.write_text(AUDIT_POLICY)
    load_before = os.getloadavg()
    apiserver_args = (*APISERVER_ARGS, f"--audit-policy-file={policy}", f"--audit-log-path={audit}",
                      "--audit-log-format=json", "--audit-log-maxsize=0")  # fmt: skip
    settings = f"domain: kafka.example.com\nloadBalancer:\n  cloud: gke\ncontroller:\n  resyncSeconds: {args.resync:g}\n"
    rows: list[Row] = []
    with ControlPlane(extra_apiserver_args=apiserver_args, extra_kcm_args=KCM_ARGS) as plane:
        api = plane.api_client()
        webhook = RegisteredWebhook(api, settings).start()
        kubeconfig = plane.kubeconfig_for(CONTROLLER_USER, groups=("system:masters",))
        controller = start_controller(plane, webhook.settings_path, root, kubeconfig)
        assert controller.proc is not None
        idle = memory(controller.proc.pid)
        with NodeAgentStandIn(plane, label_selector="app=kafka"):
            try:
                bulk = Api(plane)
                plain, opted = bulk.namespace("unrelated", opted_in=False), bulk.namespace("unrelated")
                in_parallel(
                    [
                        lambda i=i: bulk.post(
                            f"/api/v1/namespaces/{plain if i % 2 else opted}/pods",
                            unrelated_pod(plain if i % 2 else opted, f"app-{i}"),
                        )
                        for i in range(args.unrelated)
                    ],
                    workers=16,
                )
                print(f"{args.unrelated} unrelated pods created; controller idle RSS "
                      f"{idle.rss_mib if idle else 0:.1f} MiB", flush=True)  # fmt: skip
                done = 0
                for size in sizes:
                    row = run_size(
                        plane,
                        webhook,
                        controller.proc.pid,
                        audit,
                        size - done,
                        args.resync,
                        not args.no_isolate,
                    )
                    done += row.brokers
                    row.fleet = done
                    rows.append(row)
                    print(table(rows[-1:]), flush=True)
                    print(
                        f"  storm requests: {dict(row.storm)}\n  steady requests: {dict(row.steady)}",
                        flush=True,
                    )
            finally:
                controller.stop()
                webhook.stop()
    print("\n" + table(rows))
    print(
        f"controller idle RSS {idle.rss_mib if idle else 0:.1f} MiB; resyncSeconds {args.resync:g}; "
        f"load average before {load_before}, after {os.getloadavg()}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                [{**vars(r), "storm": dict(r.storm), "steady": dict(r.steady)} for r in rows], indent=2
            )
        )
    return 0 if all(r.complete for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
