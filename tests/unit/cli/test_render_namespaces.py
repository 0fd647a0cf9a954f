"""render/explain over namespaces, comments and names (issue 14 §4)."""

from __future__ import annotations

import pytest
import yaml

from tests.support.podfactory import FIXTURES
from webhook.cli.explain import explain_objects
from webhook.cli.render import render_text
from webhook.core.hosts import BrokerIdentity
from webhook.core.services import service_name
from webhook.core.settings import SettingsError, parse_settings, template_warnings

pytestmark = pytest.mark.unit

SETTINGS = parse_settings({"domain": "kafka.example.com"})
STS = (FIXTURES / "new" / "terascope-kafka-1.2.0-default.yaml").read_text()  # names no namespace
OWN = (FIXTURES / "new" / "cloudpirates-kafka-0.1.4-default.yaml").read_text()  # namespace: kafka


def _added(text: str) -> list[dict]:
    return [
        d
        for d in yaml.safe_load_all(text)
        if d and d["kind"] == "Service" and d["metadata"].get("labels", {}).get("kafka-expose.io/managed-by")
    ]


def test_the_objects_own_namespace_wins_over_the_flag() -> None:
    out = render_text(OWN, SETTINGS, "elsewhere")
    services = _added(out)
    assert services and all(s["metadata"]["namespace"] == "kafka" for s in services)
    hosts = [s["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"] for s in services]
    assert hosts == [f"kafka-{i}.kafka.kafka.example.com" for i in range(3)]


def test_the_flag_applies_to_objects_that_name_none() -> None:
    services = _added(render_text(STS, SETTINGS, "team-a"))
    assert services and all(s["metadata"]["namespace"] == "team-a" for s in services)


def test_without_namespace_services_name_none(capsys: pytest.CaptureFixture[str]) -> None:
    services = _added(render_text(STS, SETTINGS, None))
    assert services and all("namespace" not in s["metadata"] for s in services)
    assert "pass --namespace" in capsys.readouterr().err


def test_render_keeps_source_comments_and_writes_no_aliases() -> None:
    out = render_text(OWN, SETTINGS, None)
    sources_in = [line for line in OWN.splitlines() if line.startswith("# Source:")]
    sources_out = [line for line in out.splitlines() if line.startswith("# Source:")]
    assert sources_out == sources_in
    assert "&id" not in out and "*id" not in out


def test_explain_always_says_something() -> None:
    lines = explain_objects([{"kind": "ConfigMap", "metadata": {"name": "x"}}], SETTINGS, None)
    assert lines == ["no Kafka broker found (images seen: none)"]
    sts = {
        "kind": "StatefulSet",
        "metadata": {"name": "b"},
        "spec": {"template": {"spec": {"containers": [{"name": "k", "image": "corp/kafka:3"}]}}},
    }
    [line] = explain_objects([sts], SETTINGS, None)
    assert "settings" in line and "corp/kafka" in line


def test_long_service_names_are_shortened_without_collisions() -> None:
    a = service_name(SETTINGS, BrokerIdentity("k" * 60, "ns", "k" * 60 + "-1", 1))
    b = service_name(SETTINGS, BrokerIdentity("k" * 60, "ns", "k" * 60 + "-2", 2))
    assert len(a) <= 63 and len(b) <= 63 and a != b


@pytest.mark.parametrize(
    "document",
    [
        {"hostTemplate": "kafka.{domain}"},
        {"loadBalancer": {"serviceNameTemplate": "{pod}_LB"}},
        {"listener": {"fallbackNames": ["EXTERNAL"]}},
    ],
)
def test_settings_that_would_produce_bad_names_are_refused(document: dict) -> None:
    with pytest.raises(SettingsError):
        parse_settings(document)


def test_templates_that_may_collide_are_reported() -> None:
    settings = parse_settings(
        {"hostTemplate": "{pod}.{domain}", "loadBalancer": {"serviceNameTemplate": "lb"}}
    )
    problems = template_warnings(settings)
    assert any("namespace" in p for p in problems) and any("unique per broker" in p for p in problems)
