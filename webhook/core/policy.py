"""The platform policy: rules over the final objects (after every mutation). Pure: dicts in, verdicts out.

Rules (names as in the settings' `policy.rules`). Every Service of an opted-in namespace that is
reachable from outside or publishes a name is in scope, whatever it selects (a selector without
"kafka", a selector-less Service with its own EndpointSlice, a pod-index selector all reach brokers):
LoadBalancer and NodePort Services, Services with `spec.externalIPs`, Services with an external-dns
annotation (`EXTERNAL_DNS_NAMES`).
* internalLoadBalancer: a LoadBalancer Service carries the configured cloud's internal-LB
  annotations (and `loadBalancerClass` when one is configured); a NodePort Service or one with
  `spec.externalIPs` is always a violation (a port on every node, an address outside the cluster).
* sourceRanges: such a LoadBalancer's `loadBalancerSourceRanges` lie within the allowed ranges
  (no ranges at all means "from anywhere", a violation when ranges are configured).
* allowedDomains: a broker only advertises hosts under the allowed domains; a Service publishes
  (every external-dns annotation: hostname, internal-hostname, target) only names of its own
  namespace's name space: what the host templates give for that namespace and its (approved)
  domain, e.g. `*.team-a.kafka.example.com`. `allowedDomains` alone is one global list: team-a
  could publish `kafka-0.team-b.kafka.example.com`.
* loadBalancerCap: a new LoadBalancer Service does not take the namespace over the cap.
* exposureRequired: a broker that should have been exposed but could not be is a violation.
* encryptedExternalListener: a broker whose external listener would carry clear text (PLAINTEXT or
  SASL_PLAINTEXT: no `tls.mode: cert-manager`, and a chart whose client listener is not SSL). Off
  unless set in `policy.rules`: turning TLS on is a platform decision, not a default to warn about.

`assess` lists the violations of an object (`assess_request` of an AdmissionRequest's object);
`verdict_of` applies the modes (off: ignored, warn: a warning, enforce: denied). The settings given
must already be the namespace's effective settings (`webhook.core.overrides.settings_for_namespace`).
The webhook's hook with the `ValidateHook` signature and the API-backed parts (namespace annotations,
the live LoadBalancer count) are `webhook.server.hooks.PolicyHook`; the warnings' form (prefix,
length) is the admission edge's (`webhook.admission.responses.warning_text`).

Over 400 lines, knowingly: one module per rule set would scatter the rules' shared readers and
the mode/verdict logic that every rule goes through; the rules are its sections.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook.core.expose import mutate
from webhook.core.names import ADVERTISED, EXTERNAL_DNS, EXTERNAL_DNS_NAMES
from webhook.core.objects import metadata_of, spec_of, string_map
from webhook.core.services import is_managed, selects_kafka
from webhook.core.settings import Mode, Settings, host_allowed

INTERNAL_LOAD_BALANCER = "internalLoadBalancer"
ALLOWED_DOMAINS = "allowedDomains"
SOURCE_RANGES = "sourceRanges"
LOAD_BALANCER_CAP = "loadBalancerCap"
EXPOSURE_REQUIRED = "exposureRequired"
ENCRYPTED_EXTERNAL_LISTENER = "encryptedExternalListener"
RULES = (
    INTERNAL_LOAD_BALANCER,
    ALLOWED_DOMAINS,
    SOURCE_RANGES,
    LOAD_BALANCER_CAP,
    EXPOSURE_REQUIRED,
    ENCRYPTED_EXTERNAL_LISTENER,
)
_RULE_FIELDS = {
    INTERNAL_LOAD_BALANCER: "internal_load_balancer",
    ALLOWED_DOMAINS: "allowed_domains",
    SOURCE_RANGES: "source_ranges",
    LOAD_BALANCER_CAP: "load_balancer_cap",
    EXPOSURE_REQUIRED: "exposure_required",
    ENCRYPTED_EXTERNAL_LISTENER: "encrypted_external_listener",
}
SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
_ADVERTISED_RE = re.compile(r"^[A-Za-z0-9_]+://(?P<host>[^:/\[\]]+):[0-9]+$")

RuleOutcome = Literal["passed", "warned", "denied", "ignored", "unchecked"]
_OUTCOME_OF_MODE: dict[str, RuleOutcome] = {"enforce": "denied", "warn": "warned", "off": "ignored"}


@dataclass(frozen=True)
class Violation:
    rule: str  # one of RULES
    message: str  # says what is wrong and what to change; ends with "(policy rule <rule>)"
    mode: Mode
    keep: str = field(default="", compare=False)  # the end of `message` a shortened warning keeps

    @property
    def tail(self) -> str:
        """What a warning cut to the API server's length must keep: what to change, and the rule."""
        return self.keep or f" (policy rule {self.rule})"


