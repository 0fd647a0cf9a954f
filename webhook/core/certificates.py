"""cert-manager Certificates for the external listeners, and what a broker needs to serve them. Pure.

One Certificate per broker StatefulSet, not per broker: the pods of a StatefulSet share one pod
template, so they can only mount one Secret by name; a Certificate whose `dnsNames` hold every
broker's external name (and the bootstrap name when configured) lets each broker serve the same
certificate and every client verify whichever broker it reaches. The Certificate is kept in step
with `spec.replicas` (the controller re-plans it on every StatefulSet change) and is owned by the
StatefulSet, so it goes when the StatefulSet goes.

Keystore format by Kafka version: PEM keystores (key and chain in one file, which cert-manager
writes as `tls-combined.pem` with the AdditionalCertificateOutputFormats feature gate) from Kafka
2.7 (KIP-651); before that the PKCS12 keystore cert-manager writes (`keystore.p12`), whose password
is a fixed, documented value kept in a Secret beside it: it protects nothing (the same Secret holds
the key unencrypted as `tls.key`), it only satisfies the keystore format. Listener-scoped SSL
settings (`listener.name.<l>.ssl.*`) need Kafka 1.1; an older broker is left unexposed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from webhook.core.decision import BrokerPlan
from webhook.core.hosts import BrokerIdentity, render
from webhook.core.names import (
    CERT_MANAGER_VERSION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    OWNED_LABEL,
    STATEFULSET_LABEL,
)
from webhook.core.services import bootstrap_host
from webhook.core.settings import Settings

MOUNT_PATH = "/kafka-expose/tls"
VOLUME = "kafka-expose-tls"
COMBINED_PEM = "tls-combined.pem"  # key + chain, cert-manager's CombinedPEM output format
CA_FILE = "ca.crt"
PKCS12_KEYSTORE = "keystore.p12"
PKCS12_TRUSTSTORE = "truststore.p12"
PASSWORD_KEY = "password"
# Not a secret: see the module docstring. PKCS12 needs some password; this one is documented.
PKCS12_PASSWORD = "kafka-expose"
PEM_SINCE = (2, 7)
LISTENER_SSL_SINCE = (1, 1)
# Kafka versions of Confluent Platform releases (cp-kafka / cp-server tags are CP versions).
_CONFLUENT_TO_KAFKA = {(5, 4): (2, 4), (5, 5): (2, 5), (6, 0): (2, 6), (6, 1): (2, 7), (6, 2): (2, 8)}
_VERSION_RE = re.compile(r"^v?(?P<major>[0-9]+)\.(?P<minor>[0-9]+)")
_SASL = ("SASL_PLAINTEXT", "SASL_SSL")

KeystoreFormat = Literal["pem", "pkcs12"]


class TooOld(ValueError):
    """The broker's Kafka cannot serve a listener-scoped certificate."""


def certificate_name(statefulset: str) -> str:
    return f"{statefulset}-external-tls"


def secret_name(statefulset: str) -> str:
    return f"{statefulset}-external-tls"


def password_secret_name(statefulset: str) -> str:
    return f"{statefulset}-external-tls-keystore-password"


def kafka_version(image: str, family: str) -> tuple[int, int] | None:
    """Kafka's (major, minor) from an image tag, or None when the tag does not tell (`latest`, a
    digest only, a custom tag). Confluent tags are Confluent Platform versions."""
    name = image.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon <= slash:
        return None
    match = _VERSION_RE.match(name[colon + 1 :])
    if match is None:
        return None
    version = (int(match["major"]), int(match["minor"]))
    if family != "confluent":
        return version
    if version >= (7, 0):
        return (version[0] - 4, version[1])  # CP 7.x ships Kafka 3.x, CP 8.x Kafka 4.x
    if version in _CONFLUENT_TO_KAFKA:
        return _CONFLUENT_TO_KAFKA[version]
    if version[0] in (4, 5):
        return (version[0] - 3, version[1])  # CP 4.y ships Kafka 1.y, CP 5.0-5.3 Kafka 2.0-2.3
    return (0, 11) if version[0] == 3 else None  # CP 3.x: Kafka 0.10-0.11


def keystore_format(version: tuple[int, int] | None) -> KeystoreFormat:
    """PEM when the version is unknown (today's images) or 2.7+; raise TooOld below 1.1."""
    if version is None or version >= PEM_SINCE:
        return "pem"
    if version >= LISTENER_SSL_SINCE:
        return "pkcs12"
    raise TooOld(
        f"Kafka {version[0]}.{version[1]} cannot scope SSL settings to one listener (needs Kafka "
        f"{LISTENER_SSL_SINCE[0]}.{LISTENER_SSL_SINCE[1]}+); the external listener would not be encrypted"
    )


def encrypted(protocol: str) -> str:
    """The encrypted protocol of the same authentication: SASL keeps SASL."""
    return "SASL_SSL" if protocol in _SASL else "SSL"


