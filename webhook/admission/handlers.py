"""The two handlers, /mutate and /validate, over a parsed `Review`.

Pure: no Flask, no I/O (the hooks they call may read the API). The HTTP layer (`webhook.server.app`)
parses the body with `wire.parse_review`, calls `mutate_review` or `validate_review`, and sends
`responses.review_response(...)` back. A handler never raises: whatever fails inside becomes the
answer of `failed_open` (see there), the one place a failure is turned into an admission.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from webhook.admission.patch import json_patch
from webhook.admission.responses import (
    WARNING_PREFIX,
    allowed,
    denied,
    errored,
    patch_response,
    with_warnings,
)
from webhook.admission.wire import AdmissionRequest, AdmissionResponse, Review
from webhook.core import Decision
from webhook.core import mutate as core_mutate
from webhook.core.names import OWN_POD_ANNOTATIONS, OWN_POD_LABELS, WRITTEN_AT_CREATE
from webhook.core.settings import Settings

# request.kind (group, kind) that /mutate hands to the core
MUTATED_KINDS = frozenset({("", "Pod"), ("", "Service")})

MutateFn = Callable[[Mapping[str, Any], Settings, str | None], Decision]
# validate(review_request, settings) -> (allowed, message, warnings): the policy (webhook.server.namespaces)
ValidateHook = Callable[[AdmissionRequest, Settings], tuple[bool, str, Sequence[str]]]

HandledOutcome = Literal["mutated", "unchanged", "skipped", "warned", "allowed", "denied", "error"]


@dataclass(frozen=True)
class Handled:
    """What a handler answered, with what the HTTP layer logs and counts."""

    response: AdmissionResponse
    outcome: HandledOutcome
    reason: str = ""
    advertised: tuple[str, ...] = ()
    patch_operations: int = 0
    error: BaseException | None = None


def allow_all(request: AdmissionRequest, settings: Settings) -> tuple[bool, str, Sequence[str]]:
    """A validating hook that allows everything, without warnings (a server run without a policy)."""
    return True, "", ()


def failed_open(uid: str, what: str, err: BaseException) -> Handled:
    """THE fail-open path: the object is admitted unchanged, with a warning naming the request, and the
    error is kept for the log line and the `error` outcome. Never a half-mutated object, never a failed
    admission because of a webhook bug."""
    warning = f"{WARNING_PREFIX}internal error, {what} (uid {uid})"
    return Handled(with_warnings(allowed(uid), warning), "error", f"{type(err).__name__}: {err}", error=err)


def untouched_reason(review: Review, kinds: frozenset[tuple[str, str]] | None = MUTATED_KINDS) -> str | None:
    """Why the request is allowed without looking at it, or None when it carries an object to examine."""
    if review.operation not in ("CREATE", "UPDATE"):
        return f"{review.operation} is not examined"
    if review.sub_resource:
        return f"subresource {review.sub_resource} is not examined"
    if review.object is None:
        return "no object"
    if kinds is not None and (review.group, review.kind) not in kinds:
        return f"kind {review.kind} is not examined"
    return None


def mutate_review(review: Review, settings: Settings, mutate: MutateFn = core_mutate) -> Handled:
    """Run the core on the request's object and answer: a patch, unchanged, or unchanged with warnings.

    An exception inside the core (or the patch building) is answered by `failed_open`."""
    uid = review.uid
    skip = untouched_reason(review)
    if skip is not None or review.object is None:
        return Handled(allowed(uid), "skipped", skip or "no object")
    original = review.object
    try:
        # the core never edits its input (tested), so `original` stays the object exactly as received
        decision = mutate(original, settings, review.namespace)
        advertised = tuple(plan.advertised for plan in decision.plans)
        if (review.group, review.kind) == ("", "Pod") and review.operation == "CREATE":
            decision = _without_forged_keys(original, decision)
        if decision.outcome == "mutated":
            _check_result(original, decision.result)
            operations = json_patch(original, decision.result)
            response = with_warnings(patch_response(uid, operations), *decision.warnings)
            outcome: HandledOutcome = "mutated" if operations else "unchanged"
            return Handled(response, outcome, decision.reason, advertised, len(operations))
        if decision.outcome == "warned":
            warnings = decision.warnings or (decision.reason or "broker left unexposed",)
            return Handled(with_warnings(allowed(uid), *warnings), "warned", decision.reason, advertised)
        return Handled(
            with_warnings(allowed(uid), *decision.warnings), decision.outcome, decision.reason, advertised
        )
    except Exception as err:
        return failed_open(uid, f"{review.kind.lower() or 'object'} admitted unchanged", err)


def _without_forged_keys(original: Mapping[str, Any], decision: Decision) -> Decision:
    """kafka-expose's own pod labels and annotations (names.OWN_POD_*) on a new pod come from the core
    only: the ones the core did not write (all of them on a pod it does not expose; the load balancer
    address, which the controller writes later, on every new pod) are removed. Else a tenant's pod could
    claim an address, a Service or an exposure it never got (issue 15, item 1)."""
    exposed = decision.outcome in ("mutated", "unchanged")  # unchanged: exposed already (a reinvocation)
    written = WRITTEN_AT_CREATE if exposed else ()
    base = decision.result if exposed else original
    metadata = base.get("metadata") if isinstance(base, Mapping) else None
    if not isinstance(metadata, Mapping):
        return decision
    changed = False
    cleaned_metadata = dict(metadata)
    for field, keys in (("labels", OWN_POD_LABELS), ("annotations", OWN_POD_ANNOTATIONS)):
        values = metadata.get(field)
        if not isinstance(values, Mapping):
            continue
        forged = [key for key in keys if key in values and key not in written]
        if forged:
            cleaned_metadata[field] = {k: v for k, v in values.items() if k not in forged}
            changed = True
    if not changed:
        return decision
    reason = decision.reason if exposed else f"{decision.reason}; kafka-expose keys removed"
    warnings = decision.warnings
    if not exposed:
        warnings = (*warnings, "kafka-expose.io/ labels and annotations are kafka-expose's own: removed")
    return dataclasses.replace(
        decision,
        outcome="mutated",
        result={**base, "metadata": cleaned_metadata},
        reason=reason,
        warnings=warnings,
    )


def _check_result(original: Mapping[str, Any], result: Any) -> None:
    """The core may change an object, not replace it by another one."""
    if not isinstance(result, dict):
        raise TypeError(f"the core returned a {type(result).__name__}, not an object")
    for key in ("apiVersion", "kind"):
        if result.get(key) != original.get(key):
            raise ValueError(f"the core changed {key} from {original.get(key)!r} to {result.get(key)!r}")


# The kinds /validate admits when its policy check fails: a broker Pod must never be kept from starting
# by a webhook bug, and a Pod publishes nothing by itself (its names reach DNS only through Services,
# which fail closed). Every other kind in scope of /validate (Services, StatefulSets) is denied.
VALIDATE_FAILS_OPEN = frozenset({("", "Pod")})


def failed_closed(uid: str, err: BaseException) -> Handled:
    """The policy could not be checked: the object is refused (500, the API server shows the message;
    a retry usually passes), and the error is kept for the log line and the `error` outcome."""
    message = (
        f"{WARNING_PREFIX}internal error, policy not checked: retry, or see the webhook's logs (uid {uid})"
    )
    return Handled(errored(uid, 500, message), "error", f"{type(err).__name__}: {err}", error=err)


def validate_review(review: Review, settings: Settings, validate: ValidateHook = allow_all) -> Handled:
    """Ask the validating hook about CREATE and UPDATE of objects; allow everything else.

    An exception in the hook refuses the object (`failed_closed`): a policy that could not be checked
    must not let a public LoadBalancer or a foreign DNS name through. Pods (VALIDATE_FAILS_OPEN) are
    the deliberate exception, answered by `failed_open`."""
    uid = review.uid
    skip = untouched_reason(review, kinds=None)
    if skip is not None:
        return Handled(allowed(uid), "skipped", skip)
    try:
        ok, message, warnings = validate(review.request, settings)
    except Exception as err:
        if (review.group, review.kind) in VALIDATE_FAILS_OPEN:
            return failed_open(uid, "policy not checked", err)
        return failed_closed(uid, err)
    if not ok:
        return Handled(
            with_warnings(denied(uid, message or "denied by kafka-expose policy"), *warnings),
            "denied",
            message,
        )
    response = with_warnings(allowed(uid), *warnings)
    return Handled(response, "warned" if "warnings" in response else "allowed", message)
