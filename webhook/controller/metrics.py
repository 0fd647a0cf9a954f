"""The controller's Prometheus metrics, in their own registry (the webhook server has its own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from webhook import __version__

# The kinds of the actions metric: the writes the controller carries out.
WRITES = (
    "create",
    "update",
    "replace",
    "delete",
    "report-address",
    "apply-certificate",
    "delete-certificate",
    "restart-broker",
)
PREFIX = "kafka_expose_controller_"  # every metric of this registry but build_info
FAILURE_MODES = ("api", "conflict", "lost-lease", "unexpected", "settings-rejected")


class Metrics:
    """The controller's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(PREFIX + name, text, labels, registry=registry)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(PREFIX + name, text, registry=registry)

        self.build_info = Gauge(
            "kafka_expose_build_info",
            "Always 1: the version of kafka-expose this process runs.",
            ["version", "component"],
            registry=registry,
        )
        self.build_info.labels(__version__, "controller").set(1)
        self.services_managed = gauge(
            "services_managed",
            "LoadBalancer Services managed by kafka-expose, as seen by the leader's watch.",
        )
        self.reconcile_errors = counter(
            "reconcile_errors", "Namespace reconciles that failed (retried with backoff)."
        )
        self.reconcile_duration = Histogram(
            PREFIX + "reconcile_duration_seconds",
            "Time to reconcile one namespace (read, plan, act).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.conflicts = counter(
            "conflicts", "Service names taken by an object kafka-expose did not create (each counted once)."
        )
        self.unexposed = counter(
            "unexposed_brokers",
            "Broker pods found running without kafka-expose in an opted-in namespace (each counted once).",
        )
        self.leader = gauge("leader", "1 while this replica leads, else 0.")
        self.actions = counter(
            "actions",
            "Actions carried out, by kind (create, update, replace, delete, report-address...).",
            "action",
        )
        self.refused = counter(
            "load_balancers_refused",
            "Broker Services not created: reason cap (policy.maxLoadBalancersPerNamespace, once per "
            "Service) or quota (a ResourceQuota refused the create, each attempt).",
            "reason",
        )
        self.field_conflicts = counter(
            "field_conflicts",
            "Updates not applied because another field manager owns a field kafka-expose sets.",
        )
        self.annotations_ignored = counter(
            "annotations_ignored",
            "Broker pods whose kafka-expose annotations disagree with the derived plan (once per pod).",
        )
        self.audit_violations = counter(
            "audit_violations",
            "Policy violations the audit found on Services kafka-expose did not create, by rule "
            "(once per Service and rule).",
            "rule",
        )
        self.audit_repairs = counter(
            "audit_repairs", "Non-compliant Services the audit repaired (controller.audit.repair)."
        )
        self.failures = counter(
            "failures",
            "Failures by mode, each handled as the README's failure table says: api (a read or write "
            "failed: retried with backoff), conflict (an object changed meanwhile: read again), "
            "lost-lease (the rest of the reconcile was dropped), unexpected (a bug or an object the "
            "planner cannot read: no write, retried with backoff), settings-rejected (the previous "
            "settings keep running).",
            "mode",
        )
        for mode in FAILURE_MODES:
            self.failures.labels(mode)
        for reason in ("cap", "quota"):
            self.refused.labels(reason)
        for kind in WRITES:
            self.actions.labels(kind)
