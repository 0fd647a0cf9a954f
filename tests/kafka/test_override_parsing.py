"""Kafka's own command-line parsing (kafka.Kafka.getPropsFromArgs, what kafka-server-start.sh hands
`"$@"` to) over the exact arguments the `start-command` flavor produces at start: the broker reads
the external listener from our `--override` flags, with the chart's own overrides kept and SASL
(JAAS values with `=`, quotes and spaces) intact, and the test's image simulation agrees with Kafka."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import kafkarun
from tests.support.expectations import own_manifest
from tests.support.imagesim import evaluate
from tests.support.podfactory import load_render, pod_from_statefulset, statefulsets
from webhook.core import mutate
from webhook.core.settings import parse_settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]

SETTINGS = parse_settings({"domain": "kafka.example.com"})
PROGRAM = """
public class Props {
  public static void main(String[] args) throws Exception {
    java.util.Properties p = kafka.Kafka$.MODULE$.getPropsFromArgs(args);
    for (String k : new java.util.TreeSet<>(p.stringPropertyNames())) {
      System.out.println(k + "\\t" + p.getProperty(k));
    }
  }
}
"""

CASES = {
    "shell script, file in a variable (CloudPirates)": ("new/cloudpirates-kafka-0.1.4-default", None),
    "command with --override": (None, "start-command-override.yaml"),
    "per-pod file, args only": (None, "per-pod-file-init.yaml"),
    "bash without exec": (None, "shell-start-no-exec.yaml"),
}


@pytest.mark.parametrize("case", CASES)
def test_kafka_reads_the_external_listener_from_our_overrides(
    case: str, kafka_dists: dict[str, kafkarun.KafkaDist], tmp_path: Path
) -> None:
    render, manifest = CASES[case]
    docs = load_render(render) if render else own_manifest(manifest or "")
    pod = pod_from_statefulset(statefulsets(docs)[0], 1, "kafka")
    broker = evaluate(mutate(pod, SETTINGS, "kafka").result, SETTINGS, docs)
    assert broker.flavor == "start-command"
    config = tmp_path / "server.properties"
    config.write_text(broker.file_text)
    args = list(broker.argv)
    at = 1 if args[0] == "-daemon" else 0
    args[at] = str(config)
    source = tmp_path / "Props.java"
    source.write_text(PROGRAM)
    dist = kafka_dists["kraft"]
    result = subprocess.run(
        [kafkarun.java_bin(), "-cp", dist.classpath, str(source), *args[at:]],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    kafka = dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    host = f"{pod['metadata']['name']}.kafka.kafka.example.com"
    assert f"EXTERNAL://{host}:9094" in kafka["advertised.listeners"].split(",")
    for key in ("advertised.listeners", "listeners", "listener.security.protocol.map"):
        assert kafka[key] == broker.properties[key], key
    for key, value in broker.properties.items():
        if key.startswith("listener.name.") or key == "node.id":
            assert kafka.get(key) == value, key
