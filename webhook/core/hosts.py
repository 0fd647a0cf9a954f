"""Per-broker host names from the settings' template."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from webhook.core.names import DNS_LABEL_RE, POD_INDEX_LABEL
from webhook.core.podspec import field_ref_env

_ORDINAL_RE = re.compile(r"^(?P<statefulset>.+)-(?P<ordinal>0|[1-9][0-9]*)$")

POD_NAME_VAR = "KAFKAEXPOSE_POD_NAME"
NAMESPACE_VAR = "KAFKAEXPOSE_NAMESPACE"
ORDINAL_VAR = "KAFKAEXPOSE_ORDINAL"
HOST_VAR = "KAFKAEXPOSE_HOST"


class HostError(ValueError):
    pass


@dataclass(frozen=True)
class BrokerIdentity:
    """Who the broker is. `pod`/`ordinal` are None when planning a StatefulSet's pod template."""

    statefulset: str
    namespace: str
    pod: str | None = None
    ordinal: int | None = None

    def for_ordinal(self, ordinal: int) -> BrokerIdentity:
        return BrokerIdentity(self.statefulset, self.namespace, f"{self.statefulset}-{ordinal}", ordinal)


def split_pod_name(pod: str) -> tuple[str, int] | None:
    """`kafka-broker-2` -> (`kafka-broker`, 2), as the StatefulSet controller names its pods."""
    match = _ORDINAL_RE.match(pod)
    return (match["statefulset"], int(match["ordinal"])) if match else None


def render(template: str, identity: BrokerIdentity, domain: str) -> str:
    """The concrete name for one broker; raise HostError if it is not a valid DNS name."""
    if identity.pod is None or identity.ordinal is None:
        raise HostError("a concrete host needs the pod name")
    host = template.format(
        pod=identity.pod,
        ordinal=identity.ordinal,
        statefulset=identity.statefulset,
        namespace=identity.namespace,
        domain=domain,
    )
    check_dns_name(host)
    return host


def check_dns_name(host: str) -> None:
    if len(host) > 253:
        raise HostError(f"host {host[:60]}... is longer than 253 characters")
    for label in host.split("."):
        if not DNS_LABEL_RE.match(label):
            raise HostError(
                f"host {host!r} is not a valid DNS name: label {label!r} must be 1-63 lower-case "
                "letters, digits or '-', starting and ending with a letter or digit"
            )


def env_expression(template: str, identity: BrokerIdentity, domain: str) -> tuple[str, list[dict[str, Any]]]:
    """The host as a Kubernetes `$(VAR)` expression, and the env entries it needs.

    The same expression serves a Pod and a StatefulSet template, so a pod created from a rendered
    template is already exactly what the webhook would make of it.
    """
    needed: list[dict[str, Any]] = []
    if "{pod}" in template:
        needed.append(field_ref_env(POD_NAME_VAR, "metadata.name"))
    if "{namespace}" in template:
        needed.append(field_ref_env(NAMESPACE_VAR, "metadata.namespace"))
    if "{ordinal}" in template:
        needed.append(field_ref_env(ORDINAL_VAR, f"metadata.labels['{POD_INDEX_LABEL}']"))
    expression = template.format(
        pod=f"$({POD_NAME_VAR})",
        namespace=f"$({NAMESPACE_VAR})",
        ordinal=f"$({ORDINAL_VAR})",
        statefulset=identity.statefulset,
        domain=domain,
    )
    return expression, [*needed, {"name": HOST_VAR, "value": expression}]
