"""`make demo`: the whole story on this machine, in about a minute.

A local control plane (etcd, kube-apiserver, kube-controller-manager built from the Go module
proxy), the webhook (`kafka-expose serve`) registered as the manifests register it, the controller,
and an UNMODIFIED stock chart render (bitnami/kafka 32.4.4, 3 controllers + 3 brokers) applied into
an opted-in namespace. It prints, per broker, what it advertises and its LoadBalancer Service.
There is no kubelet and no cloud here: two clearly named stand-ins mark pods Ready and give each
LoadBalancer an address. external-dns and the DNS server are real (tools/build-ecosystem.sh): it
prints the records external-dns wrote and resolves each broker's name through CoreDNS.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kubernetes.client  # noqa: E402

from tests.support import ecosystem  # noqa: E402
from tests.support.controlplane import ControlPlane, NodeAgentStandIn  # noqa: E402
from tests.support.podfactory import load_render  # noqa: E402
from tests.support.webhookcluster import (  # noqa: E402
    ControllerProcess,
    RegisteredWebhook,
    apply_objects,
    ensure_namespace,
    wait_for,
)


def cloud_lb_stand_in(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    """Stand-in for the cloud's load-balancer controller: give every LoadBalancer an address."""
    services = [s for s in core.list_namespaced_service(namespace).items if s.spec.type == "LoadBalancer"]
    for index, service in enumerate(sorted(services, key=lambda s: s.metadata.name)):
        if not (service.status.load_balancer and service.status.load_balancer.ingress):
            body = {"status": {"loadBalancer": {"ingress": [{"ip": f"10.128.0.{11 + index}"}]}}}
            core.patch_namespaced_service_status(service.metadata.name, namespace, body)


def report(core: kubernetes.client.CoreV1Api, namespace: str) -> list[str]:
    lines = []
    services = {s.metadata.name: s for s in core.list_namespaced_service(namespace).items}
    for pod in sorted(core.list_namespaced_pod(namespace).items, key=lambda p: p.metadata.name):
        annotations = pod.metadata.annotations or {}
        advertised = annotations.get("kafka-expose.io/advertised")
        if not advertised:
            lines.append(f"{pod.metadata.name:<20} not exposed (not a broker, or see its events)")
            continue
        service = services.get(annotations.get("kafka-expose.io/service", ""))
        if service is None:
            lines.append(f"{pod.metadata.name:<20} {advertised}  (Service not created yet)")
            continue
        port = service.spec.ports[0]
        sa = service.metadata.annotations or {}
        internal = {k: v for k, v in sa.items() if "load-balancer-type" in k or "internal" in k}
        ingress = service.status.load_balancer.ingress if service.status.load_balancer else None
        address = ingress[0].ip or ingress[0].hostname if ingress else "pending"
        lines.append(
            f"{pod.metadata.name:<20} advertises {advertised}\n"
            f"{'':<20} via LoadBalancer Service {service.metadata.name}: {port.port} -> container port "
            f"{port.target_port}, selector {service.spec.selector}\n"
            f"{'':<20} {internal}, external-dns {sa.get('external-dns.alpha.kubernetes.io/hostname')}, "
            f"address {address} (pod annotation: {annotations.get('kafka-expose.io/load-balancer', '-')})"
        )
    return lines


def dns_report(world: ecosystem.Ecosystem, names: list[str]) -> list[str]:
    """The records external-dns wrote (etcd, as CoreDNS serves them), and each name resolved by a
    client whose only resolver is that CoreDNS."""
    lines = [f"external-dns wrote into CoreDNS's etcd ({world.dns.etcd_url}):"]
    lines += [f"  {key} {record}" for key, record in sorted(world.dns.records().items())]
    resolved = ecosystem.resolve_outside(world.workdir / "outside", world.dns.address, names)
    lines.append(f"resolved through CoreDNS at {world.dns.address}:53 (the client's only resolver):")
    lines += [f"  {name} -> {address or 'NXDOMAIN'}" for name, address in resolved.items()]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--render", default="bitnami-kafka-32.4.4-brokers3", help="shared chart render to install"
    )
    parser.add_argument("--namespace", default="kafka")
    args = parser.parse_args()
    started = time.monotonic()
    with ControlPlane() as plane:
        print(f"control plane up: {plane.api_url} (kubeconfig {plane.kubeconfig_path})")
        api = plane.api_client()
        core = kubernetes.client.CoreV1Api(api)
        agent = NodeAgentStandIn(plane).start()
        world = ecosystem.Ecosystem(plane.tmpdir / "ecosystem", plane, "kafka.example.com").__enter__()
        webhook = RegisteredWebhook(api).start()
        controller = ControllerProcess(plane.kubeconfig_path, webhook.settings_path, plane.tmpdir).start()
        try:
            print(
                f"webhook serving {webhook.url}, settings:\n  "
                + webhook.settings_path.read_text().replace("\n", "\n  ")
            )
            ensure_namespace(api, args.namespace)
            docs = load_render(args.render)
            created, skipped = apply_objects(api, docs, args.namespace)
            print(
                f"applied {len(created)} objects of {args.render} unchanged into opted-in namespace "
                f"{args.namespace!r} (skipped kinds the server no longer serves: {skipped or 'none'})"
            )
            brokers = sum(1 for d in docs if d["kind"] == "StatefulSet" for _ in range(d["spec"]["replicas"]))

            def settled() -> bool:
                cloud_lb_stand_in(core, args.namespace)
                pods = core.list_namespaced_pod(args.namespace).items
                exposed = [
                    p for p in pods if (p.metadata.annotations or {}).get("kafka-expose.io/advertised")
                ]
                lbs = [
                    s
                    for s in core.list_namespaced_service(args.namespace).items
                    if s.spec.type == "LoadBalancer"
                ]
                addressed = [
                    p for p in exposed if (p.metadata.annotations or {}).get("kafka-expose.io/load-balancer")
                ]
                return (
                    len(pods) == brokers
                    and bool(exposed)
                    and len(lbs) >= len(exposed)
                    and addressed == exposed
                )

            try:
                wait_for(settled, timeout=90, interval=0.5, what="brokers exposed and their LBs addressed")
            except AssertionError as err:
                print(f"note: {err}")
            print("\n".join(report(core, args.namespace)))
            names = sorted(
                name
                for s in core.list_namespaced_service(args.namespace).items
                for name in (
                    (s.metadata.annotations or {}).get("external-dns.alpha.kubernetes.io/hostname") or ""
                ).split(",")
                if name
            )
            try:
                wait_for(
                    lambda: all(world.dns.a(n) for n in names), timeout=60, interval=0.5, what="DNS records"
                )
            except AssertionError as err:
                print(f"note: {err}")
            print("\n".join(dns_report(world, names)))
        finally:
            world.__exit__(None, None, None)
            controller.stop()
            webhook.stop()
            agent.stop()
    print(f"done in {time.monotonic() - started:.0f}s; everything stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