@dataclass(frozen=True)
class Assessment:
    """The violations, and every rule that was checked (for metrics: a rule with no violation passed)."""

    violations: tuple[Violation, ...]
    checked: tuple[str, ...]
    unchecked: tuple[str, ...] = ()  # applied, but could not be checked (the cap without a count)
    concerns_kafka: bool = False  # the object is a broker or a Service in front of brokers


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    message: str | None
    warnings: list[Violation]  # the rules in warn mode (the edge turns them into warning lines)
    outcomes: dict[str, RuleOutcome] = field(default_factory=dict)


def mode_of(settings: Settings, rule: str) -> Mode:
    return settings.policy.mode_of(_RULE_FIELDS[rule])


def policy_off(settings: Settings) -> bool:
    return all(mode_of(settings, rule) == "off" for rule in RULES)


def assess(
    obj: Mapping[str, Any],
    settings: Settings,
    *,
    namespace: str | None,
    load_balancers_in_namespace: int | None,
) -> Assessment:
    """The violations of `obj` (a Pod, StatefulSet or Service as it will be stored).

    load_balancers_in_namespace: how many OTHER LoadBalancer Services the namespace has (None: the
    cap is not checked, e.g. no API access, or an UPDATE of a Service that already was one)."""
    kind = obj.get("kind") if isinstance(obj, Mapping) else None
    if kind == "Service":
        return _assess_service(obj, settings, namespace, load_balancers_in_namespace)
    if kind in ("Pod", "StatefulSet"):
        return _assess_broker(obj, settings, namespace)
    return Assessment((), ())


def verdict_of(assessment: Assessment) -> Verdict:
    """Enforce denies, warn warns, off ignores; and each checked rule's outcome, for metrics."""
    denials = [v.message for v in assessment.violations if v.mode == "enforce"]
    warnings = [v for v in assessment.violations if v.mode == "warn"]
    outcomes: dict[str, RuleOutcome] = {rule: "passed" for rule in assessment.checked}
    outcomes.update({rule: "unchecked" for rule in assessment.unchecked})
    rank = {"passed": 0, "unchecked": 0, "ignored": 1, "warned": 2, "denied": 3}
    for violation in assessment.violations:
        outcome = _OUTCOME_OF_MODE[violation.mode]
        if rank[outcome] > rank[outcomes.get(violation.rule, "passed")]:
            outcomes[violation.rule] = outcome
    message = "; ".join(_unique(denials)) if denials else None
    return Verdict(not denials, message, list(dict.fromkeys(warnings)), outcomes)


def assess_request(
    request: Mapping[str, Any], settings: Settings, *, load_balancers_in_namespace: int | None
) -> Assessment:
    """Assess the object of an AdmissionRequest (CREATE or UPDATE)."""
    obj = request.get("object")
    if not isinstance(obj, Mapping) or policy_off(settings):
        return Assessment((), ())
    namespace = request.get("namespace") or metadata_of(obj).get("namespace")
    return assess(
        obj,
        settings,
        namespace=namespace if isinstance(namespace, str) else None,
        load_balancers_in_namespace=load_balancers_in_namespace,
    )


