"""The policy rules and modes (webhook.core.policy), namespace overrides and the server's hooks
(webhook.namespaces) with a fake API reader."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.expectations import own_manifest
from tests.support.podfactory import (
    admission_review,
    load_render,
    pod_from_statefulset,
    services,
    statefulsets,
)
from webhook.admission.responses import warning_text
from webhook.core import mutate
from webhook.core.names import CLOUD_OVERRIDE, DOMAIN_OVERRIDE
from webhook.core.overrides import settings_for_namespace
from webhook.core.policy import (
    ALLOWED_DOMAINS,
    EXPOSURE_REQUIRED,
    INTERNAL_LOAD_BALANCER,
    LOAD_BALANCER_CAP,
    SOURCE_RANGES,
    Assessment,
    Violation,
    assess,
    cap_applies,
    cidr_within,
    verdict_of,
)
from webhook.core.settings import Settings, SettingsError, parse_settings
from webhook.server.hooks import NamespaceMutate, PolicyHook
from webhook.server.namespaces import FAILED_SECONDS, MISSING_SECONDS, NamespaceCache

pytestmark = pytest.mark.unit

GKE_INTERNAL = 'add annotation networking.gke.io/load-balancer-type: "Internal"'
GKE_INTERNAL_ANNOTATION = {"networking.gke.io/load-balancer-type": "Internal"}


def make_settings(mode: str = "enforce", **policy: Any) -> Settings:
    cloud = policy.pop("cloud", "gke")
    extra = policy.pop("top", {})
    return parse_settings(
        {
            "domain": "kafka.example.com",
            "loadBalancer": {"cloud": cloud, **extra.pop("loadBalancer", {})},
            **extra,
            "policy": {"mode": mode, "allowedDomains": ["kafka.example.com"], **policy},
        }
    )


def service(
    name: str = "kafka-0-public",
    kind: str = "LoadBalancer",
    annotations: dict[str, str] | None = None,
    selector: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "kafka", "annotations": dict(annotations or {})},
        "spec": {
            "type": kind,
            "selector": selector
            if selector is not None
            else {"statefulset.kubernetes.io/pod-name": "kafka-0"},
            "ports": [{"port": 9094}],
            **spec,
        },
    }


def bitnami_sts() -> dict[str, Any]:
    return next(
        s
        for s in statefulsets(load_render("bitnami-kafka-32.4.4-brokers3"))
        if "broker" in s["metadata"]["name"]
    )


def broker_pod(settings: Settings, namespace: str = "kafka", mutated: bool = True) -> dict[str, Any]:
    pod = pod_from_statefulset(bitnami_sts(), 0, namespace)
    return mutate(pod, settings, namespace).result if mutated else pod


def unknown_layout_pod() -> dict[str, Any]:
    sts = own_manifest("unknown-layout.yaml")[0]
    return pod_from_statefulset(sts, 0, "kafka")


def rules(violations: list[Violation]) -> list[str]:
    return [v.rule for v in violations]


def check(obj: dict[str, Any], settings: Settings, others: int | None = None) -> list[Violation]:
    return list(assess(obj, settings, namespace="kafka", load_balancers_in_namespace=others).violations)


def decide(violations: list[Violation]) -> tuple[bool, str | None, list[str]]:
    """verdict_of (what PolicyHook applies), with the warnings as the admission edge writes them."""
    verdict = verdict_of(Assessment(tuple(violations), ()))
    return verdict.allowed, verdict.message, [warning_text(v.message, keep=v.tail) for v in verdict.warnings]


def validate(request: dict[str, Any], settings: Settings) -> tuple[bool, str, list[str]]:
    """The server's hook without API access (no overrides, no cap)."""
    allowed, message, warnings = PolicyHook(None)(request, settings)
    return allowed, message, list(warnings)


# ---------------------------------------------------------------------------- internalLoadBalancer


def test_public_load_balancer_in_front_of_brokers_is_denied_with_what_to_change() -> None:
    violations = check(service(), make_settings())
    assert violations == [
        Violation(
            INTERNAL_LOAD_BALANCER,
            "Service kafka-0-public: LoadBalancer in front of Kafka brokers must be internal: "
            f"{GKE_INTERNAL} (policy rule internalLoadBalancer)",
            "enforce",
        )
    ]
    allowed, message, warnings = decide(violations)
    assert not allowed and message == violations[0].message and warnings == []


def test_internal_load_balancer_passes_and_wrong_value_is_named() -> None:
    settings = make_settings()
    assert check(service(annotations={"networking.gke.io/load-balancer-type": "Internal"}), settings) == []
    [violation] = check(service(annotations={"networking.gke.io/load-balancer-type": "External"}), settings)
    assert (
        'set annotation networking.gke.io/load-balancer-type: "Internal" (it is "External")'
        in violation.message
    )


