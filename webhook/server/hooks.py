"""The server's hooks: `PolicyHook` (validate) and `NamespaceMutate` (mutate), the policy and the
core with each namespace's effective settings (webhook.server.namespaces keeps what they read)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from webhook.admission.responses import warning_text
from webhook.core import Decision
from webhook.core import mutate as core_mutate
from webhook.core.overrides import settings_for_namespace
from webhook.core.policy import (
    LOAD_BALANCER_CAP,
    Assessment,
    RuleOutcome,
    Violation,
    assess_request,
    cap_applies,
    mode_of,
    policy_off,
    verdict_of,
)
from webhook.core.settings import Settings
from webhook.server.namespaces import NamespaceCache

log = logging.getLogger("kafka_expose.namespaces")

# record(rule, outcome): count one policy decision (wired to a metrics counter by the server)
PolicyRecorder = Callable[[str, RuleOutcome], None]
# on_failure(what): count a policy check that could not be made ("cap_lookup")
FailureRecorder = Callable[[str], None]


_logged_once: set[str] = set()


def _log_once(key: str, message: str) -> None:
    if key not in _logged_once:
        _logged_once.add(key)
        log.warning(message)


def effective_settings(
    cache: NamespaceCache | None, settings: Settings, namespace: str | None
) -> tuple[Settings, list[str]]:
    """The namespace's settings (platform settings without a cache or a namespace)."""
    if cache is None or not namespace:
        overrides = settings.policy.namespace_overrides
        if cache is None and (overrides.allowed_domains or overrides.allowed_clouds):
            _log_once("overrides", "no API access: namespace overrides (kafka-expose.io/*) are not applied")
        return settings, []
    return settings_for_namespace(settings, cache.annotations(namespace), namespace)


class PolicyHook:
    """The server's `validate` hook: `(AdmissionRequest, Settings) -> (allowed, message, warnings)`."""

    def __init__(
        self,
        cache: NamespaceCache | None,
        record: PolicyRecorder | None = None,
        on_failure: FailureRecorder | None = None,
    ) -> None:
        self.cache = cache
        self.record = record
        self.on_failure = on_failure

    def __call__(self, request: Mapping[str, Any], settings: Settings) -> tuple[bool, str, Sequence[str]]:
        obj = request.get("object")
        metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
        namespace = request.get("namespace") or (metadata or {}).get("namespace")
        namespace = namespace if isinstance(namespace, str) and namespace else None
        effective, problems = effective_settings(self.cache, settings, namespace)
        if policy_off(effective):
            return True, "", []
        if cap_applies(request, effective) and namespace:
            if self.cache is None:
                _log_once("cap", "no API access: the LoadBalancer cap (loadBalancerCap) is not checked")
                assessment = assess_request(request, effective, load_balancers_in_namespace=None)
                verdict = verdict_of(assessment)
            else:
                name = str((metadata or {}).get("name") or "")
                with self.cache.cap_lock(namespace):
                    others = self.cache.count_load_balancers(namespace, exclude=name or None)
                    assessment = assess_request(request, effective, load_balancers_in_namespace=others)
                    if others is None:
                        assessment = cap_unknown(assessment, effective, namespace, name)
                        if self.on_failure is not None:
                            self.on_failure("cap_lookup")
                    verdict = verdict_of(assessment)
                    if verdict.allowed and others is not None and name and not request.get("dryRun"):
                        self.cache.reserve(namespace, name)
        elif self.cache is not None and namespace and broker_cap_applies(request, effective):
            assessment = assess_request(request, effective, load_balancers_in_namespace=None)
            assessment = self._broker_slot(request, effective, namespace, assessment)
            verdict = verdict_of(assessment)
        else:
            assessment = assess_request(request, effective, load_balancers_in_namespace=None)
            verdict = verdict_of(assessment)
            verdict.outcomes.pop(LOAD_BALANCER_CAP, None)  # not a request the cap applies to
        if self.record is not None:
            for rule, outcome in verdict.outcomes.items():
                self.record(rule, outcome)
        warnings = [warning_text(v.message, keep=v.tail) for v in verdict.warnings]
        if assessment.concerns_kafka:
            warnings += [warning_text(p) for p in problems]
        return verdict.allowed, verdict.message or "", warnings

    def _broker_slot(
        self, request: Mapping[str, Any], settings: Settings, namespace: str, assessment: Assessment
    ) -> Assessment:
        """The assessment with the cap checked for the new broker pod's future LoadBalancer."""
        assert self.cache is not None
        decision = core_mutate(request.get("object") or {}, settings, namespace)
        plans = [p for p in decision.plans if p.service_name] if decision.outcome == "mutated" else []
        if not plans:
            return assessment
        plan = plans[0]
        others = self.cache.count_load_balancers(namespace, exclude=plan.service_name)
        if others is None and self.on_failure is not None:
            self.on_failure("cap_lookup")
        violation = _broker_slot_violation(settings, namespace, plan.pod, plan.service_name, others)
        return Assessment(
            (*assessment.violations, *([violation] if violation else [])),
            (*assessment.checked, LOAD_BALANCER_CAP),
            assessment.unchecked,
            assessment.concerns_kafka,
        )