def cap_applies(request: Mapping[str, Any], settings: Settings) -> bool:
    """Whether the request adds a LoadBalancer Service to its namespace under a configured cap: a CREATE,
    or an UPDATE that turns a Service into a LoadBalancer (an existing one is never denied)."""
    if settings.policy.max_load_balancers_per_namespace is None:
        return False
    if mode_of(settings, LOAD_BALANCER_CAP) == "off" or not is_load_balancer(request.get("object")):
        return False
    return request.get("operation") == "CREATE" or not is_load_balancer(request.get("oldObject"))


def is_load_balancer(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and obj.get("kind", "Service") == "Service"
        and spec_of(obj).get("type") == "LoadBalancer"
    )


# ----------------------------------------------------------------------------------------- services


def _assess_service(
    obj: Mapping[str, Any], settings: Settings, namespace: str | None, others: int | None
) -> Assessment:
    spec = spec_of(obj)
    kind = spec.get("type")
    name = _name(obj)
    violations: list[Violation] = []
    checked: list[str] = []
    unchecked: list[str] = []
    kafka = kind in ("LoadBalancer", "NodePort") and selects_kafka(obj, settings)
    external_ips = spec_of(obj).get("externalIPs")
    if in_scope(obj):
        checked += [INTERNAL_LOAD_BALANCER, ALLOWED_DOMAINS]
        if kind == "NodePort":
            violations.append(
                _violation(
                    settings,
                    INTERNAL_LOAD_BALANCER,
                    f"Service {name}: a NodePort Service opens a port on every node: use type ClusterIP "
                    "and let kafka-expose give each broker its own internal LoadBalancer",
                )
            )
        elif kind == "LoadBalancer":
            checked.append(SOURCE_RANGES)
            violations += _internal(obj, settings, name)
            violations += _source_ranges(obj, settings, name)
        if external_ips:
            violations.append(
                _violation(
                    settings,
                    INTERNAL_LOAD_BALANCER,
                    f"Service {name}: spec.externalIPs receives traffic on addresses outside the cluster's "
                    "control: remove spec.externalIPs",
                )
            )
        violations += _published_names(obj, settings, name, namespace)
    cap = settings.policy.max_load_balancers_per_namespace
    if kind == "LoadBalancer" and cap is not None:
        if others is None:
            unchecked.append(LOAD_BALANCER_CAP)
        else:
            checked.append(LOAD_BALANCER_CAP)
            if others + 1 > cap:
                where = f"namespace {namespace}" if namespace else "the namespace"
                violations.append(
                    _violation(
                        settings,
                        LOAD_BALANCER_CAP,
                        f"Service {name}: {where} already has {others} LoadBalancer Service(s), the cap is "
                        f"{cap}: delete a LoadBalancer Service or use type ClusterIP",
                    )
                )
    return Assessment(tuple(violations), tuple(checked), tuple(unchecked), kafka)


def in_scope(service: Mapping[str, Any]) -> bool:
    """Whether the policy judges this Service: reachable from outside, or publishing a DNS name."""
    spec = spec_of(service)
    annotations = string_map(metadata_of(service).get("annotations"))
    return (
        spec.get("type") in ("LoadBalancer", "NodePort")
        or bool(spec.get("externalIPs"))
        or any(key in annotations for key in EXTERNAL_DNS_NAMES)
    )


def internal_load_balancer_changes(obj: Mapping[str, Any], settings: Settings) -> list[str]:
    """What would make the Service's load balancer internal by the settings (empty: it is)."""
    annotations = string_map(metadata_of(obj).get("annotations"))
    lb = settings.load_balancer
    changes = []
    for key, value in lb.internal_annotations().items():
        current = annotations.get(key)
        if current is None:
            changes.append(f'add annotation {key}: "{value}"')
        elif current != value:
            changes.append(f'set annotation {key}: "{value}" (it is "{current}")')
    current_class = spec_of(obj).get("loadBalancerClass")
    if lb.load_balancer_class and current_class != lb.load_balancer_class:
        changes.append(f'set spec.loadBalancerClass: "{lb.load_balancer_class}"')
    return changes


