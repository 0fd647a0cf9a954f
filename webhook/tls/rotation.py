"""The CA rotation state machine of the self-managed certificates: pure, with the clock injected.

`CAState` is the CA Secret decoded; `Rotation.transition` decides, from the state and the time, which
step is due (create, stage, promote, retire) and applies it to the state. Reading and writing the
Secret and the webhook configurations is `webhook.tls.selfmanaged`'s job (see its docstring for the
protocol and why each step is safe).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhook.core.names import PREFIX
from webhook.tls import primitives as certs

log = logging.getLogger(__name__)

NEXT_SINCE = PREFIX + "next-ca-since"
PREVIOUS_UNTIL = PREFIX + "previous-ca-until"

# () -> (certificate PEM, key PEM) of a new CA
NewCA = Callable[[], tuple[bytes, bytes]]
# (CA PEM) -> whether every webhook's caBundle trusts it already
TrustedEverywhere = Callable[[bytes], bool]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: str | None) -> bytes:
    if not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def der_set(pem: bytes) -> list[bytes]:
    try:
        return [c.public_bytes(serialization.Encoding.DER) for c in certs.load_pem_certificates(pem)]
    except ValueError:
        return []


def _ca_usable(cert_pem: bytes, key_pem: bytes, now: dt.datetime) -> bool:
    if not cert_pem or not key_pem or not certs.key_matches(cert_pem, key_pem):
        return False
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def still_valid(cert_pem: bytes, now: dt.datetime) -> bool:
    try:
        return bool(cert_pem) and certs.cert_not_after(cert_pem) > now
    except ValueError:
        return False


class CAState:
    """The CA Secret, decoded."""

    def __init__(self, secret: dict[str, Any]) -> None:
        self.secret = secret
        data: dict[str, str] = secret.get("data") or {}
        annotations: dict[str, str] = (secret.get("metadata") or {}).get("annotations") or {}
        self.ca_cert = unb64(data.get("ca.crt"))
        self.ca_key = unb64(data.get("ca.key"))
        self.next_cert = unb64(data.get("next-ca.crt"))
        self.next_key = unb64(data.get("next-ca.key"))
        self.previous_cert = unb64(data.get("previous-ca.crt"))
        self.next_since = _parse_time(annotations.get(NEXT_SINCE))
        self.previous_until = _parse_time(annotations.get(PREVIOUS_UNTIL))

    def bundle(self, now: dt.datetime) -> bytes:
        """previous + current + next: every CA that is to be trusted now (expired ones left out)."""
        parts: list[bytes] = []
        seen: set[bytes] = set()
        for pem in (self.previous_cert, self.ca_cert, self.next_cert):
            if not still_valid(pem, now):
                continue
            for der in der_set(pem):
                if der not in seen:
                    seen.add(der)
                    parts.append(pem if pem.endswith(b"\n") else pem + b"\n")
        return b"".join(parts)

    def to_data(self) -> dict[str, str]:
        data = {"ca.crt": b64(self.ca_cert), "ca.key": b64(self.ca_key)}
        if self.next_cert and self.next_key:
            data["next-ca.crt"] = b64(self.next_cert)
            data["next-ca.key"] = b64(self.next_key)
        if self.previous_cert:
            data["previous-ca.crt"] = b64(self.previous_cert)
        return data

    def to_annotations(self) -> dict[str, str]:
        annotations: dict[str, str] = {}
        if self.next_cert and self.next_since:
            annotations[NEXT_SINCE] = _format_time(self.next_since)
        if self.previous_cert and self.previous_until:
            annotations[PREVIOUS_UNTIL] = _format_time(self.previous_until)
        return annotations


@dataclass(frozen=True)
class Rotation:
    """When each step of a rotation is due."""

    cert_validity: dt.timedelta
    ca_renew_before: dt.timedelta
    propagation_delay: dt.timedelta

    def transition(
        self,
        state: CAState,
        now: dt.datetime,
        new_ca: NewCA,
        trusted_everywhere: TrustedEverywhere,
        force_rotation: bool = False,
    ) -> bool:
        """Mutate `state` with what is due now; True when the Secret must be written."""
        changed = False
        if not _ca_usable(state.ca_cert, state.ca_key, now):
            if state.next_cert and _ca_usable(state.next_cert, state.next_key, now):
                log.warning("current CA unusable: promoting the staged CA early")
                self.promote(state, now)
            else:
                log.warning("current CA missing, invalid or expired: creating a new one")
                state.ca_cert, state.ca_key = new_ca()
                state.next_cert = state.next_key = b""
                state.next_since = None
            return True
        if state.previous_cert and (
            not still_valid(state.previous_cert, now)
            or state.previous_until is None
            or now >= state.previous_until
        ):
            log.info("retiring the previous CA")
            state.previous_cert = b""
            state.previous_until = None
            changed = True
        if state.next_cert and not _ca_usable(state.next_cert, state.next_key, now):
            state.next_cert = state.next_key = b""
            state.next_since = None
            changed = True
        ca_left = certs.cert_not_after(state.ca_cert) - now
        if not state.next_cert and (force_rotation or ca_left < self.ca_renew_before):
            log.info("staging a new CA (current CA has %s left)", ca_left)
            state.next_cert, state.next_key = new_ca()
            state.next_since = now
            return True
        if state.next_cert:
            since = state.next_since or now
            if state.next_since is None:
                state.next_since = now
                changed = True
            elif now - since >= self.propagation_delay and trusted_everywhere(state.next_cert):
                log.info("promoting the staged CA")
                self.promote(state, now)
                changed = True
        return changed

    def promote(self, state: CAState, now: dt.datetime) -> None:
        if still_valid(state.ca_cert, now):
            # Every certificate the old CA signed was issued before now: trust it that much longer.
            state.previous_cert = state.ca_cert
            state.previous_until = now + self.cert_validity + self.propagation_delay
        state.ca_cert, state.ca_key = state.next_cert, state.next_key
        state.next_cert = state.next_key = b""
        state.next_since = None

    def wakeup(
        self, state: CAState, now: dt.datetime, renew_serving_at: dt.datetime | None
    ) -> dt.timedelta | None:
        """How long until the next step is due (None: nothing scheduled)."""
        moments: list[dt.datetime] = []
        if state.next_cert and state.next_since:
            moments.append(state.next_since + self.propagation_delay)
        if state.previous_cert and state.previous_until:
            moments.append(state.previous_until)
        if renew_serving_at is not None:
            moments.append(renew_serving_at)
        if not moments:
            return None
        return max(min(moments) - now, dt.timedelta(0))
