"""Encrypted external listeners against real cert-manager (issue 16): the Certificates kafka-expose plans
are issued by cert-manager v1.11.5's own controller on the real API server, from a CA ClusterIssuer
bootstrapped from a self-signed one, and the Secrets the brokers mount carry every broker's external
name, in the files the broker properties point at."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster.controller_fixtures import (
    RESYNC_SECONDS,
    Controller,
    broker_statefulset,
    create_namespace,
    create_objects,
    delete_namespaces,
    event_reasons,
    running,
    scale,
)
from tests.support import certmanager
from tests.support.controlplane import ControlPlane, NodeAgentStandIn, wait_for
from tests.support.podfactory import FIXTURES
from webhook.cli.render import render_text
from webhook.config import load_settings_text
from webhook.core.certificates import (
    COMBINED_PEM,
    PKCS12_KEYSTORE,
    PKCS12_PASSWORD,
    certificate_name,
    secret_name,
)
from webhook.core.names import CERTIFICATE
from webhook.core.settings import Settings, parse_settings

pytestmark = pytest.mark.cluster

TLS = parse_settings(
    {
        "domain": "kafka.example.com",
        "bootstrapHostTemplate": "{statefulset}.{namespace}.{domain}",
        "tls": {"mode": "cert-manager", "issuerRef": {"name": certmanager.CA_ISSUER}},
    }
)


@pytest.fixture(scope="module")
def ca_pem(control_plane: ControlPlane) -> Iterator[bytes]:
    with certmanager.running_cert_manager(control_plane), closing(control_plane.api_client()) as api:
        yield certmanager.bootstrap_ca_issuer(api)


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    name = f"tls-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def rendered(chart: str, settings: Settings, namespace: str) -> list[dict[str, Any]]:
    """`helm template -n <namespace> | kafka-expose render --namespace <namespace>`: the chart's
    objects name no namespace of their own (the fixture's `kafka` is dropped)."""
    docs = [d for d in yaml.safe_load_all((FIXTURES / f"{chart}.yaml").read_text()) if d]
    for doc in docs:
        (doc.get("metadata") or {}).pop("namespace", None)
    return [d for d in yaml.safe_load_all(render_text(yaml.safe_dump_all(docs), settings, namespace)) if d]


def issue(api: client.ApiClient, docs: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    """Apply what render emitted for cert-manager (the Certificate, a PKCS12 password Secret)."""
    [cert] = [d for d in docs if d["kind"] == "Certificate"]
    for secret in (
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-keystore-password")
    ):
        client.CoreV1Api(api).create_namespaced_secret(namespace, secret)
    certmanager.apply(api, cert)
    certmanager.wait_certificate_ready(api, namespace, cert["metadata"]["name"])
    return cert


def names_of(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )


def assert_signed_by(cert: x509.Certificate, ca_pem: bytes) -> None:
    ca = x509.load_pem_x509_certificate(ca_pem)
    assert cert.issuer == ca.subject
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def test_cert_manager_issues_every_brokers_external_name_in_a_pem_keystore(
    ca_pem: bytes, api_client: client.ApiClient, namespace: str
) -> None:
    docs = rendered("bitnami-kafka-32.4.4-brokers3", TLS, namespace)
    cert = issue(api_client, docs, namespace)
    brokers = [f"kafka-broker-{i}.{namespace}.kafka.example.com" for i in range(3)]
    assert cert["spec"]["dnsNames"] == [*brokers, f"kafka-broker.{namespace}.kafka.example.com"]

    data = certmanager.secret_data(api_client, namespace, cert["spec"]["secretName"])
    served = x509.load_pem_x509_certificate(data["tls.crt"])
    assert names_of(served) == cert["spec"]["dnsNames"]
    assert_signed_by(served, ca_pem)
    assert data["ca.crt"] == ca_pem  # what the brokers trust for clientAuth, and clients for the brokers
    # The file the broker's listener.name.external.ssl.keystore.location names: PKCS8 key + chain.
    combined = data[COMBINED_PEM].decode()
    assert "-----BEGIN PRIVATE KEY-----" in combined and data["tls.crt"].decode().strip() in combined
    # The Secret that the pod template mounts is the one the Certificate writes.
    [sts] = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka-broker"]
    [volume] = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "kafka-expose-tls"]
    assert volume["secret"]["secretName"] == cert["spec"]["secretName"]


def test_an_old_kafka_gets_the_pkcs12_keystore_cert_manager_writes(
    ca_pem: bytes, api_client: client.ApiClient, namespace: str
) -> None:
    docs = rendered("incubator-kafka-0.21.5-default", TLS, namespace)  # cp-kafka 5.0.1: Kafka 2.0
    cert = issue(api_client, docs, namespace)
    data = certmanager.secret_data(api_client, namespace, cert["spec"]["secretName"])
    key, served, _chain = pkcs12.load_key_and_certificates(data[PKCS12_KEYSTORE], PKCS12_PASSWORD.encode())
    assert key is not None and served is not None
    assert names_of(served) == cert["spec"]["dnsNames"]
    assert_signed_by(served, ca_pem)


# ------------------------------------------------------------------ webhook mode: the controller's


CONTROLLER_TLS_SETTINGS = f"""\
domain: kafka.example.com
controller:
  resyncSeconds: {RESYNC_SECONDS}
tls:
  mode: cert-manager
  issuerRef: {{name: {certmanager.CA_ISSUER}}}
"""


def test_the_controller_keeps_one_certificate_per_statefulset_in_step_with_its_replicas(
    ca_pem: bytes, control_plane: ControlPlane, node_agent: NodeAgentStandIn, tmp_path: Path
) -> None:
    settings_path = tmp_path / "settings.yaml"
    settings_path.write_text(CONTROLLER_TLS_SETTINGS)
    settings = load_settings_text(CONTROLLER_TLS_SETTINGS)
    api = control_plane.api_client()
    lease_ns = create_namespace(api, "tls-lease", opted_in=False)
    ns = create_namespace(api, "tls-ctl")
    try:
        sts = broker_statefulset(ns, replicas=2, settings=settings)
        # What the webhook records on each broker pod it gave the encrypted listener.
        sts["spec"]["template"]["metadata"]["annotations"][CERTIFICATE] = certificate_name("kafka-broker")
        create_objects(control_plane, [sts])
        with running(Controller(control_plane, settings_path, lease_ns, tmp_path)) as (ctl,):
            names = [f"kafka-broker-{i}.{ns}.kafka.example.com" for i in range(4)]

            def certificate() -> dict[str, Any] | None:
                try:
                    found: dict[str, Any] = certmanager.custom(api).get_namespaced_custom_object(
                        "cert-manager.io", "v1", ns, "certificates", certificate_name("kafka-broker")
                    )
                except ApiException as err:
                    if err.status == 404:
                        return None
                    raise
                return found

            cert = wait_for(certificate, 60, 0.5, f"the controller's Certificate\n{ctl.log()}")
            assert cert["spec"]["dnsNames"] == names[:2]
            owner = cert["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["name"]) == ("StatefulSet", "kafka-broker")
            certmanager.wait_certificate_ready(api, ns, certificate_name("kafka-broker"))
            first = certmanager.secret_data(api, ns, secret_name("kafka-broker"))["tls.crt"]

            scale(api, ns, "kafka-broker", 4)
            renewed = certmanager.wait_secret_changed(api, ns, secret_name("kafka-broker"), "tls.crt", first)
            served = x509.load_pem_x509_certificate(renewed)
            assert names_of(served) == names  # the new brokers' names, before a client needs them
            assert_signed_by(served, ca_pem)

            client.AppsV1Api(api).delete_namespaced_stateful_set("kafka-broker", ns)
            wait_for(lambda: certificate() is None, 60, 0.5, "the Certificate to go with its StatefulSet")
            assert "CertificateApplied" in event_reasons(api, ns)
    finally:
        delete_namespaces(api, [ns, lease_ns])
