"""Throwaway CAs and certificates for tests (cryptography, EC P-256: fast to generate)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook.tls import primitives as certs

PrivateKey = ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def key_pem(key: PrivateKey | rsa.RSAPrivateKey) -> bytes:
    """The unencrypted PKCS#8 PEM of `key`."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def split_hosts(hosts: Iterable[str]) -> tuple[list[str], list[str]]:
    """`(dns_names, ip_addresses)`: the hosts that are IP addresses, and the others."""
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            dns_names.append(host)
        else:
            ip_addresses.append(host)
    return dns_names, ip_addresses


@dataclass(frozen=True)
class Leaf:
    cert_pem: bytes
    key_pem: bytes
    chain_pem: bytes  # leaf then CA
    not_after: dt.datetime
    serial: int

    def write(self, directory: Path | str, name: str = "tls") -> tuple[Path, Path]:
        """Write `<name>.crt` (the chain) and `<name>.key`; return their paths."""
        directory = Path(directory)
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(self.chain_pem)
        key.write_bytes(self.key_pem)
        return cert, key


@dataclass
class CA:
    """A self-signed CA (webhook.tls.primitives.make_ca) that issues server and client certificates."""

    name: str = "kafka-expose test CA"
    days: int = 30
    cert_pem: bytes = field(init=False)
    key_pem: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.cert_pem, self.key_pem = certs.make_ca(self.name, dt.timedelta(days=self.days))

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.write_bytes(self.cert_pem)
        return path

    def issue_pem(
        self,
        common_name: str,
        hosts: Iterable[str] = (),
        *,
        usages: Sequence[x509.ObjectIdentifier] = (),
        organizations: Sequence[str] = (),
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> tuple[bytes, bytes]:
        """`(cert_pem, key_pem)` of a leaf for `hosts` (IP addresses and DNS names), valid as given."""
        dns_names, ip_addresses = split_hosts(hosts)
        return certs.issue_cert(
            self.cert_pem,
            self.key_pem,
            common_name,
            not_before,
            not_after,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            organizations=organizations,
            usages=usages,
        )

    def issue(
        self,
        common_name: str = "kafka-expose",
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
        *,
        client: bool = False,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Leaf:
        now = _now()
        cert_pem, key = self.issue_pem(
            common_name,
            hosts,
            usages=[ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH],
            not_before=not_before or now - dt.timedelta(minutes=5),
            not_after=not_after or now + dt.timedelta(days=1),
        )
        cert = x509.load_pem_x509_certificate(cert_pem)
        return Leaf(cert_pem, key, cert_pem + self.cert_pem, cert.not_valid_after_utc, cert.serial_number)


def client_context(
    ca: CA | None = None, client_leaf: Leaf | None = None, *, maximum_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """A client context trusting `ca` (or nothing: verification off), optionally with a client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca.cert_pem.decode())
    if maximum_version is not None:
        with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point of the test
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = maximum_version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old protocols at all
    if client_leaf is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = client_leaf.write(tmp, "client")
            context.load_cert_chain(str(cert), str(key))
    return context


def peer_serial(sock: ssl.SSLSocket) -> int:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def atomic_swap_dir(directory: Path, files: dict[str, bytes]) -> None:
    """Update `files` in `directory` the way the kubelet updates a Secret/ConfigMap volume.

    Each name is a symlink to `..data/<name>`; `..data` links to a timestamped directory that is
    replaced by an atomic rename of a new symlink."""
    stamp = f"..{_now().strftime('%Y_%m_%d_%H_%M_%S.%f')}"
    target = directory / stamp
    target.mkdir()
    for name, content in files.items():
        (target / name).write_bytes(content)
    tmp_link = directory / "..data_tmp"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    os.symlink(stamp, tmp_link)
    previous = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    os.replace(tmp_link, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    if previous:
        for old in (directory / previous).iterdir():
            old.unlink()
        (directory / previous).rmdir()
