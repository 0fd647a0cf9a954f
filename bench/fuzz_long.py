"""The long fuzzing run: 100,000 hostile bodies against `kafka-expose serve` over real HTTPS.

Starts the real server (gunicorn gthread, TLS, default 2 workers x 4 threads) with a test CA, sends
the seeded hostile cases of tests/reliability/hostile.py over a few kept-alive connections in
threads (full size: long strings and lists up to 7 MiB, bodies over the limit), judges every answer,
re-sends every patched object (reinvocation must change nothing), and watches the workers (gunicorn's
"Booting worker" / "Worker exiting" lines, the server's error log, /metrics, RSS every second).
Then, with --worst, the worst-case bodies one at a time on a 1-worker, 1-thread server: time, peak
RSS and the log each one causes.

Run: python bench/fuzz_long.py [--bodies 100000] [--seed 1] [--threads 4] [--worst] [--json FILE]
Exit status 1 when anything was found (a 5xx, a bad answer or patch, an internal error, a dead worker).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability.hostile import measure_worst, run_fuzz, server_errors, worst_cases  # noqa: E402
from tests.reliability.procinfo import Memory, gunicorn_events, server_memory, worker_pids  # noqa: E402
from tests.support.harness import running_server  # noqa: E402


class PeakWatcher(threading.Thread):
    """Samples the server's processes every `interval` s; keeps the peak RSS of each and of the sum."""

    def __init__(self, master_pid: int, log_path: Path, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.master_pid, self.log_path, self.interval = master_pid, log_path, interval
        self.stop = threading.Event()
        self.peak_total_mib = 0.0
        self.last: list[Memory] = []

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.last = server_memory(self.master_pid, self.log_path)
            self.peak_total_mib = max(self.peak_total_mib, sum(m.rss_mib for m in self.last))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bodies", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4, help="client threads (one connection each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server-threads", type=int, default=4)
    parser.add_argument("--huge-scale", type=float, default=1.0, help="scale of the 'huge' cases (1: 7 MiB)")
    parser.add_argument("--worst", action="store_true", help="also measure the worst-case bodies")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="keep the server dir (log, findings) here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out

    root = args.keep or Path(tempfile.mkdtemp(prefix="kafka-expose-fuzz-"))
    root.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"bodies": args.bodies, "seed": args.seed, "load_before": os.getloadavg()}
    with running_server(
        root / "server", show_log=False, workers=args.workers, threads=args.server_threads
    ) as server:
        assert server.proc is not None
        watcher = PeakWatcher(server.proc.pid, server.log_path)
        watcher.start()
        last = [time.perf_counter()]

        def progress(done: int) -> None:
            if done % 10_000 == 0:
                now = time.perf_counter()
                print(f"  {done} bodies ({10_000 / (now - last[0]):.0f}/s)", flush=True)
                last[0] = now

        report = run_fuzz(
            server.port,
            server.context(),
            args.bodies,
            seed=args.seed,
            threads=args.threads,
            huge_scale=args.huge_scale,
            save_dir=root / "findings",
            progress=progress,
        )
        time.sleep(1.5)
        watcher.stop.set()
        errors = server_errors(server.log_path)
        events = gunicorn_events(server.log_path)
        outcomes = {
            outcome: server.metric("kafka_expose_admission_requests_total", outcome=outcome)
            for outcome in (
                "mutated",
                "unchanged",
                "skipped",
                "warned",
                "allowed",
                "denied",
                "error",
                "invalid",
            )
        }
        alive = server.alive()
        final = server_memory(server.proc.pid, server.log_path)
    figures["load_after"] = os.getloadavg()
    print(report.summary())
    print(f"machine load average before/after: {figures['load_before']} / {figures['load_after']}")
    print(f"server outcomes (metrics): {outcomes}")
    print(f"gunicorn: {events}; server alive at the end: {alive}")
    print(
        "server RSS at the end MiB (master, workers): "
        + ", ".join(f"{m.rss_mib:.0f} (peak {m.hwm_mib:.0f})" for m in final)
        + f"; peak sum of RSS {watcher.peak_total_mib:.0f} MiB"
    )
    for signature, count in errors.most_common():
        print(f"SERVER ERROR x{count}: {signature}")
    figures.update(
        seconds=round(report.seconds, 1),
        bodies_per_second=round(report.rate),
        requests=report.requests,
        mib_sent=round(report.bytes_sent / 2**20),
        p50_ms=round(report.percentile(0.5) * 1000, 2),
        p99_ms=round(report.percentile(0.99) * 1000, 2),
        max_ms=round(max(report.latencies, default=0) * 1000),
        statuses=dict(report.statuses),
        categories=dict(report.categories),
        findings={f.signature: {"count": f.count, "examples": f.examples} for f in report.findings.values()},
        server_errors=dict(errors),
        gunicorn=events,
        outcomes=outcomes,
        peak_rss_sum_mib=round(watcher.peak_total_mib),
        peak_rss_mib=[round(m.hwm_mib) for m in final],
        slowest=[vars(s) for s in report.slowest[:5]],
    )
    restarted = events["Booting worker"] != args.workers or any(
        events[e] for e in ("Worker exiting", "WORKER TIMEOUT", "Exception in worker process")
    )
    failed = bool(report.findings or errors or restarted or not alive)

    if args.worst:
        print("\nworst cases, one at a time (1 worker, 1 thread):")
        with running_server(root / "worst", show_log=False, workers=1, threads=1) as server:
            (worker,) = worker_pids(server.log_path)
            costs = measure_worst(server.port, server.context(), worker, server.log_path, worst_cases())
        for cost in costs:
            print(cost.row(), cost.problems or "")
        figures["worst"] = [
            {
                "name": c.name,
                "mib": round(c.size / 2**20, 2),
                "status": c.status,
                "ms": round(c.seconds * 1000),
                "cpu_ms": round(c.cpu_seconds * 1000),
                "peak_mib": round(c.peak_mib),
                "growth_mib": round(c.growth_mib),
                "log_bytes": c.log_bytes,
            }
            for c in costs
        ]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nserver log and findings in {root}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
