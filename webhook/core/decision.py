"""What the engine answers for one object: the outcome, the resulting object and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # not at run time: certificates imports services, which imports this module
    from webhook.core.certificates import ExternalTls

Outcome = Literal["mutated", "unchanged", "skipped", "warned"]
# mutated:   the object was changed (the result differs from the input)
# unchanged: a broker (or broker Service) that is already exactly as planned (idempotence)
# skipped:   not ours to touch (not Kafka, not a StatefulSet broker, a KRaft controller-only pod...)
# warned:    a broker that should be exposed but cannot be safely; left as it is, `reason` says why


@dataclass(frozen=True)
class BrokerPlan:
    """How one broker is exposed. `host` may hold `$(VAR)` references when planned for a template."""

    pod: str
    namespace: str
    statefulset: str | None
    ordinal: int | None
    flavor: str
    listener_name: str
    host: str
    advertised_port: int
    container_port: int
    container_port_name: str
    security_protocol: str | None  # None: decided at run time from the chart's client listener
    service_name: str
    tls: ExternalTls | None = None  # the certificate its external listener serves (None: TLS off)

    @property
    def advertised(self) -> str:
        return f"{self.listener_name}://{self.host}:{self.advertised_port}"


@dataclass(frozen=True)
class Decision:
    """`result` shares the parts the engine did not change with the input object (copy-on-write):
    read it, or copy it before editing it."""

    kind: str
    outcome: Outcome
    result: dict[str, Any]
    reason: str
    warnings: tuple[str, ...] = ()
    plans: tuple[BrokerPlan, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return self.outcome == "mutated"
