"""The serving certificate: loaded from files, checked, hot reloaded, and the SSL context built from it.

gunicorn asks for a context on each new connection (see webhook.server.gunicorn): connections made
after a reload get the new certificate, connections already open keep theirs.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from webhook.reload import Watched, one_line

log = logging.getLogger("kafka_expose.tls")


class CertificateError(ValueError):
    """The certificate, key or client CA files cannot be used."""


@dataclass(frozen=True)
class ServingCertificate:
    context: ssl.SSLContext
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int

    def valid_at(self, now: dt.datetime) -> bool:
        return self.not_before <= now <= self.not_after


def build_server_context(
    cert_file: str, key_file: str, client_ca_file: str | None = None
) -> ServingCertificate:
    """A TLS 1.2+ server context for the chain; with a client CA, client certificates are required."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
        if client_ca_file:
            context.load_verify_locations(cafile=client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        with open(cert_file, "rb") as handle:
            leaf = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ssl.SSLError, ValueError) as err:
        raise CertificateError(one_line(err)) from None
    return ServingCertificate(
        context=context,
        subject=leaf.subject.rfc4514_string(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=leaf.serial_number,
    )


class CertificateStore(Watched):
    """The serving certificate in force (as an SSLContext), rebuilt when its files change.

    gunicorn asks for a context on each new connection (see `webhook.gunicorn_conf`): connections
    open before a rotation finish with the old certificate, new ones get the new one.
    """

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        client_ca_file: str | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__([p for p in (cert_file, key_file, client_ca_file) if p])
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self._clock = clock
        self._current = build_server_context(cert_file, key_file, client_ca_file)

    @property
    def current(self) -> ServingCertificate:
        return self._current

    @property
    def context(self) -> ssl.SSLContext:
        return self._current.context

    def reload_if_changed(self) -> bool | None:
        """None: nothing changed; True: reloaded; False: the new files are unusable (previous kept)."""
        with self._lock:
            if not self._take_change():
                return None
            try:
                loaded = build_server_context(self.cert_file, self.key_file, self.client_ca_file)
                if self._clock() > loaded.not_after:
                    raise CertificateError(f"the new certificate expired at {loaded.not_after.isoformat()}")
            except CertificateError as err:
                return self._rejected(
                    str(err),
                    "certificate reload rejected, previous certificate keeps serving",
                    {
                        "cert_file": self.cert_file,
                        "error": str(err),
                        "serving_not_after": self._current.not_after.isoformat(),
                    },
                )
            self._current = loaded
            self._reloaded()
        log.info(
            "certificate reloaded",
            extra={
                "fields": {
                    "cert_file": self.cert_file,
                    "subject": loaded.subject,
                    "serial": f"{loaded.serial:x}",
                    "not_after": loaded.not_after.isoformat(),
                }
            },
        )
        self._notify(True, loaded.subject)
        return True

    def readiness(self) -> tuple[bool, str]:
        cert = self._current
        now = self._clock()
        if now > cert.not_after:
            ok, text = False, f"certificate: expired at {cert.not_after.isoformat()}"
        elif now < cert.not_before:
            ok, text = False, f"certificate: not valid before {cert.not_before.isoformat()}"
        else:
            ok, text = True, f"certificate: {cert.subject} valid until {cert.not_after.isoformat()}"
        if self.last_error:
            text += f" (new certificate files rejected: {self.last_error})"
        return ok, text
