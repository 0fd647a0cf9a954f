"""Pods as the StatefulSet controller creates them, and AdmissionReviews carrying them.

The inputs are the stock chart renders in the shared fixtures directory (read from there, never
copied into the repo; `KAFKA_EXPOSE_CHART_FIXTURES` points elsewhere). A Pod is built like
kube-controller-manager's `newStatefulSetPod` (pkg/controller/statefulset/stateful_set_utils.go):
the template's labels, annotations and spec; name `<sts>-<ordinal>`; the StatefulSet's namespace;
labels `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
`controller-revision-hash`; an ownerReference to the StatefulSet with `controller: true`;
hostname/subdomain; one volume per volumeClaimTemplate bound to `<claim>-<pod>`; no generateName.
API server defaulting is not applied (fields the API server would add are simply absent).
"""

from __future__ import annotations

import copy
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import yaml

# The shared folder lies beside the checkout (../shared), on a developer's machine as in CI.
FIXTURES = Path(
    os.environ.get(
        "KAFKA_EXPOSE_CHART_FIXTURES", Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "charts"
    )
)

STATEFULSET_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = "controller-revision-hash"

_RESOURCES = {"Pod": "pods", "Service": "services", "StatefulSet": "statefulsets"}


def render_names(*valuesets: str) -> list[str]:
    """The names of the available renders (without `.yaml`, those of `new/` as `new/<name>`),
    optionally only those of `valuesets`."""
    paths = [*FIXTURES.glob("*.yaml"), *FIXTURES.glob("new/*.yaml")]
    names = sorted(str(path.relative_to(FIXTURES).with_suffix("")) for path in paths)
    return [name for name in names if not valuesets or any(name.endswith("-" + v) for v in valuesets)]


def load_render(name: str) -> list[dict[str, Any]]:
    """The objects of one render, e.g. `bitnami-kafka-32.4.4-default` (`.yaml` optional)."""
    path = FIXTURES / (name if name.endswith(".yaml") else f"{name}.yaml")
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]


def statefulsets(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == "StatefulSet"]


def services(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == "Service"]


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def pod_from_statefulset(
    sts: dict[str, Any], ordinal: int, namespace: str | None = None, *, with_namespace: bool = True
) -> dict[str, Any]:
    """The Pod the StatefulSet controller sends to the API server for `ordinal`.

    `namespace` defaults to the StatefulSet's own (renders of older charts have none: then "default").
    `with_namespace=False` leaves metadata.namespace out, as some API server paths deliver it; the
    AdmissionReview's request.namespace still carries it.
    """
    sts_meta = sts.get("metadata") or {}
    sts_name = str(sts_meta["name"])
    namespace = namespace or sts_meta.get("namespace") or "default"
    spec = sts.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    template_meta = template.get("metadata") or {}
    pod_name = f"{sts_name}-{ordinal}"
    revision = hashlib.sha256(yaml.safe_dump(template, sort_keys=True).encode()).hexdigest()[:10]

    labels = dict(template_meta.get("labels") or {})
    labels[STATEFULSET_POD_NAME_LABEL] = pod_name
    labels[POD_INDEX_LABEL] = str(ordinal)
    labels[REVISION_LABEL] = f"{sts_name}-{revision}"
    metadata: dict[str, Any] = {"name": pod_name}
    if with_namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = labels
    if template_meta.get("annotations"):
        metadata["annotations"] = dict(template_meta["annotations"])
    if template_meta.get("finalizers"):
        metadata["finalizers"] = list(template_meta["finalizers"])
    metadata["ownerReferences"] = [
        {
            "apiVersion": sts.get("apiVersion", "apps/v1"),
            "kind": "StatefulSet",
            "name": sts_name,
            "uid": _uid(namespace, "statefulset", sts_name),
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]

    pod_spec: dict[str, Any] = template.get("spec") or {}
    pod_spec["hostname"] = pod_name
    service_name = spec.get("serviceName")
    if service_name:
        pod_spec["subdomain"] = service_name
    claims = spec.get("volumeClaimTemplates") or []
    if claims:
        volumes = [
            v
            for v in pod_spec.get("volumes") or []
            if v.get("name") not in {c["metadata"]["name"] for c in claims}
        ]
        for claim in claims:
            claim_name = claim["metadata"]["name"]
            volumes.append(
                {"name": claim_name, "persistentVolumeClaim": {"claimName": f"{claim_name}-{pod_name}"}}
            )
        pod_spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def broker_pods(name: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every pod of every StatefulSet of a render (all ordinals up to `replicas`, default 1)."""
    pods = []
    for sts in statefulsets(load_render(name)):
        replicas = (sts.get("spec") or {}).get("replicas")
        for ordinal in range(replicas if isinstance(replicas, int) and replicas > 0 else 1):
            pods.append(pod_from_statefulset(sts, ordinal, namespace))
    return pods


def admission_review(
    obj: dict[str, Any] | None,
    operation: str = "CREATE",
    namespace: str | None = None,
    dry_run: bool = False,
    uid: str | None = None,
    *,
    old_object: dict[str, Any] | None = None,
    sub_resource: str | None = None,
    api_version: str = "admission.k8s.io/v1",
) -> dict[str, Any]:
    """An AdmissionReview request as the API server sends it for `obj` (or `old_object` on DELETE)."""
    subject = obj if obj is not None else old_object or {}
    kind = str(subject.get("kind", "Pod"))
    group_version = str(subject.get("apiVersion", "v1"))
    group, _, version = group_version.rpartition("/")
    metadata = subject.get("metadata") or {}
    if namespace is None:
        namespace = metadata.get("namespace")
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": _RESOURCES.get(kind, kind.lower() + "s")}
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": metadata.get("name", ""),
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:kube-system:statefulset-controller",
            "uid": _uid("user", "statefulset-controller"),
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
        },
        "object": obj,
        "oldObject": old_object,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.capitalize()}Options"},
    }
    if namespace:
        request["namespace"] = namespace
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}
