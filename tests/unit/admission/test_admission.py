"""webhook.admission (pure AdmissionReview handling) and the Flask layer in-process."""

from __future__ import annotations

import base64
import copy
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_REPO = Path(__file__).resolve().parents[3]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.support import podfactory  # noqa: E402
from webhook.admission import handlers, patch, responses, wire  # noqa: E402
from webhook.admission.wire import BadReview, Review, parse_review  # noqa: E402
from webhook.core import Decision, mutate  # noqa: E402
from webhook.core.settings import Settings  # noqa: E402

pytestmark = pytest.mark.unit

SETTINGS = Settings()
BITNAMI = "bitnami-kafka-32.4.4-brokers3"


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def broker_pod() -> dict[str, Any]:
    sts = next(
        s
        for s in podfactory.statefulsets(podfactory.load_render(BITNAMI))
        if "broker" in s["metadata"]["name"]
    )
    return podfactory.pod_from_statefulset(sts, 0, "kafka")


def review_of(obj: dict[str, Any] | None, **kwargs: Any) -> Review:
    return parse_review(body(podfactory.admission_review(obj, **kwargs)))


def decode_patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"], validate=True))
    return ops


def fake_mutate(outcome: str, change: bool = False, warnings: tuple[str, ...] = ()) -> handlers.MutateFn:
    def run(obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
        result = copy.deepcopy(dict(obj))
        if change:
            result.setdefault("metadata", {}).setdefault("annotations", {})["kafka-expose.io/exposed"] = (
                "true"
            )
            result["metadata"]["labels"]["kafka-expose.io/ns"] = namespace or ""
        return Decision(
            kind=str(obj.get("kind")),
            outcome=outcome,  # type: ignore[arg-type]
            result=result,
            reason=f"fake {outcome}",
            warnings=warnings,
        )

    return run


# --- parsing ---------------------------------------------------------------------------------------


def test_parse_a_statefulset_pod_review() -> None:
    pod = broker_pod()
    review = review_of(pod, uid="u-1", dry_run=True)
    assert review.uid == "u-1"
    assert review.operation == "CREATE"
    assert (review.group, review.kind) == ("", "Pod")
    assert review.namespace == "kafka"
    assert review.name == "kafka-broker-0"
    assert review.dry_run is True
    assert review.object == pod
    assert review.api_version == wire.API_VERSION


def test_name_falls_back_to_the_object() -> None:
    doc = podfactory.admission_review(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"}}
    )
    doc["request"].pop("name")
    assert parse_review(body(doc)).name == "web-"


def _bad(doc: Any) -> BadReview:
    with pytest.raises(BadReview) as caught:
        parse_review(doc if isinstance(doc, bytes) else body(doc))
    assert "\n" not in caught.value.reason
    assert 0 < len(caught.value.reason) < 200
    return caught.value


def _review_with(**changes: Any) -> dict[str, Any]:
    doc = podfactory.admission_review({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
    for key, value in changes.items():
        if value is _DROP:
            doc["request"].pop(key, None)
        else:
            doc["request"][key] = value
    return doc


_DROP = object()


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"not json", "not JSON"),
        (b'{"apiVersion": ', "not JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        # what Go's encoding/json (the API server's) refuses too; orjson would write inf as null
        (b'{"kind": "AdmissionReview", "x": NaN}', "NaN is not a JSON number"),
        (b'{"kind": "AdmissionReview", "x": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"kind": "AdmissionReview", "x": 1e999}', "1e999 is out of range"),
        ([], "array"),
        ("AdmissionReview", "string"),
        (None, "null"),
        ({}, "kind"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}, "kind"),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}, "apiVersion"),
        ({"kind": "AdmissionReview", "request": {}}, "apiVersion"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "no request"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": []}, "no request"),
        (_review_with(uid=_DROP), "uid"),
        (_review_with(uid=""), "uid"),
        (_review_with(uid=42), "uid"),
        (_review_with(operation="PATCH"), "operation"),
        (_review_with(operation=_DROP), "operation"),
        (_review_with(kind=_DROP), "request.kind"),
        (_review_with(kind={"group": "", "version": "v1"}), "request.kind"),
        (_review_with(kind={"group": 1, "version": "v1", "kind": "Pod"}), "group"),
        (_review_with(object=_DROP), "object"),
        (_review_with(object=None), "object"),
        (_review_with(object="pod"), "object"),
        (_review_with(object={"kind": "Pod", "metadata": "x"}), "metadata"),
        (_review_with(dryRun="yes"), "dryRun"),
        (_review_with(namespace=7), "namespace"),
        (_review_with(subResource=["status"]), "subResource"),
    ],
)
def test_bad_documents_get_400_with_one_line(doc: Any, words: str) -> None:
    err = _bad(doc)
    assert err.status == 400
    assert words.lower() in err.reason.lower()