def test_every_annotation_of_the_preset_and_the_class_are_required() -> None:
    settings = make_settings(
        cloud="aws-lbc", top={"loadBalancer": {"loadBalancerClass": "service.k8s.aws/nlb"}}
    )
    [violation] = check(
        service(annotations={"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}), settings
    )
    assert "add annotation service.beta.kubernetes.io/aws-load-balancer-type" in violation.message
    assert "aws-load-balancer-scheme" not in violation.message
    assert 'set spec.loadBalancerClass: "service.k8s.aws/nlb"' in violation.message
    good = service(
        annotations=settings.load_balancer.internal_annotations(), loadBalancerClass="service.k8s.aws/nlb"
    )
    assert check(good, settings) == []


def test_the_chart_s_aws_annotation_is_not_internal_on_gke_but_is_on_aws() -> None:
    chart = [
        s
        for s in services(load_render("bitnami-kafka-32.4.4-external-lb"))
        if s["spec"]["type"] == "LoadBalancer"
    ]
    assert len(chart) == 3
    own_names = {
        "hostTemplate": "{pod}.{domain}"
    }  # the chart's external-dns names: kafka-controller-N.<domain>
    for svc in chart:
        assert rules(check(svc, make_settings(cloud="gke", top=own_names))) == [INTERNAL_LOAD_BALANCER]
        assert check(svc, make_settings(cloud="aws", top=dict(own_names))) == []


def test_node_port_in_front_of_brokers_is_a_violation_whatever_its_annotations() -> None:
    settings = make_settings()
    svc = service(kind="NodePort", annotations=settings.load_balancer.internal_annotations())
    [violation] = check(svc, settings)
    assert violation.rule == INTERNAL_LOAD_BALANCER
    assert "NodePort" in violation.message and "use type ClusterIP" in violation.message


def test_every_exposed_service_is_judged_whatever_it_selects_and_unexposed_ones_are_not() -> None:
    """Issue 15, item 2: a selector without "kafka" (component=broker), a selector-less Service (its
    own EndpointSlice), a pod-index selector all reach brokers; only ClusterIP Services that publish
    nothing are out of scope."""
    settings = make_settings(allowedSourceRanges=["10.0.0.0/8"])
    for selector in ({"app": "web"}, {"component": "broker"}, {}, {"apps.kubernetes.io/pod-index": "0"}):
        assert INTERNAL_LOAD_BALANCER in rules(check(service(selector=selector), settings)), selector
        assert rules(check(service(kind="NodePort", selector=selector), settings)) == [INTERNAL_LOAD_BALANCER]
    [violation] = check(service(kind="ClusterIP", selector={}, externalIPs=["203.0.113.7"]), settings)
    assert violation.rule == INTERNAL_LOAD_BALANCER and "spec.externalIPs" in violation.message
    assert check(service(kind="ClusterIP"), settings) == []
    assert check(service(kind="ClusterIP", selector={}), settings) == []
    assert check({"kind": "ConfigMap", "metadata": {"name": "x"}}, settings) == []


def test_managed_services_are_judged_too_and_comply_by_construction() -> None:
    settings = make_settings(
        allowedSourceRanges=["10.0.0.0/8"], top={"loadBalancer": {"sourceRanges": ["10.1.0.0/16"]}}
    )
    decision = mutate(broker_pod(settings, mutated=False), settings, "kafka")
    from webhook.core.services import broker_service

    managed = broker_service(decision.plans[0], settings)
    assert check(managed, settings, others=0) == []


def test_the_mutated_chart_service_complies() -> None:
    """What the validating webhook sees after the mutating one: the chart's LB made internal."""
    settings = make_settings(
        allowedSourceRanges=["10.0.0.0/8"],
        top={"loadBalancer": {"sourceRanges": ["10.0.0.0/8"]}, "hostTemplate": "{pod}.{domain}"},
    )
    for svc in services(load_render("bitnami-kafka-32.4.4-external-lb")):
        assert check(mutate(svc, settings, "kafka").result, settings) == []


# ------------------------------------------------------------------------------------ sourceRanges


def test_source_ranges_must_lie_within_the_allowed_ones() -> None:
    settings = make_settings(allowedSourceRanges=["10.0.0.0/8", "fd00::/8"])
    internal = settings.load_balancer.internal_annotations()
    assert (
        check(
            service(annotations=internal, loadBalancerSourceRanges=["10.1.0.0/16", "fd00:1::/64"]), settings
        )
        == []
    )
    [violation] = check(
        service(annotations=internal, loadBalancerSourceRanges=["10.1.0.0/16", "0.0.0.0/0"]), settings
    )
    assert violation.rule == SOURCE_RANGES
    assert violation.message == (
        "Service kafka-0-public: source range(s) 0.0.0.0/0 not within the allowed 10.0.0.0/8, fd00::/8: "
        "narrow spec.loadBalancerSourceRanges to those ranges (policy rule sourceRanges)"
    )


def test_no_source_ranges_means_anywhere_and_the_annotation_form_counts() -> None:
    settings = make_settings(allowedSourceRanges=["10.0.0.0/8"])
    internal = settings.load_balancer.internal_annotations()
    [violation] = check(service(annotations=internal), settings)
    assert (
        "accepts clients from anywhere: set spec.loadBalancerSourceRanges within 10.0.0.0/8"
        in violation.message
    )
    annotated = {
        **internal,
        "service.beta.kubernetes.io/load-balancer-source-ranges": "10.2.0.0/16, 192.168.0.0/16",
    }
    [violation] = check(service(annotations=annotated), settings)
    assert "192.168.0.0/16 not within" in violation.message
    assert "annotation service.beta.kubernetes.io/load-balancer-source-ranges" in violation.message


def test_without_allowed_ranges_any_range_is_fine() -> None:
    settings = make_settings()
    svc = service(
        annotations=settings.load_balancer.internal_annotations(), loadBalancerSourceRanges=["0.0.0.0/0"]
    )
    assert check(svc, settings) == []


@pytest.mark.parametrize(
    ("cidr", "allowed", "inside"),
    [
        ("10.1.2.3/32", ["10.0.0.0/8"], True),
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("10.0.0.0/7", ["10.0.0.0/8"], False),
        ("11.0.0.0/8", ["10.0.0.0/8"], False),
        ("fd00::/16", ["10.0.0.0/8"], False),
        ("fd00::/16", ["10.0.0.0/8", "fd00::/8"], True),
        ("not-a-cidr", ["0.0.0.0/0"], False),
    ],
)
def test_cidr_containment(cidr: str, allowed: list[str], inside: bool) -> None:
    assert cidr_within(cidr, allowed) is inside


# ----------------------------------------------------------------------------------- allowedDomains


def test_a_broker_advertising_outside_the_allowed_domains_is_a_violation() -> None:
    settings = make_settings(top={"hostTemplate": "{pod}.kafka.other.org"})
    pod = broker_pod(settings)
    [violation] = check(pod, settings)
    assert violation.rule == ALLOWED_DOMAINS
    assert violation.message == (
        "Pod kafka-broker-0: advertises kafka-broker-0.kafka.other.org, not under the allowed domains "
        "kafka.example.com: use a domain (or host template) under one of them (policy rule allowedDomains)"
    )


def test_the_advertised_annotation_is_checked_too() -> None:
    settings = make_settings()
    pod = broker_pod(settings)
    assert check(pod, settings) == []
    pod["metadata"]["annotations"]["kafka-expose.io/advertised"] = "EXTERNAL://evil.example.org:9094"
    [violation] = check(pod, settings)
    assert "advertises evil.example.org," in violation.message


def test_statefulsets_are_judged_per_ordinal() -> None:
    settings = make_settings(top={"hostTemplate": "{pod}.elsewhere.net"})
    sts = copy.deepcopy(bitnami_sts())
    sts["spec"]["replicas"] = 2
    [violation] = check(sts, settings)
    assert "kafka-broker-0.elsewhere.net, kafka-broker-1.elsewhere.net" in violation.message


def test_published_dns_names_of_a_broker_service_must_be_allowed() -> None:
    settings = make_settings()
    internal = settings.load_balancer.internal_annotations()
    dns = "external-dns.alpha.kubernetes.io/hostname"
    assert check(service(annotations={**internal, dns: "kafka-0.kafka.kafka.example.com"}), settings) == []
    [violation] = check(
        service(annotations={**internal, dns: "kafka-0.kafka.kafka.example.com,kafka-0.public.io"}), settings
    )
    assert violation.rule == ALLOWED_DOMAINS and "publishes kafka-0.public.io," in violation.message


def test_no_allowed_domains_allows_any_host() -> None:
    settings = parse_settings(
        {"hostTemplate": "{pod}.anything.io", "loadBalancer": {"cloud": "gke"}, "policy": {"mode": "enforce"}}
    )
    assert check(broker_pod(settings), settings) == []


# --------------------------------------------------------------------------------- loadBalancerCap


def web_lb(name: str = "kafka-0-public", **extra: Any) -> dict[str, Any]:
    """A compliant (internal) LoadBalancer that does not select brokers: only the cap judges it."""
    return service(name, selector={"app": "web"}, annotations=dict(GKE_INTERNAL_ANNOTATION), **extra)


def test_cap_counts_the_other_load_balancers() -> None:
    settings = make_settings(maxLoadBalancersPerNamespace=3)
    svc = web_lb()
    assert check(svc, settings, others=2) == []
    [violation] = check(svc, settings, others=3)
    assert violation == Violation(
        LOAD_BALANCER_CAP,
        "Service kafka-0-public: namespace kafka already has 3 LoadBalancer Service(s), the cap is 3: "
        "delete a LoadBalancer Service or use type ClusterIP (policy rule loadBalancerCap)",
        "enforce",
    )
    assert check(service(kind="ClusterIP"), settings, others=10) == []


def test_cap_of_zero_forbids_any_load_balancer_and_unknown_count_is_unchecked() -> None:
    settings = make_settings(maxLoadBalancersPerNamespace=0)
    svc = web_lb()
    assert rules(check(svc, settings, others=0)) == [LOAD_BALANCER_CAP]
    result = assess(svc, settings, namespace="kafka", load_balancers_in_namespace=None)
    assert result.violations == () and result.unchecked == (LOAD_BALANCER_CAP,)
    assert verdict_of(result).outcomes == {
        LOAD_BALANCER_CAP: "unchecked",
        INTERNAL_LOAD_BALANCER: "passed",
        ALLOWED_DOMAINS: "passed",
        SOURCE_RANGES: "passed",
    }


def test_cap_applies_to_creations_and_to_services_turned_into_load_balancers() -> None:
    settings = make_settings(maxLoadBalancersPerNamespace=1)
    lb, cluster_ip = service(), service(kind="ClusterIP")
    assert cap_applies({"operation": "CREATE", "object": lb}, settings)
    assert cap_applies({"operation": "UPDATE", "object": lb, "oldObject": cluster_ip}, settings)
    assert not cap_applies({"operation": "UPDATE", "object": lb, "oldObject": lb}, settings)
    assert not cap_applies({"operation": "CREATE", "object": cluster_ip}, settings)
    assert not cap_applies({"operation": "CREATE", "object": lb}, make_settings())
    off = make_settings(maxLoadBalancersPerNamespace=1, rules={"loadBalancerCap": "off"})
    assert not cap_applies({"operation": "CREATE", "object": lb}, off)


# -------------------------------------------------------------------------------- exposureRequired


def test_a_broker_that_cannot_be_exposed_violates_exposure_required() -> None:
    settings = make_settings()
    [violation] = check(unknown_layout_pod(), settings)
    assert violation.rule == EXPOSURE_REQUIRED
    assert violation.message.startswith(
        "Pod kafka-0: Kafka broker cannot be exposed: unknown layout for image"
    )
    assert "kafka-expose explain" in violation.message
    assert violation.message.endswith("(policy rule exposureRequired)")


def test_warnings_fit_what_the_api_server_shows_and_keep_what_to_change() -> None:
    settings = make_settings("warn")
    [violation] = check(unknown_layout_pod(), settings)
    assert len(violation.message) > 256
    warning = warning_text(violation.message, keep=violation.tail)
    assert len(warning) <= 256
    assert warning.startswith("kafka-expose: Pod kafka-0: Kafka broker cannot be exposed: unknown layout")
    assert warning.endswith(
        "...; run `kafka-expose explain` on its manifests, then change the broker configuration or "
        "settings.match (policy rule exposureRequired)"
    )
    long = Violation(INTERNAL_LOAD_BALANCER, "x" * 300 + " (policy rule internalLoadBalancer)", "warn")
    cut = warning_text(long.message, keep=long.tail)
    assert len(cut) == 256 and cut.endswith("x... (policy rule internalLoadBalancer)")
    assert decide([violation]) == (True, None, [warning])


def test_non_kafka_and_controller_only_pods_are_not_judged() -> None:
    settings = make_settings()
    not_kafka = own_manifest("not-kafka.yaml")
    for sts in statefulsets(not_kafka):
        assert check(pod_from_statefulset(sts, 0, "kafka"), settings) == []
    controller = next(
        s
        for s in statefulsets(load_render("bitnami-kafka-32.4.4-brokers3"))
        if "controller" in s["metadata"]["name"]
    )
    assert check(pod_from_statefulset(controller, 0, "kafka"), settings) == []


# ------------------------------------------------------------------------------------------ modes


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"mode": "enforce"}, "enforce"),
        ({"mode": "warn"}, "warn"),
        ({"mode": "off"}, "off"),
        ({"mode": "off", "rules": {"exposureRequired": "enforce"}}, "enforce"),
        ({"mode": "enforce", "rules": {"exposureRequired": "warn"}}, "warn"),
        ({"mode": "enforce", "rules": {"exposureRequired": "off"}}, "off"),
    ],
)
def test_per_rule_mode_wins_over_the_global_one(policy: dict[str, Any], expected: str) -> None:
    settings = parse_settings({"loadBalancer": {"cloud": "gke"}, "policy": policy})
    [violation] = check(unknown_layout_pod(), settings)
    assert violation.mode == expected