def _internal(obj: Mapping[str, Any], settings: Settings, name: str) -> list[Violation]:
    changes = internal_load_balancer_changes(obj, settings)
    if not changes:
        return []
    return [
        _violation(
            settings,
            INTERNAL_LOAD_BALANCER,
            f"Service {name}: LoadBalancer in front of Kafka brokers must be internal: {', '.join(changes)}",
        )
    ]


def _source_ranges(obj: Mapping[str, Any], settings: Settings, name: str) -> list[Violation]:
    allowed = settings.policy.allowed_source_ranges
    if not allowed:
        return []
    shown = ", ".join(allowed)
    ranges = spec_of(obj).get("loadBalancerSourceRanges")
    field_name = "spec.loadBalancerSourceRanges"
    if not ranges:
        annotation = string_map(metadata_of(obj).get("annotations")).get(SOURCE_RANGES_ANNOTATION, "")
        ranges = [r.strip() for r in annotation.split(",") if r.strip()]
        field_name = f"annotation {SOURCE_RANGES_ANNOTATION}" if ranges else field_name
    if not ranges:
        return [
            _violation(
                settings,
                SOURCE_RANGES,
                f"Service {name}: LoadBalancer in front of Kafka brokers accepts clients from anywhere: "
                f"set spec.loadBalancerSourceRanges within {shown}",
            )
        ]
    outside = [str(r) for r in ranges if not cidr_within(str(r), allowed)]
    if not outside:
        return []
    return [
        _violation(
            settings,
            SOURCE_RANGES,
            f"Service {name}: source range(s) {', '.join(outside)} not within the allowed {shown}: "
            f"narrow {field_name} to those ranges",
        )
    ]


def cidr_within(cidr: str, allowed: Iterable[str]) -> bool:
    """Whether the network `cidr` lies inside one of `allowed` (same IP version)."""
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return False
    for entry in allowed:
        outer = ipaddress.ip_network(entry, strict=False)
        if outer.version == network.version and network.subnet_of(outer):  # type: ignore[arg-type]
            return True
    return False


def _published_names(
    obj: Mapping[str, Any], settings: Settings, name: str, namespace: str | None
) -> list[Violation]:
    allowed = settings.policy.allowed_domains
    annotations = string_map(metadata_of(obj).get("annotations"))
    own = namespace_names(settings, namespace) if namespace else None
    violations = []
    for key in EXTERNAL_DNS_NAMES:
        names = [n.strip().rstrip(".").lower() for n in annotations.get(key, "").split(",")]
        names = [n for n in names if n]
        foreign = [h for h in names if not host_allowed(h, allowed)]
        publishes = "publishes" if key == EXTERNAL_DNS else f"annotation {key} publishes"
        if foreign:
            violations.append(
                _violation(
                    settings,
                    ALLOWED_DOMAINS,
                    f"Service {name}: {publishes} {', '.join(foreign)}, not under the "
                    f"allowed domains {', '.join(allowed)}: "
                    + (
                        "use a domain (or host template) under one of them"
                        if is_managed(obj) and key == EXTERNAL_DNS
                        else f"change annotation {key} to names under them"
                    ),
                )
            )
        elif own is not None and (outside := [h for h in names if not own.fullmatch(h)]):
            violations.append(
                _violation(
                    settings,
                    ALLOWED_DOMAINS,
                    f"Service {name}: {publishes} {', '.join(outside)}, outside the names "
                    f"of namespace {namespace} ({namespace_names_shown(settings, namespace or '')}): "
                    f"change annotation {key} to one of them",
                )
            )
    return violations


_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_TEMPLATE_FIELD = re.compile(r"\{(pod|ordinal|statefulset|namespace|domain)\}")


def _templates(settings: Settings) -> list[str]:
    return [t for t in (settings.host_template, settings.bootstrap_host_template) if t]


