"""manifests/: the kustomize base and overlays, rendered with kustomize and checked requirement by requirement.

kustomize comes from tools/build-kustomize.sh (built once from the Go module proxy, then cached).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.tls import primitives as certs

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
NAMESPACE = "kafka-expose"
SA_USER = f"system:serviceaccount:{NAMESPACE}:kafka-expose"
IMAGE = "ghcr.io/kafka-expose/kafka-expose:0.1.0"
SERVER_ARGS = [
    "serve",
    "--config",
    "/etc/kafka-expose/settings.yaml",
    "--cert",
    "/certs/tls.crt",
    "--key",
    "/certs/tls.key",
    "--port",
    "8443",
    "--probe-port",
    "8081",
]
CONTROLLER_ARGS = [
    "controller",
    "--config",
    "/etc/kafka-expose/settings.yaml",
    "--lease-namespace",
    "$(POD_NAMESPACE)",
    "--metrics-port",
    "8082",
]
KAFKA_IMAGES = ["cp-kafka", "cp-server", "apache/kafka", "apache/kafka-native", "bitnami/kafka"]


@pytest.fixture(scope="session")
def kustomize() -> str:
    result = subprocess.run(
        ["bash", str(REPO / "tools" / "build-kustomize.sh")], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def render(kustomize: str, path: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kustomize, "build", str(REPO / path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="session")
def base(kustomize: str) -> list[dict[str, Any]]:
    return render(kustomize, "manifests/base")


@pytest.fixture(scope="session")
def cert_manager(kustomize: str) -> list[dict[str, Any]]:
    return render(kustomize, "manifests/overlays/cert-manager")


@pytest.fixture(scope="session")
def self_managed(kustomize: str) -> list[dict[str, Any]]:
    return render(kustomize, "manifests/overlays/self-managed")


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    doc: dict[str, Any] = found[0]
    return doc


# the server and the controller: two Deployments, two ServiceAccounts (issue 15, item 6)
DEPLOYMENTS = {"kafka-expose": "kafka-expose", "kafka-expose-controller": "kafka-expose-controller"}


def pod_spec(docs: list[dict[str, Any]], deployment: str = "kafka-expose") -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [pod_spec(docs, name) for name in DEPLOYMENTS]


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        c for spec in pod_specs(docs) for c in spec["containers"] if c["name"] == name
    ]
    assert len(found) == 1
    return found[0]


def webhooks(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in one(docs, kind, "kafka-expose")["webhooks"]:
            yield kind, hook


ALL = ["base", "cert_manager", "self_managed"]


@pytest.fixture(params=ALL)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = request.getfixturevalue(request.param)
    return docs


# ---- the objects ---------------------------------------------------------------------------------


def test_base_has_every_object(base: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in base}
    for kind in (
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ):
        assert (kind, "kafka-expose") in kinds, kind
    assert ("ConfigMap", "kafka-expose-settings") in kinds
    for doc in base:
        if (
            doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")
            and "Webhook" not in doc["kind"]
        ) and "Admission" not in doc["kind"]:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


def test_namespace_enforces_the_restricted_pod_security_standard(base: list[dict[str, Any]]) -> None:
    labels = one(base, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels.get("kafka-expose.io/inject") != "enabled"


def test_settings_configmap_is_valid_and_has_an_example_policy(base: list[dict[str, Any]]) -> None:
    from webhook.config import load_settings_text

    text = one(base, "ConfigMap", "kafka-expose-settings")["data"]["settings.yaml"]
    settings = load_settings_text(text)
    assert settings.policy.rules.internal_load_balancer == "enforce"
    assert settings.policy.allowed_domains
    assert settings.policy.max_load_balancers_per_namespace


# ---- the Deployment --------------------------------------------------------------------------------


def test_two_replicas_spread_and_protected_by_a_pdb(rendered: list[dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment", "kafka-expose")
    assert deployment["spec"]["replicas"] == 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    anti = pod_spec(rendered)["affinity"]["podAntiAffinity"]
    terms = [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname"
        and t["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        for t in terms
    )
    pdb = one(rendered, "PodDisruptionBudget", "kafka-expose")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"].get("minAvailable") == 1 or pdb["spec"].get("maxUnavailable") == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_server_and_controller_containers(rendered: list[dict[str, Any]]) -> None:
    for deployment, account in DEPLOYMENTS.items():
        spec = pod_spec(rendered, deployment)
        assert [c["name"] for c in spec["containers"]] == [
            "controller" if "controller" in deployment else "server"
        ]
        assert spec["serviceAccountName"] == account
    server, controller = container(rendered, "server"), container(rendered, "controller")
    for c in (server, controller):
        assert c["image"] == IMAGE
        assert "command" not in c, "the image's ENTRYPOINT (kafka-expose) runs; manifests set args only"
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert server["args"][: len(SERVER_ARGS)] == SERVER_ARGS
    assert controller["args"] == CONTROLLER_ARGS
    assert {"name": "https", "containerPort": 8443, "protocol": "TCP"} in server["ports"]


def test_probes(rendered: list[dict[str, Any]]) -> None:
    for name in ("server", "controller"):
        process = container(rendered, name)
        ports = {p["name"]: p["containerPort"] for p in process["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = process[probe]["httpGet"]  # a plain probe port: works with --client-ca
            assert get["path"] == path and get["scheme"] == "HTTP" and get["port"] == "probes"
            assert process[probe]["timeoutSeconds"] <= 5
        if name == "controller":  # the port it serves them on is the one the probes name
            args = process["args"]
            assert args[args.index("--metrics-port") + 1] == str(ports["probes"])


def test_resources_requests_and_limits(rendered: list[dict[str, Any]]) -> None:
    for c in (c for spec in pod_specs(rendered) for c in spec["containers"]):
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][section]), (c["name"], section)


def _dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\d+)", (REPO / "Dockerfile").read_text(), re.M)
    return int(users[-1])


@pytest.mark.parametrize("deployment", list(DEPLOYMENTS))
def test_security_context(rendered: list[dict[str, Any]], deployment: str) -> None:
    spec = pod_spec(rendered, deployment)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == _dockerfile_uid() and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert not sc.get("privileged"), c["name"]


def test_volumes_exist_and_tmp_is_writable(rendered: list[dict[str, Any]]) -> None:
    for spec in pod_specs(rendered):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            for m in mounts.values():
                assert m["name"] in volumes
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
            assert mounts["/etc/kafka-expose"]["readOnly"] is True
        assert volumes["settings"]["configMap"]["name"] == "kafka-expose-settings"
    server_mounts = {m["mountPath"]: m for m in container(rendered, "server")["volumeMounts"]}
    assert server_mounts["/certs"]["name"] == "certs"


def test_service_targets_the_server(rendered: list[dict[str, Any]]) -> None:
    service = one(rendered, "Service", "kafka-expose")
    pod_labels = one(rendered, "Deployment", "kafka-expose")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
    ]


# ---- the webhook configurations --------------------------------------------------------------------


def test_webhook_common_settings(rendered: list[dict[str, Any]]) -> None:
    names = []
    for kind, hook in webhooks(rendered):
        names.append(hook["name"])
        service = hook["clientConfig"]["service"]
        assert service == {
            "name": "kafka-expose",
            "namespace": NAMESPACE,
            "port": 443,
            "path": "/mutate" if kind.startswith("Mutating") else "/validate",
        }
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] == 5
        expected = "Fail" if hook["name"] == "services.validate.kafka-expose.io" else "Ignore"
        assert hook["failurePolicy"] == expected, "deliberate: see manifests/README.md"
        if kind.startswith("Mutating"):
            assert hook["reinvocationPolicy"] == "IfNeeded"
        else:
            assert "reinvocationPolicy" not in hook
        selector = hook["namespaceSelector"]
        assert selector["matchLabels"] == {"kafka-expose.io/inject": "enabled"}
        assert {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", NAMESPACE],
        } in selector["matchExpressions"]
    assert len(names) == len(set(names)) == 4


def webhooks_for(docs: list[dict[str, Any]], resources: set[str]) -> list[dict[str, Any]]:
    """The webhooks whose rules name exactly `resources`."""
    return [
        hook
        for _kind, hook in webhooks(docs)
        if {r for rule in hook["rules"] for r in rule["resources"]} == resources
    ]


def test_pod_webhooks_skip_non_kafka_pods_with_match_conditions(rendered: list[dict[str, Any]]) -> None:
    hooks = webhooks_for(rendered, {"pods"})
    for hook in hooks:
        assert {op for rule in hook["rules"] for op in rule["operations"]} == {"CREATE"}
        (condition,) = hook["matchConditions"]
        expression = " ".join(condition["expression"].split())
        assert "object.spec.containers.exists(" in expression
        assert "c.image.contains('kafka')" in expression
        assert "c.image.contains('cp-server')" in expression
        assert "object.metadata.labels['kafka-expose.io/broker'] == 'true'" in expression
        assert "has(object.metadata.labels)" in expression
        for image in KAFKA_IMAGES:
            assert "kafka" in image or "cp-server" in image
        assert "objectSelector" not in hook
    assert len(hooks) == 2


CONTROLLER_USER = "system:serviceaccount:kafka-expose:kafka-expose-controller"


def test_service_webhooks_skip_our_own_writes_by_identity_never_by_label(
    rendered: list[dict[str, Any]],
) -> None:
    """Issue 15, item 2: a label a tenant can set must not skip the policy; the requester can't be forged."""
    hooks = webhooks_for(rendered, {"services"})
    for hook in hooks:
        assert "objectSelector" not in hook, "a tenant can set any label"
        conditions = {c["name"]: " ".join(c["expression"].split()) for c in hook["matchConditions"]}
        assert (
            conditions["not-kafka-expose-controller"] == f"request.userInfo.username != '{CONTROLLER_USER}'"
        )
    validate = [h for h in hooks if h["name"] == "services.validate.kafka-expose.io"]
    (hook,) = validate
    scope = " ".join(
        next(c for c in hook["matchConditions"] if c["name"] == "exposed-or-published")["expression"].split()
    )
    for needed in ("'LoadBalancer'", "'NodePort'", "externalIPs", "external-dns.alpha.kubernetes.io/"):
        assert needed in scope
    assert len(hooks) == 2


