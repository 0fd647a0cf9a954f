"""Kafka's own start script, for real: brokers whose pods start `kafka-server-start.sh` run the
distribution's bin/kafka-server-start.sh and bin/kafka-run-class.sh (Apache Kafka's, vendored
unchanged in tests/support/kafka-bin, laid out beside the cached jars as in the image), configured
from the pods AS STORED after mutation by the `start-command` flavor, and an outside client produces
and consumes through every broker by its advertised DNS name (issue 14, Kafka tier).

* mechanism 1: the CloudPirates render, a shell command that writes a properties file and execs
  `kafka-server-start.sh FILE` (its `kafka-storage.sh format` is stood in for: the harness formats);
* mechanism 3: tests/manifests/start-command-override-quorum.yaml, `kafka-server-start.sh FILE
  --override ...` as the container's command.

Everything else as tests/kafka/test_e2e.py (its `world`: real control plane, webhook, controller,
external-dns and CoreDNS; stand-ins named there). The harness changes only what cannot exist here,
and prints it: the data dirs and each listener's bind address (the pod's IP), handed to kafka.Kafka
as the last `--override` flags by the java that JAVA_HOME names; the JVM environment the scripts
read (heap, GC, log4j to the console, LOG_DIR) is the harness's.

Run: `flock /tmp/kafka-tier.lock python -m pytest -m kafka tests/kafka/test_start_scripts.py -v -s`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.kafka import test_e2e
from tests.kafka.test_e2e import (
    DOMAIN,
    Brokers,
    Installed,
    World,
    assert_no_unexpected_rewrites,
    assert_roundtrip,
    exposed_brokers,
    install,
    roundtrip,
    start_brokers,
    wait_for_load_balancers,
)
from tests.support.expectations import own_manifest

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

world = test_e2e.world  # the same world, for this module (module scope)

_JAAS_USER = re.compile(r'user_([^=\s]+)="([^"]*)"')


def external_listeners(running: Brokers, brokers: list[str]) -> dict[str, tuple[str, str]]:
    """pod -> (node.id, advertised EXTERNAL host:port) from the broker's effective properties."""
    found = {}
    for pod in brokers:
        props = running.configs[pod].properties
        external = [a for a in props["advertised.listeners"].split(",") if a.startswith("EXTERNAL://")]
        assert len(external) == 1, props["advertised.listeners"]
        found[pod] = (props["node.id"], external[0].removeprefix("EXTERNAL://"))
    return found


def client_conf(running: Brokers, pod: str) -> dict[str, str]:
    """The EXTERNAL listener's security: SASL/PLAIN with the first user of its JAAS line, if any."""
    props = running.configs[pod].properties
    protocol = dict(
        entry.split(":", 1) for entry in props.get("listener.security.protocol.map", "").split(",") if entry
    ).get("EXTERNAL", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return {}
    jaas = props.get("listener.name.external.plain.sasl.jaas.config", "")
    user, password = _JAAS_USER.findall(jaas)[0]
    return {
        "security.protocol": protocol,
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
    }


def assert_real_start_script(running: Brokers) -> None:
    """Each broker process is the JVM kafka-run-class.sh execs: class path from the layout's libs/,
    kafka.logs.dir = LOG_DIR, and the GC log that kafka-server-start.sh's `-loggc` asks for."""
    for node in running.cluster.nodes:
        assert node.start is not None and node.process is not None and node.dir is not None, node.name
        cmdline = Path(f"/proc/{node.process.pid}/cmdline").read_bytes().split(b"\0")
        words = [w.decode() for w in cmdline if w]
        classpath = words[words.index("-cp") + 1]
        assert "/bin/../libs/" in classpath, classpath
        assert f"-Dkafka.logs.dir={node.dir / 'logs'}" in words, words
        assert "kafka.Kafka" in words, words
        assert (node.dir / "logs" / "kafkaServer-gc.log").exists(), sorted((node.dir / "logs").iterdir())
        print(
            f"  {node.name}: pid {node.process.pid} is {words[0]} ... -cp {classpath[:60]}... kafka.Kafka {words[words.index('kafka.Kafka') + 1 :]}"
        )


def run_through_every_broker(world: World, installed: Installed, topic: str) -> None:
    ns = installed.namespace
    brokers = exposed_brokers(installed)
    assert brokers == ["kafka-0", "kafka-1", "kafka-2"], brokers
    found = wait_for_load_balancers(world, installed, brokers)
    running = start_brokers(world, installed, start_scripts=True)
    try:
        assert {c.flavor for c in running.configs.values()} == {"start-command"}
        assert_no_unexpected_rewrites(running, {"log.dirs", "listeners"})
        assert_real_start_script(running)
        external = external_listeners(running, brokers)
        for pod, (_, address) in external.items():
            assert address.rsplit(":", 1)[0] == f"{pod}.{ns}.{DOMAIN}", address
        expected = dict(external.values())
        answer = roundtrip(world, external[brokers[0]][1], topic, client_conf(running, brokers[0]))
        assert_roundtrip(answer, expected)
        counts = {p: found["balancers"][p].connections for p in brokers}
        print(f"[load balancers] connections through each broker's LB forwarder: {counts}")
        assert all(c > 0 for c in counts.values()), counts
    finally:
        running.stop()
        world.cloud.release(ns)


def test_override_flags_on_the_real_kafka_server_start_script(world: World) -> None:
    """Mechanism 3: `kafka-server-start.sh FILE --override ...` as the container's command."""
    t0 = time.monotonic()
    manifest = "start-command-override-quorum.yaml"
    installed = install(world, manifest, "kafka-start", opted_in=True, docs=own_manifest(manifest))
    run_through_every_broker(world, installed, "e2e-start-override")
    print(f"[timing] mechanism 3 end to end: {time.monotonic() - t0:.1f}s")


def test_shell_prepared_file_then_exec_of_the_real_kafka_server_start_script(world: World) -> None:
    """Mechanism 1: the CloudPirates chart's shell writes its file and execs kafka-server-start.sh."""
    t0 = time.monotonic()
    render = "new/cloudpirates-kafka-0.1.4-default"
    installed = install(world, render, "kafka", opted_in=True)
    run_through_every_broker(world, installed, "e2e-start-cloudpirates")
    print(f"[timing] mechanism 1 end to end: {time.monotonic() - t0:.1f}s")
