"""Per-namespace settings: what a namespace may ask for, granted only within the platform's policy.

A namespace may ask for another domain or cloud preset through its annotations
`kafka-expose.io/domain` and `kafka-expose.io/cloud`, and for another cert-manager issuer with
`kafka-expose.io/tls-issuer: Issuer/<name>` (or `ClusterIssuer/<name>`); the request is accepted only within
`policy.namespaceOverrides` (whose domains may contain `{namespace}`, so team-a can get
`team-a.kafka.example.com` and nothing else). A refused request keeps the platform default and comes
back as a problem line, which the webhook returns as a warning. Pure: the annotations are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.core.clouds import CLOUD_PRESETS
from webhook.core.hosts import HostError, check_dns_name
from webhook.core.names import CLOUD_OVERRIDE, DOMAIN_OVERRIDE, TLS_ISSUER_OVERRIDE
from webhook.core.settings import Settings, host_allowed


def allowed_override_domains(settings: Settings, namespace: str) -> tuple[str, ...]:
    """`policy.namespaceOverrides.allowedDomains` with `{namespace}` expanded for this namespace."""
    return tuple(
        d.replace("{namespace}", namespace) for d in settings.policy.namespace_overrides.allowed_domains
    )


def settings_for_namespace(
    settings: Settings, namespace_annotations: Mapping[str, str] | None, namespace: str
) -> tuple[Settings, list[str]]:
    """The settings in force in `namespace`, and one line per refused override request."""
    annotations = namespace_annotations or {}
    problems: list[str] = []
    update: dict[str, Any] = {}
    domain = annotations.get(DOMAIN_OVERRIDE)
    if domain is not None and domain != settings.domain:
        refusal = _domain_refusal(settings, domain, namespace)
        if refusal:
            problems.append(
                f"namespace {namespace}: {DOMAIN_OVERRIDE}={domain} refused: {refusal}; "
                f"using {settings.domain}"
            )
        else:
            update["domain"] = domain
    cloud = annotations.get(CLOUD_OVERRIDE)
    if cloud is not None and cloud != settings.load_balancer.cloud:
        allowed = settings.policy.namespace_overrides.allowed_clouds
        if cloud not in CLOUD_PRESETS:
            refusal = f"unknown cloud (known: {', '.join(sorted(CLOUD_PRESETS))})"
        elif cloud not in allowed:
            refusal = (
                f"allowed clouds are {', '.join(allowed)}"
                if allowed
                else "the platform allows no cloud override"
            ) + " (policy.namespaceOverrides.allowedClouds)"
        else:
            refusal = ""
        if refusal:
            problems.append(
                f"namespace {namespace}: {CLOUD_OVERRIDE}={cloud} refused: {refusal}; "
                f"using {settings.load_balancer.cloud}"
            )
        else:
            update["load_balancer"] = settings.load_balancer.model_copy(update={"cloud": cloud})
    issuer = annotations.get(TLS_ISSUER_OVERRIDE)
    if issuer is not None and settings.tls.enabled:
        refusal = _issuer_refusal(settings, issuer, namespace)
        if refusal:
            current = settings.tls.issuer_ref
            problems.append(
                f"namespace {namespace}: {TLS_ISSUER_OVERRIDE}={issuer} refused: {refusal}; "
                f"using {current.kind}/{current.name}"
            )
        else:
            kind, _, name = issuer.partition("/")
            ref = settings.tls.issuer_ref.model_copy(update={"kind": kind, "name": name})
            update["tls"] = settings.tls.model_copy(update={"issuer_ref": ref})
    return (settings.model_copy(update=update) if update else settings), problems


def _issuer_refusal(settings: Settings, issuer: str, namespace: str) -> str:
    """Why a namespace may not have its certificates signed by `issuer` ("" when it may): only the
    `Kind/name` entries of policy.namespaceOverrides.allowedIssuers, `{namespace}` expanded."""
    allowed = tuple(
        i.replace("{namespace}", namespace) for i in settings.policy.namespace_overrides.allowed_issuers
    )
    if issuer in allowed:
        return ""
    if not allowed:
        return "the platform allows no issuer override (policy.namespaceOverrides.allowedIssuers)"
    return f"allowed issuers are {', '.join(allowed)} (policy.namespaceOverrides.allowedIssuers)"


def _domain_refusal(settings: Settings, domain: str, namespace: str) -> str:
    """Why a namespace may not use `domain` ("" when it may)."""
    try:
        check_dns_name(domain)
    except HostError:
        return "not a valid lower-case DNS name"
    allowed = allowed_override_domains(settings, namespace)
    if not allowed:
        return "the platform allows no domain override (policy.namespaceOverrides.allowedDomains)"
    if not host_allowed(domain, allowed):
        return (
            f"this namespace may only use {', '.join(allowed)} or names below "
            "(policy.namespaceOverrides.allowedDomains)"
        )
    platform = settings.policy.allowed_domains
    if not host_allowed(domain, platform):
        return f"not under the allowed domains {', '.join(platform)} (policy.allowedDomains)"
    return ""
