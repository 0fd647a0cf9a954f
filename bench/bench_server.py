"""Benchmark of `kafka-expose serve`: POST /mutate over HTTPS with keep-alive.

Two servers with the same stack (gunicorn gthread, TLS, Flask, JSON parsing, logging, metrics) are
running side by side: one answering through the core, one started with `--noop` (allowed without
calling the core: the framework + TLS floor). The request is the AdmissionReview of the first broker
pod of the bitnami 32.4.4 `brokers3` render.

Two loads:
* fixed rate (default 200 req/s for 10 s): an open-loop Python client, a few threads with one
  kept-alive connection each; latency counts from the scheduled send time, so a stalled server is
  not hidden (no coordinated omission);
* saturation: `wrk` (Debian package `wrk`) with a Lua script when it is installed, else a
  closed-loop Python client in several processes; 7 rounds of 5 s per server, taking turns in
  alternating order; the ratio is the median of the rounds' ratios (one round is noisy: which worker
  accepts which of the 16 connections, and the machine's other work, move it by 20%).

Run: python bench/bench_server.py [--rate 200] [--seconds 10] [--rounds 7] [--workers 2] [--threads 4]
Targets: p99 < 10 ms at 200 req/s; saturation throughput >= 70% of the no-op floor.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import multiprocessing
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import podfactory  # noqa: E402
from tests.support.harness import WebhookServer, running_server  # noqa: E402

RENDER = "bitnami-kafka-32.4.4-brokers3"
BARE_SERVER = REPO / "bench" / "bare_server.py"  # the bare floor: the same stack answering `allowed`


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its children (the gunicorn workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1] is the parent pid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


@dataclass
class Result:
    scenario: str
    server: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client: str
    cpu_ms: float = float("nan")  # server CPU (arbiter + workers) per request

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def review_body() -> bytes:
    docs = podfactory.load_render(RENDER)
    sts = next(s for s in podfactory.statefulsets(docs) if s["metadata"]["name"] == "kafka-broker")
    pod = podfactory.pod_from_statefulset(sts, 0, "kafka")
    return json.dumps(podfactory.admission_review(pod, uid="bench-0000")).encode()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _connection(port: int, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)


def _post(conn: http.client.HTTPSConnection, body: bytes) -> bool:
    conn.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    return response.status == 200 and data.startswith(b'{"apiVersion"')


def _post_or_reconnect(
    conn: http.client.HTTPSConnection, body: bytes, port: int, context: ssl.SSLContext
) -> tuple[bool, http.client.HTTPSConnection]:
    """One request; on a transport error it counts as failed and the next one uses a new connection."""
    try:
        return _post(conn, body), conn
    except (OSError, http.client.HTTPException):
        conn.close()
        return False, _connection(port, context)


def fixed_rate(server: WebhookServer, body: bytes, rate: float, seconds: float, threads: int = 4) -> Result:
    """Open loop: request i is due at start + i/rate; thread j sends the requests i = j mod threads."""
    context = server.context()
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.perf_counter() + 0.5

    def run(offset: int) -> None:
        conn = _connection(server.port, context)
        conn.connect()
        mine: list[float] = []
        failed = 0
        for i in range(offset, total, threads):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ok, conn = _post_or_reconnect(conn, body, server.port, context)
            mine.append(time.perf_counter() - due)
            failed += not ok
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    workers = [threading.Thread(target=run, args=(j,)) for j in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    return Result(
        f"{rate:g} req/s, {seconds:g} s", "", len(latencies), errors[0], elapsed,
        percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000, f"python x{threads} conns",
    )  # fmt: skip


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d errors_status=%d errors_other=%d p50_us=%d p99_us=%d\\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def saturation_wrk(server: WebhookServer, body: bytes, seconds: float, connections: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        body_path, script = Path(tmp) / "body.json", Path(tmp) / "post.lua"
        body_path.write_bytes(body)
        script.write_text(WRK_SCRIPT)
        command = [
            "wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script),
            f"https://127.0.0.1:{server.port}/mutate",
        ]  # fmt: skip
        out = subprocess.run(
            command,
            env={**os.environ, "BENCH_BODY": str(body_path)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(
        r"BENCH requests=(\d+) errors_status=(\d+) errors_other=(\d+) p50_us=(\d+) p99_us=(\d+)", out
    )
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests, status_errors, other_errors, p50, p99 = (int(g) for g in match.groups())
    return Result(
        "saturation", "", requests, status_errors + other_errors, seconds, p50 / 1000, p99 / 1000,
        f"wrk -t2 -c{connections}",
    )  # fmt: skip


def _closed_loop(port: int, ca_pem: str, body: bytes, seconds: float, connections: int, out: Any) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca_pem)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def run() -> None:
        conn = _connection(port, context)
        mine: list[float] = []
        failed = 0
        while (now := time.perf_counter()) < stop_at:
            ok, conn = _post_or_reconnect(conn, body, port, context)
            mine.append(time.perf_counter() - now)
            failed += not ok
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((latencies, errors[0]))


def saturation_python(server: WebhookServer, body: bytes, seconds: float, connections: int) -> Result:
    processes = max(1, min(4, connections // 4))
    queue: Any = multiprocessing.Queue()
    ca_pem = server.ca.cert_pem.decode()
    per_process = max(1, connections // processes)
    procs = [
        multiprocessing.Process(
            target=_closed_loop, args=(server.port, ca_pem, body, seconds, per_process, queue)
        )
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    errors = 0
    for _ in procs:
        values, failed = queue.get(timeout=seconds + 60)
        latencies += values
        errors += failed
    for proc in procs:
        proc.join()
    return Result(
        "saturation", "", len(latencies), errors, seconds, percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000, f"python {processes}x{per_process} conns",
    )  # fmt: skip


def with_server_cpu(server: WebhookServer, load: Callable[[], Result]) -> Result:
    """Run `load` and record the server's CPU time (arbiter + workers) per request it answered."""
    assert server.proc is not None
    cpu = process_tree_cpu(server.proc.pid)
    result = load()
    result.cpu_ms = (process_tree_cpu(server.proc.pid) - cpu) / max(result.requests, 1) * 1000
    return result


