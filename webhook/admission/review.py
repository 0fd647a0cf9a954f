"""AdmissionReview v1 on the wire: parsing, response constructors, and the two handlers.

Pure: no Flask, no I/O. The HTTP layer (`webhook.server`) reads the body, calls `parse_review`,
then `mutate_review` or `validate_review`, and sends `review_response(...)` back.

Shapes follow controller-runtime's `pkg/webhook/admission` (response constructors `allowed`,
`denied`, `patched`, `errored`, `with_warnings`) and the wire types follow kopf's `reviews.py`.
"""

from __future__ import annotations

import base64
import json
import marshal
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal, NotRequired, TypedDict

import jsonpatch
import orjson

from webhook.core import Decision
from webhook.core import mutate as core_mutate
from webhook.core.podspec import copy_json
from webhook.core.settings import Settings

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_BODY_BYTES = 7 * 1024 * 1024  # what the API server itself accepts (controller-runtime's limit too)
# Bounds the work one request can cause (a 7 MiB body of tiny values costs seconds and a GiB to
# decode and walk); the biggest broker pod of the shared renders has about 700 values.
MAX_JSON_VALUES = 100_000
MAX_JSON_DEPTH = 100
MAX_WARNING_CHARS = 256  # the API server may truncate longer warnings
CONTENT_TYPES = ("application/json",)

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: tuple[str, ...] = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# request.kind (group, kind) that /mutate hands to the core
MUTATED_KINDS = frozenset({("", "Pod"), ("", "Service")})


# --- wire types ---------------------------------------------------------------------------------


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Operation
    subResource: NotRequired[str]
    requestKind: NotRequired[GroupVersionKind]
    requestResource: NotRequired[GroupVersionResource]
    requestSubResource: NotRequired[str]
    name: NotRequired[str]
    namespace: NotRequired[str]
    userInfo: NotRequired[UserInfo]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    options: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]


class Status(TypedDict, total=False):
    code: int
    message: str
    reason: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    warnings: NotRequired[list[str]]
    auditAnnotations: NotRequired[dict[str, str]]


class AdmissionReview(TypedDict):
    apiVersion: str
    kind: str
    request: NotRequired[AdmissionRequest]
    response: NotRequired[AdmissionResponse]


# --- parsing --------------------------------------------------------------------------------------


class BadReview(ValueError):
    """A request that is not a usable AdmissionReview: answered with HTTP `status` and a one-line reason."""

    def __init__(self, status: int, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind  # short metric label: content_type, too_large, not_json, too_deep, invalid_review...


@dataclass(frozen=True)
class Review:
    """A well-formed AdmissionReview request, with the fields the handlers use pulled out."""

    raw: AdmissionReview
    request: AdmissionRequest
    uid: str
    operation: str
    group: str
    kind: str
    sub_resource: str
    namespace: str | None
    name: str
    dry_run: bool
    object: dict[str, Any] | None

    @property
    def api_version(self) -> str:
        return self.raw["apiVersion"]


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in CONTENT_TYPES:
        shown = media or "none"
        raise BadReview(415, f"unsupported content type {shown!r}: expected application/json", "content_type")


def check_size(length: int | None) -> None:
    if length is not None and length > MAX_BODY_BYTES:
        raise BadReview(
            413, f"request body of {length} bytes is over the {MAX_BODY_BYTES} byte limit", "too_large"
        )


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256)]


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, without parsing (brackets inside
    strings do not count). Linear time, constant stack, C-speed passes: safe on hostile input.

    Escaped backslashes, then escaped quotes, are removed; the remaining quotes delimit strings, so
    every other piece of the text split on quotes is outside strings. parse_review caps the commas
    first, which bounds the number of strings and so the pieces of that split."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def parse_review(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Review:
    """Decode and check an AdmissionReview v1 request; raise BadReview with a one-line reason."""
    check_size(len(body))
    if not body.strip():
        raise BadReview(400, "empty request body: expected an AdmissionReview", "not_json")
    # Every value but the first follows a comma or opens a container (those characters inside strings
    # count too: an upper bound), so this caps what decoding and walking the object can cost before
    # anything is allocated.
    values = body.count(b",") + body.count(b"[") + body.count(b"{") + 1
    if values > MAX_JSON_VALUES:
        reason = f"JSON of up to {values} values, over the limit of {MAX_JSON_VALUES}"
        raise BadReview(400, reason, "too_many_values")
    depth = json_depth(body)
    if depth > max_depth:
        raise BadReview(400, f"JSON nested {depth} levels deep, over the limit of {max_depth}", "too_deep")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadReview(400, f"body is not UTF-8 (byte {err.start})", "not_json") from None
    try:
        document = _DECODER.decode(text)
    except RecursionError:
        raise BadReview(400, f"JSON nested over the limit of {max_depth} levels", "too_deep") from None
    except ValueError as err:
        raise BadReview(400, f"body is not JSON: {err}", "not_json") from None
    return review_from_document(document)


