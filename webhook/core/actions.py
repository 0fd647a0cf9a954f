"""What the controller can be asked to do: one small frozen dataclass per action (it dispatches with
`match`), the namespace snapshot the planner reads and the plan it returns. Pure data."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

# ------------------------------------------------------------------------------------------ actions
# One small frozen dataclass per thing the controller can do; it dispatches with `match`. `kind` is
# the name in logs and in the actions metric.


@dataclass(frozen=True, kw_only=True)
class _Action:
    kind: ClassVar[str]  # the class's name in kebab case: ChartLoadBalancer -> chart-load-balancer
    namespace: str
    service: str  # the Service name the action is about
    reason: str
    statefulset: str | None = None  # where the Event goes

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.kind = re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__.lstrip("_")).lower()


@dataclass(frozen=True, kw_only=True)
class _ObjectAction(_Action):
    """About one existing object, whose `uid` guards the write (None: not known)."""

    uid: str | None


@dataclass(frozen=True, kw_only=True)
class _PodAction(_Action):
    """About one broker pod, `pod`, whose `pod_uid` guards the write."""

    pod: str
    pod_uid: str | None


@dataclass(frozen=True, kw_only=True)
class Create(_Action):
    """The slot's Service is missing: create it (never over an existing object)."""

    desired: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Update(_ObjectAction):
    """Our Service drifted from the plan: server-side apply our fields, conditioned on the version."""

    desired: dict[str, Any]
    resource_version: str | None
    convert_ownership: bool = False  # our create's field ownership must become "Apply" first


@dataclass(frozen=True, kw_only=True)
class Replace(_ObjectAction):
    """An immutable setting changed and the settings allow replacing: delete, then create."""

    desired: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Delete(_ObjectAction):
    """Our Service outlived its slot (scale-down, opt-out, orphaned)."""


@dataclass(frozen=True, kw_only=True)
class Wait(_ObjectAction):
    """A deletion waits for the scale-down grace period: reconcile again after `delay`."""

    delay: float


@dataclass(frozen=True, kw_only=True)
class Conflict(_ObjectAction):
    """The name is taken by a Service we did not create (or by another broker's): report."""

    uid: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChartLoadBalancer(_ObjectAction):
    """The chart already has a LoadBalancer for this broker: do not add a second one."""


@dataclass(frozen=True, kw_only=True)
class ImmutableKept(_ObjectAction):
    """An immutable setting changed, the Service keeps its creation values: report."""


@dataclass(frozen=True, kw_only=True)
class ReportAddress(_PodAction):
    """The broker pod's load-balancer annotation differs from the Service's address."""

    address: str | None  # None: remove the annotation


@dataclass(frozen=True, kw_only=True)
class CapReached(_Action):
    """Creating the slot's Service would take the namespace over `maxLoadBalancersPerNamespace`:
    nothing is created; report."""

    pod: str


@dataclass(frozen=True, kw_only=True)
class AuditViolation(_ObjectAction):
    """A Service kafka-expose did not create breaks the policy (the audit): report, and `repair`
    (when the settings say so) with these JSON patch operations."""

    rules: tuple[str, ...]
    repair: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, kw_only=True)
class AnnotationsIgnored(_PodAction):
    """A broker pod's kafka-expose annotations disagree with what its identity and the settings
    derive (forged, edited, or older settings): the derived plan is followed; report."""


@dataclass(frozen=True, kw_only=True)
class Unexposed(_PodAction):
    """A broker pod was admitted without kafka-expose (webhook unreachable): report."""


@dataclass(frozen=True, kw_only=True)
class ApplyCertificate(_Action):
    """A broker StatefulSet's cert-manager Certificate is missing or out of step (replicas, settings):
    server-side apply it (`service` holds the Certificate's name). `password_secret`: the PKCS12
    keystore's password Secret, created when absent (never overwritten)."""

    desired: dict[str, Any]
    password_secret: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class DeleteCertificate(_ObjectAction):
    """A Certificate kafka-expose made (owned by its StatefulSet) that no broker serves any more."""


@dataclass(frozen=True, kw_only=True)
class RestartBroker(_PodAction):
    """cert-manager renewed the Certificate after this broker started: evict it (the Eviction API
    honours PodDisruptionBudgets), one broker of a StatefulSet at a time, all others Ready, so it comes
    back serving the new certificate. `service` holds the Certificate's name."""


@dataclass(frozen=True, kw_only=True)
class CertificateConflict(_Action):
    """The Certificate's name is taken by one kafka-expose did not make: left alone, reported."""


Action = (
    Create
    | Update
    | Replace
    | Delete
    | Wait
    | Conflict
    | ChartLoadBalancer
    | ImmutableKept
    | ReportAddress
    | CapReached
    | AuditViolation
    | AnnotationsIgnored
    | Unexposed
    | ApplyCertificate
    | DeleteCertificate
    | CertificateConflict
    | RestartBroker
)
A = TypeVar("A", bound=_Action)


@dataclass(frozen=True)
class NamespaceState:
    """What the controller observed in one namespace (raw objects as the API server sent them)."""

    namespace: str
    opted_in: bool
    pods: Sequence[Mapping[str, Any]] = ()  # pods labelled kafka-expose.io/exposed=true
    statefulsets: Sequence[Mapping[str, Any]] = ()
    services: Sequence[Mapping[str, Any]] = ()  # every Service of the namespace
    pending_deletions: Mapping[str, float] = field(default_factory=dict)  # name -> first seen removable
    now: float = 0.0
    # pods matched by unexposed_pod_selectors: broker pods without the exposed label
    unexposed_pods: Sequence[Mapping[str, Any]] = ()
    certificates: Sequence[Mapping[str, Any]] = ()  # every cert-manager Certificate of the namespace


@dataclass(frozen=True)
class NamespacePlan:
    actions: tuple[Action, ...]
    pending_deletions: dict[str, float]  # to pass back in the next NamespaceState

    def of(self, kind: type[A]) -> list[A]:
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def requeue_after(self) -> float | None:
        delays = [a.delay for a in self.of(Wait)]
        return min(delays) if delays else None
