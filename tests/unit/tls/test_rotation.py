"""The CA rotation state machine on its own: time passes by argument, trust by a callable."""

from __future__ import annotations

import datetime as dt

import pytest

from webhook.tls import primitives as certs
from webhook.tls.rotation import CAState, Rotation, der_set

pytestmark = pytest.mark.unit

START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
ROTATION = Rotation(cert_validity=DAY, ca_renew_before=10 * DAY, propagation_delay=dt.timedelta(minutes=1))


def new_ca_at(moment: dt.datetime) -> tuple[bytes, bytes]:
    return certs.make_ca("test-ca", 30 * DAY, now=moment)


def state_with_ca(moment: dt.datetime) -> CAState:
    state = CAState({})
    state.ca_cert, state.ca_key = new_ca_at(moment)
    return state


def test_nothing_is_due_for_a_fresh_ca() -> None:
    state = state_with_ca(START)
    assert not ROTATION.transition(state, START + DAY, lambda: new_ca_at(START), lambda _: True)
    assert not state.next_cert


def test_a_ca_near_its_end_stages_a_successor_that_is_trusted_before_it_signs() -> None:
    state = state_with_ca(START)
    current = state.ca_cert
    now = START + 25 * DAY  # 5 days left, renew at 10
    assert ROTATION.transition(state, now, lambda: new_ca_at(now), lambda _: True)
    assert state.ca_cert == current and state.next_cert and state.next_since == now
    assert set(der_set(current)) | set(der_set(state.next_cert)) <= set(der_set(state.bundle(now)))


def test_the_successor_is_promoted_only_once_every_bundle_trusts_it_and_the_delay_passed() -> None:
    state = state_with_ca(START)
    now = START + 25 * DAY
    ROTATION.transition(state, now, lambda: new_ca_at(now), lambda _: True)
    staged, old = state.next_cert, state.ca_cert
    soon = now + dt.timedelta(seconds=30)
    assert not ROTATION.transition(state, soon, lambda: new_ca_at(soon), lambda _: True)
    later = now + dt.timedelta(minutes=2)
    assert not ROTATION.transition(state, later, lambda: new_ca_at(later), lambda _: False)
    assert state.ca_cert == old
    assert ROTATION.transition(state, later, lambda: new_ca_at(later), lambda _: True)
    assert state.ca_cert == staged and state.previous_cert == old
    assert state.previous_until == later + DAY + dt.timedelta(minutes=1)


def test_the_previous_ca_is_retired_after_everything_it_signed_expired() -> None:
    state = state_with_ca(START)
    now = START + 25 * DAY
    ROTATION.transition(state, now, lambda: new_ca_at(now), lambda _: True)
    promoted_at = now + dt.timedelta(minutes=2)
    ROTATION.transition(state, promoted_at, lambda: new_ca_at(promoted_at), lambda _: True)
    before = promoted_at + DAY
    assert not ROTATION.transition(state, before, lambda: new_ca_at(before), lambda _: True)
    assert state.previous_cert
    after = promoted_at + DAY + dt.timedelta(minutes=2)
    assert ROTATION.transition(state, after, lambda: new_ca_at(after), lambda _: True)
    assert not state.previous_cert


def test_an_expired_ca_is_replaced_at_once() -> None:
    state = state_with_ca(START)
    now = START + 31 * DAY
    assert ROTATION.transition(state, now, lambda: new_ca_at(now), lambda _: True)
    assert certs.cert_not_after(state.ca_cert) > now


def test_the_wakeup_is_the_nearest_due_step() -> None:
    state = state_with_ca(START)
    now = START + 25 * DAY
    ROTATION.transition(state, now, lambda: new_ca_at(now), lambda _: True)
    assert ROTATION.wakeup(state, now, None) == dt.timedelta(minutes=1)
    assert ROTATION.wakeup(state, now, now + dt.timedelta(seconds=5)) == dt.timedelta(seconds=5)
