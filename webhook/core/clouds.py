"""Cloud presets: the annotations that keep a LoadBalancer Service internal to the private network."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

CLOUD_PRESETS: Final = MappingProxyType(
    {
        "none": {},
        "gke": {"networking.gke.io/load-balancer-type": "Internal"},
        "gke-legacy": {"cloud.google.com/load-balancer-type": "Internal"},
        "aws": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"},
        "aws-lbc": {
            "service.beta.kubernetes.io/aws-load-balancer-type": "external",
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
            "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
        },
        "azure": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"},
        "oci": {"service.beta.kubernetes.io/oci-load-balancer-internal": "true"},
        "openstack": {"service.beta.kubernetes.io/openstack-internal-load-balancer": "true"},
        "ibm": {"service.kubernetes.io/ibm-load-balancer-cloud-provider-ip-type": "private"},
        "alibaba": {"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": "intranet"},
    }
)

# Annotations a cloud reads only when it creates the load balancer: changing them later either does
# nothing or silently re-creates the LB with a new address, so the controller sets them at creation.
IMMUTABLE_ANNOTATIONS: Final = frozenset(
    {
        "service.beta.kubernetes.io/aws-load-balancer-internal",
        "service.beta.kubernetes.io/aws-load-balancer-scheme",
        "service.beta.kubernetes.io/aws-load-balancer-type",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type",
        "networking.gke.io/load-balancer-type",
        "cloud.google.com/load-balancer-type",
        "service.beta.kubernetes.io/oci-load-balancer-internal",
    }
)