def test_decide_enforce_denies_warn_warns_off_ignores() -> None:
    deny = Violation(INTERNAL_LOAD_BALANCER, "a (policy rule internalLoadBalancer)", "enforce")
    deny2 = Violation(LOAD_BALANCER_CAP, "b (policy rule loadBalancerCap)", "enforce")
    warn = Violation(SOURCE_RANGES, "c (policy rule sourceRanges)", "warn")
    off = Violation(ALLOWED_DOMAINS, "d (policy rule allowedDomains)", "off")
    assert decide([]) == (True, None, [])
    assert decide([off]) == (True, None, [])
    assert decide([warn, off]) == (True, None, ["kafka-expose: c (policy rule sourceRanges)"])
    assert decide([deny, warn, deny2, deny]) == (
        False,
        "a (policy rule internalLoadBalancer); b (policy rule loadBalancerCap)",
        ["kafka-expose: c (policy rule sourceRanges)"],
    )


def test_verdict_outcomes_per_rule_for_metrics() -> None:
    settings = make_settings(
        maxLoadBalancersPerNamespace=1, allowedSourceRanges=["10.0.0.0/8"], rules={"sourceRanges": "warn"}
    )
    result = assess(service(), settings, namespace="kafka", load_balancers_in_namespace=0)
    assert verdict_of(result).outcomes == {
        INTERNAL_LOAD_BALANCER: "denied",
        ALLOWED_DOMAINS: "passed",
        SOURCE_RANGES: "warned",
        LOAD_BALANCER_CAP: "passed",
    }


