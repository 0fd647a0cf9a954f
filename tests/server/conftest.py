"""Fixtures for the server tests: a real `kafka-expose serve` over HTTPS (see harness.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.harness import WebhookServer, running_server  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    """One server shared by a module's tests (2 workers x 4 threads)."""
    with running_server(tmp_path_factory.mktemp("webhook")) as srv:
        yield srv
