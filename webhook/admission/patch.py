"""The JSONPatch from the object as received to the object the core returned.

Pure. Kept apart from the responses because it is the one costly, subtle piece of an admission: it
must reproduce the core's result exactly (checked by applying it) and cost little on a large Pod.
"""

from __future__ import annotations

import marshal
from collections.abc import Mapping
from typing import Any

import jsonpatch

from webhook.core.podspec import copy_json


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
