"""Fixtures of the kafka tier (real Kafka brokers on loopback).

* ``kafka_dists`` (session): the Kafka distributions from tools/build-kafka.sh (Maven Central,
  cached): Kafka 4.x for KRaft charts, Kafka 3.9 (+ ZooKeeper) for ZooKeeper-era charts.
* ``cluster_view`` (session): the test process's private /etc/hosts (tests/kafkarun.py
  ``enter_private_hosts``): the cluster DNS as the brokers see it. The kernel unshares the mount
  namespace per thread, so this must run on the main thread before anything that has to see it is
  started: the brokers (child processes), the stand-ins' threads and the client processes are all
  started later by the tests, from the main thread; threads and processes started earlier (the
  control plane, its kubelet stand-in) keep the machine's file, which they need no more than the
  machine does. The machine's /etc/hosts is never edited. Without the privilege to make a mount
  namespace the tier FAILS (it does not skip): its point is to show the story works here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support import kafkarun


@pytest.fixture(scope="session")
def kafka_dists() -> dict[str, kafkarun.KafkaDist]:
    started = time.monotonic()
    try:
        dists = kafkarun.ensure_dists()
    except (RuntimeError, FileNotFoundError) as err:
        pytest.fail(f"Kafka distributions unavailable (tools/build-kafka.sh): {err}", pytrace=False)
    print(f"\n[timing] Kafka distributions ready in {time.monotonic() - started:.1f}s: {dists}")
    return dists


@pytest.fixture(scope="session")
def cluster_view() -> Iterator[kafkarun.PrivateHosts]:
    ok, why = kafkarun.private_hosts_available()
    if not ok:
        pytest.fail(
            f"the kafka tier needs a private mount namespace for its /etc/hosts (CAP_SYS_ADMIN): {why}",
            pytrace=False,
        )
    yield kafkarun.enter_private_hosts()
