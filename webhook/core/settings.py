"""The platform team's settings: one YAML document, validated into frozen, typed objects.

Validation is pydantic's (typed, frozen, every error with its path); this module only adds the
rules pydantic cannot express and turns its errors into one line per problem.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from webhook.core.clouds import CLOUD_PRESETS
from webhook.core.names import DNS_1035_RE, DNS_NAME_RE, SECURITY_PROTOCOLS

PLACEHOLDERS = ("pod", "ordinal", "statefulset", "namespace", "domain")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_LISTENER_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


class SettingsError(ValueError):
    """Invalid settings; `problems` holds one `path: reason` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _template(value: str) -> str:
    unknown = [p for p in _PLACEHOLDER_RE.findall(value) if p not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"unknown placeholder(s) {unknown}; allowed: {', '.join(PLACEHOLDERS)}")
    return value


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as err:
        raise ValueError(f"not a CIDR range: {value!r}") from err
    return value


def _domain(value: str) -> str:
    if not DNS_NAME_RE.match(value):
        raise ValueError(f"not a valid lower-case DNS name: {value!r}")
    return value


def _domain_pattern(value: str) -> str:
    """A domain whose labels may hold `{namespace}`, expanded per namespace (namespace overrides)."""
    others = [p for p in _PLACEHOLDER_RE.findall(value) if p != "namespace"]
    if others:
        raise ValueError(f"only the {{namespace}} placeholder is allowed here, not {others}")
    _domain(value.replace("{namespace}", "ns"))
    return value


def _cloud(value: str) -> str:
    if value not in CLOUD_PRESETS:
        raise ValueError(f"unknown cloud {value!r}; known: {', '.join(sorted(CLOUD_PRESETS))}")
    return value


_GO_DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$")


_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _go_duration(value: str) -> str:
    """A duration as cert-manager reads it (Go's time.ParseDuration, e.g. `2160h`, `1h30m`)."""
    if not _GO_DURATION_RE.match(value):
        raise ValueError(f"not a duration such as 2160h or 90m: {value!r}")
    return value


def duration_seconds(value: str) -> float:
    """Seconds of a duration that `_go_duration` accepted."""
    return sum(float(n) * _GO_UNITS[u] for n, _, u in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|h|m|s)", value))


ISSUER_KINDS = ("ClusterIssuer", "Issuer")


def _issuer_pattern(value: str) -> str:
    kind, sep, name = value.partition("/")
    if not sep or kind not in ISSUER_KINDS or not name:
        raise ValueError(f"expected ClusterIssuer/<name> or Issuer/<name>, got {value!r}")
    _domain_pattern(name)
    return value


