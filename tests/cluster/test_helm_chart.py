"""manifests/helm/kafka-expose with the real helm and the real API server.

- `helm lint` passes; for every certificate mode, `helm template` gives exactly the objects
  `kustomize build` gives for that overlay (the Namespace aside: `--create-namespace` makes it).
- Installed into another namespace, nothing still names `kafka-expose` as a namespace (object
  namespaces, webhook Service references, DNS names, the ServiceAccount user in CEL, inject-ca-from).
- The values schema (the settings model's) refuses a broken setting before anything is applied.
- `helm install` into the real control plane creates every object; `helm uninstall` removes them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.test_manifests_cluster import collection
from tests.support.controlplane import ControlPlane, find_bin_dir

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "manifests" / "helm" / "kafka-expose"
OVERLAYS = {
    "provided": "manifests/base",
    "cert-manager": "manifests/overlays/cert-manager",
    "self-managed": "manifests/overlays/self-managed",
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(find_bin_dir() / "helm"), *args], capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def kustomize_build(path: str) -> list[dict[str, Any]]:
    built = subprocess.run(
        ["bash", str(REPO / "tools" / "build-kustomize.sh")], capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, built.stderr
    result = subprocess.run(
        [built.stdout.strip().splitlines()[-1], "build", str(REPO / path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    keyed = {}
    for obj in objects:
        if obj.get("kind") == "Namespace":
            continue
        if obj.get("kind") == "ConfigMap" and "settings.yaml" in (obj.get("data") or {}):
            obj["data"]["settings.yaml"] = yaml.safe_load(obj["data"]["settings.yaml"])  # text form differs
        keyed[(obj["apiVersion"], obj["kind"], obj["metadata"]["name"])] = obj
    return keyed


def template(*args: str) -> list[dict[str, Any]]:
    out = helm("template", "kafka-expose", str(CHART), *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def object_path(obj: dict[str, Any]) -> str:
    return f"{collection(obj)}/{obj['metadata']['name']}"


def test_helm_lint_passes() -> None:
    assert "0 chart(s) failed" in helm("lint", str(CHART)).stdout


@pytest.mark.parametrize("mode", list(OVERLAYS))
def test_each_mode_renders_exactly_the_kustomize_overlay(mode: str) -> None:
    rendered = by_key(template("-n", "kafka-expose", "--set", f"certificates.mode={mode}"))
    expected = by_key(kustomize_build(OVERLAYS[mode]))
    assert set(rendered) == set(expected)
    for key, obj in expected.items():
        assert rendered[key] == obj, key


@pytest.mark.parametrize("mode", list(OVERLAYS))
def test_another_namespace_leaves_no_reference_to_the_default_one(mode: str) -> None:
    objects = template("-n", "platform-kx", "--set", f"certificates.mode={mode}")
    for obj in objects:
        if "namespace" in obj["metadata"]:
            assert obj["metadata"]["namespace"] == "platform-kx", obj["metadata"]
        for hook in obj.get("webhooks") or []:
            assert hook["clientConfig"]["service"]["namespace"] == "platform-kx"
        for subject in obj.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                assert subject["namespace"] == "platform-kx"
        for text in strings(obj):
            assert ".kafka-expose.svc" not in text and "serviceaccount:kafka-expose:" not in text, text
            assert not text.startswith("kafka-expose/"), text
    if mode == "cert-manager":
        certificate = next(o for o in objects if o["kind"] == "Certificate" and "dnsNames" in o["spec"])
        assert "kafka-expose.platform-kx.svc" in certificate["spec"]["dnsNames"]


def test_values_set_the_settings_and_the_schema_refuses_broken_ones() -> None:
    objects = template("-n", "kx", "--set", "settings.domain=kafka.corp.example")
    settings = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["settings.yaml"]
    assert yaml.safe_load(settings)["domain"] == "kafka.corp.example"
    refused = helm("template", "kx", str(CHART), "--set", "settings.onExistingListener=bogus", check=False)
    assert refused.returncode != 0 and "onExistingListener" in refused.stderr
    refused = helm("template", "kx", str(CHART), "--set", "certificates.mode=manual", check=False)
    assert refused.returncode != 0 and "mode" in refused.stderr


def test_helm_install_and_uninstall_in_the_real_control_plane(control_plane: ControlPlane) -> None:
    namespace = "kx-helm"
    control_plane.helm(
        "install", "kafka-expose", str(CHART), "-n", namespace, "--create-namespace",
        "--set", "settings.domain=kafka.corp.example",
    )  # fmt: skip
    expected = template("-n", namespace, "--set", "settings.domain=kafka.corp.example")
    session = control_plane.requests_session()
    try:
        for obj in expected:
            name = obj["metadata"]["name"]
            path = object_path(obj)
            answer = session.get(f"{control_plane.api_url}{path}", timeout=30)
            assert answer.status_code == 200, (path, answer.text[:300])
            assert answer.json()["metadata"]["name"] == name
    finally:
        control_plane.helm("uninstall", "kafka-expose", "-n", namespace)
    for obj in expected:
        answer = session.get(f"{control_plane.api_url}{object_path(obj)}", timeout=30)
        assert answer.status_code == 404 or answer.json()["metadata"].get("deletionTimestamp"), obj["kind"]
