"""The full load scenario against a real control plane (etcd, kube-apiserver, kube-controller-manager):

1. the webhook registered as the manifests register it, and the controller, both started;
2. the hammer alone: an open-loop client at --rate req/s on kept-alive HTTPS connections, in its
   own process, for --baseline seconds (the webhook's latency with nothing else going on);
3. one namespace of --per-namespace broker pods (the controller's memory at 10 brokers);
4. the other namespaces' StatefulSets (apache/kafka, env-configured, podManagementPolicy Parallel)
   created at once while the hammer runs, until every pod is exposed and has its one Service;
5. --unrelated non-Kafka pods (half in an opted-in namespace), a resync, the controller's memory.

Figures: the hammer's p50/p99/max during creation, the time to expose everything, peak RSS (VmHWM)
of the server's master and workers and of the controller, the controller's RSS at 0, 10 and all
brokers and after the unrelated pods, worker restarts.

Run: python bench/load.py [--namespaces 20] [--per-namespace 10] [--unrelated 1000] [--rate 200]
Targets: every pod exposed with one Service, p99 < 10 ms at 200 req/s (client side: this target
lives here, not in `make test`, since it depends on what else the machine runs), no webhook call the
API server could not complete, no worker restart, the controller flat (< 4 MiB) with 1,000
unrelated pods. Exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability.loadkit import (  # noqa: E402
    Hammer,
    delete_namespaces,
    run_load_scenario,
    start_controller,
)
from tests.reliability.procinfo import gunicorn_events  # noqa: E402
from tests.support.controlplane import ControlPlane  # noqa: E402
from tests.support.webhookcluster import RegisteredWebhook  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--per-namespace", type=int, default=10)
    parser.add_argument("--unrelated", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of hammer alone first")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    figures: dict[str, object] = {"load_before": os.getloadavg()}
    log_dir = Path(tempfile.mkdtemp(prefix="kafka-expose-load-"))
    with ControlPlane() as plane:
        api = plane.api_client()
        webhook = RegisteredWebhook(api).start()
        controller = start_controller(plane, webhook.settings_path, log_dir)
        assert controller.proc is not None
        try:
            with Hammer(webhook.server.port, webhook.server.ca.cert_pem, args.rate) as hammer:
                time.sleep(args.baseline)
                baseline = hammer.stop()
            print(f"hammer alone: {baseline.summary()}", flush=True)
            result = run_load_scenario(
                plane,
                webhook.server,
                controller.proc.pid,
                namespaces=args.namespaces,
                per_namespace=args.per_namespace,
                unrelated=args.unrelated,
                rate=args.rate,
                log=lambda line: print(line, flush=True),
            )
            events = gunicorn_events(webhook.server.log_path)
            controller_alive = controller.proc.poll() is None
        finally:
            controller.stop()
            delete_namespaces(plane)
            webhook.stop()
    print(result.summary())
    print(f"gunicorn: {events}; controller alive: {controller_alive}")
    print(f"machine load average before/after: {figures['load_before']} / {os.getloadavg()}")
    hammer_result = result.hammer
    assert hammer_result is not None
    figures.update(
        brokers=result.brokers,
        namespaces=result.namespaces,
        unrelated=result.unrelated,
        expose_seconds=round(result.create_seconds, 1),
        exposed=result.exposure.exposed if result.exposure else 0,
        services=result.exposure.services if result.exposure else 0,
        problems=result.exposure.problems[:20] if result.exposure else [],
        baseline={"p50_ms": baseline.percentile(0.5) * 1000, "p99_ms": baseline.percentile(0.99) * 1000},
        hammer={
            "requests": hammer_result.requests,
            "errors": hammer_result.errors,
            "p50_ms": hammer_result.percentile(0.5) * 1000,
            "p99_ms": hammer_result.percentile(0.99) * 1000,
            "max_ms": max(hammer_result.latencies, default=0) * 1000,
        },
        webhook_call_failures=result.webhook_call_failures,
        server_p99_bound_ms=result.server_p99_bound * 1000,
        controller_rss_mib=result.controller_rss_mib,
        controller_peak_mib=result.controller_peak_mib,
        server_peak_mib=result.server_peak_mib,
        server_rss_mib=result.server_rss_mib,
        gunicorn=events,
        load_after=os.getloadavg(),
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = (
        result.exposure is not None
        and result.exposure.complete
        and hammer_result.errors == 0
        and result.webhook_call_failures == 0
        and hammer_result.percentile(0.99) < 0.010
        and events["Booting worker"] == webhook.server.workers
        and controller_alive
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
