"""`kafka-expose render` (Helm post-renderer) and `explain`, run as the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.expectations import assert_exposed
from tests.support.podfactory import FIXTURES, load_render, pod_from_statefulset, render_names, statefulsets
from webhook.config import load_settings_text

pytestmark = pytest.mark.unit

SETTINGS = "domain: kafka.example.com\nloadBalancer: {cloud: aws}\nbootstrapHostTemplate: 'bootstrap.{namespace}.{domain}'\n"


def kafka_expose(*args: str, stdin: str = "", config: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "webhook", *args]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(SETTINGS)
    return path


@pytest.mark.parametrize("render", render_names("default", "brokers3"))
def test_render_is_a_post_renderer(render: str, config: Path) -> None:
    text = (FIXTURES / f"{render}.yaml").read_text()
    first = kafka_expose("render", "--namespace", "kafka", stdin=text, config=config)
    assert first.returncode == 0, first.stderr
    second = kafka_expose("render", "--namespace", "kafka", stdin=first.stdout, config=config)
    assert second.stdout == first.stdout  # render | render == render

    out = [d for d in yaml.safe_load_all(first.stdout) if d]
    original = load_render(render)
    by_key = {(d["kind"], d["metadata"]["name"]): d for d in out}
    for doc in original:  # everything but broker StatefulSets passes through unchanged
        if doc["kind"] != "StatefulSet":
            assert by_key[(doc["kind"], doc["metadata"]["name"])] == doc
    settings = load_settings_text(SETTINGS)
    added = [d for d in out if d["kind"] == "Service" and d not in original]
    for sts in statefulsets(original):
        rendered = by_key[("StatefulSet", sts["metadata"]["name"])]
        if rendered == sts:
            continue  # not a broker StatefulSet (ZooKeeper, KRaft controllers)
        for ordinal in range(sts["spec"]["replicas"]):
            pod = f"{sts['metadata']['name']}-{ordinal}"
            host = f"{pod}.kafka.kafka.example.com"
            broker = assert_exposed(
                pod_from_statefulset(sts, ordinal, "kafka"),
                pod_from_statefulset(rendered, ordinal, "kafka"),
                settings,
                original,
                host,
            )
            [service] = [
                s for s in added if s["spec"]["selector"] == {"statefulset.kubernetes.io/pod-name": pod}
            ]
            annotations = service["metadata"]["annotations"]
            assert annotations["service.beta.kubernetes.io/aws-load-balancer-internal"] == "true"
            assert (
                annotations["external-dns.alpha.kubernetes.io/hostname"]
                == f"{host},bootstrap.kafka.kafka.example.com"
            )
            assert service["spec"]["ports"][0]["port"] == 9094
            assert service["spec"]["ports"][0]["targetPort"] == int(
                broker.bound()["EXTERNAL"].rsplit(":", 1)[1]
            )


def test_render_passes_non_kafka_documents_through_byte_for_byte(config: Path) -> None:
    text = "# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: '1'}\n---\nkind: Service\napiVersion: v1\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n"
    result = kafka_expose("render", stdin=text, config=config)
    assert result.returncode == 0
    assert (
        "# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: '1'}" in result.stdout
    )
    assert "spec: {ports: [{port: 80}]}" in result.stdout


@pytest.mark.parametrize(
    ("stdin", "settings", "words"),
    [
        ("kind: [", SETTINGS, "invalid manifests"),
        ("- just\n- a list\n", SETTINGS, "expected a Kubernetes object"),
        ("kind: ConfigMap\n", "listener: {port: nine}\n", "listener.port"),
        ("kind: ConfigMap\n", "domain: [", "invalid settings"),
    ],
)
def test_render_refuses_bad_input_with_one_line(
    stdin: str, settings: str, words: str, tmp_path: Path
) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(settings)
    result = kafka_expose("render", stdin=stdin, config=path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_explain_lists_every_broker_and_why_others_are_not(config: Path) -> None:
    path = FIXTURES / "bitnami-kafka-32.4.4-brokers3.yaml"
    result = kafka_expose("explain", "-f", str(path), "--namespace", "kafka", config=config)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for ordinal in range(3):
        assert any(
            line.startswith(
                f"kafka/kafka-broker-{ordinal}: advertises EXTERNAL://kafka-broker-{ordinal}.kafka.kafka.example.com:9094"
            )
            and f"LoadBalancer Service kafka-broker-{ordinal}-external 9094->9095" in line
            for line in lines
        ), lines
    assert (
        "StatefulSet kafka-controller: not exposed: KRaft controller-only node (process.roles=controller)"
        in lines
    )


def test_version_names_the_installed_package() -> None:
    from importlib import metadata

    result = kafka_expose("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kafka-expose {metadata.version('kafka-expose')}"
