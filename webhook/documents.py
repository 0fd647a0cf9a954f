"""Multi-document YAML in and out, keeping untouched documents byte for byte."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

_SEPARATOR = re.compile(r"^---(?:[ \t].*)?$", re.MULTILINE)


class DocumentError(ValueError):
    pass


@dataclass(frozen=True)
class Document:
    raw: str  # the document's own text, without its `---` separator
    obj: Any  # the parsed object (None for an empty document)


def split_documents(text: str) -> list[Document]:
    """Split at `---` lines (block scalars are indented, so a column-0 `---` is always a separator)."""
    documents = []
    for index, chunk in enumerate(_SEPARATOR.split(text)):
        try:
            obj = yaml.safe_load(chunk)
        except yaml.YAMLError as err:
            raise DocumentError(f"document {index + 1}: {' '.join(str(err).split())}") from None
        if obj is not None and not isinstance(obj, dict):
            raise DocumentError(
                f"document {index + 1}: expected a Kubernetes object, got {type(obj).__name__}"
            )
        documents.append(Document(chunk, obj))
    return documents


class _NoAliases(yaml.SafeDumper):
    """The core shares unchanged values between objects (copy-on-write): written out, they must be
    copies, never YAML anchors and aliases (kubectl and Helm accept them, many tools do not)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=100000)


def leading_comments(raw: str) -> str:
    """The comment lines before a document's first content line (Helm's `# Source: ...`)."""
    kept = []
    for line in raw.lstrip("\n").splitlines():
        if line.startswith("#"):
            kept.append(line)
        elif line.strip():
            break
    return "".join(line + "\n" for line in kept)


def namespace_of(obj: Any) -> str | None:
    """An object's own metadata.namespace, if it names one."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    ns = metadata.get("namespace") if isinstance(metadata, dict) else None
    return ns if isinstance(ns, str) and ns else None


def read_input(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def objects(documents: list[Document]) -> list[dict[str, Any]]:
    """Parsed objects, with `List` kinds (kubectl get -o yaml) flattened."""
    result: list[dict[str, Any]] = []
    for document in documents:
        obj = document.obj
        if isinstance(obj, dict) and obj.get("kind") == "List" and isinstance(obj.get("items"), list):
            result.extend(item for item in obj["items"] if isinstance(item, dict))
        elif isinstance(obj, dict):
            result.append(obj)
    return result


class InputError(Exception):
    """Unusable settings or manifests; the message is the line for `fail`."""


def fail(message: str, stream: TextIO = sys.stderr) -> int:
    """One line on stderr, exit status 2: the contract of every CLI command on bad input."""
    print(f"kafka-expose: {' '.join(message.split())}", file=stream)
    return 2
