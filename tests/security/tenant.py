"""A tenant as issue 15 describes it: its own ServiceAccount with a namespaced `edit` RoleBinding, and
nothing else. Tests act through it, so what the API server lets a tenant do is what they try."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import requests

from tests.support.controlplane import ControlPlane

_PLURALS = {
    "Service": "services",
    "StatefulSet": "statefulsets",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "ServiceAccount": "serviceaccounts",
    "Pod": "pods",
}


@dataclass
class Tenant:
    namespace: str
    session: requests.Session
    api_url: str

    def path(self, obj: dict[str, Any], name: str | None = None) -> str:
        group_version = obj.get("apiVersion", "v1")
        base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        plural = _PLURALS[obj["kind"]]
        return f"{self.api_url}{base}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        answer = self.session.post(self.path(obj), json=obj, timeout=30)
        assert answer.status_code == 201, f"{obj['kind']} {obj['metadata']['name']}: {answer.text[:500]}"
        created: dict[str, Any] = answer.json()
        return created

    def patch(
        self, kind: str, name: str, patch: Any, content_type: str, manager: str = "tenant"
    ) -> requests.Response:
        return self.session.patch(
            self.path({"kind": kind, "apiVersion": "v1"}, name),
            data=patch if isinstance(patch, str) else json.dumps(patch),
            headers={"Content-Type": content_type},
            params={"fieldManager": manager},
            timeout=30,
        )


def tenant(plane: ControlPlane, namespace: str, name: str = "tenant") -> Tenant:
    """ServiceAccount `name` in `namespace`, bound to the `edit` ClusterRole there, with a token."""
    api = plane.api_client()
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    kubernetes.client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": f"{name}-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    token = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    session.verify = str(plane.ca_path)
    session.trust_env = False
    whoami = session.post(
        plane.api_url + "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        timeout=30,
    )
    assert whoami.json()["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:{name}"
    return Tenant(namespace, session, plane.api_url)