def test_wrong_version_has_its_own_kind() -> None:
    doc = podfactory.admission_review(broker_pod(), api_version="admission.k8s.io/v1beta1")
    err = _bad(doc)
    assert err.kind == "wrong_version"
    assert "admission.k8s.io/v1beta1" in err.reason


def test_delete_connect_and_subresources_need_no_object() -> None:
    pod = broker_pod()
    assert review_of(None, operation="DELETE", old_object=pod).object is None
    assert review_of(None, operation="CONNECT", old_object=pod).operation == "CONNECT"
    assert review_of(None, operation="UPDATE", sub_resource="status", old_object=pod).sub_resource == "status"


def test_content_type_and_size() -> None:
    wire.check_content_type("application/json")
    wire.check_content_type("Application/JSON; charset=utf-8")
    for wrong in (None, "", "text/plain", "application/x-www-form-urlencoded", "application/yaml"):
        with pytest.raises(BadReview) as caught:
            wire.check_content_type(wrong)
        assert caught.value.status == 415
    wire.check_size(wire.MAX_BODY_BYTES)
    wire.check_size(None)
    with pytest.raises(BadReview) as caught:
        wire.check_size(wire.MAX_BODY_BYTES + 1)
    assert caught.value.status == 413
    with pytest.raises(BadReview) as caught:
        parse_review(b" " * (wire.MAX_BODY_BYTES + 1))
    assert caught.value.status == 413


# --- JSON depth -------------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_depth_limit() -> None:
    assert wire.json_depth(nested(100)) == 100
    doc = _review_with()
    doc["request"]["object"]["metadata"]["annotations"] = {"deep": json.loads(nested(95))}
    parse_review(body(doc))  # 100 levels in all: accepted
    doc["request"]["object"]["metadata"]["annotations"] = {"deep": json.loads(nested(96))}
    assert _bad(doc).kind == "too_deep"


def test_hostile_nesting_is_rejected_without_recursion_error() -> None:
    # Past 100,000 containers the value cap answers first (before any work that grows with them).
    for payload in (nested(200_000), b"[" * 1_000_000, b'{"a":' * 300_000, b"[{" * 200_000):
        err = _bad(payload)
        assert err.status == 400
        assert err.kind == "too_many_values"
    for payload in (nested(150), b"[" * 5_000, b'{"a":' * 3_000, b"[{" * 2_000):
        err = _bad(payload)
        assert err.status == 400
        assert err.kind == "too_deep"


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps(
        {"command": ["sh", "-c", 'if [[ "${A}" == "[{" ]]; then echo "\\"[[[[[" ; fi' + "[" * 500]}
    )
    assert wire.json_depth(text.encode()) == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('ab[]{}"\\/ \n\u00e9')),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