def namespace_names(settings: Settings, namespace: str) -> re.Pattern[str]:
    """Every name the host templates can give a broker of `namespace` (with the namespace's effective
    domain): {pod} and {statefulset} stand for one DNS label, {ordinal} for a number."""
    fields = {
        "pod": _LABEL,
        "statefulset": _LABEL,
        "ordinal": "[0-9]+",
        "namespace": re.escape(namespace),
        "domain": re.escape(settings.domain),
    }
    alternatives = []
    for template in _templates(settings):
        parts = _TEMPLATE_FIELD.split(template)
        alternatives.append(
            "".join(fields[part] if index % 2 else re.escape(part) for index, part in enumerate(parts))
        )
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


def namespace_names_shown(settings: Settings, namespace: str) -> str:
    shown = {
        "pod": "*",
        "statefulset": "*",
        "ordinal": "N",
        "namespace": namespace,
        "domain": settings.domain,
    }
    return " or ".join(
        dict.fromkeys(_TEMPLATE_FIELD.sub(lambda m: shown[m[1]], t) for t in _templates(settings))
    )


# ------------------------------------------------------------------------------------------ brokers


def _assess_broker(obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Assessment:
    kind = str(obj.get("kind"))
    name = _name(obj)
    decision = mutate(obj, settings, namespace)
    if decision.outcome == "skipped":
        return Assessment((), ())
    if decision.outcome == "warned":
        fix = "run `kafka-expose explain` on its manifests, then change the broker configuration or settings.match"
        tail = f"; {fix} (policy rule {EXPOSURE_REQUIRED})"
        violation = Violation(
            EXPOSURE_REQUIRED,
            f"{kind} {name}: Kafka broker cannot be exposed: {decision.reason}{tail}",
            mode_of(settings, EXPOSURE_REQUIRED),
            keep=tail,
        )
        return Assessment((violation,), (EXPOSURE_REQUIRED,), (), True)
    hosts = [plan.host for plan in decision.plans]
    if kind == "Pod":
        annotated = _advertised_host(string_map(metadata_of(obj).get("annotations")).get(ADVERTISED))
        if annotated:
            hosts.append(annotated)
    allowed = settings.policy.allowed_domains
    outside = _unique(h for h in hosts if not host_allowed(h, allowed))
    violations = []
    if outside:
        violations.append(
            _violation(
                settings,
                ALLOWED_DOMAINS,
                f"{kind} {name}: advertises {', '.join(outside)}, not under the allowed domains "
                f"{', '.join(allowed)}: use a domain (or host template) under one of them",
            )
        )
    rules: tuple[str, ...] = (EXPOSURE_REQUIRED, ALLOWED_DOMAINS)
    clear = [p for p in decision.plans if p.tls is None and p.security_protocol not in _ENCRYPTED]
    if mode_of(settings, ENCRYPTED_EXTERNAL_LISTENER) != "off":  # off unless set: not even checked
        rules += (ENCRYPTED_EXTERNAL_LISTENER,)
    if clear and ENCRYPTED_EXTERNAL_LISTENER in rules:
        protocol = clear[0].security_protocol or "that of the client listener, decided at start"
        violations.append(
            _violation(
                settings,
                ENCRYPTED_EXTERNAL_LISTENER,
                f"{kind} {name}: the external listener would carry clear text ({protocol}): "
                "set tls.mode: cert-manager",
            )
        )
    return Assessment(tuple(violations), rules, (), True)


_ENCRYPTED = ("SSL", "SASL_SSL")


def _advertised_host(value: str | None) -> str | None:
    match = _ADVERTISED_RE.match(value.strip()) if value else None
    return match["host"] if match else None


# ------------------------------------------------------------------------------------------ helpers


def _violation(settings: Settings, rule: str, text: str) -> Violation:
    return Violation(rule, f"{text} (policy rule {rule})", mode_of(settings, rule))


def _name(obj: Mapping[str, Any]) -> str:
    metadata = metadata_of(obj)
    name = metadata.get("name") or metadata.get("generateName")
    return str(name) if name else "(unnamed)"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
