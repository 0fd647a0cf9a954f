"""The runtime program never stops a broker from starting (issue 15 item 8): whatever the chart's
configuration, it either adds the listener or leaves the command line as the chart wrote it, and the
chart's own command runs next, under `set -eu` too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from webhook.core import runtime
from webhook.core.flavors import START_HOOK

pytestmark = pytest.mark.unit

ENV = {
    "KAFKAEXPOSE_LISTENER_NAME": "EXTERNAL",
    "KAFKAEXPOSE_FALLBACK_NAMES": "EXTERNAL_LB",
    "KAFKAEXPOSE_HOST": "kafka-0.kafka.example.com",
    "KAFKAEXPOSE_ADVERTISED_PORT": "9094",
    "KAFKAEXPOSE_CONTAINER_PORT": "9094",
    "KAFKAEXPOSE_ON_EXISTING": "replace",
}

FILES = {
    "missing": None,
    "empty": "",
    "odd-names": "listeners=my-listener://:9092,weird.name://:9093\nadvertised.listeners=my-listener://a:9092\n",
    "port-taken": "listeners=PLAINTEXT://:9094\n",
    "controller-only": "process.roles=controller\nlisteners=CONTROLLER://:9093\ncontroller.listener.names=CONTROLLER\n",
    "garbage": "=\n:::\n\\\n\\\\\n'\"$(rm -rf /)\n",
    "quotes": 'listeners=PLAINTEXT://:9092\nlistener.name.plaintext.x=it\'s "quoted" $HOME\n',
}


def _start(tmp: Path, text: str | None, extra: list[str]) -> list[str]:
    record = tmp / "args"
    stub = tmp / "kafka-server-start.sh"
    stub.write_text(f'#!/bin/sh\nfor a in "$@"; do printf \'%s\\n\' "$a" >> {record}; done\n')
    stub.chmod(0o755)
    conf = tmp / "server.properties"
    if text is not None:
        conf.write_text(text)
    script = f"set -eu\n{START_HOOK}exec {stub} {conf} " + " ".join(f"'{w}'" for w in extra)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **ENV, "KAFKAEXPOSE_SH": runtime.START_SCRIPT}
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return record.read_text().splitlines()


@pytest.mark.parametrize("case", FILES)
def test_start_command_always_runs(case: str, tmp_path: Path) -> None:
    args = _start(tmp_path, FILES[case], ["--override", "node.id=1"])
    assert args[:3] == [str(tmp_path / "server.properties"), "--override", "node.id=1"]
    added = args[3:]
    if case in ("port-taken", "controller-only"):
        assert added == [], added  # left exactly as the chart wrote it
    if case == "odd-names" and added:
        assert "advertised.listeners=my-listener://a:9092,EXTERNAL://kafka-0.kafka.example.com:9094" in added
    assert all(w == "--override" for w in added[::2])


def test_start_command_adds_the_listener(tmp_path: Path) -> None:
    args = _start(tmp_path, "listeners=PLAINTEXT://:9092\n", [])
    assert "advertised.listeners=PLAINTEXT://:9092,EXTERNAL://kafka-0.kafka.example.com:9094" in args


@pytest.mark.parametrize(
    "exports",
    [
        "export KAFKA_ADVERTISED_LISTENERS='my-listener://a:9092'",
        "export KAFKA_ADVERTISED_LISTENERS='PLAINTEXT://a:9094' KAFKA_LISTENERS='PLAINTEXT://:9094'",
        "export KAFKA_ADVERTISED_LISTENERS=''",
        "export KAFKA_ADVERTISED_LISTENERS='CLIENT://a:9092' KAFKA_LISTENER_NAME_CLIENT_X=\"it's\"",
        "unset KAFKA_ADVERTISED_LISTENERS",
    ],
)
def test_env_hook_never_stops_the_chart_command(exports: str) -> None:
    script = f'set -eu\n{exports}\neval "$KAFKAEXPOSE_SH" && echo started'
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **ENV,
        "KAFKAEXPOSE_ENV_PREFIX": "KAFKA_",
        "KAFKAEXPOSE_SH": runtime.ENV_SCRIPT,
    }
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("started")
