"""Fixtures shared by the cluster-tier reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.webhookcluster import RegisteredWebhook


@pytest.fixture
def webhook(control_plane: ControlPlane) -> Iterator[RegisteredWebhook]:
    """A fresh `kafka-expose serve` registered with the API server for each test (faults break it)."""
    with RegisteredWebhook(control_plane.api_client()) as registered:
        yield registered