def test_warn_mode_allows_with_a_warning_that_says_what_to_change() -> None:
    settings = make_settings("warn")
    allowed, message, warnings = validate(admission_review(service())["request"], settings)
    assert allowed and message == ""
    assert warnings == [
        "kafka-expose: Service kafka-0-public: LoadBalancer in front of Kafka brokers must be internal: "
        f"{GKE_INTERNAL} (policy rule internalLoadBalancer)"
    ]


def test_validate_has_the_hook_signature_and_judges_admission_requests() -> None:
    settings = make_settings()
    allowed, message, warnings = validate(admission_review(service())["request"], settings)
    assert not allowed and GKE_INTERNAL in message and warnings == []
    assert validate(admission_review(broker_pod(settings))["request"], settings) == (True, "", [])
    allowed, message, _ = validate(admission_review(unknown_layout_pod())["request"], settings)
    assert not allowed and "policy rule exposureRequired" in message
    off = make_settings("off")
    assert validate(admission_review(service())["request"], off) == (True, "", [])


# ------------------------------------------------------------------------------ namespace overrides


def override_settings(**overrides: Any) -> Settings:
    return parse_settings(
        {
            "domain": "kafka.example.com",
            "loadBalancer": {"cloud": "gke"},
            "policy": {
                "mode": "enforce",
                "allowedDomains": ["kafka.example.com"],
                "namespaceOverrides": {
                    "allowedDomains": ["{namespace}.kafka.example.com"],
                    "allowedClouds": ["gke-legacy"],
                    **overrides,
                },
            },
        }
    )


