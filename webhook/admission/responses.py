"""Response constructors (controller-runtime's `allowed`, `denied`, `errored`, `patched`,
`with_warnings`) and the warnings' form: the `kafka-expose: ` prefix and the API server's length.

Pure. Everything a user reads in `kubectl`'s warnings passes through `warning_text`/`with_warnings`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from typing import Any

from webhook.admission.patch import json_patch
from webhook.admission.wire import API_VERSION, KIND, AdmissionResponse, AdmissionReview, Review, dumps

WARNING_PREFIX = "kafka-expose: "
WARNING_LIMIT = 256  # the API server may truncate longer warnings


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


def patched(uid: str, original: Mapping[str, Any], mutated: Mapping[str, Any]) -> AdmissionResponse:
    """Allow with a JSONPatch from `original` (the object exactly as received) to `mutated`."""
    return patch_response(uid, json_patch(original, mutated))


def patch_response(uid: str, operations: Sequence[Mapping[str, Any]]) -> AdmissionResponse:
    """Allow with these JSONPatch operations (none: a plain allow)."""
    if not operations:
        return allowed(uid)
    encoded = dumps(operations)
    return {
        "uid": uid,
        "allowed": True,
        "patchType": "JSONPatch",
        "patch": base64.b64encode(encoded).decode("ascii"),
    }


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_warning(text: str) -> str:
    """One printable line, at most WARNING_LIMIT characters."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > WARNING_LIMIT:
        text = text[: WARNING_LIMIT - 3] + "..."
    return text


def warning_text(text: str, keep: str = "") -> str:
    """`text` as kafka-expose's own warning: the prefix, one line, at most WARNING_LIMIT characters.
    When it must be cut, the end `keep` (what to change, the policy rule) survives and the middle goes."""
    text = WARNING_PREFIX + " ".join(_CONTROL.sub(" ", text).split())
    if len(text) <= WARNING_LIMIT:
        return text
    keep = keep if text.endswith(keep) and len(WARNING_PREFIX + keep) < WARNING_LIMIT - 40 else ""
    return text[: WARNING_LIMIT - len(keep) - 3].rstrip() + "..." + keep


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