def true_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((true_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((true_depth(v) for v in value.values()), default=0)
    return 0


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_depth_scan_matches_the_parsed_depth(value: Any) -> None:
    for ensure_ascii in (True, False):
        assert wire.json_depth(json.dumps(value, ensure_ascii=ensure_ascii).encode()) == true_depth(value)


def _exact(raw: bytes) -> tuple[str, Any]:
    """What the standard library's strict decoder (the reference) makes of `raw`."""
    try:
        return "value", wire._DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return "refused", None


def _fast(raw: bytes) -> tuple[str, Any]:
    try:
        return "value", wire._decode(raw, wire.MAX_JSON_DEPTH)
    except BadReview:
        return "refused", None


# Texts where decoders disagree if any do: big and long numbers, floats out of range, NaN,
# duplicate keys, escapes and lone surrogates, control characters, a BOM, trailing data.
tricky_texts = st.lists(
    st.sampled_from(
        [
            b"[",
            b"]",
            b"{",
            b"}",
            b",",
            b":",
            b'"k"',
            b'"a\\ud800"',
            b'"\\ud83d\\ude00"',
            b'"\t"',
            b'"\x01"',
            b"1",
            b"-0",
            b"1e400",
            b"-1e400",
            b"1e-400",
            b"NaN",
            b"Infinity",
            b"0.1000000000000000055511",
            b"18446744073709551615",
            b"18446744073709551616",
            b"-9223372036854775809",
            b"123456789012345678901234",
            b"true",
            b"null",
            b" ",
            b"\xef\xbb\xbf",
            b"\xed\xa0\x80",
            b'"\\""',
            b'"\\/"',
        ]
    ),
    max_size=14,
).map(b"".join)


@given(tricky_texts | json_values.map(lambda v: json.dumps(v).encode()))
@settings(max_examples=500, deadline=None)
def test_the_fast_decoder_gives_what_the_strict_one_gives(raw: bytes) -> None:
    # orjson decodes where it agrees with the standard library; where it would differ it steps aside
    exact, fast = _exact(raw), _fast(raw)
    assert fast[0] == exact[0], raw
    assert repr(fast[1]) == repr(exact[1]), raw  # repr: nan != nan, and 1 == 1.0 == True


def test_integers_past_64_bits_keep_their_exact_value() -> None:
    for text in (b"[18446744073709551616]", b"[-9223372036854775809]", b'{"a": 1234567890123456789012}'):
        assert repr(wire._decode(text, 100)) == repr(json.loads(text))


@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
@settings(max_examples=300, deadline=None)
def test_garbage_only_ever_raises_bad_review(raw: bytes) -> None:
    try:
        parse_review(raw)
    except BadReview as err:
        assert err.status in (400, 413)
        assert "\n" not in err.reason


# --- responses ---------------------------------------------------------------------------------------


def test_response_constructors() -> None:
    assert responses.allowed("u") == {"uid": "u", "allowed": True}
    no = responses.denied("u", "no LB here")
    assert no["allowed"] is False
    assert no["status"] == {"code": 403, "message": "no LB here", "reason": "Forbidden"}
    err = responses.errored("u", 500, "boom")
    assert err["allowed"] is False
    assert err["status"]["code"] == 500
    warned = responses.with_warnings(
        responses.allowed("u"), "first", "first", "", "line\nbreak\x00", "x" * 1000
    )
    assert warned["warnings"][:2] == ["first", "line break"]
    assert len(warned["warnings"][2]) == responses.WARNING_LIMIT
    assert "warnings" not in responses.with_warnings(responses.allowed("u"))


def test_review_response_echoes_version_and_kind() -> None:
    review = review_of(broker_pod(), uid="abc")
    answer = responses.review_response(review, responses.allowed(review.uid))
    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "abc", "allowed": True},
    }
    assert json.loads(wire.encode(answer)) == answer