def test_a_namespace_gets_its_own_domain_and_an_allowed_cloud() -> None:
    settings = override_settings()
    effective, problems = settings_for_namespace(
        settings, {DOMAIN_OVERRIDE: "team-a.kafka.example.com", CLOUD_OVERRIDE: "gke-legacy"}, "team-a"
    )
    assert problems == []
    assert effective.domain == "team-a.kafka.example.com"
    assert effective.load_balancer.cloud == "gke-legacy"
    assert effective.policy == settings.policy and effective.version == settings.version
    below, problems = settings_for_namespace(
        settings, {DOMAIN_OVERRIDE: "eu.team-a.kafka.example.com"}, "team-a"
    )
    assert problems == [] and below.domain == "eu.team-a.kafka.example.com"


def test_a_namespace_cannot_take_another_namespace_s_domain() -> None:
    settings = override_settings()
    effective, problems = settings_for_namespace(
        settings, {DOMAIN_OVERRIDE: "team-a.kafka.example.com"}, "team-b"
    )
    assert effective is settings
    assert problems == [
        "namespace team-b: kafka-expose.io/domain=team-a.kafka.example.com refused: this namespace may only use "
        "team-b.kafka.example.com or names below (policy.namespaceOverrides.allowedDomains); "
        "using kafka.example.com"
    ]


