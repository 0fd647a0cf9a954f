"""The Helm chart is generated from the kustomize manifests: the committed chart must be what they give."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def test_the_committed_chart_is_what_the_manifests_generate() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "helm_chart.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "chart is up to date" in result.stdout
