"""Throwaway CAs and certificates for tests (cryptography, EC P-256: fast to generate)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey | rsa.RSAPrivateKey) -> bytes:
    """The unencrypted PKCS#8 PEM of `key`."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def general_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """subjectAltName entries: an IP address entry for each address, a DNS name for the others."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


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
    """A self-signed CA that issues server and client certificates."""

    name: str = "kafka-expose test CA"
    key: PrivateKey = field(default_factory=_key)
    days: int = 30
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = _now()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.write_bytes(self.cert_pem)
        return path

    def issue(
        self,
        common_name: str = "kafka-expose",
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
        *,
        client: bool = False,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Leaf:
        key = _key()
        now = _now()
        names = general_names(hosts)
        serial = x509.random_serial_number()
        not_after = not_after or now + dt.timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(not_before or now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        return Leaf(cert_pem, key_pem(key), cert_pem + self.cert_pem, not_after, serial)


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