@pytest.mark.parametrize(
    ("annotations", "overrides", "reason"),
    [
        ({DOMAIN_OVERRIDE: "Not A Domain"}, {}, "not a valid lower-case DNS name"),
        (
            {DOMAIN_OVERRIDE: "team-a.kafka.example.com"},
            {"allowedDomains": []},
            "the platform allows no domain override",
        ),
        (
            {DOMAIN_OVERRIDE: "team-a.other.io"},
            {"allowedDomains": ["{namespace}.other.io"]},
            "not under the allowed domains kafka.example.com (policy.allowedDomains)",
        ),
        (
            {CLOUD_OVERRIDE: "azure"},
            {},
            "allowed clouds are gke-legacy (policy.namespaceOverrides.allowedClouds)",
        ),
        ({CLOUD_OVERRIDE: "azure"}, {"allowedClouds": []}, "the platform allows no cloud override"),
        ({CLOUD_OVERRIDE: "mars"}, {}, "unknown cloud"),
    ],
)
def test_refused_overrides_keep_the_platform_default(
    annotations: dict[str, str], overrides: dict[str, Any], reason: str
) -> None:
    settings = override_settings(**overrides)
    effective, problems = settings_for_namespace(settings, annotations, "team-a")
    assert effective is settings
    [problem] = problems
    assert problem.startswith("namespace team-a: kafka-expose.io/") and reason in problem


def test_asking_for_the_platform_values_or_nothing_is_no_override() -> None:
    settings = override_settings(allowedDomains=[], allowedClouds=[])
    for asked in (
        None,
        {},
        {DOMAIN_OVERRIDE: "kafka.example.com", CLOUD_OVERRIDE: "gke"},
        {"other": "x"},
    ):
        assert settings_for_namespace(settings, asked, "team-a") == (settings, [])


def test_override_domain_patterns_are_validated() -> None:
    with pytest.raises(SettingsError) as err:
        override_settings(allowedDomains=["{pod}.kafka.example.com"])
    assert "only the {namespace} placeholder is allowed here" in str(err.value)
    with pytest.raises(SettingsError):
        override_settings(allowedDomains=["{namespace}..example.com"])


# ----------------------------------------------------------------------------------- the hooks