def saturate(server: WebhookServer, body: bytes, args: argparse.Namespace) -> Result:
    if shutil.which("wrk") and not args.python_client:
        return saturation_wrk(server, body, args.round_seconds, args.connections)
    return saturation_python(server, body, args.round_seconds, args.connections)


def median_result(rounds: list[Result]) -> Result:
    """The saturation rounds of one server summed up: median throughput, latency and CPU."""
    middle = statistics.median
    return Result(
        f"saturation x{len(rounds)}", rounds[0].server, sum(r.requests for r in rounds),
        sum(r.errors for r in rounds), sum(r.requests for r in rounds) / middle(r.throughput for r in rounds),
        middle(r.p50_ms for r in rounds), middle(r.p99_ms for r in rounds), rounds[0].client,
        middle(r.cpu_ms for r in rounds),
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10, help="length of the fixed-rate run")
    parser.add_argument("--rounds", type=int, default=7, help="saturation rounds per server")
    parser.add_argument("--round-seconds", type=float, default=5, help="length of a saturation round")
    # One worker per server: which worker gets the load generator's connections cannot decide it.
    parser.add_argument("--workers", type=int, default=1, help="per server")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16, help="connections at saturation")
    parser.add_argument("--python-client", action="store_true", help="do not use wrk even if installed")
    args = parser.parse_args()

    body = review_body()
    load_before = os.getloadavg()[0]  # after the run it is our own load
    names = ("mutate", "noop", "bare")
    fixed: dict[str, Result] = {}
    rounds: dict[str, list[Result]] = {name: [] for name in names}
    inside: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                running_server(
                    Path(tmp) / name, show_log=False, workers=args.workers, threads=args.threads,
                    extra_args=("--noop",) if name == "noop" else (),
                    entry=(str(BARE_SERVER),) if name == "bare" else ("-m", "webhook", "serve"),
                )
            )
            for name in names
        }  # fmt: skip
        for name, server in servers.items():
            warm = _connection(server.port, server.context())
            for _ in range(200):
                _post(warm, body)
            warm.close()
            fixed[name] = with_server_cpu(
                server, functools.partial(fixed_rate, server, body, args.rate, args.seconds)
            )
        # Both servers run all along and take turns, in alternating order, so that a slow spell of
        # the machine (or the luck of which worker accepts which connection) hits both alike.
        for index in range(args.rounds):
            for name in names[index % len(names) :] + names[: index % len(names)]:  # each leads in turn
                load = functools.partial(saturate, servers[name], body, args)
                rounds[name].append(with_server_cpu(servers[name], load))
        for name, server in servers.items():
            if name == "bare":
                continue  # no /metrics there
            total = server.metric("kafka_expose_admission_duration_seconds_sum", endpoint="mutate")
            count = server.metric("kafka_expose_admission_duration_seconds_count", endpoint="mutate")
            inside[name] = total / count * 1000 if count else 0.0
    for name in names:
        fixed[name].server = name
        for result in rounds[name]:
            result.server = name
    saturated = {name: median_result(rounds[name]) for name in names}

    print(f"\nPOST /mutate, {len(body)} byte AdmissionReview ({RENDER} kafka-broker-0), "
          f"{args.workers} workers x {args.threads} threads, TLS, keep-alive, {os.cpu_count()} CPUs\n")  # fmt: skip
    header = (
        f"{'load':<18} {'server':<7} {'client':<18} {'requests':>8} {'errors':>6} {'req/s':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in [*fixed.values(), *saturated.values()]:
        print(
            f"{r.scenario:<18} {r.server:<7} {r.client:<18} {r.requests:>8} {r.errors:>6} "
            f"{r.throughput:>6.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.cpu_ms:>10.2f}"
        )
    ratios = [
        m.throughput / max(n.throughput, 1e-9) for m, n in zip(rounds["mutate"], rounds["noop"], strict=True)
    ]
    for name in names:
        shown = "  ".join(f"{r.throughput:.0f}" for r in rounds[name])
        print(f"saturation rounds, {name:<6} req/s: {shown}")
    print("mutate/noop by round: " + "  ".join(f"{ratio:.0%}" for ratio in ratios))
    print(
        f"\nmean time inside the app (histogram): mutate {inside['mutate']:.2f} ms, noop {inside['noop']:.2f} ms"
    )
    cpu_ratio = saturated["noop"].cpu_ms / max(saturated["mutate"].cpu_ms, 1e-9)
    print(f"server CPU per request, noop/mutate at saturation: {cpu_ratio:.0%} (the throughput ratio on "
          "a machine with nothing else running)")  # fmt: skip
    print(f"load average before the run: {load_before:.1f} on {os.cpu_count()} CPUs" + (
          " (busy: the figures are not those of a quiet machine)" if load_before > 0.5 else ""))  # fmt: skip
    p99 = fixed["mutate"].p99_ms
    ratio = statistics.median(ratios)
    print(
        f"p99 at {fixed['mutate'].scenario}: {p99:.2f} ms (target < 10 ms): {'OK' if p99 < 10 else 'MISSED'}"
    )
    print(
        f"saturation vs no-op floor, median of {len(ratios)} rounds: {ratio:.0%} (target >= 70%): "
        f"{'OK' if ratio >= 0.7 else 'MISSED'}"
    )
    for name in ("mutate", "noop"):
        bare_ratios = [
            m.throughput / max(b.throughput, 1e-9) for m, b in zip(rounds[name], rounds["bare"], strict=True)
        ]
        print(
            f"saturation {name} vs the bare floor, median of {len(bare_ratios)} rounds: "
            f"{statistics.median(bare_ratios):.2f} x (rounds: {'  '.join(f'{r:.2f}' for r in bare_ratios)}); "
            f"p99 at {fixed[name].scenario}: {fixed[name].p99_ms:.2f} vs {fixed['bare'].p99_ms:.2f} ms "
            f"(+{fixed[name].p99_ms - fixed['bare'].p99_ms:.2f}); CPU per request at saturation "
            f"{saturated[name].cpu_ms:.2f} vs {saturated['bare'].cpu_ms:.2f} ms"
            + (" (targets for mutate: >= 0.7 x, p99 within 3 ms)" if name == "mutate" else "")
        )
    errors = sum(r.errors for r in [*fixed.values(), *saturated.values()])
    if errors:
        print(f"{errors} failed requests")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
