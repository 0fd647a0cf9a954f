"""The Helm plugin's command (plugins/kafka-expose-render) finds the release namespace as Helm does:
the -n/--namespace of the helm command that runs it (its parent's argv), else HELM_NAMESPACE; a
--namespace in the post-renderer args wins. Run with a stand-in parent (a python process whose
argv carries helm's flags) and `echo` as kafka-expose, so what it would run is printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

PLUGIN = Path(__file__).resolve().parents[3] / "plugins" / "kafka-expose-render"
# The stand-in parent runs its args up to "--"; the rest of its argv stands for helm's own flags.
PARENT = (
    "import subprocess, sys\ni = sys.argv.index('--')\nsys.exit(subprocess.run(sys.argv[1:i]).returncode)\n"
)


def run(parent_argv: list[str], args: list[str], env: dict[str, str] | None = None) -> tuple[str, str]:
    """(stdout, stderr) of the plugin command started by a parent whose argv is `parent_argv`."""
    # the parent's argv: python -c CODE <plugin> <args...> -- <helm flags...>; only args before "--" go on
    argv = [sys.executable, "-c", PARENT, str(PLUGIN / "kafka-expose-render"), *args, "--", *parent_argv]
    environment = {"PATH": "/usr/bin:/bin", "KAFKA_EXPOSE_BIN": "echo", **(env or {})}
    proc = subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=30, check=True)
    return proc.stdout.strip(), proc.stderr


@pytest.mark.parametrize(
    "flags",
    [
        ["-n", "kafka"],
        ["--namespace", "kafka"],
        ["--namespace=kafka"],
        ["-nkafka"],
        ["-n", "x", "-n", "kafka"],
    ],
)
def test_the_namespace_comes_from_the_helm_command(flags: list[str]) -> None:
    out, _ = run(["install", "r", "chart", *flags], ["--config", "s.yaml"])
    assert out == "render --config s.yaml --namespace kafka"


def test_the_flag_wins_over_helm_namespace() -> None:
    out, _ = run(["install", "-n", "kafka"], ["--config=s.yaml"], {"HELM_NAMESPACE": "other"})
    assert out == "render --config=s.yaml --namespace kafka"


def test_helm_namespace_when_no_flag() -> None:
    out, _ = run(["install", "r", "chart"], [], {"HELM_NAMESPACE": "kafka", "KAFKA_EXPOSE_CONFIG": "s.yaml"})
    assert out == "render --namespace kafka --config s.yaml"


def test_a_namespace_in_the_args_wins() -> None:
    out, _ = run(["install", "-n", "kafka"], ["--config", "s.yaml", "--namespace=mine"])
    assert out == "render --config s.yaml --namespace=mine"


def test_no_namespace_at_all_is_said() -> None:
    out, err = run(["install", "r", "chart"], ["--config", "s.yaml"])
    assert out == "render --config s.yaml"
    assert "no namespace from helm" in err


def test_plugin_yaml_is_a_postrenderer_v1_plugin_running_the_command() -> None:
    meta = yaml.safe_load((PLUGIN / "plugin.yaml").read_text())
    assert (meta["apiVersion"], meta["type"], meta["runtime"]) == ("v1", "postrenderer/v1", "subprocess")
    assert meta["runtimeConfig"]["platformCommand"] == [{"command": "${HELM_PLUGIN_DIR}/kafka-expose-render"}]
    assert (PLUGIN / "kafka-expose-render").stat().st_mode & 0o111
