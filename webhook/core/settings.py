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
from webhook.core.names import DNS_NAME_RE, SECURITY_PROTOCOLS

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

    @model_validator(mode="after")
    def _check_name(self) -> ListenerSettings:
        if not _LISTENER_NAME_RE.match(self.name) or self.name in SECURITY_PROTOCOLS:
            raise ValueError(
                f"listener name {self.name!r} must be upper case letters, digits and '_' "
                "and not a security protocol name"
            )
        if self.name == "CONTROLLER":
            raise ValueError("listener name CONTROLLER is reserved for KRaft controllers")
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


class ImageRule(_Model):
    """An extra image (fnmatch pattern on the repository, without tag) and how it is configured."""

    pattern: str
    family: Literal["confluent", "apache", "bitnami"]


class MatchSettings(_Model):
    images: tuple[ImageRule, ...] = ()
    pod_labels: Mapping[StrictStr, StrictStr] = Field(
        default_factory=dict, description="pods with all these labels are brokers whatever their image"
    )
    pod_labels_family: Literal["confluent", "apache", "bitnami"] = "apache"


class ControllerSettings(_Model):
    resync_seconds: StrictInt = Field(default=300, ge=5)
    scale_down_grace_seconds: StrictInt = Field(default=0, ge=0)
    keep_on_opt_out: StrictBool = False
    replace_on_immutable_change: StrictBool = False


class NamespaceOverrides(_Model):
    """What a namespace may ask for through `kafka-expose.io/<key>` annotations.

    `allowed_domains` entries may contain `{namespace}` (e.g. `{namespace}.kafka.example.com`):
    then each namespace may only use its own expansion."""

    allowed_domains: tuple[DomainPattern, ...] = ()
    allowed_clouds: tuple[Cloud, ...] = ()


class RuleModes(_Model):
    internal_load_balancer: Mode | None = None
    allowed_domains: Mode | None = None
    source_ranges: Mode | None = None
    load_balancer_cap: Mode | None = None
    exposure_required: Mode | None = None


class PolicySettings(_Model):
    mode: Mode = "warn"
    rules: RuleModes = RuleModes()
    allowed_domains: tuple[Domain, ...] = ()
    allowed_source_ranges: tuple[Cidr, ...] = ()
    max_load_balancers_per_namespace: StrictInt | None = Field(default=None, ge=0)
    namespace_overrides: NamespaceOverrides = NamespaceOverrides()

    def mode_of(self, rule: str) -> Mode:
        specific: Mode | None = getattr(self.rules, rule)
        return specific or self.mode


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
    # Not a user key: a short digest of the document, recorded on what the webhook writes.
    version: str = Field(default="default", exclude=True)

    @model_validator(mode="after")
    def _check_policy(self) -> Settings:
        allowed = self.policy.allowed_domains
        if allowed and not any(_under(self.domain, d) for d in allowed):
            raise ValueError(f"domain {self.domain!r} is not under policy.allowedDomains {list(allowed)}")
        lb = self.load_balancer
        enforced = self.policy.mode_of("internal_load_balancer") == "enforce"
        if enforced and not lb.would_be_internal() and not lb.allow_external:
            raise ValueError(
                "loadBalancer: policy.rules.internalLoadBalancer is enforced but the load balancers would "
                "not be internal (cloud none, no loadBalancerClass, no annotations): set loadBalancer.cloud, "
                "loadBalancerClass or annotations, or say loadBalancer.allowExternal: true"
            )
        return self


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
