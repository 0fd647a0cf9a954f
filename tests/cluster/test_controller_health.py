# ruff: noqa: F811  (pytest fixtures imported from test_controller are parameters by design)
"""The controller's /healthz, /readyz and /metrics on its metrics port, leader and follower."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.cluster.controller_fixtures import Controller, lease_holder
from tests.cluster.test_controller import (  # noqa: F401 - the fixtures this module shares
    controller,
    lease_namespace,
    settings_path,
)
from tests.support.controlplane import ControlPlane, wait_for
from tests.support.harness import free_port
from webhook import __version__

pytestmark = pytest.mark.cluster


def get(process: Controller, path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{process.metrics_port}{path}", timeout=5)


def answers(process: Controller) -> bool:
    try:
        return get(process, "/readyz").ok
    except requests.ConnectionError:  # not listening yet
        return False


def test_leader_and_follower_report_health_readiness_and_build_info(
    control_plane: ControlPlane,
    controller: Controller,
    settings_path: Path,
    lease_namespace: str,
    tmp_path: Path,
) -> None:
    leader = wait_for(lambda: get(controller, "/readyz").json()["synced"] or None, message="the first lists")
    assert leader
    ready = get(controller, "/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "leader": True, "synced": True}
    health = get(controller, "/healthz")
    assert health.status_code == 200 and health.json() == {"ok": True, "problems": []}
    metrics = get(controller, "/metrics").text
    assert f'kafka_expose_build_info{{component="controller",version="{__version__}"}} 1.0' in metrics
    assert "kafka_expose_controller_leader 1.0" in metrics
    assert get(controller, "/nothing").status_code == 404

    follower = Controller(control_plane, settings_path, lease_namespace, tmp_path, metrics_port=free_port())
    follower.start()
    try:
        wait_for(lambda: follower.alive() and answers(follower), message="the follower to answer")
        state = get(follower, "/readyz").json()
        assert state == {"ready": True, "leader": False, "synced": False}  # a warm standby is ready
        assert get(follower, "/healthz").json()["ok"] is True
        assert lease_holder(control_plane.api_client(), lease_namespace, "kafka-expose-controller") == (
            controller.identity
        )
    finally:
        assert follower.terminate() == 0, follower.log()
