"""Certificate tooling: a small CA and the webhook's serving certificate.

`kafka-expose certs generate --service NAME --namespace NS --out DIR` writes `ca.crt`, `ca.key`,
`tls.crt` and `tls.key` (keys 0600) for development and for the manifests (see certs/README.md).
The same functions issue the short-lived certificates of the self-managed mode (webhook/tls/selfmanaged.py); the command line is webhook/cli/certs.py.

Keys are ECDSA P-256. The CA has basicConstraints CA:TRUE (pathlen 0) and keyCertSign/cRLSign; the
serving certificate has digitalSignature/keyEncipherment, the serverAuth extended key usage, the DNS
and IP subject alternative names, and subject/authority key identifiers that chain it to its CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Certificates start a little in the past so that a clock slightly behind ours still accepts them.
BACKDATE = dt.timedelta(minutes=5)
ORGANIZATION = "kafka-expose"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organizations: Sequence[str] = (ORGANIZATION,)) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        + [x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]
    )


# x509.KeyUsage's nine flags; a certificate grants the ones it names
_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
CA_KEY_USAGES = ("digital_signature", "key_cert_sign", "crl_sign")
LEAF_KEY_USAGES = ("digital_signature", "key_encipherment")


def _key_usage(*granted: str) -> x509.KeyUsage:
    return x509.KeyUsage(**{flag: flag in granted for flag in _KEY_USAGE_FLAGS})


def _sign(
    subject: x509.Name,
    public: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    ca: bool,
    extensions: Sequence[x509.ExtensionType] = (),
) -> bytes:
    """The PEM of a certificate for `public` signed by `issuer_key`: a CA (pathlen 0, keyCertSign and
    cRLSign) or a leaf (keyEncipherment), with `extensions` (non-critical) and the key identifiers."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(_key_usage(*CA_KEY_USAGES) if ca else _key_usage(*LEAF_KEY_USAGES), critical=True)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    cert = (
        builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(
    common_name: str, valid_for: dt.timedelta, *, now: dt.datetime | None = None
) -> tuple[bytes, bytes]:
    """A self-signed CA certificate and its key, both PEM: `(cert_pem, key_pem)`."""
    key = _new_key()
    now = now or _now()
    name = _name(common_name)
    cert = _sign(name, key.public_key(), name, key, now - BACKDATE, now + valid_for, ca=True)
    return cert, _key_pem(key)


def _load_ca(ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an ECDSA key")
    return ca_cert, ca_key


def _issue(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    dns_names: Sequence[str],
    ips: Sequence[IPAddress],
    organizations: Sequence[str],
    usages: Sequence[x509.ObjectIdentifier],
) -> tuple[bytes, bytes]:
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ip) for ip in ips]
    extensions: list[x509.ExtensionType] = [x509.ExtendedKeyUsage(list(usages))] if usages else []
    if sans:
        extensions.append(x509.SubjectAlternativeName(sans))
    key = _new_key()
    ca_cert, ca_key = ca
    subject = _name(common_name, organizations)
    cert = _sign(
        subject,
        key.public_key(),
        ca_cert.subject,
        ca_key,
        not_before,
        not_after,
        ca=False,
        extensions=extensions,
    )
    return cert, _key_pem(key)


def issue_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str | IPAddress] = (),
    organizations: Sequence[str] = (ORGANIZATION,),
    usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> tuple[bytes, bytes]:
    """A leaf certificate signed by the CA and valid from `not_before` to `not_after` as given (not
    fitted into the CA's validity, unlike issue_serving_cert's), `(cert_pem, key_pem)`.

    Its subject is `organizations` (O=) and `common_name`; its extended key usages are `usages` (none:
    no extendedKeyUsage); its subjectAltName has the DNS names and IP addresses (none: no subjectAltName).
    """
    ca = _load_ca(ca_cert_pem, ca_key_pem)
    ips = [ipaddress.ip_address(str(ip)) for ip in ip_addresses]
    return _issue(ca, common_name, not_before, not_after, dns_names, ips, organizations, usages)


def issue_serving_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str | IPAddress] = (),
    valid_for: dt.timedelta = dt.timedelta(days=365),
    *,
    now: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A serving certificate signed by the CA, for the given DNS names and IP addresses.

    The common name is the first DNS name (or IP). The certificate never outlives its CA: its
    notAfter is capped at the CA's. `now` (default: the current time) is for tests.
    Returns `(cert_pem, key_pem)`.
    """
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    ca = _load_ca(ca_cert_pem, ca_key_pem)
    ca_cert = ca[0]
    ips = [ipaddress.ip_address(str(ip)) for ip in ip_addresses]
    now = now or _now()
    return _issue(
        ca,
        dns_names[0] if dns_names else str(ips[0]),
        max(now - BACKDATE, ca_cert.not_valid_before_utc),
        min(now + valid_for, ca_cert.not_valid_after_utc),
        dns_names,
        ips,
        (ORGANIZATION,),
        (ExtendedKeyUsageOID.SERVER_AUTH,),
    )


def service_dns_names(service: str, namespace: str, cluster_domain: str = "cluster.local") -> list[str]:
    """The names the API server may use for an in-cluster Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
    ]


def load_pem_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (empty input: empty list)."""
    if not pem.strip():
        return []
    return x509.load_pem_x509_certificates(pem)


def cert_not_after(pem: bytes) -> dt.datetime:
    """The (timezone-aware, UTC) expiry of the first certificate in `pem`."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def is_signed_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    """True when the first certificate of `cert_pem` carries a valid signature of the CA."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_cert_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """True when the private key is the certificate's."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        cert.public_key().public_bytes(serialization.Encoding.DER, spki)
        == key.public_key().public_bytes(serialization.Encoding.DER, spki)
    )


def cert_sans(cert_pem: bytes) -> tuple[list[str], list[str]]:
    """The DNS names and IP addresses (as strings) of the certificate's subjectAltName."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically (temp file in the same directory, then rename) with the given mode."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate(
    out: Path,
    service: str,
    namespace: str,
    ips: Iterable[str] = (),
    extra_dns: Iterable[str] = (),
    days: int = 365,
    ca_days: int | None = None,
    ca: tuple[bytes, bytes] | None = None,
    cluster_domain: str = "cluster.local",
) -> dict[str, Path]:
    """Write ca.crt, ca.key (unless an existing CA is given), tls.crt and tls.key into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if ca is None:
        ca = make_ca(f"kafka-expose-ca {service}.{namespace}", dt.timedelta(days=ca_days or max(days, 3650)))
        write_file(out / "ca.key", ca[1], 0o600)
        written["ca.key"] = out / "ca.key"
    ca_cert, ca_key = ca
    write_file(out / "ca.crt", ca_cert)
    written["ca.crt"] = out / "ca.crt"
    dns = service_dns_names(service, namespace, cluster_domain) + [d for d in extra_dns]
    cert, key = issue_serving_cert(ca_cert, ca_key, dns, list(ips), dt.timedelta(days=days))
    write_file(out / "tls.key", key, 0o600)
    write_file(out / "tls.crt", cert)
    written["tls.key"] = out / "tls.key"
    written["tls.crt"] = out / "tls.crt"
    return written


GENERATED_FILES = ("ca.crt", "ca.key", "tls.crt", "tls.key")


def is_ca(cert_pem: bytes) -> bool:
    """True when the (first) certificate may sign others: BasicConstraints CA and keyCertSign."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return constraints.ca  # RFC 5280 allows a CA without KeyUsage
    return constraints.ca and usage.key_cert_sign
