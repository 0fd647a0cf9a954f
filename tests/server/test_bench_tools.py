"""The benchmarks' own parts still run: bench/ is not in the import contracts or mypy's packages, so
a moved module would otherwise break `make bench` unseen (it did once: bare_server.py imported
CertificateStore from where it lived before the layout change)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import podfactory
from tests.support.harness import running_server

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_the_bare_floor_answers_allowed_with_the_reviews_uid(tmp_path: Path) -> None:
    review = podfactory.admission_review(podfactory.broker_pods("bitnami-kafka-32.4.4-brokers3", "kafka")[0])
    with running_server(
        tmp_path, show_log=False, workers=1, entry=(str(REPO / "bench" / "bare_server.py"),)
    ) as server:
        answer = server.review(review)
    assert answer["response"] == {"uid": review["request"]["uid"], "allowed": True}


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "bench").glob("*.py")))
def test_every_bench_script_starts_and_explains_itself(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