def test_patched_escapes_keys_and_applies() -> None:
    original: dict[str, Any] = {
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c"}]},
    }
    mutated = copy.deepcopy(original)
    mutated["metadata"]["annotations"] = {"kafka-expose.io/listener": "EXTERNAL", "a~b": "1"}
    mutated["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    response = responses.patched("u", original, mutated)
    ops = decode_patch(response)
    assert jsonpatch.apply_patch(original, ops) == mutated
    assert responses.patched("u", original, copy.deepcopy(original)) == {"uid": "u", "allowed": True}


def test_a_wrong_diff_falls_back_to_a_top_level_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    original = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"a": [1, 2, 3]}, "status": {}}
    mutated = {
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"x/y": "1"}},
        "spec": {"a": [3, 2]},
        "new": 1,
    }

    wrong = jsonpatch.JsonPatch([{"op": "replace", "path": "/spec/a/0", "value": 9}])
    monkeypatch.setattr(jsonpatch, "make_patch", lambda a, b: wrong)
    ops = patch.json_patch(original, mutated)
    assert {op["path"] for op in ops} == {"/metadata", "/spec", "/status", "/new"}
    assert jsonpatch.apply_patch(original, ops) == mutated


json_objects = st.dictionaries(st.sampled_from(["a", "b", "c/d", "e~f", ""]), json_values, max_size=5)


@st.composite
def object_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """An object and a variant of it: edited, extended, truncated, or unrelated."""
    src = draw(json_objects)
    dst = copy.deepcopy(src)
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(["a", "b", "c/d", "e~f", ""]))
        action = draw(st.sampled_from(["set", "drop", "append", "truncate", "insert"]))
        current = dst.get(key)
        if action == "set":
            dst[key] = draw(json_values)
        elif action == "drop":
            dst.pop(key, None)
        elif isinstance(current, list) and action == "append":
            current.extend(draw(st.lists(json_values, max_size=3)))
        elif isinstance(current, list) and action == "truncate" and current:
            del current[draw(st.integers(0, len(current) - 1)) :]
        elif isinstance(current, list) and action == "insert":
            current.insert(draw(st.integers(0, len(current))), draw(json_values))
    if draw(st.booleans()) and draw(st.booleans()):
        dst = draw(json_objects)
    return src, dst


def test_json_patch_tells_numbers_from_booleans() -> None:
    for src, dst in (
        ({"a": [1, {"b": 0}]}, {"a": [True, {"b": False}]}),
        ({"a": {"b": 1}}, {"a": {"b": 1.0}}),
    ):
        operations = patch.json_patch(src, dst)
        assert json_text(jsonpatch.apply_patch(src, operations)) == json_text(dst)


