"""`kafka-expose check`: the webhook's policy, offline, on manifests (for CI before deploy).

Objects are judged as they will reach the validating webhook: broker StatefulSets and Pods by what
kafka-expose will make them advertise, Services as written (the chart's own), plus the per-broker
LoadBalancer Services kafka-expose will create (they count towards the cap). Namespace objects in the
input supply the namespaces' override annotations. The cap counts the input's LoadBalancer Services
per namespace (a cluster may already hold more).

Output: one line per violation on stdout, `[<mode>] <namespace>: <message>`; refused namespace
overrides as warnings on stderr. Exit status 1 when a violation's mode is in --fail-on (default: any
violation, warn or enforce), 2 with one line on stderr for unusable settings or manifests.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.cli.inputs import settings_and_objects
from webhook.core import mutate
from webhook.core.objects import name_of, namespace_of
from webhook.core.overrides import settings_for_namespace
from webhook.core.policy import Violation, assess, is_load_balancer
from webhook.core.services import broker_service
from webhook.core.settings import Settings
from webhook.documents import InputError, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="settings file (YAML)")
    parser.add_argument(
        "-f", "--filename", default="-", metavar="FILE", help="manifests (a file, or - for stdin)"
    )
    parser.add_argument("--namespace", help="namespace of objects that name none (helm install -n)")
    parser.add_argument(
        "--fail-on",
        choices=["warn", "enforce"],
        default="warn",
        help="exit 1 on violations of rules in this mode or stricter (default: warn, i.e. any violation)",
    )


@dataclass(frozen=True)
class Finding:
    namespace: str
    violation: Violation

    def line(self) -> str:
        return f"[{self.violation.mode}] {self.namespace}: {self.violation.message}"


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    problems: list[str]  # refused namespace overrides


def check_objects(items: list[dict[str, Any]], settings: Settings, namespace: str | None) -> Report:
    default_namespace = namespace or "default"
    annotations: dict[str, Mapping[str, str]] = {}
    for obj in items:
        if obj.get("kind") == "Namespace":
            metadata = obj.get("metadata") or {}
            if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
                annotations[metadata["name"]] = dict(metadata.get("annotations") or {})

    effective: dict[str, Settings] = {}
    problems: list[str] = []

    def settings_of(ns: str) -> Settings:
        if ns not in effective:
            effective[ns], refused = settings_for_namespace(settings, annotations.get(ns), ns)
            problems.extend(refused)
        return effective[ns]

    findings: list[Finding] = []
    load_balancers: Counter[str] = Counter()
    services: set[tuple[str, str]] = set()
    planned: list[tuple[str, dict[str, Any]]] = []

    def judge(obj: Mapping[str, Any], ns: str) -> None:
        lb = is_load_balancer(obj)
        others = load_balancers[ns] if lb else None
        result = assess(obj, settings_of(ns), namespace=ns, load_balancers_in_namespace=others)
        findings.extend(Finding(ns, v) for v in result.violations if v.mode != "off")
        if lb:
            load_balancers[ns] += 1

    for obj in items:
        if obj.get("kind") == "Service":
            services.add((namespace_of(obj, default_namespace), name_of(obj)))
    for obj in items:
        kind = obj.get("kind")
        if kind not in ("Service", "Pod", "StatefulSet"):
            continue
        ns = namespace_of(obj, default_namespace)
        judge(obj, ns)
        if kind == "StatefulSet":
            for plan in mutate(obj, settings_of(ns), ns).plans:
                if (ns, plan.service_name) not in services:
                    services.add((ns, plan.service_name))
                    planned.append((ns, broker_service(plan, settings_of(ns))))
    # the controller creates the per-broker Services once the chart's objects exist
    for ns, service in planned:
        judge(service, ns)
    return Report(findings, list(dict.fromkeys(problems)))


def run(args: argparse.Namespace) -> int:
    try:
        settings, items = settings_and_objects(args.config, args.filename)
    except InputError as err:
        return fail(str(err))
    report = check_objects(items, settings, args.namespace)
    for problem in report.problems:
        print(f"kafka-expose: warning: {problem}", file=sys.stderr)
    for finding in report.findings:
        print(finding.line())
    failing = ("warn", "enforce") if args.fail_on == "warn" else ("enforce",)
    return 1 if any(f.violation.mode in failing for f in report.findings) else 0