def _not_a_number(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


# Strict like the API server's Go decoder: no NaN or Infinity, no number that overflows to infinity
# (orjson would encode it as null in a patch). Integers keep their exact value, however long, and
# escaped lone surrogates their code point: the patch must be made against the object as received.
_DECODER = json.JSONDecoder(parse_constant=_not_a_number, parse_float=_finite)


def review_from_document(document: Any) -> Review:
    """Check a decoded document is an AdmissionReview v1 request with the fields the webhook needs."""
    if not isinstance(document, dict):
        raise BadReview(
            400, f"expected an AdmissionReview object, got a JSON {_json_type(document)}", "invalid_review"
        )
    kind = document.get("kind")
    if kind != KIND:
        raise BadReview(400, f"expected kind {KIND}, got {_shown(kind)}", "invalid_review")
    api_version = document.get("apiVersion")
    if api_version != API_VERSION:
        raise BadReview(
            400, f"unsupported apiVersion {_shown(api_version)}: expected {API_VERSION}", "wrong_version"
        )
    request = document.get("request")
    if not isinstance(request, dict):
        raise BadReview(400, "AdmissionReview has no request object", "invalid_review")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview(400, "request.uid is missing or not a non-empty string", "invalid_review")
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise BadReview(
            400,
            f"request.operation {_shown(operation)} is not one of {', '.join(OPERATIONS)}",
            "invalid_review",
        )
    gvk = request.get("kind")
    if not isinstance(gvk, dict) or not isinstance(gvk.get("kind"), str):
        raise BadReview(400, "request.kind is missing or has no kind", "invalid_review")
    group = gvk.get("group", "")
    if not isinstance(group, str):
        raise BadReview(400, "request.kind.group is not a string", "invalid_review")
    sub_resource = request.get("subResource", "") or ""
    namespace = request.get("namespace") or None
    name = request.get("name", "") or ""
    dry_run = request.get("dryRun", False)
    for field, value in (("subResource", sub_resource), ("namespace", namespace or ""), ("name", name)):
        if not isinstance(value, str):
            raise BadReview(400, f"request.{field} is not a string", "invalid_review")
    if not isinstance(dry_run, bool):
        raise BadReview(400, "request.dryRun is not a boolean", "invalid_review")
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise BadReview(400, "request.object is not an object", "invalid_review")
    if operation in ("CREATE", "UPDATE") and not sub_resource and obj is None:
        raise BadReview(400, f"request.object is missing for {operation}", "invalid_review")
    if obj is not None:
        metadata = obj.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise BadReview(400, "request.object.metadata is not an object", "invalid_review")
        if not name and isinstance(metadata, dict):
            name = str(metadata.get("name") or metadata.get("generateName") or "")
    return Review(
        raw=document,  # type: ignore[arg-type]  # checked above, field by field
        request=request,  # type: ignore[arg-type]
        uid=uid,
        operation=operation,
        group=group,
        kind=gvk["kind"],
        sub_resource=sub_resource,
        namespace=namespace,
        name=name,
        dry_run=dry_run,
        object=obj,
    )


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    text = json.dumps(value) if value is not None else "nothing"
    return text if len(text) <= 60 else text[:57] + "..."


# --- responses ------------------------------------------------------------------------------------


def allowed(uid: str, message: str = "") -> AdmissionResponse:
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if message:
        response["status"] = {"code": 200, "message": message}
    return response


def denied(uid: str, message: str, code: int = 403) -> AdmissionResponse:
    reason = "Forbidden" if code == 403 else "BadRequest" if code == 400 else "Invalid"
    return {"uid": uid, "allowed": False, "status": {"code": code, "message": message, "reason": reason}}


def errored(uid: str, code: int, message: str) -> AdmissionResponse:
    """Refuse because the webhook failed (controller-runtime's Errored). This webhook prefers to fail
    open (see `mutate_review`); this is for callers that must not."""
    return {"uid": uid, "allowed": False, "status": {"code": code, "message": message}}


def json_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[dict[str, Any]]:
    """RFC 6902 operations turning `original` into `mutated`, checked by applying them.

    `jsonpatch.make_patch` makes the operations, but only for the parts that differ: walking the
    whole Pod with it costs about a millisecond (it serializes every leaf to compare it), most of
    the time of an admission. Equal subtrees are skipped (compared with `==`), dicts and lists of
    the same length are descended into here, anything else (a list that grew or shrank, a scalar)
    is handed to make_patch with its path prefixed.

    A patch that does not reproduce `mutated` (jsonpatch's list diff has had bugs) is replaced by
    one that replaces (or adds/removes) the differing top-level fields."""
    operations: list[dict[str, Any]] = []
    if not _diff(original, mutated, "", operations):
        return operations  # only adds, removes and replaces of whole values: nothing to check
    try:
        if jsonpatch.apply_patch(copy_json(original), operations, in_place=True) == mutated:
            return operations
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
        pass
    return _top_level_patch(original, mutated)


def _diff(src: Any, dst: Any, path: str, operations: list[dict[str, Any]]) -> bool:
    """Append the operations turning `src` into `dst` at `path`; True when make_patch was used."""
    if _equal(src, dst):
        return False
    used_make_patch = False
    if isinstance(src, dict) and isinstance(dst, dict):
        for key in src:
            if key not in dst:
                operations.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
        for key, value in dst.items():
            if key not in src:
                operations.append({"op": "add", "path": f"{path}/{_escape(key)}", "value": value})
            elif src[key] is not value:  # shared with the input (copy-on-write): nothing to look at
                used_make_patch |= _diff(src[key], value, f"{path}/{_escape(key)}", operations)
    elif isinstance(src, list) and isinstance(dst, list) and len(src) == len(dst):
        for index, (old, new) in enumerate(zip(src, dst, strict=True)):
            if old is not new:
                used_make_patch |= _diff(old, new, f"{path}/{index}", operations)
    elif (
        isinstance(src, list)
        and isinstance(dst, list)
        and len(src) < len(dst)
        and _same(src, dst[: len(src)])
    ):
        for index in range(len(src), len(dst)):  # items appended
            operations.append({"op": "add", "path": f"{path}/{index}", "value": dst[index]})
    elif (
        isinstance(src, list)
        and isinstance(dst, list)
        and len(src) > len(dst)
        and _same(src[: len(dst)], dst)
    ):
        for index in reversed(range(len(dst), len(src))):  # items removed from the end
            operations.append({"op": "remove", "path": f"{path}/{index}"})
    elif not isinstance(src, dict | list) or not isinstance(dst, dict | list):
        operations.append({"op": "replace", "path": path, "value": dst})  # a scalar, or a type change
    else:
        for operation in jsonpatch.make_patch(src, dst).patch:  # items inserted or moved inside a list
            operation = dict(operation)
            operation["path"] = path + operation["path"]
            if "from" in operation:
                operation["from"] = path + operation["from"]
            operations.append(operation)
        used_make_patch = True
    return used_make_patch


def _equal(src: Any, dst: Any) -> bool:
    """Equal as JSON: `==`, which takes 1 for true and 1.0 for 1, confirmed by marshal, which does
    not (at C speed; version 2 has no back-references, which depend on reference counts; a different
    key order only makes the caller look closer)."""
    if src is dst:  # the core shares what it did not edit with the input
        return True
    if type(src) is not type(dst) or src != dst:
        return False
    return not isinstance(src, dict | list) or marshal.dumps(src, 2) == marshal.dumps(dst, 2)


def _same(src: list[Any], dst: list[Any]) -> bool:
    return all(_equal(a, b) for a, b in zip(src, dst, strict=True))


def _top_level_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[dict[str, Any]]:
    operations: list[dict[str, Any]] = []
    for key in original:
        if key not in mutated:
            operations.append({"op": "remove", "path": "/" + _escape(key)})
    for key, value in mutated.items():
        if key not in original:
            operations.append({"op": "add", "path": "/" + _escape(key), "value": value})
        elif original[key] != value:
            operations.append({"op": "replace", "path": "/" + _escape(key), "value": value})
    return operations


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def patched(uid: str, original: Mapping[str, Any], mutated: Mapping[str, Any]) -> AdmissionResponse:
    """Allow with a JSONPatch from `original` (the object exactly as received) to `mutated`."""
    return patch_response(uid, json_patch(original, mutated))


def patch_response(uid: str, operations: Sequence[Mapping[str, Any]]) -> AdmissionResponse:
    """Allow with these JSONPatch operations (none: a plain allow)."""
    if not operations:
        return allowed(uid)
    encoded = _dumps(operations)
    return {
        "uid": uid,
        "allowed": True,
        "patchType": "JSONPatch",
        "patch": base64.b64encode(encoded).decode("ascii"),
    }


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_warning(text: str) -> str:
    """One printable line, at most MAX_WARNING_CHARS characters."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > MAX_WARNING_CHARS:
        text = text[: MAX_WARNING_CHARS - 3] + "..."
    return text


def with_warnings(response: AdmissionResponse, *warnings: str) -> AdmissionResponse:
    """A copy of `response` with `warnings` added (cleaned, duplicates and empty ones dropped)."""
    merged = list(response.get("warnings", []))
    for warning in warnings:
        text = clean_warning(warning)
        if text and text not in merged:
            merged.append(text)
    result: AdmissionResponse = {**response}
    if merged:
        result["warnings"] = merged
    return result


def review_response(review: Review | Mapping[str, Any], response: AdmissionResponse) -> AdmissionReview:
    """The answer to `review`: same apiVersion and kind, the response (whose uid is request.uid)."""
    api_version = (
        review.api_version if isinstance(review, Review) else str(review.get("apiVersion", API_VERSION))
    )
    return {"apiVersion": api_version, "kind": KIND, "response": response}


def encode(review: AdmissionReview) -> bytes:
    return _dumps(review)


def _dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, by orjson: the patch carries the runtime script (6 KB of quotes and
    backslashes to escape), which the standard library took 60 us a request to encode, orjson 4.
    What orjson refuses, a lone surrogate (decoded from a `\\udXXX` escape) or an integer beyond 64
    bits kept from the request, the standard library encodes, escaped to ASCII."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, separators=(",", ":")).encode("ascii")


# --- handlers -------------------------------------------------------------------------------------

MutateFn = Callable[[Mapping[str, Any], Settings, str | None], Decision]
# validate(review_request, settings) -> (allowed, message, warnings); replaced by the policy module
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
    """The validating hook until the policy module lands: everything is allowed, without warnings."""
    return True, "", ()


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

    An exception inside the core (or the patch building) allows the object untouched with a warning:
    never a half-mutated object, never a failed admission because of a webhook bug."""
    uid = review.uid
    skip = untouched_reason(review)
    if skip is not None or review.object is None:
        return Handled(allowed(uid), "skipped", skip or "no object")
    original = review.object
    try:
        # the core never edits its input (tested), so `original` stays the object exactly as received
        decision = mutate(original, settings, review.namespace)
        advertised = tuple(plan.advertised for plan in decision.plans)
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
        warning = (
            f"kafka-expose: internal error, {review.kind.lower() or 'object'} admitted unchanged (uid {uid})"
        )
        return Handled(
            with_warnings(allowed(uid), warning), "error", f"{type(err).__name__}: {err}", error=err
        )


def _check_result(original: Mapping[str, Any], result: Any) -> None:
    """The core may change an object, not replace it by another one."""
    if not isinstance(result, dict):
        raise TypeError(f"the core returned a {type(result).__name__}, not an object")
    for key in ("apiVersion", "kind"):
        if result.get(key) != original.get(key):
            raise ValueError(f"the core changed {key} from {original.get(key)!r} to {result.get(key)!r}")


def validate_review(review: Review, settings: Settings, validate: ValidateHook = allow_all) -> Handled:
    """Ask the validating hook about CREATE and UPDATE of objects; allow everything else.

    An exception in the hook allows with a warning (fail open, like /mutate)."""
    uid = review.uid
    skip = untouched_reason(review, kinds=None)
    if skip is not None:
        return Handled(allowed(uid), "skipped", skip)
    try:
        ok, message, warnings = validate(review.request, settings)
    except Exception as err:
        warning = f"kafka-expose: internal error, policy not checked (uid {uid})"
        return Handled(
            with_warnings(allowed(uid), warning), "error", f"{type(err).__name__}: {err}", error=err
        )
    if not ok:
        return Handled(
            with_warnings(denied(uid, message or "denied by kafka-expose policy"), *warnings),
            "denied",
            message,
        )
    response = with_warnings(allowed(uid), *warnings)
    return Handled(response, "warned" if "warnings" in response else "allowed", message)
