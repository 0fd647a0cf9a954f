"""Encrypted external listeners (issue 16): the Certificates, and what each flavor's broker really runs
with once its image has evaluated env, shell command and prepared file (imagesim)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import yaml

from tests.support.expectations import kafka_container, own_manifest
from tests.support.imagesim import Broker, evaluate
from tests.support.podfactory import FIXTURES, load_render, pod_from_statefulset, statefulsets
from tests.unit.core.test_reconcile import NS, broker_statefulset, exposed_pod
from webhook.cli.render import render_text
from webhook.core import mutate
from webhook.core.actions import (
    ApplyCertificate,
    CertificateConflict,
    DeleteCertificate,
    NamespaceState,
    RestartBroker,
)
from webhook.core.certificates import (
    MOUNT_PATH,
    PKCS12_PASSWORD,
    ExternalTls,
    TooOld,
    certificate_name,
    kafka_version,
    keystore_format,
    planned_objects,
    secret_name,
)
from webhook.core.names import CERTIFICATE, SECURITY_PROTOCOL, TLS_ISSUER_OVERRIDE, TLS_SECRET
from webhook.core.overrides import settings_for_namespace
from webhook.core.policy import Violation, assess
from webhook.core.reconcile import plan_namespace
from webhook.core.settings import Settings, SettingsError, parse_settings
from webhook.core.status import namespace_status

pytestmark = pytest.mark.unit

PLAIN = parse_settings({"domain": "kafka.example.com"})
TLS = parse_settings(
    {
        "domain": "kafka.example.com",
        "bootstrapHostTemplate": "{statefulset}.{namespace}.{domain}",
        "tls": {"mode": "cert-manager", "clientAuth": "required"},
    }
)

# (where the broker comes from, its keystore) for every flavor and mechanism; the external listener's
# name and protocol come from the same broker without TLS (a fallback name where the chart serves
# in-cluster on EXTERNAL; SASL_SSL where the client listener is SASL).
CASES = [
    ("render:bitnami-kafka-32.4.4-default", "pem"),  # prepared file, SASL chart
    ("render:incubator-kafka-0.21.5-default", "pkcs12"),  # shell export, cp-kafka 5.0 (Kafka 2.0)
    ("manifest:apache-kraft-env.yaml", "pem"),  # env, apache/kafka 4.1
    ("manifest:bitnami-legacy-env-sasl.yaml", "pem"),  # env, SASL
    ("manifest:confluent-env-existing-external.yaml", "pem"),  # env, the chart's own EXTERNAL
    ("manifest:apache-env-incluster-external.yaml", "pem"),  # env, EXTERNAL in-cluster: a fallback name
    ("manifest:bitnami-legacy-alias.yaml", "pem"),  # env, bitnami's legacy KAFKA_ aliases
    ("manifest:wurstmeister-env.yaml", "pem"),  # env, wurstmeister's rule
    ("manifest:start-command-override.yaml", "pem"),  # kafka-server-start.sh --override
    ("manifest:per-pod-file-init.yaml", "pem"),  # per-pod file by an init container
    ("manifest:shell-start-no-exec.yaml", "pem"),  # a shell script without exec
]


def evaluate_policy(obj: dict[str, Any], settings: Settings) -> list[Violation]:
    return list(assess(obj, settings, namespace="kafka", load_balancers_in_namespace=None).violations)


def external_name(clear: Broker, host: str) -> str:
    [name] = [n for n, entry in clear.advertised().items() if f"//{host}:" in entry]
    return name


def broker_pod(source: str) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    kind, name = source.split(":", 1)
    if kind == "render":
        docs = load_render(name)
        sts = next(s for s in statefulsets(docs) if mutate(s, PLAIN, "kafka").plans)
        return pod_from_statefulset(sts, 1, "kafka"), docs
    docs = own_manifest(name)
    [sts] = [d for d in docs if d.get("kind") == "StatefulSet"]
    return pod_from_statefulset(sts, 1, "kafka"), (docs if len(docs) > 1 else None)


@pytest.mark.parametrize(("source", "keystore"), CASES)
def test_every_flavor_serves_the_certificate_on_the_external_listener_only(
    source: str, keystore: str
) -> None:
    pod, docs = broker_pod(source)
    decision = mutate(pod, TLS, "kafka")
    assert decision.outcome == "mutated", decision.reason
    broker = evaluate(decision.result, TLS, docs)
    clear = evaluate(mutate(pod, PLAIN, "kafka").result, PLAIN, docs)
    [plan] = decision.plans
    assert plan.tls is not None and plan.tls.keystore == keystore
    statefulset = plan.statefulset or ""

    name = external_name(clear, f"{pod['metadata']['name']}.kafka.kafka.example.com")
    scope = f"listener.name.{name.lower()}.ssl."
    assert broker.protocol_map()[name] == (
        "SASL_SSL" if clear.protocol_map()[name].startswith("SASL") else "SSL"
    )
    ours = plan.tls.listener_properties(name)
    assert {k: v for k, v in broker.properties.items() if k.startswith(scope)} == ours
    assert ours[scope + "client.auth"] == "required"
    # Everything else exactly as without TLS: other listeners, the chart's keystores, SASL carried over.
    assert broker.advertised() == clear.advertised() and broker.bound() == clear.bound()
    others = {k: v for k, v in broker.protocol_map().items() if k != name}
    assert others == {k: v for k, v in clear.protocol_map().items() if k != name}
    unchanged = {k: v for k, v in clear.properties.items() if not k.startswith(scope)}
    assert {k: broker.properties.get(k) for k in unchanged if k != "listener.security.protocol.map"} == {
        k: v for k, v in unchanged.items() if k != "listener.security.protocol.map"
    }

    container = kafka_container(decision.result)
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == MOUNT_PATH]
    assert mount["readOnly"] is True
    [volume] = [v for v in decision.result["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret_name(statefulset)
    annotations = decision.result["metadata"]["annotations"]
    assert annotations[CERTIFICATE] == certificate_name(statefulset)
    assert annotations[TLS_SECRET] == secret_name(statefulset)
    assert "SSL" in annotations[SECURITY_PROTOCOL]
    # Idempotent: a second pass changes nothing (no doubled volume or env).
    again = mutate(decision.result, TLS, "kafka")
    assert again.result == decision.result


def test_sasl_settings_are_carried_over_but_not_the_client_listeners_ssl() -> None:
    pod, _ = broker_pod("manifest:bitnami-legacy-env-sasl.yaml")
    container = kafka_container(pod)
    container["env"] = [
        *container["env"],
        {"name": "KAFKA_CFG_LISTENER_NAME_CLIENT_SSL_KEYSTORE_LOCATION", "value": "/chart/keystore.jks"},
        {"name": "KAFKA_CFG_LISTENER_NAME_EXTERNAL_SSL_KEY_PASSWORD", "value": "chart-secret"},
    ]
    broker = evaluate(mutate(pod, TLS, "kafka").result, TLS)
    assert broker.properties["listener.name.external.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert broker.properties["listener.name.client.ssl.keystore.location"] == "/chart/keystore.jks"
    assert "listener.name.external.ssl.key.password" not in broker.properties
    assert broker.properties["listener.name.external.ssl.keystore.type"] == "PEM"


def test_the_pkcs12_keystore_names_its_documented_password() -> None:
    props = ExternalTls("kafka", "pkcs12", "none").listener_properties("EXTERNAL")
    assert props["listener.name.external.ssl.keystore.type"] == "PKCS12"
    assert props["listener.name.external.ssl.keystore.password"] == PKCS12_PASSWORD
    assert "listener.name.external.ssl.truststore.location" not in props  # no client auth: no truststore


def test_a_kafka_too_old_for_listener_scoped_ssl_is_left_unexposed_with_a_reason() -> None:
    pod, _ = broker_pod("manifest:confluent-env-existing-external.yaml")
    kafka_container(pod)["image"] = "confluentinc/cp-kafka:3.2.0"  # Kafka 0.10.2
    decision = mutate(pod, TLS, "kafka")
    assert decision.outcome == "warned" and decision.result == pod
    assert "needs Kafka 1.1+" in decision.reason
    assert mutate(pod, PLAIN, "kafka").outcome == "mutated"  # TLS off: exposed as before


@pytest.mark.parametrize(
    ("image", "family", "version"),
    [
        ("docker.io/bitnami/kafka:4.0.0-debian-12-r10", "bitnami", (4, 0)),
        ("apache/kafka:3.9.2", "apache", (3, 9)),
        ("confluentinc/cp-kafka:7.6.0", "confluent", (3, 6)),
        ("confluentinc/cp-kafka:6.1.0", "confluent", (2, 7)),
        ("confluentinc/cp-kafka:5.0.1", "confluent", (2, 0)),
        ("confluentinc/cp-kafka:4.1.2-2", "confluent", (1, 1)),
        ("registry:5000/apache/kafka", "apache", None),
        ("apache/kafka:latest", "apache", None),
        ("apache/kafka@sha256:abc", "apache", None),
    ],
)
def test_kafka_version_from_the_image_tag(image: str, family: str, version: tuple[int, int] | None) -> None:
    assert kafka_version(image, family) == version


def test_keystore_format_by_version() -> None:
    assert keystore_format(None) == "pem" and keystore_format((2, 7)) == "pem"
    assert keystore_format((2, 6)) == "pkcs12" and keystore_format((1, 1)) == "pkcs12"
    with pytest.raises(TooOld):
        keystore_format((1, 0))


def test_one_certificate_per_statefulset_names_every_broker_and_the_bootstrap() -> None:
    docs = load_render("bitnami-kafka-32.4.4-brokers3")
    sts = next(s for s in statefulsets(docs) if mutate(s, TLS, "kafka").plans)
    owner = {**sts, "metadata": {**sts["metadata"], "uid": "u-1"}}
    plans = mutate(sts, TLS, "kafka").plans
    [cert] = planned_objects(plans, TLS, replicas=5, owner=owner)
    name = sts["metadata"]["name"]
    assert cert["kind"] == "Certificate" and cert["metadata"]["name"] == certificate_name(name)
    assert cert["spec"]["dnsNames"] == [f"{name}-{i}.kafka.kafka.example.com" for i in range(5)] + [
        f"{name}.kafka.kafka.example.com"
    ]
    assert cert["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert cert["spec"]["issuerRef"] == {
        "name": "kafka-external-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert cert["spec"]["additionalOutputFormats"] == [{"type": "CombinedPEM"}]
    assert cert["spec"]["privateKey"]["encoding"] == "PKCS8"
    assert planned_objects(mutate(sts, PLAIN, "kafka").plans, PLAIN) == []


def test_pkcs12_certificates_come_with_their_password_secret() -> None:
    docs = load_render("incubator-kafka-0.21.5-default")
    sts = next(s for s in statefulsets(docs) if mutate(s, TLS, "kafka").plans)
    cert, secret = planned_objects(mutate(sts, TLS, "kafka").plans, TLS)
    ref = cert["spec"]["keystores"]["pkcs12"]["passwordSecretRef"]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == ref["name"]
    assert secret["stringData"][ref["key"]] == PKCS12_PASSWORD


def test_render_emits_the_certificates_once() -> None:
    text = (FIXTURES / "bitnami-kafka-32.4.4-brokers3.yaml").read_text()
    out = render_text(text, TLS, "kafka")
    certs = [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "Certificate"]
    assert len(certs) == 1 and len(certs[0]["spec"]["dnsNames"]) == 4
    assert render_text(out, TLS, "kafka") == out
    assert "kind: Certificate" not in render_text(text, PLAIN, "kafka")


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"tls": {"mode": "on"}}, "tls.mode"),
        ({"tls": {"mode": "cert-manager", "duration": "1h", "renewBefore": "2h"}}, "renewBefore 2h"),
        ({"tls": {"duration": "90 days"}}, "not a duration"),
        ({"tls": {"clientAuth": "maybe"}}, "tls.clientAuth"),
        ({"tls": {"mode": "cert-manager"}, "listener": {"securityProtocol": "PLAINTEXT"}}, "clear text"),
        ({"policy": {"namespaceOverrides": {"allowedIssuers": ["Issuer"]}}}, "Issuer/<name>"),
    ],
)
def test_bad_tls_settings_are_refused_with_their_path(document: dict[str, Any], words: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings(copy.deepcopy(document))
    assert any(words in problem for problem in err.value.problems), err.value.problems


# ------------------------------------------------------------------------- the controller's planning


def _tls_namespace(replicas: int, opted_in: bool = True, certs: tuple[Any, ...] = ()) -> NamespaceState:
    sts = broker_statefulset(replicas)
    pods = [exposed_pod(sts, i, TLS) for i in range(replicas)]  # the webhook gave them TLS
    return NamespaceState(namespace=NS, opted_in=opted_in, pods=pods, statefulsets=[sts], certificates=certs)


def test_the_controller_plans_one_certificate_per_statefulset_and_keeps_it_in_step() -> None:
    [apply] = plan_namespace(_tls_namespace(3), TLS).of(ApplyCertificate)
    cert = apply.desired
    assert cert["metadata"]["name"] == apply.service == certificate_name("kafka-broker")
    assert len(cert["spec"]["dnsNames"]) == 4  # three brokers and the bootstrap name
    assert cert["metadata"]["ownerReferences"][0]["uid"] == broker_statefulset(3)["metadata"]["uid"]
    stored = {**cert, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert plan_namespace(_tls_namespace(3, certs=(stored,)), TLS).of(ApplyCertificate) == []  # steady
    [scaled] = plan_namespace(_tls_namespace(5, certs=(stored,)), TLS).of(ApplyCertificate)
    assert len(scaled.desired["spec"]["dnsNames"]) == 6
    # TLS off, or the namespace opted out: the Certificate no broker serves goes.
    for state, settings in (
        (_tls_namespace(3, certs=(stored,)), PLAIN),
        (_tls_namespace(3, False, (stored,)), TLS),
    ):
        plan = plan_namespace(state, settings)
        assert plan.of(ApplyCertificate) == [] and [d.service for d in plan.of(DeleteCertificate)] == [
            apply.service
        ]
    # A Certificate kafka-expose did not make (no ownerReference to the StatefulSet, whatever its
    # labels say) is never changed nor deleted.
    foreign = {**stored, "metadata": {k: v for k, v in stored["metadata"].items() if k != "ownerReferences"}}
    assert len(plan_namespace(_tls_namespace(3, certs=(foreign,)), TLS).of(CertificateConflict)) == 1
    assert plan_namespace(_tls_namespace(3, certs=(foreign,)), TLS).of(ApplyCertificate) == []
    assert plan_namespace(_tls_namespace(3, certs=(foreign,)), PLAIN).of(DeleteCertificate) == []


def _running(pod: dict[str, Any], started: str) -> dict[str, Any]:
    status = {
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "kafka", "state": {"running": {"startedAt": started}}}],
    }
    return {**pod, "status": status}


def test_after_a_renewal_one_broker_at_a_time_restarts_to_serve_it() -> None:
    [apply] = plan_namespace(_tls_namespace(3), TLS).of(ApplyCertificate)
    status = {"notBefore": "2026-12-02T12:00:00Z", "conditions": [{"type": "Ready", "status": "True"}]}
    renewed = {**apply.desired, "status": status}

    def plan(*started: str, settings: Settings = TLS) -> list[RestartBroker]:
        state = _tls_namespace(3, certs=(renewed,))
        pods = [_running(p, t) for p, t in zip(state.pods, started, strict=True)]
        return plan_namespace(dataclasses.replace(state, pods=pods), settings).of(RestartBroker)

    old, new = "2026-12-02T11:00:00Z", "2026-12-02T12:00:05Z"
    assert [r.pod for r in plan(old, old, old)] == ["kafka-broker-0"]  # one at a time, by ordinal
    assert [r.pod for r in plan(new, old, old)] == ["kafka-broker-1"]
    assert plan(new, new, new) == []  # all serve the renewed certificate
    off = TLS.model_copy(update={"tls": TLS.tls.model_copy(update={"restart_on_renewal": False})})
    assert plan(old, old, old, settings=off) == []
    state = _tls_namespace(3, certs=(renewed,))
    not_ready = [_running(p, old) for p in state.pods]
    not_ready[2] = {**not_ready[2], "status": {**not_ready[2]["status"], "conditions": []}}
    assert plan_namespace(dataclasses.replace(state, pods=not_ready), TLS).of(RestartBroker) == []


# ----------------------------------------------------------------------------- policy and overrides


def test_encrypted_external_listener_rule_is_off_unless_set() -> None:
    pod, _ = broker_pod("manifest:apache-kraft-env.yaml")
    assert evaluate_policy(pod, PLAIN) == []
    strict = parse_settings(
        {
            "loadBalancer": {"cloud": "aws"},  # an enforced policy needs internal load balancers
            "policy": {"mode": "enforce", "rules": {"encryptedExternalListener": "enforce"}},
        }
    )
    [violation] = evaluate_policy(pod, strict)
    assert violation.rule == "encryptedExternalListener" and "clear text (PLAINTEXT)" in violation.message
    strict_tls = strict.model_copy(update={"tls": TLS.tls})
    assert evaluate_policy(pod, strict_tls) == []


def test_a_namespace_gets_another_issuer_only_within_the_policy() -> None:
    settings = parse_settings(
        {
            "tls": {"mode": "cert-manager"},
            "policy": {"namespaceOverrides": {"allowedIssuers": ["Issuer/{namespace}-ca"]}},
        }
    )
    own, problems = settings_for_namespace(settings, {TLS_ISSUER_OVERRIDE: "Issuer/team-a-ca"}, "team-a")
    assert problems == [] and (own.tls.issuer_ref.kind, own.tls.issuer_ref.name) == ("Issuer", "team-a-ca")
    other, problems = settings_for_namespace(settings, {TLS_ISSUER_OVERRIDE: "Issuer/team-b-ca"}, "team-a")
    assert other.tls.issuer_ref.name == "kafka-external-ca"
    assert "refused" in problems[0] and "Issuer/team-a-ca" in problems[0]


def test_status_shows_the_certificates_expiry_or_why_there_is_none() -> None:
    [apply] = plan_namespace(_tls_namespace(2), TLS).of(ApplyCertificate)
    status = {"notAfter": "2027-03-02T12:00:00Z", "conditions": [{"type": "Ready", "status": "True"}]}
    rows = namespace_status(_tls_namespace(2, certs=({**apply.desired, "status": status},)), TLS)
    assert [r.certificate_expiry for r in rows] == ["2027-03-02T12:00:00Z"] * 2
    assert rows[0].as_dict()["certificateExpiry"] == "2027-03-02T12:00:00Z"
    missing = namespace_status(_tls_namespace(2), TLS)
    assert all(r.certificate_expiry is None and any("is missing" in p for p in r.problems) for r in missing)
    unissued = namespace_status(_tls_namespace(2, certs=(apply.desired,)), TLS)
    assert all(any("not Ready" in p for p in r.problems) for r in unissued)
