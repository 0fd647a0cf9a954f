"""Fixtures for tests against the real control plane (tests/controlplane.py), shared by the cluster and kafka tiers.

* ``control_plane`` (session): a started :class:`ControlPlane`. Fails (does not
  skip) when the binaries are missing: build them with
  ``tools/build-controlplane.sh``.
* ``node_agent`` (session): :class:`NodeAgentStandIn` over all namespaces, so
  pods become Running/Ready (no kubelet here).
* ``api_client``: the admin ``kubernetes.client.ApiClient``.

When a test that uses the control plane fails, the tail of every component's
log is attached to its report ("control-plane logs" section). Set
``KAFKA_EXPOSE_KEEP_TMP=1`` to keep the plane's tmpdir (certs, kubeconfigs,
full logs) after the session.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from contextlib import closing
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import kubernetes.client  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tests.support.controlplane import (  # noqa: E402
    ControlPlane,
    ControlPlaneBinariesMissing,
    ControlPlaneStartError,
    NodeAgentStandIn,
)

# No hypothesis test may fail because the machine is busy: no per-example deadline, and no health
# check on how slowly examples are generated (both measure wall time). Tests' own @settings add to it.
settings.register_profile("kafka-expose", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kafka-expose")

_active: list[ControlPlane] = []
_failures: list[str] = []


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    try:
        cp = ControlPlane()
    except ControlPlaneBinariesMissing as e:
        pytest.fail(str(e), pytrace=False)
    try:
        cp.start()
    except ControlPlaneStartError as e:
        # start() already stopped the processes and kept the tmpdir.
        pytest.fail(f"control plane did not start (logs kept in {cp.tmpdir}):\n{e}", pytrace=False)
    _active.append(cp)
    try:
        yield cp
    finally:
        _active.remove(cp)
        # Keep certs, kubeconfigs and full logs when a test failed: the
        # "control-plane logs" report sections name the files.
        cp.stop(remove_tmpdir=False if _failures else None)


@pytest.fixture(scope="session")
def node_agent(control_plane: ControlPlane) -> Iterator[NodeAgentStandIn]:
    agent = NodeAgentStandIn(control_plane).start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def api_client(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    with closing(control_plane.api_client()) as client:
        yield client


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _active and "control_plane" in getattr(item, "fixturenames", ()):
        _failures.append(item.nodeid)
        report.sections.append(("control-plane logs", _active[-1].logs_tail(60)))
    return report
