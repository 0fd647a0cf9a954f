"""Median time (and spread) of the pure mutation of one bitnami 32.4.4 broker pod.

Run: python bench/bench_core.py [--rounds N]. Target: median under 0.5 ms on the 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.podfactory import load_render, pod_from_statefulset, statefulsets
from webhook.core import mutate
from webhook.core.settings import parse_settings


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    settings = parse_settings({"domain": "kafka.example.com", "loadBalancer": {"cloud": "gke"}})
    sts = next(
        s
        for s in statefulsets(load_render("bitnami-kafka-32.4.4-brokers3"))
        if s["metadata"]["name"] == "kafka-broker"
    )
    pod = pod_from_statefulset(sts, 1, "kafka")
    assert mutate(pod, settings, "kafka").outcome == "mutated"
    for _ in range(200):  # warm up
        mutate(pod, settings, "kafka")
    samples = []
    for _ in range(args.rounds):
        start = time.perf_counter_ns()
        mutate(pod, settings, "kafka")
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    tracemalloc.start()
    mutate(pod, settings, "kafka")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    median = statistics.median(samples) / 1e6
    p99 = samples[int(len(samples) * 0.99)] / 1e6
    print(f"pure mutation of one bitnami 32.4.4 broker pod, {args.rounds} rounds:")
    print(
        f"  median {median:.3f} ms   p99 {p99:.3f} ms   min {samples[0] / 1e6:.3f} ms   peak alloc {peak / 1024:.0f} KiB"
    )
    print(f"  target median < 0.5 ms: {'met' if median < 0.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