def test_failure_policy_is_documented() -> None:
    readme = (REPO / "manifests" / "README.md").read_text()
    assert "failurePolicy" in readme and "Ignore" in readme and "Fail" in readme
    assert "exposureRequired" in readme
    assert "patches:" in readme, "the README shows the kustomize patch that switches to Fail"


# ---- RBAC ------------------------------------------------------------------------------------------


def _rules(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc.get("rules", []):
                yield doc, rule


def test_rbac_has_no_wildcard_nor_cluster_admin(rendered: list[dict[str, Any]]) -> None:
    for doc, rule in _rules(rendered):
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(key, []), (doc["metadata"]["name"], rule)
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
        assert "nonResourceURLs" not in rule
    for doc in rendered:
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            assert doc["roleRef"]["name"] not in ("cluster-admin", "admin", "edit"), doc["metadata"]["name"]
            (subject,) = doc["subjects"]
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE
            assert subject["name"] in DEPLOYMENTS.values()


def _grants(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], set[str]]:
    """(role name, group, resource) -> verbs."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for doc, rule in _rules(docs):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((doc["metadata"]["name"], group, resource), set()).update(rule["verbs"])
    return out


def test_base_rbac_is_exactly_what_the_server_and_controller_use(base: list[dict[str, Any]]) -> None:
    assert _grants(base) == {
        # the network-facing server: reads only
        ("kafka-expose", "", "namespaces"): {"get", "list", "watch"},
        ("kafka-expose", "", "services"): {"list"},
        # the controller: no services update (it applies), no events.k8s.io, no StatefulSet get
        ("kafka-expose-controller", "", "namespaces"): {"get", "list", "watch"},
        ("kafka-expose-controller", "", "pods"): {"list", "watch", "patch"},
        ("kafka-expose-controller", "", "services"): {"get", "list", "watch", "create", "patch", "delete"},
        ("kafka-expose-controller", "apps", "statefulsets"): {"list", "watch"},
        ("kafka-expose-controller", "", "events"): {"create", "patch"},
        # with tls.mode cert-manager: its Certificates, and PDB-checked evictions on renewal
        ("kafka-expose-controller", "cert-manager.io", "certificates"): {"list", "create", "patch", "delete"},
        ("kafka-expose-controller", "", "pods/eviction"): {"create"},
        ("kafka-expose-leader-election", "coordination.k8s.io", "leases"): {"get", "create", "update"},
    }
    role = one(base, "Role", "kafka-expose-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    named = [r for r in role["rules"] if set(r["verbs"]) != {"create"}]
    assert named and all(r["resourceNames"] == ["kafka-expose-controller"] for r in named)


def test_self_managed_rbac_adds_only_its_secret_and_its_webhooks(
    base: list[dict[str, Any]], self_managed: list[dict[str, Any]]
) -> None:
    extra = {k: v for k, v in _grants(self_managed).items() if k not in _grants(base)}
    role = "kafka-expose-self-managed-certs"
    assert extra == {
        (role, "", "secrets"): {"create", "get", "update"},
        (role, "admissionregistration.k8s.io", "mutatingwebhookconfigurations"): {"get", "patch"},
        (role, "admissionregistration.k8s.io", "validatingwebhookconfigurations"): {"get", "patch"},
    }
    for doc, rule in _rules(self_managed):
        if "secrets" in rule["resources"]:
            assert doc["kind"] == "Role" and doc["metadata"]["namespace"] == NAMESPACE
            if set(rule["verbs"]) != {"create"}:
                assert rule["resourceNames"] == ["kafka-expose-ca"]
        if any("webhookconfigurations" in r for r in rule["resources"]):
            assert rule["resourceNames"] == ["kafka-expose"]


def test_guardrails_bind_the_service_account(base: list[dict[str, Any]]) -> None:
    policy = one(base, "ValidatingAdmissionPolicy", "kafka-expose-guardrails")
    binding = one(base, "ValidatingAdmissionPolicyBinding", "kafka-expose-guardrails")
    assert binding["spec"]["policyName"] == "kafka-expose-guardrails"
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert CONTROLLER_USER in policy["spec"]["matchConditions"][0]["expression"]


# ---- overlays --------------------------------------------------------------------------------------


def test_cert_manager_overlay(cert_manager: list[dict[str, Any]]) -> None:
    serving = one(cert_manager, "Certificate", "kafka-expose-serving")
    assert serving["spec"]["dnsNames"] == certs.service_dns_names("kafka-expose", NAMESPACE)
    assert "server auth" in serving["spec"]["usages"]
    issuer = serving["spec"]["issuerRef"]["name"]
    ca_issuer = one(cert_manager, "Issuer", issuer)
    ca_cert = one(cert_manager, "Certificate", ca_issuer["spec"]["ca"]["secretName"])
    assert ca_cert["spec"]["isCA"] is True
    volumes = {v["name"]: v for v in pod_spec(cert_manager)["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == serving["spec"]["secretName"]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = one(cert_manager, kind, "kafka-expose")["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/kafka-expose-serving"


def test_self_managed_overlay(self_managed: list[dict[str, Any]]) -> None:
    server = container(self_managed, "server")
    assert server["args"] == [*SERVER_ARGS, "--self-managed"]
    volumes = {v["name"]: v for v in pod_spec(self_managed)["volumes"]}
    assert set(volumes["certs"]) == {"name", "emptyDir"}
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/certs"]["readOnly"] is False
    assert "--self-managed" not in container(self_managed, "controller")["args"]


@pytest.mark.parametrize("overlay", ALL)
def test_container_args_parse_with_the_real_cli(overlay: str, request: pytest.FixtureRequest) -> None:
    """What the manifests run is what `kafka-expose` accepts."""
    from webhook.cli import build_parser

    docs: list[dict[str, Any]] = request.getfixturevalue(overlay)
    for c in (c for spec in pod_specs(docs) for c in spec["containers"]):
        args = [a.replace("$(POD_NAMESPACE)", NAMESPACE) for a in c["args"]]
        try:
            build_parser().parse_args(args)
        except SystemExit as err:  # argparse exits on unknown options
            pytest.fail(f"{overlay}: `kafka-expose {' '.join(args)}` rejected (exit {err.code})")