def json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@given(object_pairs())
@settings(max_examples=400, deadline=None)
def test_json_patch_turns_the_original_into_the_result(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    src, dst = pair
    before = json_text(src)
    operations = patch.json_patch(src, dst)
    assert json_text(src) == before  # the original is not touched
    assert json_text(jsonpatch.apply_patch(src, operations)) == json_text(dst)  # JSON-equal: 1 is not true
    assert bool(operations) == (json_text(src) != json_text(dst))
    assert all(op["path"] != "" for op in operations)  # never replaces the whole object


# --- mutate_review ----------------------------------------------------------------------------------


def test_mutated_patch_applies_to_the_object_as_received() -> None:
    pod = broker_pod()
    pod["metadata"]["unknownField"] = {"kept": True}  # fields no client model knows are kept
    review = review_of(pod)
    handled = handlers.mutate_review(review, SETTINGS, fake_mutate("mutated", change=True))
    assert handled.outcome == "mutated"
    assert handled.patch_operations > 0
    result = jsonpatch.apply_patch(pod, decode_patch(handled.response))
    assert result["metadata"]["annotations"]["kafka-expose.io/exposed"] == "true"
    assert result["metadata"]["labels"]["kafka-expose.io/ns"] == "kafka"
    assert result["metadata"]["unknownField"] == {"kept": True}
    assert review.object == pod  # untouched


def test_namespace_comes_from_the_request() -> None:
    pod = broker_pod()
    review = review_of(
        podfactory.pod_from_statefulset(_broker_sts(), 1, "team-a", with_namespace=False), namespace="team-a"
    )
    assert "namespace" not in review.object["metadata"]  # type: ignore[index]
    handled = handlers.mutate_review(review, SETTINGS, fake_mutate("mutated", change=True))
    ops = decode_patch(handled.response)
    assert {"op": "add", "path": "/metadata/labels/kafka-expose.io~1ns", "value": "team-a"} in ops
    assert pod


def _broker_sts() -> dict[str, Any]:
    return next(
        s
        for s in podfactory.statefulsets(podfactory.load_render(BITNAMI))
        if "broker" in s["metadata"]["name"]
    )


def test_the_patch_is_made_against_the_object_exactly_as_received() -> None:
    """The core gets the received object itself (no defensive copy: it is copy-on-write, tested in
    test_core): that object must come out intact, and the patch applied to the bytes as received
    must give what the core decided."""
    received = body(podfactory.admission_review(broker_pod()))
    review = parse_review(received)
    handled = handlers.mutate_review(review, SETTINGS)
    assert handled.outcome == "mutated"
    as_received = json.loads(received)["request"]["object"]
    assert review.object == as_received
    patched = jsonpatch.apply_patch(as_received, decode_patch(handled.response))
    assert patched == mutate(json.loads(received)["request"]["object"], SETTINGS, "kafka").result
    assert patched != as_received


def test_values_orjson_cannot_encode_still_give_an_exact_patch() -> None:
    """A lone surrogate and an integer beyond 64 bits, copied into the patch from the request, are
    encoded by the standard library instead (escaped): the patch still gives exactly the result."""
    pod = broker_pod()
    preparer = pod["spec"]["initContainers"][0]
    preparer["securityContext"] = {**preparer.get("securityContext", {}), "runAsUser": 10**30}
    pod["metadata"]["annotations"] = {"note": "\ud800 lone"}
    received = json.dumps(podfactory.admission_review(pod)).encode("ascii")
    handled = handlers.mutate_review(parse_review(received), SETTINGS)
    operations = decode_patch(handled.response)
    [ours] = [op for op in operations if op["path"] == "/spec/initContainers/1"]
    assert ours["value"]["securityContext"]["runAsUser"] == 10**30
    as_received = json.loads(received)["request"]["object"]
    assert jsonpatch.apply_patch(as_received, operations) == mutate(as_received, SETTINGS, "kafka").result


@pytest.mark.parametrize("outcome", ["unchanged", "skipped"])
def test_no_patch_unless_mutated(outcome: str) -> None:
    handled = handlers.mutate_review(review_of(broker_pod()), SETTINGS, fake_mutate(outcome, change=True))
    assert handled.outcome == outcome
    assert handled.response == {"uid": handled.response["uid"], "allowed": True}


def test_mutated_without_a_difference_is_unchanged() -> None:
    handled = handlers.mutate_review(review_of(broker_pod()), SETTINGS, fake_mutate("mutated", change=False))
    assert handled.outcome == "unchanged"
    assert "patch" not in handled.response


def test_warned_is_allowed_unchanged_with_warnings() -> None:
    handled = handlers.mutate_review(
        review_of(broker_pod()),
        SETTINGS,
        fake_mutate("warned", change=True, warnings=("no free port for EXTERNAL",)),
    )
    assert handled.outcome == "warned"
    assert handled.response["allowed"] is True
    assert "patch" not in handled.response
    assert handled.response["warnings"] == ["no free port for EXTERNAL"]
    no_text = handlers.mutate_review(review_of(broker_pod()), SETTINGS, fake_mutate("warned"))
    assert no_text.response["warnings"] == ["fake warned"]


def test_an_exception_in_the_core_allows_untouched_with_a_warning() -> None:
    def broken(obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
        raise KeyError("spec")

    handled = handlers.mutate_review(review_of(broker_pod(), uid="u-err"), SETTINGS, broken)
    assert handled.outcome == "error"
    assert handled.response["allowed"] is True
    assert "patch" not in handled.response
    assert "u-err" in handled.response["warnings"][0]
    assert isinstance(handled.error, KeyError)


def test_a_result_that_cannot_be_diffed_is_an_error_not_a_half_patch() -> None:
    def odd(obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
        return Decision(kind="Pod", outcome="mutated", result=None, reason="odd")  # type: ignore[arg-type]

    handled = handlers.mutate_review(review_of(broker_pod()), SETTINGS, odd)
    assert handled.outcome == "error"
    assert "patch" not in handled.response


def _never(obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
    raise AssertionError("the core must not be called")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"operation": "DELETE"},
        {"operation": "CONNECT"},
        {"operation": "UPDATE", "sub_resource": "status"},
        {"operation": "CREATE", "sub_resource": "eviction"},
    ],
)
def test_untouched_operations(kwargs: dict[str, Any]) -> None:
    pod = broker_pod()
    obj = None if kwargs["operation"] in ("DELETE", "CONNECT") else pod
    review = review_of(obj, old_object=pod, **kwargs)
    handled = handlers.mutate_review(review, SETTINGS, _never)
    assert handled.outcome == "skipped"
    assert handled.response == {"uid": review.uid, "allowed": True}


def test_other_kinds_are_not_examined() -> None:
    sts = _broker_sts()
    handled = handlers.mutate_review(review_of(sts), SETTINGS, _never)
    assert handled.outcome == "skipped"


def test_dry_run_changes_nothing_in_the_answer() -> None:
    pod = broker_pod()
    wet = handlers.mutate_review(review_of(pod, uid="same"), SETTINGS)
    dry = handlers.mutate_review(review_of(pod, uid="same", dry_run=True), SETTINGS)
    assert wet.response == dry.response
    assert wet.outcome == dry.outcome


# --- contract with the real core over every render ------------------------------------------------


def _all_pods() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, pod) for name in podfactory.render_names() for pod in podfactory.broker_pods(name, "kafka")
    ]


