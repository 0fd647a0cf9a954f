"""Issue 15, item 1 (edge): kafka-expose's own pod labels and annotations on a new pod come from
kafka-expose only. A tenant's forged ones are removed by /mutate; the core's own are kept."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest

from tests.support import podfactory
from webhook.admission.handlers import mutate_review
from webhook.admission.wire import parse_review
from webhook.core.names import ADVERTISED, EXPOSED_LABEL, LOAD_BALANCER, OWN_POD_ANNOTATIONS, SERVICE
from webhook.core.settings import parse_settings

pytestmark = pytest.mark.unit

SETTINGS = parse_settings({"domain": "kafka.example.com", "loadBalancer": {"cloud": "gke"}})
FORGED = {
    ADVERTISED: "EXTERNAL://kafka-0.team-b.kafka.example.com:9094",
    SERVICE: "team-b-lb",
    LOAD_BALANCER: "203.0.113.9",
}


def admitted(pod: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    doc = podfactory.admission_review(pod, namespace="kafka")
    handled = mutate_review(parse_review(json.dumps(doc).encode()), SETTINGS)
    response = handled.response
    result = copy.deepcopy(pod)
    if "patch" in response:
        result = jsonpatch.apply_patch(result, json.loads(base64.b64decode(response["patch"])))
    return result, list(response.get("warnings", []))


def forged(pod: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["metadata"].setdefault("annotations", {}).update(FORGED)
    pod["metadata"].setdefault("labels", {})[EXPOSED_LABEL] = "true"
    return pod


def test_a_pod_kafka_expose_does_not_expose_loses_every_forged_key() -> None:
    busybox = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "kafka-0",
            "namespace": "kafka",
            "labels": {"app": "x"},
            "annotations": {"team": "a"},
        },
        "spec": {"containers": [{"name": "sh", "image": "busybox:1.36"}]},
    }
    result, warnings = admitted(forged(busybox))
    assert result["metadata"]["labels"] == {"app": "x"}
    assert result["metadata"]["annotations"] == {"team": "a"}
    assert any("kafka-expose's own" in w for w in warnings)
    assert admitted(busybox)[0] == busybox  # nothing forged: untouched


def test_an_exposed_broker_keeps_what_the_core_wrote_and_loses_the_rest() -> None:
    broker = podfactory.broker_pods("bitnami-kafka-32.4.4-default", "kafka")[0]
    result, _ = admitted(forged(broker))
    annotations = result["metadata"]["annotations"]
    assert LOAD_BALANCER not in annotations  # only the controller writes it, later
    assert annotations[ADVERTISED].startswith("EXTERNAL://kafka-controller-0.kafka.kafka.example.com:")
    assert annotations[SERVICE] != "team-b-lb"
    assert result["metadata"]["labels"][EXPOSED_LABEL] == "true"
    clean, _ = admitted(broker)
    assert {k: v for k, v in annotations.items() if k in OWN_POD_ANNOTATIONS} == {
        k: v for k, v in clean["metadata"]["annotations"].items() if k in OWN_POD_ANNOTATIONS
    }
