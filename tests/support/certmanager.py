"""cert-manager itself (its controller, built by tools/build-cert-manager.sh) against the test control plane.

What runs is cert-manager v1.11.5's real controller binary, with its real CRDs, talking to the real
kube-apiserver as an admin (no in-cluster Deployment: there is no kubelet). Its own webhook is not run:
it only validates and converts cert-manager objects, and the CRDs' v1 schemas still apply. The
AdditionalCertificateOutputFormats gate gives the Secrets their `tls-combined.pem`.

`bootstrap_ca_issuer` makes the platform's CA the way the README tells a platform team to: a
self-signed ClusterIssuer signs a CA Certificate, whose Secret backs the CA ClusterIssuer
`kafka-external-ca` that signs the brokers' certificates.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from kubernetes.client.rest import ApiException

from tests.support.controlplane import REPO_ROOT, ControlPlane, _Proc, wait_for

BUILD_SCRIPT = REPO_ROOT / "tools" / "build-cert-manager.sh"
NAMESPACE = "cert-manager"  # --cluster-resource-namespace: where ClusterIssuers keep their Secrets
CA_ISSUER = "kafka-external-ca"
CA_SECRET = "kafka-external-ca"
GROUP, VERSION = "cert-manager.io", "v1"
# Only what CA and self-signed issuing needs (no ACME, Vault, Venafi, ingress or gateway shims).
CONTROLLERS = (
    "issuers",
    "clusterissuers",
    "certificaterequests-approver",
    "certificaterequests-issuer-ca",
    "certificaterequests-issuer-selfsigned",
    "certificates-trigger",
    "certificates-issuing",
    "certificates-key-manager",
    "certificates-request-manager",
    "certificates-readiness",
    "certificates-revision-manager",
)


class CertManagerMissing(RuntimeError):
    pass


def install_dir() -> Path:
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=True
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    if not (path / "bin" / "cert-manager-controller").exists() or not list((path / "crds").glob("*.yaml")):
        raise CertManagerMissing(
            f"cert-manager is not built in {path}: run `make tools` (tools/build-cert-manager.sh)"
        )
    return path


def apply_crds(api: kubernetes.client.ApiClient, crds: Path) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(api)
    names = []
    for path in sorted(crds.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        names.append(body["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as err:
            if err.status != 409:
                raise

    def established() -> bool:
        for name in names:
            conditions = ext.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    wait_for(established, 60, 0.3, "cert-manager CRDs to be established")


@contextmanager
def running_cert_manager(plane: ControlPlane) -> Iterator[_Proc]:
    """CRDs applied, the namespace made, the controller running (stopped on exit)."""
    path = install_dir()
    with closing(plane.api_client()) as api:
        apply_crds(api, path / "crds")
        core = kubernetes.client.CoreV1Api(api)
        try:
            core.create_namespace({"metadata": {"name": NAMESPACE}})
        except ApiException as err:
            if err.status != 409:
                raise
    proc = _Proc(
        "cert-manager",
        [
            str(path / "bin" / "cert-manager-controller"),
            f"--kubeconfig={plane.kubeconfig_path}",
            "--leader-elect=false",
            f"--cluster-resource-namespace={NAMESPACE}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--feature-gates=AdditionalCertificateOutputFormats=true",
            "--metrics-listen-address=127.0.0.1:0",
            "--v=2",
        ],
        plane.tmpdir / "cert-manager.log",
        plane.env(),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


def apply(api: kubernetes.client.ApiClient, obj: dict[str, Any]) -> None:
    """Create or replace a cert-manager object."""
    kind = obj["kind"]
    plural = {"ClusterIssuer": "clusterissuers", "Issuer": "issuers", "Certificate": "certificates"}[kind]
    objects = custom(api)
    name = obj["metadata"]["name"]
    namespace = obj["metadata"].get("namespace")
    try:
        if namespace:
            objects.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, obj)
        else:
            objects.create_cluster_custom_object(GROUP, VERSION, plural, obj)
    except ApiException as err:
        if err.status != 409:
            raise
        if namespace:
            current = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        else:
            current = objects.get_cluster_custom_object(GROUP, VERSION, plural, name)
        body = {
            **obj,
            "metadata": {**obj["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        if namespace:
            objects.replace_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, body)
        else:
            objects.replace_cluster_custom_object(GROUP, VERSION, plural, name, body)


def _ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def wait_certificate_ready(
    api: kubernetes.client.ApiClient, namespace: str, name: str, timeout: float = 120
) -> dict[str, Any]:
    objects = custom(api)

    def ready() -> dict[str, Any] | None:
        try:
            cert = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "certificates", name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return cert if _ready(cert) else None

    result: dict[str, Any] = wait_for(ready, timeout, 0.5, f"Certificate {namespace}/{name} to be Ready")
    return result


def bootstrap_ca_issuer(api: kubernetes.client.ApiClient) -> bytes:
    """The CA ClusterIssuer `kafka-external-ca`, from a self-signed one; returns the CA's PEM."""
    apply(
        api,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterIssuer",
            "metadata": {"name": "selfsigned"},
            "spec": {"selfSigned": {}},
        },
    )
    apply(
        api,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Certificate",
            "metadata": {"name": CA_SECRET, "namespace": NAMESPACE},
            "spec": {
                "isCA": True,
                "commonName": "kafka-external-ca",
                "secretName": CA_SECRET,
                "duration": "87600h",
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                "issuerRef": {"name": "selfsigned", "kind": "ClusterIssuer", "group": GROUP},
            },
        },
    )
    wait_certificate_ready(api, NAMESPACE, CA_SECRET)
    apply(
        api,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterIssuer",
            "metadata": {"name": CA_ISSUER},
            "spec": {"ca": {"secretName": CA_SECRET}},
        },
    )

    def issuer_ready() -> bool:
        return _ready(custom(api).get_cluster_custom_object(GROUP, VERSION, "clusterissuers", CA_ISSUER))

    wait_for(issuer_ready, 60, 0.5, f"ClusterIssuer {CA_ISSUER} to be Ready")
    return secret_data(api, NAMESPACE, CA_SECRET)["tls.crt"]


def secret_data(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, bytes]:
    secret = kubernetes.client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def wait_secret_changed(
    api: kubernetes.client.ApiClient, namespace: str, name: str, key: str, old: bytes, timeout: float = 180
) -> bytes:
    def changed() -> bytes | None:
        value = secret_data(api, namespace, name).get(key)
        return value if value and value != old else None

    result: bytes = wait_for(changed, timeout, 1.0, f"Secret {namespace}/{name} to be renewed")
    return result


__all__ = [
    "CA_ISSUER",
    "CertManagerMissing",
    "apply",
    "bootstrap_ca_issuer",
    "running_cert_manager",
    "secret_data",
    "wait_certificate_ready",
    "wait_secret_changed",
]