@pytest.mark.parametrize(
    ("render", "pod"), _all_pods(), ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"]
)
def test_patch_reproduces_the_core_result(render: str, pod: dict[str, Any]) -> None:
    review = review_of(pod)
    handled = handlers.mutate_review(review, SETTINGS)
    decision = mutate(copy.deepcopy(pod), SETTINGS, "kafka")
    assert handled.response["uid"] == review.uid
    assert handled.outcome != "error", handled.reason
    if "patch" in handled.response:
        assert decision.outcome == "mutated"
        assert jsonpatch.apply_patch(pod, decode_patch(handled.response)) == decision.result
    else:
        assert decision.outcome != "mutated" or decision.result == pod
    if decision.outcome == "warned":
        assert handled.response["warnings"]


# --- validate_review --------------------------------------------------------------------------------


def test_validate_allows_by_default() -> None:
    handled = handlers.validate_review(review_of(broker_pod(), uid="v"), SETTINGS)
    assert handled.response == {"uid": "v", "allowed": True}
    assert handled.outcome == "allowed"


def test_validate_hook_denies_and_warns() -> None:
    def policy(request: wire.AdmissionRequest, settings: Settings) -> tuple[bool, str, list[str]]:
        assert request["operation"] == "CREATE"
        return False, "public load balancers are not allowed", ["see policy.allowedSourceRanges"]

    handled = handlers.validate_review(review_of(broker_pod(), uid="v"), SETTINGS, policy)
    assert handled.outcome == "denied"
    assert handled.response["allowed"] is False
    assert handled.response["status"]["message"] == "public load balancers are not allowed"
    assert handled.response["warnings"] == ["see policy.allowedSourceRanges"]
    assert "patch" not in handled.response