@dataclass(frozen=True)
class ExternalTls:
    """What one broker needs to serve its StatefulSet's certificate on the external listener."""

    statefulset: str
    keystore: KeystoreFormat
    client_auth: str

    @property
    def certificate(self) -> str:
        return certificate_name(self.statefulset)

    @property
    def secret(self) -> str:
        return secret_name(self.statefulset)

    def volume(self) -> dict[str, Any]:
        return {"name": VOLUME, "secret": {"secretName": self.secret, "defaultMode": 0o444}}

    def volume_mount(self) -> dict[str, Any]:
        return {"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": True}

    def security_protocol(self, client_protocol: str) -> str:
        """SSL, or SASL_SSL when the client listener (whose SASL settings are carried over) uses SASL."""
        return encrypted(client_protocol)

    def listener_properties(self, listener: str) -> dict[str, str]:
        """Only `listener.name.<listener>.ssl.*`: no other listener, keystore or truststore changes."""
        prefix = f"listener.name.{listener.lower()}."
        return {prefix + key: value for key, value in self.ssl_properties().items()}

    def ssl_properties(self) -> dict[str, str]:
        """The `ssl.*` settings of the listener, unscoped (runtime flavors scope them at start, when
        the listener's name is known)."""
        if self.keystore == "pem":
            props = {
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": f"{MOUNT_PATH}/{COMBINED_PEM}",
            }
            trust = {"ssl.truststore.type": "PEM", "ssl.truststore.location": f"{MOUNT_PATH}/{CA_FILE}"}
        else:
            props = {
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": f"{MOUNT_PATH}/{PKCS12_KEYSTORE}",
                "ssl.keystore.password": PKCS12_PASSWORD,
                "ssl.key.password": PKCS12_PASSWORD,
            }
            trust = {
                "ssl.truststore.type": "PKCS12",
                "ssl.truststore.location": f"{MOUNT_PATH}/{PKCS12_TRUSTSTORE}",
                "ssl.truststore.password": PKCS12_PASSWORD,
            }
        if self.client_auth != "none":
            props.update(trust)
        props["ssl.client.auth"] = self.client_auth
        return props


def external_tls(settings: Settings, statefulset: str, image: str, family: str) -> ExternalTls | None:
    """None when TLS is off; raise TooOld when the image's Kafka cannot serve it."""
    if not settings.tls.enabled:
        return None
    return ExternalTls(
        statefulset=statefulset,
        keystore=keystore_format(kafka_version(image, family)),
        client_auth=settings.tls.client_auth,
    )


def dns_names(settings: Settings, identity: BrokerIdentity, replicas: int) -> list[str]:
    """Every broker's external name, then the bootstrap name (once) when configured."""
    names = [
        render(settings.host_template, identity.for_ordinal(i), settings.domain) for i in range(replicas)
    ]
    bootstrap = bootstrap_host(settings, identity.for_ordinal(0))
    if bootstrap and bootstrap not in names:
        names.append(bootstrap)
    return names


def certificate(
    settings: Settings,
    identity: BrokerIdentity,
    replicas: int,
    tls: ExternalTls,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Certificate of one StatefulSet; `owner` (the StatefulSet as read from the API server) makes
    it an ownerReference, so the Certificate goes with it (render: Helm's release owns it)."""
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        OWNED_LABEL: MANAGED_BY_VALUE,
        STATEFULSET_LABEL: tls.statefulset,
    }
    metadata: dict[str, Any] = {"name": tls.certificate, "namespace": identity.namespace, "labels": labels}
    owner_meta = owner.get("metadata") if owner else None
    if isinstance(owner_meta, Mapping) and isinstance(owner_meta.get("uid"), str):
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "name": tls.statefulset,
                "uid": owner_meta["uid"],
                "blockOwnerDeletion": False,
                "controller": False,
            }
        ]
    issuer = settings.tls.issuer_ref
    spec: dict[str, Any] = {
        "secretName": tls.secret,
        "secretTemplate": {"labels": dict(labels)},
        "dnsNames": dns_names(settings, identity, replicas),
        "duration": settings.tls.duration,
        "renewBefore": settings.tls.renew_before,
        "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
        # PKCS8: the only unencrypted key encoding Kafka's PEM keystore reads.
        "privateKey": {"algorithm": "RSA", "size": 2048, "encoding": "PKCS8", "rotationPolicy": "Always"},
        "usages": ["server auth", "digital signature", "key encipherment"],
    }
    if tls.keystore == "pem":
        spec["additionalOutputFormats"] = [{"type": "CombinedPEM"}]
    else:
        password = {"name": password_secret_name(tls.statefulset), "key": PASSWORD_KEY}
        spec["keystores"] = {"pkcs12": {"create": True, "passwordSecretRef": password}}
    return {"apiVersion": CERT_MANAGER_VERSION, "kind": "Certificate", "metadata": metadata, "spec": spec}


def password_secret(identity: BrokerIdentity, tls: ExternalTls) -> dict[str, Any] | None:
    """The PKCS12 keystore's (documented, non-secret) password, which cert-manager needs as a Secret."""
    if tls.keystore != "pkcs12":
        return None
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        OWNED_LABEL: MANAGED_BY_VALUE,
        STATEFULSET_LABEL: tls.statefulset,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": password_secret_name(tls.statefulset),
            "namespace": identity.namespace,
            "labels": labels,
        },
        "type": "Opaque",
        "stringData": {PASSWORD_KEY: PKCS12_PASSWORD},
    }


def planned_objects(
    plans: Iterable[BrokerPlan],
    settings: Settings,
    replicas: int | None = None,
    owner: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The Certificate (and PKCS12 password Secret) of each StatefulSet among `plans`; `replicas`
    defaults to the number of its plans (render plans every ordinal)."""
    by_statefulset: dict[tuple[str, str], list[BrokerPlan]] = {}
    for plan in plans:
        if plan.tls is not None and plan.statefulset:
            by_statefulset.setdefault((plan.namespace, plan.statefulset), []).append(plan)
    objects: list[dict[str, Any]] = []
    for (namespace, statefulset), group in by_statefulset.items():
        tls = group[0].tls
        assert tls is not None  # filtered above
        identity = BrokerIdentity(statefulset, namespace)
        objects.append(
            certificate(settings, identity, len(group) if replicas is None else replicas, tls, owner)
        )
        secret = password_secret(identity, tls)
        if secret is not None:
            objects.append(secret)
    return objects