Cloud = Annotated[str, AfterValidator(_cloud)]
Template = Annotated[str, AfterValidator(_template)]
Cidr = Annotated[str, AfterValidator(_cidr)]
Domain = Annotated[str, AfterValidator(_domain)]
DomainPattern = Annotated[str, AfterValidator(_domain_pattern)]
Mode = Literal["enforce", "warn", "off"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class ListenerSettings(_Model):
    name: str = "EXTERNAL"
    port: StrictInt = Field(default=9094, ge=1, le=65535, description="the LoadBalancer port clients use")
    container_port: StrictInt | None = Field(
        default=None, ge=1, le=65535, description="first container port to try; default: `port`"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    fallback_names: tuple[str, ...] = Field(
        default=("EXTERNAL_LB", "KAFKA_EXPOSE", "EXPOSED"),
        description="names used, in order, when the chart already serves in-cluster clients on `name`",
    )

    @model_validator(mode="after")
    def _check_name(self) -> ListenerSettings:
        for name in (self.name, *self.fallback_names):
            if not _LISTENER_NAME_RE.match(name) or name in SECURITY_PROTOCOLS:
                raise ValueError(
                    f"listener name {name!r} must be upper case letters, digits and '_' "
                    "and not a security protocol name"
                )
            if name == "CONTROLLER":
                raise ValueError("listener name CONTROLLER is reserved for KRaft controllers")
        if self.name in self.fallback_names or len(set(self.fallback_names)) != len(self.fallback_names):
            raise ValueError("fallbackNames must be distinct and differ from name")
        return self


class LoadBalancerSettings(_Model):
    cloud: Cloud = "none"
    annotations: Mapping[StrictStr, StrictStr] = Field(default_factory=dict)
    load_balancer_class: str | None = None
    source_ranges: tuple[Cidr, ...] = ()
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    service_name_template: Template = "{pod}-external"
    # Load balancers with no internal annotation and no class are public on most clouds: with
    # policy.rules.internalLoadBalancer enforced, that must be said explicitly (see Settings).
    allow_external: StrictBool = False

    def would_be_internal(self) -> bool:
        """Whether the Services kafka-expose makes carry anything that makes their LB internal."""
        return bool(self.internal_annotations() or self.load_balancer_class)

    def internal_annotations(self) -> dict[str, str]:
        """The cloud preset's internal-LB annotations, then the extra ones (which win)."""
        return {**CLOUD_PRESETS[self.cloud], **self.annotations}


FamilyName = Literal["confluent", "apache", "bitnami", "wurstmeister", "distribution"]


class ImageRule(_Model):
    """An extra image (fnmatch pattern on the repository, without tag) and how it is configured."""

    pattern: str
    family: FamilyName
    entrypoint: str | None = Field(
        default=None, description="the image's ENTRYPOINT when it is kafka-server-start.sh (args-only pods)"
    )


class MatchSettings(_Model):
    images: tuple[ImageRule, ...] = ()
    pod_labels: Mapping[StrictStr, StrictStr] = Field(
        default_factory=dict, description="pods with all these labels are brokers whatever their image"
    )
    pod_labels_family: FamilyName = "apache"


class AuditSettings(_Model):
    """The controller's audit of the Services it did not create, in opted-in namespaces."""

    enabled: StrictBool = True
    repair: StrictBool = Field(
        default=False,
        description="make a non-compliant Service safe: type ClusterIP, its external-dns names removed",
    )


class ControllerSettings(_Model):
    resync_seconds: StrictInt = Field(default=300, ge=5)
    scale_down_grace_seconds: StrictInt = Field(default=0, ge=0)
    keep_on_opt_out: StrictBool = False
    replace_on_immutable_change: StrictBool = False
    audit: AuditSettings = AuditSettings()


class IssuerRef(_Model):
    """The cert-manager issuer that signs the external listeners' certificates."""

    name: StrictStr = "kafka-external-ca"
    kind: Literal["ClusterIssuer", "Issuer"] = "ClusterIssuer"
    group: StrictStr = "cert-manager.io"


class TlsSettings(_Model):
    """Encrypted external listeners (README "Encrypted external listeners")."""

    mode: Literal["off", "cert-manager"] = "off"
    issuer_ref: IssuerRef = IssuerRef()
    duration: Annotated[str, AfterValidator(_go_duration)] = "2160h"
    renew_before: Annotated[str, AfterValidator(_go_duration)] = "360h"
    client_auth: Literal["none", "requested", "required"] = "none"
    # After a renewal, evict (PDB-respecting) one broker at a time so each serves the new certificate.
    restart_on_renewal: StrictBool = True

    @property
    def enabled(self) -> bool:
        return self.mode == "cert-manager"

    @model_validator(mode="after")
    def _check_renewal(self) -> TlsSettings:
        if duration_seconds(self.renew_before) >= duration_seconds(self.duration):
            raise ValueError(f"renewBefore {self.renew_before} must be shorter than duration {self.duration}")
        return self


class NamespaceOverrides(_Model):
    """What a namespace may ask for through `kafka-expose.io/<key>` annotations.

    `allowed_domains` entries may contain `{namespace}` (e.g. `{namespace}.kafka.example.com`):
    then each namespace may only use its own expansion."""

    allowed_domains: tuple[DomainPattern, ...] = ()
    allowed_clouds: tuple[Cloud, ...] = ()
    # `Kind/name` of issuers a namespace may pick with kafka-expose.io/tls-issuer; `{namespace}` expands.
    allowed_issuers: tuple[Annotated[str, AfterValidator(_issuer_pattern)], ...] = ()


class RuleModes(_Model):
    internal_load_balancer: Mode | None = None
    allowed_domains: Mode | None = None
    source_ranges: Mode | None = None
    load_balancer_cap: Mode | None = None
    exposure_required: Mode | None = None
    encrypted_external_listener: Mode | None = None


class PolicySettings(_Model):
    mode: Mode = "warn"
    rules: RuleModes = RuleModes()
    allowed_domains: tuple[Domain, ...] = ()
    allowed_source_ranges: tuple[Cidr, ...] = ()
    max_load_balancers_per_namespace: StrictInt | None = Field(default=None, ge=0)
    namespace_overrides: NamespaceOverrides = NamespaceOverrides()

    def mode_of(self, rule: str) -> Mode:
        specific: Mode | None = getattr(self.rules, rule)
        return specific or ("off" if rule in _OFF_UNLESS_SET else self.mode)


# Rules that `policy.mode` does not switch on: only their own `policy.rules` entry does.
_OFF_UNLESS_SET = frozenset({"encrypted_external_listener"})


class Settings(_Model):
    domain: Domain = "kafka.example.com"
    host_template: Template = "{pod}.{namespace}.{domain}"
    bootstrap_host_template: Template | None = None
    listener: ListenerSettings = ListenerSettings()
    on_existing_listener: Literal["replace", "keep"] = "replace"
    load_balancer: LoadBalancerSettings = LoadBalancerSettings()
    match: MatchSettings = MatchSettings()
    controller: ControllerSettings = ControllerSettings()
    policy: PolicySettings = PolicySettings()
    tls: TlsSettings = TlsSettings()
    # Not a user key: a short digest of the document, recorded on what the webhook writes.
    version: str = Field(default="default", exclude=True)

    @model_validator(mode="after")
    def _check_templates(self) -> Settings:
        if "{pod}" not in self.host_template and "{ordinal}" not in self.host_template:
            raise ValueError(
                f"hostTemplate {self.host_template!r} gives every broker the same name: use {{pod}} or {{ordinal}}"
            )
        sample = self.load_balancer.service_name_template.format(
            pod="kafka-0", ordinal=0, statefulset="kafka", namespace="kafka", domain=self.domain
        )
        if not DNS_1035_RE.match(sample[:63].rstrip("-")):
            raise ValueError(
                f"loadBalancer.serviceNameTemplate gives {sample!r}: a Service name must be a DNS-1035 label "
                "(lower-case letters, digits and '-', starting with a letter)"
            )
        return self

    @model_validator(mode="after")
    def _check_policy(self) -> Settings:
        allowed = self.policy.allowed_domains
        if allowed and not any(_under(self.domain, d) for d in allowed):
            raise ValueError(f"domain {self.domain!r} is not under policy.allowedDomains {list(allowed)}")
        clear = ("PLAINTEXT", "SASL_PLAINTEXT")
        if self.tls.enabled and self.listener.security_protocol in clear:
            raise ValueError(
                f"listener.securityProtocol {self.listener.security_protocol} is clear text but tls.mode is "
                "cert-manager: leave it unset (or SSL / SASL_SSL)"
            )
        lb = self.load_balancer
        enforced = self.policy.mode_of("internal_load_balancer") == "enforce"
        if enforced and not lb.would_be_internal() and not lb.allow_external:
            raise ValueError(
                "loadBalancer: policy.rules.internalLoadBalancer is enforced but the load balancers would "
                "not be internal (cloud none, no loadBalancerClass, no annotations): set loadBalancer.cloud, "
                "loadBalancerClass or annotations, or say loadBalancer.allowExternal: true"
            )
        return self


def template_warnings(settings: Settings) -> list[str]:
    """What the templates may produce that settings validation cannot refuse outright (it depends on
    the charts): names shared by brokers of different StatefulSets or namespaces."""
    problems = []
    host = settings.host_template
    if "{namespace}" not in host:
        problems.append(
            f"hostTemplate {host!r} has no {{namespace}}: brokers of equally named StatefulSets in two "
            "namespaces get the same name"
        )
    if "{pod}" not in host and "{statefulset}" not in host:
        problems.append(
            f"hostTemplate {host!r} has {{ordinal}} but no {{statefulset}}: two StatefulSets collide"
        )
    service = settings.load_balancer.service_name_template
    if "{pod}" not in service and not ("{statefulset}" in service and "{ordinal}" in service):
        problems.append(
            f"loadBalancer.serviceNameTemplate {service!r} is not unique per broker: use {{pod}}, or "
            "{statefulset} and {ordinal}"
        )
    return problems


def _under(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def host_allowed(host: str, allowed_domains: tuple[str, ...]) -> bool:
    """True when `host` is one of the allowed domains or below one (no allowed list: anything)."""
    return not allowed_domains or any(_under(host, d) for d in allowed_domains)


def parse_settings(document: Any, version: str = "default") -> Settings:
    """Validate a decoded settings document; raise SettingsError listing every problem."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise SettingsError([f"(root): expected a mapping, got {type(document).__name__}"])
    try:
        return Settings.model_validate({**document, "version": version})
    except ValidationError as err:
        raise SettingsError([_problem(e) for e in err.errors()]) from None


def _problem(error: Mapping[str, Any]) -> str:
    path = ".".join(str(p) for p in error.get("loc", ())) or "(root)"
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    return f"{path}: {message}"