def test_validate_hook_errors_fail_open() -> None:
    def broken(request: wire.AdmissionRequest, settings: Settings) -> tuple[bool, str, list[str]]:
        raise RuntimeError("bug")

    handled = handlers.validate_review(review_of(broker_pod(), uid="v"), SETTINGS, broken)
    assert handled.outcome == "error"
    assert handled.response["allowed"] is True
    assert handled.response["warnings"]


# --- the Flask layer in-process ----------------------------------------------------------------------


@pytest.fixture
def client() -> Any:
    from webhook.server.app import create_app

    return create_app(SETTINGS).test_client()


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_one_json_log_line_per_decision_without_the_spec(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from webhook.logs import JsonFormatter

    pod = broker_pod()
    doc = podfactory.admission_review(pod, uid="log-1", dry_run=True)
    before = _sample("kafka_expose_admission_dry_run_requests_total", endpoint="mutate")
    with caplog.at_level(logging.INFO, logger="kafka_expose.admission"):
        answer = client.post("/mutate", data=body(doc), content_type="application/json")
    assert answer.status_code == 200
    records = [r for r in caplog.records if r.name == "kafka_expose.admission"]
    assert len(records) == 1
    line = JsonFormatter().format(records[0])
    assert "\n" not in line
    entry = json.loads(line)
    for field in (
        "uid",
        "namespace",
        "kind",
        "name",
        "operation",
        "outcome",
        "advertised",
        "duration_ms",
        "dry_run",
    ):
        assert field in entry, field
    assert entry["uid"] == "log-1"
    assert entry["name"] == "kafka-broker-0"
    assert entry["dry_run"] is True
    assert entry["level"] == "INFO"
    assert "containers" not in line and "initContainers" not in line and "server.properties" not in line
    assert _sample("kafka_expose_admission_dry_run_requests_total", endpoint="mutate") == before + 1


def test_engine_error_is_logged_with_the_uid_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    from webhook.server.app import create_app

    def broken(obj: Mapping[str, Any], settings: Settings, namespace: str | None) -> Decision:
        raise ValueError("kaboom")

    app = create_app(SETTINGS, mutate=broken)
    before = _sample("kafka_expose_admission_requests_total", endpoint="mutate", outcome="error")
    with caplog.at_level(logging.INFO):
        answer = app.test_client().post(
            "/mutate",
            data=body(podfactory.admission_review(broker_pod(), uid="boom-1")),
            content_type="application/json",
        )
    assert answer.status_code == 200
    response = answer.get_json()["response"]
    assert response["allowed"] is True and "patch" not in response and response["warnings"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and errors[0].fields["uid"] == "boom-1"  # type: ignore[attr-defined]
    assert _sample("kafka_expose_admission_requests_total", endpoint="mutate", outcome="error") == before + 1


def test_bad_input_in_process(client: Any) -> None:
    assert client.post("/mutate", data=b"{}", content_type="text/plain").status_code == 415
    assert client.post("/mutate", data=b"nope", content_type="application/json").status_code == 400
    answer = client.post("/validate", data=b"[]", content_type="application/json")
    assert answer.status_code == 400
    assert answer.get_data(as_text=True).count("\n") == 1
    assert client.get("/mutate").status_code == 405
    assert client.get("/nothing").status_code == 404
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_data(as_text=True).startswith("ok\nsettings: version")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'kafka_expose_admission_requests_total{endpoint="mutate",outcome="invalid"}' in metrics


def test_noop_does_not_call_the_core() -> None:
    from webhook.server.app import create_app

    app = create_app(SETTINGS, mutate=_never, noop=True)
    answer = app.test_client().post(
        "/mutate",
        data=body(podfactory.admission_review(broker_pod(), uid="n")),
        content_type="application/json",
    )
    assert answer.get_json()["response"] == {"uid": "n", "allowed": True}