class FakeReader:
    def __init__(self, namespaces: dict[str, dict[str, str]] | None = None, delay: float = 0.0) -> None:
        self.namespaces = {k: dict(v) for k, v in (namespaces or {}).items()}
        self.services: dict[str, list[dict[str, Any]]] = {}
        self.delay = delay
        self.reads: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.fail_list = False
        self.stopped = threading.Event()
        self._lock = threading.Lock()

    def _ns(self, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": {}, "annotations": self.namespaces[name]}}

    def list_namespaces(self) -> tuple[list[dict[str, Any]], str]:
        return [self._ns(n) for n in self.namespaces], "1"

    def watch_namespaces(self, resource_version: str) -> Iterator[dict[str, Any]]:
        yield from self.events
        while not self.stopped.wait(0.02):
            pass

    def stop(self) -> None:
        self.stopped.set()

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        return self._ns(name) if name in self.namespaces else None

    def list_services(self, namespace: str) -> list[dict[str, Any]]:
        if self.fail_list:
            raise ConnectionError("apiserver away")
        with self._lock:
            items = list(self.services.get(namespace, []))
        time.sleep(self.delay)
        return items

    def add_service(self, namespace: str, svc: dict[str, Any]) -> None:
        with self._lock:
            self.services.setdefault(namespace, []).append(svc)


def test_cache_reads_unknown_namespaces_and_follows_the_watch() -> None:
    reader = FakeReader({"team-a": {DOMAIN_OVERRIDE: "team-a.kafka.example.com"}})
    cache = NamespaceCache(reader)
    assert cache.annotations("team-a") == {DOMAIN_OVERRIDE: "team-a.kafka.example.com"}
    assert cache.annotations("missing") is None
    assert reader.reads == ["team-a", "missing"]
    cache.annotations("team-a")
    assert reader.reads == ["team-a", "missing"]  # cached
    reader.events = [
        {"type": "MODIFIED", "object": {"metadata": {"name": "team-a", "annotations": {"x": "y"}}}},
        {"type": "ADDED", "object": {"metadata": {"name": "team-c", "labels": {"l": "v"}}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
    ]
    cache.start()
    try:
        assert cache.synced.wait(5)
        deadline = time.monotonic() + 5
        while cache.annotations("team-a") != {"x": "y"} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.annotations("team-a") == {"x": "y"}
        info = cache.namespace("team-c")
        assert info is not None and info.labels == {"l": "v"}
    finally:
        cache.stop()


def test_a_namespace_not_found_is_not_read_again_for_every_request() -> None:
    now = [100.0]
    reader = FakeReader({})
    cache = NamespaceCache(reader, clock=lambda: now[0])
    for _ in range(50):
        assert cache.annotations("ghost") is None
    assert reader.reads == ["ghost"]  # one API read, not one per admission
    now[0] += MISSING_SECONDS + 1
    assert cache.annotations("ghost") is None
    assert reader.reads == ["ghost", "ghost"]  # remembered for a while only
    # the watch telling of the namespace ends it at once
    reader.namespaces["ghost"] = {DOMAIN_OVERRIDE: "ghost.kafka.example.com"}
    reader.events = [{"type": "ADDED", "object": reader._ns("ghost")}]
    cache.start()
    try:
        assert cache.synced.wait(5)
        assert cache.annotations("ghost") == {DOMAIN_OVERRIDE: "ghost.kafka.example.com"}
    finally:
        cache.stop()


def test_a_namespace_that_cannot_be_read_is_retried_after_a_few_seconds() -> None:
    now = [100.0]

    class Failing(FakeReader):
        def read_namespace(self, name: str) -> dict[str, Any] | None:
            self.reads.append(name)
            raise ConnectionError("apiserver away")

    reader = Failing()
    cache = NamespaceCache(reader, clock=lambda: now[0])
    assert cache.annotations("kafka") is None
    assert cache.annotations("kafka") is None
    assert reader.reads == ["kafka"]  # the next requests do not each wait for a timeout
    now[0] += FAILED_SECONDS + 0.1
    assert cache.annotations("kafka") is None
    assert reader.reads == ["kafka", "kafka"]


def test_count_includes_reservations_until_listed_or_expired() -> None:
    now = [100.0]
    reader = FakeReader()
    cache = NamespaceCache(reader, reservation_seconds=30, clock=lambda: now[0])
    reader.add_service("kafka", service("a"))
    reader.add_service("kafka", service("plain", kind="ClusterIP"))
    assert cache.count_load_balancers("kafka") == 1
    assert cache.count_load_balancers("kafka", exclude="a") == 0
    cache.reserve("kafka", "b")
    cache.reserve("kafka", "plain")  # being turned into a LoadBalancer: listed as ClusterIP, still counted
    assert cache.count_load_balancers("kafka") == 3
    assert cache.count_load_balancers("kafka", exclude="b") == 2
    reader.add_service("kafka", service("b"))
    assert cache.count_load_balancers("kafka") == 3  # b now listed, its reservation released
    now[0] += 31
    assert cache.count_load_balancers("kafka") == 2  # plain's reservation expired
    assert cache.count_load_balancers("other") == 0
    reader.fail_list = True
    assert cache.count_load_balancers("kafka") is None


def hook_request(obj: dict[str, Any], operation: str = "CREATE", **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = admission_review(obj, operation, namespace="kafka")["request"]
    request.update(extra)
    return request


def test_the_cap_holds_under_concurrent_creates() -> None:
    settings = make_settings(maxLoadBalancersPerNamespace=3)
    reader = FakeReader({"kafka": {}}, delay=0.05)
    hook = PolicyHook(NamespaceCache(reader))
    results: dict[str, bool] = {}
    barrier = threading.Barrier(5)

    def create(i: int) -> None:
        svc = web_lb(f"lb-{i}")
        barrier.wait()
        allowed, _, _ = hook(hook_request(svc), settings)
        results[svc["metadata"]["name"]] = allowed
        if allowed:
            reader.add_service("kafka", svc)  # the API server stores it (maybe after the next LIST)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == [False, False, True, True, True]


def test_dry_run_does_not_reserve_and_updates_of_load_balancers_are_not_capped() -> None:
    settings = make_settings(maxLoadBalancersPerNamespace=1)
    reader = FakeReader({"kafka": {}})
    hook = PolicyHook(NamespaceCache(reader))
    svc = web_lb("first")
    assert hook(hook_request(svc, dryRun=True), settings)[0]
    assert hook(hook_request(svc), settings)[0]
    second = web_lb("second")
    allowed, message, _ = hook(hook_request(second), settings)
    assert not allowed and "already has 1 LoadBalancer Service(s), the cap is 1" in message
    reader.add_service("kafka", svc)
    reader.add_service("kafka", second)  # e.g. created before the cap was lowered
    assert hook(hook_request(second, "UPDATE", oldObject=second), settings)[0]
    as_cluster_ip = service("second", kind="ClusterIP", selector={"app": "web"})
    allowed, _, _ = hook(hook_request(second, "UPDATE", oldObject=as_cluster_ip), settings)
    assert not allowed


def test_hook_records_every_rule_outcome() -> None:
    settings = make_settings(maxLoadBalancersPerNamespace=5)
    recorded: list[tuple[str, str]] = []
    hook = PolicyHook(NamespaceCache(FakeReader({"kafka": {}})), record=lambda r, o: recorded.append((r, o)))
    hook(hook_request(service()), settings)
    assert sorted(recorded) == sorted(
        [
            (INTERNAL_LOAD_BALANCER, "denied"),
            (ALLOWED_DOMAINS, "passed"),
            (SOURCE_RANGES, "passed"),
            (LOAD_BALANCER_CAP, "passed"),
        ]
    )
    recorded.clear()
    hook(hook_request(broker_pod(settings)), settings)
    assert sorted(recorded) == [(ALLOWED_DOMAINS, "passed"), (EXPOSURE_REQUIRED, "passed")]
    recorded.clear()
    PolicyHook(None, record=lambda r, o: recorded.append((r, o)))(hook_request(service()), settings)
    assert (LOAD_BALANCER_CAP, "unchecked") in recorded


def test_hook_without_api_access_checks_everything_but_the_cap() -> None:
    settings = make_settings(maxLoadBalancersPerNamespace=0)
    hook = PolicyHook(None)
    assert hook(hook_request(web_lb()), settings) == (True, "", [])
    assert not hook(hook_request(service()), settings)[0]


def test_hook_uses_the_namespace_settings_and_warns_about_refused_overrides() -> None:
    settings = override_settings()
    reader = FakeReader(
        {"kafka": {CLOUD_OVERRIDE: "gke-legacy", DOMAIN_OVERRIDE: "team-a.kafka.example.com"}}
    )
    hook = PolicyHook(NamespaceCache(reader))
    legacy = {"cloud.google.com/load-balancer-type": "Internal"}
    allowed, _, warnings = hook(hook_request(service(annotations=legacy)), settings)
    assert allowed
    assert warnings == [
        "kafka-expose: namespace kafka: kafka-expose.io/domain=team-a.kafka.example.com refused: this "
        "namespace may only use kafka.kafka.example.com or names below "
        "(policy.namespaceOverrides.allowedDomains); using kafka.example.com"
    ]
    allowed, message, _ = hook(hook_request(service()), settings)
    assert not allowed and 'add annotation cloud.google.com/load-balancer-type: "Internal"' in message
    # no override warning on objects that do not concern Kafka
    assert hook(hook_request(service(kind="ClusterIP", selector={"app": "web"})), settings) == (True, "", [])


def test_namespace_mutate_applies_overrides_and_warns_on_refusals() -> None:
    settings = override_settings()
    reader = FakeReader(
        {
            "team-a": {DOMAIN_OVERRIDE: "team-a.kafka.example.com"},
            "team-b": {DOMAIN_OVERRIDE: "team-a.kafka.example.com"},
        }
    )
    namespace_mutate = NamespaceMutate(NamespaceCache(reader))
    pod_a = broker_pod(settings, "team-a", mutated=False)
    decision = namespace_mutate(pod_a, settings, "team-a")
    assert decision.plans[0].host == "kafka-broker-0.team-a.team-a.kafka.example.com"
    assert decision.warnings == ()
    # idempotent under the same namespace settings: what the validating webhook relies on
    again = namespace_mutate(decision.result, settings, "team-a")
    assert again.outcome == "unchanged"
    decision = namespace_mutate(broker_pod(settings, "team-b", mutated=False), settings, "team-b")
    assert decision.plans[0].host == "kafka-broker-0.team-b.kafka.example.com"
    assert len(decision.warnings) == 1 and "refused" in decision.warnings[0]
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    assert namespace_mutate(plain, settings, "team-b").warnings == ()
    assert (
        NamespaceMutate(None)(pod_a, settings, "team-a").plans[0].host
        == "kafka-broker-0.team-a.kafka.example.com"
    )


def test_settings_that_enforce_internal_load_balancers_but_make_public_ones_are_refused() -> None:
    """Issue 15, item 2: cloud none, no class, no annotations under an enforced internalLoadBalancer
    passed every Service (nothing to require); now the platform has to say so."""
    enforce = {"mode": "warn", "rules": {"internalLoadBalancer": "enforce"}}
    with pytest.raises(SettingsError) as refused:
        parse_settings({"policy": enforce})
    assert "loadBalancer.allowExternal: true" in str(refused.value.problems)
    for load_balancer in (
        {"cloud": "aws"},
        {"loadBalancerClass": "example.com/internal"},
        {"annotations": {"example.com/internal": "true"}},
        {"allowExternal": True},
    ):
        parse_settings({"loadBalancer": load_balancer, "policy": enforce})
    parse_settings({})  # nothing enforced: the defaults stay valid