def broker_cap_applies(request: Mapping[str, Any], settings: Settings) -> bool:
    """A new Pod under a configured cap (its broker would get a LoadBalancer from the controller)."""
    obj = request.get("object")
    return (
        settings.policy.max_load_balancers_per_namespace is not None
        and mode_of(settings, LOAD_BALANCER_CAP) != "off"
        and request.get("operation") == "CREATE"
        and isinstance(obj, Mapping)
        and obj.get("kind") == "Pod"
    )


def cap_unknown(assessment: Assessment, settings: Settings, namespace: str, name: str) -> Assessment:
    """The assessment with the cap counted as exceeded: its count could not be read, and a cap that is
    skipped whenever the API server is slow is no cap (issue 15, item 7)."""
    violation = Violation(
        LOAD_BALANCER_CAP,
        f"Service {name or '(unnamed)'}: the LoadBalancer Services of namespace {namespace} could not be "
        f"counted, so the cap of {settings.policy.max_load_balancers_per_namespace} could not be checked: "
        "retry (policy rule loadBalancerCap)",
        mode_of(settings, LOAD_BALANCER_CAP),
    )
    return Assessment(
        (*assessment.violations, violation),
        (*assessment.checked, LOAD_BALANCER_CAP),
        tuple(rule for rule in assessment.unchecked if rule != LOAD_BALANCER_CAP),
        assessment.concerns_kafka,
    )


def _broker_slot_violation(
    settings: Settings, namespace: str, pod: str, service: str, others: int | None
) -> Violation | None:
    """The cap judged for the LoadBalancer a new broker pod will get (issue 15, item 4): a broker that
    advertises a name whose Service the cap will never allow is refused (enforce) or warned (warn).
    A count that could not be read only warns: a lookup failure never keeps a broker from starting."""
    cap = settings.policy.max_load_balancers_per_namespace
    mode = mode_of(settings, LOAD_BALANCER_CAP)
    if others is None:
        text = (
            f"Pod {pod}: the LoadBalancer Services of namespace {namespace} could not be counted, so "
            f"whether Service {service} fits the cap of {cap} is unknown (policy rule loadBalancerCap)"
        )
        return Violation(LOAD_BALANCER_CAP, text, "warn")
    if others + 1 <= (cap or 0):
        return None
    text = (
        f"Pod {pod}: namespace {namespace} already has {others} LoadBalancer Service(s), the cap is {cap}: "
        f"this broker's Service {service} would not be created and its advertised name would not resolve; "
        "scale the StatefulSet down or raise policy.maxLoadBalancersPerNamespace (policy rule loadBalancerCap)"
    )
    return Violation(LOAD_BALANCER_CAP, text, mode)


class NamespaceMutate:
    """The server's `mutate`: the core with the namespace's effective settings; a refused override
    request comes back as a warning on the brokers and Services the core handles."""

    def __init__(
        self,
        cache: NamespaceCache | None,
        mutate: Callable[[Mapping[str, Any], Settings, str | None], Decision] = core_mutate,
    ) -> None:
        self.cache = cache
        self.mutate = mutate

    def __call__(self, obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
        if namespace is None and isinstance(obj, Mapping):
            found = (obj.get("metadata") or {}).get("namespace")
            namespace = found if isinstance(found, str) else None
        effective, problems = effective_settings(self.cache, settings, namespace)
        decision = self.mutate(obj, effective, namespace)
        if problems and decision.outcome != "skipped":
            extra = tuple(warning_text(p) for p in problems)
            decision = dataclasses.replace(decision, warnings=(*decision.warnings, *extra))
        return decision


def policy_hooks(
    kubeconfig: str | None = None,
    record: PolicyRecorder | None = None,
    *,
    start: bool = True,
    on_failure: FailureRecorder | None = None,
) -> tuple[PolicyHook, NamespaceMutate, NamespaceCache | None]:
    """What `create_app` needs: `validate=hook, mutate=mutate`. Call it in each worker (after fork):
    the cache's watch thread and HTTP connections must belong to the serving process."""
    cache = NamespaceCache.connect(kubeconfig)
    if cache is not None and start:
        cache.start()
    return PolicyHook(cache, record, on_failure), NamespaceMutate(cache), cache
