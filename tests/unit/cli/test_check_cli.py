"""`kafka-expose check`: the policy offline on the shared chart renders, as a CI pipeline runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.podfactory import FIXTURES

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
EXTERNAL_LB = FIXTURES / "bitnami-kafka-32.4.4-external-lb.yaml"
DEFAULT = FIXTURES / "bitnami-kafka-32.4.4-default.yaml"
GKE_LINE = (
    "[enforce] kafka: Service kafka-controller-{i}-external: LoadBalancer in front of Kafka brokers must be "
    'internal: add annotation networking.gke.io/load-balancer-type: "Internal" (policy rule internalLoadBalancer)'
)


def settings_file(tmp_path: Path, cloud: str = "gke", mode: str = "enforce", **policy: object) -> Path:
    document = {
        "domain": "kafka.example.com",
        # the external-lb render's Services publish kafka-controller-N.kafka.example.com: with this
        # template those are the namespace's own names (policy: a Service publishes only those)
        "hostTemplate": "{pod}.{domain}",
        "loadBalancer": {"cloud": cloud},
        "policy": {"mode": mode, "allowedDomains": ["kafka.example.com"], **policy},
    }
    path = tmp_path / f"settings-{cloud}-{mode}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def check(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", "check", *map(str, args)],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_chart_s_aws_load_balancers_violate_internal_lb_on_gke(tmp_path: Path) -> None:
    result = check("--config", settings_file(tmp_path, "gke"), "-f", EXTERNAL_LB)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [GKE_LINE.format(i=i) for i in range(3)]
    assert result.stderr == ""


def test_the_same_render_passes_on_aws(tmp_path: Path) -> None:
    result = check("--config", settings_file(tmp_path, "aws"), "-f", EXTERNAL_LB)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_manifests_from_stdin(tmp_path: Path) -> None:
    result = check("--config", settings_file(tmp_path, "gke"), "-f", "-", stdin=EXTERNAL_LB.read_text())
    assert result.returncode == 1 and len(result.stdout.splitlines()) == 3
    result = check(
        "--config", settings_file(tmp_path, "gke"), stdin=EXTERNAL_LB.read_text()
    )  # -f defaults to -
    assert result.returncode == 1


def test_warn_mode_reports_and_fails_unless_only_enforce_fails(tmp_path: Path) -> None:
    config = settings_file(tmp_path, "gke", "warn")
    result = check("--config", config, "-f", EXTERNAL_LB)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        GKE_LINE.format(i=i).replace("[enforce]", "[warn]") for i in range(3)
    ]
    result = check("--config", config, "-f", EXTERNAL_LB, "--fail-on", "enforce")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 3


def test_rules_turned_off_report_nothing(tmp_path: Path) -> None:
    config = settings_file(tmp_path, "gke", "enforce", rules={"internalLoadBalancer": "off"})
    result = check("--config", config, "-f", EXTERNAL_LB)
    assert (result.returncode, result.stdout) == (0, "")


@pytest.mark.parametrize("render", sorted(p.name for p in FIXTURES.glob("*.yaml")))
def test_stock_renders_without_own_load_balancers_pass(tmp_path: Path, render: str) -> None:
    result = check("--config", settings_file(tmp_path, "gke"), "-f", FIXTURES / render)
    if "external-lb" in render:  # their own LoadBalancers carry no GKE annotation
        assert result.returncode == 1
        assert all("(policy rule internalLoadBalancer)" in line for line in result.stdout.splitlines())
    else:
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_cap_counts_the_per_broker_load_balancers_kafka_expose_will_create(tmp_path: Path) -> None:
    config = settings_file(tmp_path, "gke", maxLoadBalancersPerNamespace=2)
    result = check("--config", config, "-f", DEFAULT)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "[enforce] kafka: Service kafka-controller-2-external: namespace kafka already has 2 LoadBalancer "
        "Service(s), the cap is 2: delete a LoadBalancer Service or use type ClusterIP (policy rule loadBalancerCap)"
    ]


def test_source_ranges_policy_catches_settings_that_would_open_lbs_to_everyone(tmp_path: Path) -> None:
    config = settings_file(tmp_path, "gke", allowedSourceRanges=["10.0.0.0/8"])
    result = check("--config", config, "-f", DEFAULT)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert all(
        "accepts clients from anywhere: set spec.loadBalancerSourceRanges within 10.0.0.0/8" in x
        for x in lines
    )


def test_host_template_outside_the_allowed_domains(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        "domain: kafka.example.com\nhostTemplate: '{pod}.brokers.other.org'\n"
        "policy: {mode: enforce, allowedDomains: [kafka.example.com]}\n"
        "loadBalancer: {allowExternal: true}\n"  # cloud none under enforce must be said explicitly
    )
    result = check("--config", config, "-f", DEFAULT)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[1:] == [
        f"[enforce] kafka: Service kafka-controller-{i}-external: publishes kafka-controller-{i}.brokers.other.org, "
        "not under the allowed domains kafka.example.com: use a domain (or host template) under one of them "
        "(policy rule allowedDomains)"
        for i in range(3)
    ]
    assert lines[:1] == [
        "[enforce] kafka: StatefulSet kafka-controller: advertises kafka-controller-0.brokers.other.org, "
        "kafka-controller-1.brokers.other.org, kafka-controller-2.brokers.other.org, not under the allowed "
        "domains kafka.example.com: use a domain (or host template) under one of them (policy rule allowedDomains)"
    ]


def test_unknown_layout_violates_exposure_required(tmp_path: Path) -> None:
    result = check(
        "--config", settings_file(tmp_path), "-f", REPO / "tests" / "manifests" / "unknown-layout.yaml"
    )
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert line.startswith(
        "[enforce] kafka: StatefulSet kafka: Kafka broker cannot be exposed: unknown layout"
    )
    assert line.endswith("(policy rule exposureRequired)")


def test_namespace_objects_in_the_input_request_overrides(tmp_path: Path) -> None:
    config = settings_file(
        tmp_path, "gke", namespaceOverrides={"allowedDomains": ["{namespace}.kafka.example.com"]}
    )
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "kafka", "annotations": {"kafka-expose.io/domain": "team-a.kafka.example.com"}},
    }
    manifests = yaml.safe_dump(namespace) + "---\n" + DEFAULT.read_text()
    result = check("--config", config, stdin=manifests)
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "kafka-expose: warning: namespace kafka: kafka-expose.io/domain=team-a.kafka.example.com refused: this "
        "namespace may only use kafka.kafka.example.com or names below (policy.namespaceOverrides.allowedDomains); "
        "using kafka.example.com"
    ]
    namespace["metadata"]["annotations"] = {"kafka-expose.io/domain": "kafka.kafka.example.com"}  # type: ignore[index]
    result = check("--config", config, stdin=yaml.safe_dump(namespace) + "---\n" + DEFAULT.read_text())
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("settings_text", "manifests", "start"),
    [
        ("policy: {mode: sometimes}\n", "", "kafka-expose: invalid settings: policy.mode:"),
        ("loadBalancer: [\n", "", "kafka-expose: invalid settings: (yaml):"),
        ("{}\n", "kind: Service\nmetadata: {name: [\n", "kafka-expose: cannot read manifests: document 1:"),
        (
            "{}\n",
            "- a list\n",
            "kafka-expose: cannot read manifests: document 1: expected a Kubernetes object",
        ),
    ],
)
def test_broken_input_exits_2_with_one_line(
    tmp_path: Path, settings_text: str, manifests: str, start: str
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(settings_text)
    result = check("--config", config, stdin=manifests)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(start), result.stderr


def test_missing_files_exit_2(tmp_path: Path) -> None:
    result = check("--config", tmp_path / "nope.yaml", "-f", DEFAULT)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    result = check("--config", settings_file(tmp_path), "-f", tmp_path / "nope.yaml")
    assert result.returncode == 2 and result.stderr.startswith("kafka-expose: cannot read manifests:")
