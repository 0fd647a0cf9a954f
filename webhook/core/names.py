"""Every name kafka-expose reads or writes on Kubernetes objects, and the naming rules, in one place.

Keys under `kafka-expose.io/` are written by kafka-expose only (issue: a tenant can write any label
or annotation, so none of these is ever taken as authority without checking it against the settings
and the object's identity). The well-known labels are the API server's own.
"""

from __future__ import annotations

import re
from typing import Final

PREFIX: Final = "kafka-expose.io/"

# -- labels kafka-expose writes
EXPOSED_LABEL: Final = PREFIX + "exposed"  # on a broker pod the webhook exposed: "true"
OWNED_LABEL: Final = PREFIX + "managed-by"  # on the Services the controller creates
STATEFULSET_LABEL: Final = PREFIX + "statefulset"  # ... their StatefulSet
POD_LABEL: Final = PREFIX + "pod"  # ... and their broker pod
OPT_IN_LABEL: Final = PREFIX + "inject"  # on a namespace: the webhooks' namespaceSelector
OPT_IN_VALUE: Final = "enabled"

# -- annotations kafka-expose writes (what it did, visible with kubectl get -o yaml)
FLAVOR: Final = PREFIX + "flavor"
SETTINGS_VERSION: Final = PREFIX + "settings-version"
ADVERTISED: Final = PREFIX + "advertised"
SERVICE: Final = PREFIX + "service"
CONTAINER_PORT: Final = PREFIX + "container-port"
SECURITY_PROTOCOL: Final = PREFIX + "security-protocol"
LISTENER: Final = PREFIX + "listener"  # the listener name used, or how it is chosen at start
INTERNAL_LB_CLOUD: Final = PREFIX + "internal-load-balancer"  # on a chart Service made internal
LOAD_BALANCER: Final = PREFIX + "load-balancer"  # on a broker pod: its Service's LB address
CREATED_WITH: Final = PREFIX + "created-with"  # on a Service: immutable settings at creation
CERTIFICATE: Final = PREFIX + "certificate"  # on a broker pod: the cert-manager Certificate it serves
TLS_SECRET: Final = PREFIX + "tls-secret"  # ... and the Secret cert-manager writes it to

# What kafka-expose alone writes on pods: the webhook removes any of these from a pod it does not
# expose (and LOAD_BALANCER from every new pod: the controller sets it later), and the
# kafka-expose-own-metadata ValidatingAdmissionPolicy (manifests/base/guardrails.yaml) refuses any
# other requester's change of them.
OWN_POD_LABELS: Final = (EXPOSED_LABEL,)
OWN_POD_ANNOTATIONS: Final = (
    FLAVOR,
    SETTINGS_VERSION,
    ADVERTISED,
    SERVICE,
    CONTAINER_PORT,
    SECURITY_PROTOCOL,
    LOAD_BALANCER,
)
WRITTEN_AT_CREATE: Final = (EXPOSED_LABEL, *OWN_POD_ANNOTATIONS[:-1])  # by the core, when it exposes

# -- annotations a namespace may set to ask for an override (granted only within the policy)
DOMAIN_OVERRIDE: Final = PREFIX + "domain"
CLOUD_OVERRIDE: Final = PREFIX + "cloud"
TLS_ISSUER_OVERRIDE: Final = PREFIX + "tls-issuer"  # `ClusterIssuer/<name>` or `Issuer/<name>`

# -- well-known names of others
STS_POD_NAME_LABEL: Final = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL: Final = "apps.kubernetes.io/pod-index"  # Kubernetes 1.28+
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "kafka-expose"
EXTERNAL_DNS: Final = "external-dns.alpha.kubernetes.io/hostname"
EXTERNAL_DNS_INTERNAL: Final = "external-dns.alpha.kubernetes.io/internal-hostname"
EXTERNAL_DNS_TARGET: Final = "external-dns.alpha.kubernetes.io/target"
# every external-dns annotation that puts a name (or what a name points to) into DNS
EXTERNAL_DNS_NAMES: Final = (EXTERNAL_DNS, EXTERNAL_DNS_INTERNAL, EXTERNAL_DNS_TARGET)
FIELD_MANAGER: Final = "kafka-expose"
CERT_MANAGER_GROUP: Final = "cert-manager.io"
CERT_MANAGER_VERSION: Final = "cert-manager.io/v1"

# -- Kafka
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")

# -- DNS (RFC 1123, lower case, as Kubernetes and external-dns want them)
DNS_LABEL_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_1035_RE: Final = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # Service names
DNS_NAME_RE: Final = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)
