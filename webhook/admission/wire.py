"""AdmissionReview v1 on the wire: the types, the input limits, parsing and encoding.

Pure: no Flask, no I/O. The wire types follow kopf's `reviews.py`; the limits bound what one request
can cost before any decision is made. (controller-runtime: `pkg/webhook/admission/webhook.go`'s types
and `http.go`'s body checks.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal, NotRequired, TypedDict

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
# The API server accepts request bodies up to 3 MiB and etcd objects up to 1.5 MiB, so a review
# (object + oldObject) fits in 3 MiB. The cap bounds memory: each of workers x threads requests in
# flight holds its body, its text and its decoded objects (README, "Memory": 8 x 3 MiB fits 256 Mi).
MAX_BODY_BYTES = 3 * 1024 * 1024
# Bounds the work one request can cause (a 7 MiB body of tiny values costs seconds and a GiB to
# decode and walk); the biggest broker pod of the shared renders has about 700 values.
MAX_JSON_VALUES = 100_000
MAX_JSON_DEPTH = 100
CONTENT_TYPES = ("application/json",)

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: tuple[str, ...] = ("CREATE", "UPDATE", "DELETE", "CONNECT")


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


_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'"[]{}')
_DEPTH_STEP = [1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256)]
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def json_depth(body: bytes, cap: int = MAX_JSON_DEPTH) -> int:
    """The deepest nesting of arrays and objects in a JSON text, without parsing (brackets inside
    strings do not count). Linear time, constant stack, C-speed passes: safe on hostile input.

    Escaped backslashes, then escaped quotes, are removed; of the rest only quotes and brackets are
    kept, and the quotes delimit strings, so every other piece of that split on quotes is outside
    strings. parse_review caps the commas first, which bounds the number of strings and so the
    pieces of the split. The depth of what is left is the number of passes that peel its innermost
    pairs, up to `cap`; past it, or unbalanced, a prefix sum says exactly how deep. (On the 10 KB
    broker review: ~60 us, where splitting the whole body and summing took ~90.)"""
    if b"\\\\" in body:
        body = body.replace(b"\\\\", b"")
    if b'\\"' in body:
        body = body.replace(b'\\"', b"")
    # Two quotes side by side open and close an empty string, or close one string and open the next
    # with nothing outside between them: dropping them merges or removes strings, never moves a
    # bracket in or out of one. Most strings hold no bracket, so few quotes are left to split on.
    quotes_and_brackets = body.translate(None, _NOT_QUOTES_OR_BRACKETS).replace(b'""', b"")
    brackets = b"".join(quotes_and_brackets.split(b'"')[::2])
    rest, passes = brackets.translate(_ONE_KIND), 0
    while rest and passes <= cap:
        peeled = rest.replace(b"[]", b"")
        if len(peeled) == len(rest):
            break  # unbalanced
        rest, passes = peeled, passes + 1
    if not rest:
        return passes
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
    return review_from_document(_decode(body, max_depth))


def _decode(body: bytes, max_depth: int) -> Any:
    if not _has_long_digit_run(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the standard library accepts some of it (lone surrogates) or says exactly why not
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadReview(400, f"body is not UTF-8 (byte {err.start})", "not_json") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise BadReview(400, f"JSON nested over the limit of {max_depth} levels", "too_deep") from None
    except ValueError as err:
        raise BadReview(400, f"body is not JSON: {err}", "not_json") from None


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
# orjson decodes 2.5x faster and, where it accepts a text, to the same value as _DECODER (no NaN, no
# infinity, last duplicate key wins; tests/unit/admission compare the two on hostile texts), except
# integers outside 64 bits, which it rounds to floats: a text with a run of 19 digits anywhere
# (inside strings too: only a cheaper path is given up) goes to _DECODER. (Found by mapping digits
# to 0 and the rest to 1, then a substring search: 12 us on 10 KB, where a regex takes 140.)
_DIGITS_TO_ZERO = bytes(ord("0") if b in b"0123456789" else ord("1") for b in range(256))
_LONG_DIGITS = b"0" * 19


def _has_long_digit_run(body: bytes) -> bool:
    return _LONG_DIGITS in body.translate(_DIGITS_TO_ZERO)


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


def encode(review: AdmissionReview) -> bytes:
    return dumps(review)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, by orjson: the patch carries the runtime script (6 KB of quotes and
    backslashes to escape), which the standard library took 60 us a request to encode, orjson 4.
    What orjson refuses, a lone surrogate (decoded from a `\\udXXX` escape) or an integer beyond 64
    bits kept from the request, the standard library encodes, escaped to ASCII."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, separators=(",", ":")).encode("ascii")
