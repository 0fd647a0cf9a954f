"""`kafka-expose certs generate` and the self-managed certificate logic, checked with `cryptography`."""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import ipaddress
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook.cli import certs as certs_cli
from webhook.cli import serve as serve_cli
from webhook.tls import primitives as certs
from webhook.tls import selfmanaged as selfcerts

pytestmark = pytest.mark.unit

UTC = dt.UTC


def _generate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    certs_cli.add_arguments(parser)
    return certs_cli.run(parser.parse_args(argv))


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    argv = ["generate", "--service", "kafka-expose", "--namespace", "kafka-expose", "--out", str(out)]
    assert _generate([*argv, "--ip", "127.0.0.1", "--ip", "::1", "--days", "30"]) == 0
    return out


def test_generate_writes_the_four_files_with_private_keys_0600(generated: Path) -> None:
    for name in ("ca.crt", "ca.key", "tls.crt", "tls.key"):
        assert (generated / name).is_file()
    for name in ("ca.key", "tls.key"):
        assert stat.S_IMODE((generated / name).stat().st_mode) == 0o600
    assert not list(generated.glob(".*.tmp"))


def test_serving_certificate_has_the_service_names_and_ips(generated: Path) -> None:
    san = _load(generated / "tls.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "kafka-expose",
        "kafka-expose.kafka-expose",
        "kafka-expose.kafka-expose.svc",
        "kafka-expose.kafka-expose.svc.cluster.local",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_serving_certificate_key_usages(generated: Path) -> None:
    cert = _load(generated / "tls.crt")
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_ca_is_a_ca(generated: Path) -> None:
    ca = _load(generated / "ca.crt")
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert ca.subject == ca.issuer


def test_chain_key_identifiers_and_signature(generated: Path) -> None:
    ca, leaf = _load(generated / "ca.crt"), _load(generated / "tls.crt")
    leaf.verify_directly_issued_by(ca)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_keys_are_ecdsa_p256_and_match(generated: Path) -> None:
    for cert_name, key_name in (("ca.crt", "ca.key"), ("tls.crt", "tls.key")):
        key = serialization.load_pem_private_key((generated / key_name).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert certs.key_matches((generated / cert_name).read_bytes(), (generated / key_name).read_bytes())
    assert not certs.key_matches((generated / "ca.crt").read_bytes(), (generated / "tls.key").read_bytes())


def test_validity(generated: Path) -> None:
    now = dt.datetime.now(UTC)
    leaf, ca = _load(generated / "tls.crt"), _load(generated / "ca.crt")
    assert leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc
    assert abs(leaf.not_valid_after_utc - (now + dt.timedelta(days=30))) < dt.timedelta(minutes=2)
    assert ca.not_valid_after_utc >= leaf.not_valid_after_utc
    assert certs.cert_not_after((generated / "tls.crt").read_bytes()) == leaf.not_valid_after_utc


def test_generate_with_an_existing_ca_keeps_it(generated: Path, tmp_path: Path) -> None:
    argv = ["generate", "--service", "hook", "--namespace", "ns", "--out", str(tmp_path)]
    argv += ["--ca-cert", str(generated / "ca.crt"), "--ca-key", str(generated / "ca.key")]
    assert _generate([*argv, "--dns", "hook.example.com"]) == 0
    assert (tmp_path / "ca.crt").read_bytes() == (generated / "ca.crt").read_bytes()
    assert not (tmp_path / "ca.key").exists()
    assert certs.is_signed_by((tmp_path / "tls.crt").read_bytes(), (generated / "ca.crt").read_bytes())
    dns, _ips = certs.cert_sans((tmp_path / "tls.crt").read_bytes())
    assert dns[-1] == "hook.example.com" and dns[0] == "hook"


def test_generate_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "--service", "s", "--namespace", "n", "--out", str(tmp_path)]
    assert _generate([*argv, "--ip", "not-an-ip"]) == 1
    assert _generate([*argv, "--days", "0"]) == 2
    assert _generate([*argv, "--ca-cert", str(tmp_path / "x")]) == 2
    assert "kafka-expose certs generate" in capsys.readouterr().err


def test_generate_never_overwrites_without_force(generated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {name: (generated / name).read_bytes() for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")}
    argv = ["generate", "--service", "s", "--namespace", "n", "--out", str(generated)]
    assert _generate(argv) == 1
    assert "--force" in capsys.readouterr().err
    assert {name: (generated / name).read_bytes() for name in before} == before
    assert _generate([*argv, "--force"]) == 0
    assert (generated / "ca.crt").read_bytes() != before["ca.crt"]


def test_generate_refuses_a_ca_cert_that_is_not_a_ca(
    generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "--service", "s", "--namespace", "n", "--out", str(tmp_path / "out")]
    leaf = ["--ca-cert", str(generated / "tls.crt"), "--ca-key", str(generated / "tls.key")]
    assert _generate([*argv, *leaf]) == 1
    assert "not a CA" in capsys.readouterr().err
    assert not (tmp_path / "out" / "tls.crt").exists()
    mismatched = ["--ca-cert", str(generated / "ca.crt"), "--ca-key", str(generated / "tls.key")]
    assert _generate([*argv, *mismatched]) == 1
    assert "is not the key of" in capsys.readouterr().err


def test_serving_cert_never_outlives_its_ca() -> None:
    ca_cert, ca_key = certs.make_ca("short", dt.timedelta(hours=1))
    cert, _ = certs.issue_serving_cert(ca_cert, ca_key, ["a"], [], dt.timedelta(days=10))
    assert certs.cert_not_after(cert) == certs.cert_not_after(ca_cert)


def test_issue_needs_a_name() -> None:
    ca_cert, ca_key = certs.make_ca("ca", dt.timedelta(days=1))
    with pytest.raises(ValueError):
        certs.issue_serving_cert(ca_cert, ca_key, [], [])
    cert, _ = certs.issue_serving_cert(ca_cert, ca_key, [], ["10.0.0.1"])
    assert certs.cert_sans(cert) == ([], ["10.0.0.1"])


def test_is_signed_by_rejects_another_ca() -> None:
    ca1, key1 = certs.make_ca("one", dt.timedelta(days=1))
    ca2, _ = certs.make_ca("two", dt.timedelta(days=1))
    cert, _ = certs.issue_serving_cert(ca1, key1, ["x"])
    assert certs.is_signed_by(cert, ca1)
    assert not certs.is_signed_by(cert, ca2)
    assert not certs.is_signed_by(b"garbage", ca1)


# ---- self-managed mode against an in-memory API server ---------------------------------------------


class _Response:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.reason = {200: "OK", 201: "Created", 404: "Not Found", 409: "Conflict"}.get(status, "Error")
        self._data = json.dumps(body).encode()

    def read(self) -> bytes:
        return self._data


class FakeApi:
    """Just enough of the API server for SelfManagedCerts: Secrets and webhook configurations."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.calls: list[tuple[str, str]] = []
        self.before_create: list[Any] = []  # callbacks run before a POST (to stage races)

    # the two ApiClient methods selfcerts uses
    def param_serialize(self, method: str, resource_path: str, header_params: Any = None,
                        body: Any = None, auth_settings: Any = None, query_params: Any = None) -> tuple[Any, ...]:  # fmt: skip
        return method, resource_path, header_params, copy.deepcopy(body), None

    def call_api(self, method: str, url: str, header_params: Any = None, body: Any = None,
                 _request_timeout: Any = None) -> _Response:  # fmt: skip
        self.calls.append((method, url))
        status, payload = self._handle(method, url, body)
        return _Response(status, payload)

    def _bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        return obj

    def put_object(self, path: str, obj: dict[str, Any]) -> None:
        self.objects[path] = self._bump(copy.deepcopy(obj))

    def _handle(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        if method == "GET":
            if url not in self.objects:
                return 404, {"message": "not found"}
            return 200, copy.deepcopy(self.objects[url])
        if method == "POST":
            hooks, self.before_create = self.before_create, []
            for hook in hooks:
                hook()
            path = f"{url}/{body['metadata']['name']}"
            if path in self.objects:
                return 409, {"message": "already exists", "reason": "AlreadyExists"}
            self.put_object(path, body)
            return 201, copy.deepcopy(self.objects[path])
        if method == "PUT":
            current = self.objects.get(url)
            if current is None:
                return 404, {"message": "not found"}
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return 409, {"message": "conflict"}
            self.put_object(url, body)
            return 200, copy.deepcopy(self.objects[url])
        if method == "PATCH":
            current = copy.deepcopy(self.objects[url])
            for op in body:
                parts = op["path"].strip("/").split("/")
                target: Any = current
                for part in parts[:-1]:
                    target = target[int(part)] if isinstance(target, list) else target[part]
                if op["op"] == "test":
                    if target[parts[-1]] != op["value"]:
                        return 409, {"message": "test failed"}
                else:
                    target[parts[-1]] = op["value"]
            self.put_object(url, current)
            return 200, copy.deepcopy(self.objects[url])
        return 405, {"message": method}

    # helpers for the tests
    def bundles(self) -> list[bytes]:
        out = []
        for path, obj in self.objects.items():
            if "webhookconfigurations" in path:
                for hook in obj["webhooks"]:
                    out.append(base64.b64decode(hook["clientConfig"].get("caBundle", "")))
        return out


MUTATING = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/kafka-expose"
VALIDATING = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/kafka-expose"
SECRET = "/api/v1/namespaces/kafka-expose/secrets/kafka-expose-ca"


def _config(kind: str, hooks: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "kafka-expose"},
        "webhooks": [{"name": h, "clientConfig": {"service": {"name": "kafka-expose"}}} for h in hooks],
    }


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    fake.put_object(MUTATING, _config("MutatingWebhookConfiguration", ["pods.kafka-expose.io"]))
    fake.put_object(
        VALIDATING,
        _config("ValidatingWebhookConfiguration", ["pods.kafka-expose.io", "services.kafka-expose.io"]),
    )
    return fake


def _manager(api: FakeApi, cert_dir: Path, clock: Clock) -> selfcerts.SelfManagedCerts:
    return selfcerts.SelfManagedCerts(
        api,
        namespace="kafka-expose",
        secret_name="kafka-expose-ca",
        service_name="kafka-expose",
        webhook_config_names=(["kafka-expose"], ["kafka-expose"]),
        cert_dir=cert_dir,
        ca_validity=dt.timedelta(days=30),
        cert_validity=dt.timedelta(hours=1),
        renew_before=dt.timedelta(minutes=20),
        propagation_delay=dt.timedelta(seconds=30),
        extra_ip_addresses=["127.0.0.1"],
        clock=clock,
    )


def _trusted_by_all(api: FakeApi, cert_dir: Path) -> bool:
    """What the API server checks: the served certificate chains to a CA in every caBundle."""
    leaf = (cert_dir / "tls.crt").read_bytes()
    return all(
        any(certs.is_signed_by(leaf, ca.public_bytes(serialization.Encoding.PEM))
            for ca in certs.load_pem_certificates(bundle))
        for bundle in api.bundles()
    )  # fmt: skip


def _ca_count(bundle: bytes) -> int:
    return len(certs.load_pem_certificates(bundle))


def test_selfmanaged_first_pass_creates_ca_injects_and_is_ready(api: FakeApi, tmp_path: Path) -> None:
    clock = Clock()
    manager = _manager(api, tmp_path, clock)
    assert not manager.is_ready()
    assert manager.ensure() is True and manager.is_ready()
    assert selfcerts.injected(tmp_path)
    secret = api.objects[SECRET]
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert secret["type"] == "Opaque"
    assert api.bundles() == [ca, ca, ca]
    assert certs.is_signed_by((tmp_path / "tls.crt").read_bytes(), ca)
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    dns, ips = certs.cert_sans((tmp_path / "tls.crt").read_bytes())
    assert "kafka-expose.kafka-expose.svc" in dns and ips == ["127.0.0.1"]
    assert (tmp_path / "ca.crt").read_bytes() == ca
    # idempotent: a second pass writes nothing
    versions = {p: o["metadata"]["resourceVersion"] for p, o in api.objects.items()}
    cert_before = (tmp_path / "tls.crt").read_bytes()
    assert manager.ensure() is True
    assert versions == {p: o["metadata"]["resourceVersion"] for p, o in api.objects.items()}
    assert (tmp_path / "tls.crt").read_bytes() == cert_before


def test_selfmanaged_not_ready_without_its_webhook_configuration(api: FakeApi, tmp_path: Path) -> None:
    del api.objects[VALIDATING]
    manager = _manager(api, tmp_path, Clock())
    assert manager.ensure() is False and not manager.is_ready()
    assert not selfcerts.injected(tmp_path)
    api.put_object(VALIDATING, _config("ValidatingWebhookConfiguration", ["pods.kafka-expose.io"]))
    assert manager.ensure() is True


def test_replicas_agree_on_one_ca_even_when_racing_to_create_it(api: FakeApi, tmp_path: Path) -> None:
    clock = Clock()
    one, two = _manager(api, tmp_path / "one", clock), _manager(api, tmp_path / "two", clock)
    # `two` reads "no Secret", then `one` creates it before `two` POSTs: two gets 409 and re-reads.
    api.before_create.append(lambda: _manager(api, tmp_path / "one", clock)._sync_secret(clock()))
    assert two.ensure() is True
    assert one.ensure() is True
    ca = base64.b64decode(api.objects[SECRET]["data"]["ca.crt"])
    for d in ("one", "two"):
        assert certs.is_signed_by((tmp_path / d / "tls.crt").read_bytes(), ca)
    assert ("POST", "/api/v1/namespaces/kafka-expose/secrets") in api.calls
    assert all(b == ca for b in api.bundles())


def test_rotation_appends_before_switching_and_drops_only_after_expiry(api: FakeApi, tmp_path: Path) -> None:
    clock = Clock()
    one, two = _manager(api, tmp_path / "one", clock), _manager(api, tmp_path / "two", clock)
    assert one.ensure() and two.ensure()
    old_ca = base64.b64decode(api.objects[SECRET]["data"]["ca.crt"])

    # stage: the new CA is trusted everywhere, nobody serves with it yet
    assert one.rotate_ca() is True
    secret = api.objects[SECRET]
    new_ca = base64.b64decode(secret["data"]["next-ca.crt"])
    assert base64.b64decode(secret["data"]["ca.crt"]) == old_ca
    assert all(b == old_ca + new_ca for b in api.bundles())
    assert two.ensure() is True
    for d in ("one", "two"):
        assert certs.is_signed_by((tmp_path / d / "tls.crt").read_bytes(), old_ca)
        assert _trusted_by_all(api, tmp_path / d)

    # not promoted before the propagation delay
    clock.advance(dt.timedelta(seconds=10))
    assert one.ensure() and "next-ca.crt" in api.objects[SECRET]["data"]

    # promote: the new CA signs, the old one stays trusted
    clock.advance(dt.timedelta(seconds=25))
    assert one.ensure() is True
    secret = api.objects[SECRET]
    assert base64.b64decode(secret["data"]["ca.crt"]) == new_ca
    assert base64.b64decode(secret["data"]["previous-ca.crt"]) == old_ca
    assert "next-ca.crt" not in secret["data"]
    assert all(b == old_ca + new_ca for b in api.bundles())
    assert certs.is_signed_by((tmp_path / "one" / "tls.crt").read_bytes(), new_ca)
    # replica two has not run yet: its old certificate is still trusted
    assert certs.is_signed_by((tmp_path / "two" / "tls.crt").read_bytes(), old_ca)
    assert _trusted_by_all(api, tmp_path / "one") and _trusted_by_all(api, tmp_path / "two")
    assert two.ensure() is True
    assert certs.is_signed_by((tmp_path / "two" / "tls.crt").read_bytes(), new_ca)

    # retire: once every certificate the old CA signed has expired
    clock.advance(dt.timedelta(minutes=30))
    assert one.ensure() and _ca_count(api.bundles()[0]) == 2
    clock.advance(dt.timedelta(minutes=31))
    assert one.ensure() is True
    assert "previous-ca.crt" not in api.objects[SECRET]["data"]
    assert all(b == new_ca for b in api.bundles())
    assert two.ensure() and _trusted_by_all(api, tmp_path / "two")


def test_serving_cert_is_renewed_before_expiry(api: FakeApi, tmp_path: Path) -> None:
    clock = Clock()
    manager = _manager(api, tmp_path, clock)
    assert manager.ensure()
    first = (tmp_path / "tls.crt").read_bytes()
    assert manager.next_wakeup is not None
    assert manager.next_wakeup <= dt.timedelta(minutes=41)
    clock.advance(dt.timedelta(minutes=39))
    assert manager.ensure() and (tmp_path / "tls.crt").read_bytes() == first
    clock.advance(dt.timedelta(minutes=2))
    assert manager.ensure() and (tmp_path / "tls.crt").read_bytes() != first


def test_ca_rotates_by_itself_near_its_expiry(api: FakeApi, tmp_path: Path) -> None:
    clock = Clock()
    manager = _manager(api, tmp_path, clock)
    assert manager.ensure()
    clock.advance(dt.timedelta(days=23))  # 30-day CA, rotation when less than 6 days are left
    assert manager.ensure()
    assert "next-ca.crt" not in api.objects[SECRET]["data"]
    clock.advance(dt.timedelta(days=2))
    assert manager.ensure()
    assert "next-ca.crt" in api.objects[SECRET]["data"]
    assert _ca_count(api.bundles()[0]) == 2


def test_a_broken_secret_is_replaced(api: FakeApi, tmp_path: Path) -> None:
    clock = Clock()
    api.put_object(SECRET, {"metadata": {"name": "kafka-expose-ca"}, "data": {"ca.crt": "bm9wZQ=="}})
    manager = _manager(api, tmp_path, clock)
    assert manager.ensure() is True
    ca = base64.b64decode(api.objects[SECRET]["data"]["ca.crt"])
    assert certs.is_signed_by((tmp_path / "tls.crt").read_bytes(), ca)


def test_a_stale_replica_cannot_remove_a_staged_ca(api: FakeApi, tmp_path: Path) -> None:
    """The caBundle patch is computed from a Secret read after the configuration read."""
    clock = Clock()
    one, two = _manager(api, tmp_path / "one", clock), _manager(api, tmp_path / "two", clock)
    assert one.ensure() and two.ensure()
    original = api._handle

    def handle(method: str, url: str, body: Any) -> tuple[int, Any]:
        # Just before `two` patches a configuration, `one` stages (and injects) a new CA.
        if method == "PATCH" and not handle.done:  # type: ignore[attr-defined]
            handle.done = True  # type: ignore[attr-defined]
            api._handle = original  # type: ignore[method-assign]
            one.rotate_ca()
            api._handle = handle  # type: ignore[method-assign]
        return original(method, url, body)

    handle.done = False  # type: ignore[attr-defined]
    # make `two` want to patch: blank one caBundle
    api.objects[MUTATING]["webhooks"][0]["clientConfig"]["caBundle"] = ""
    api._handle = handle  # type: ignore[method-assign]
    assert two.ensure() is True
    assert all(_ca_count(b) == 2 for b in api.bundles())


def test_from_args_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert")
    parser.add_argument("--key")
    serve_cli.add_self_managed_arguments(parser)
    monkeypatch.setenv("POD_NAMESPACE", "team-x")
    args = parser.parse_args(["--self-managed", "--cert", "/certs/tls.crt", "--key", "/certs/tls.key"])
    manager = serve_cli.from_args(args, FakeApi())
    assert args.self_managed
    assert manager.namespace == "team-x" and manager.secret_name == "kafka-expose-ca"
    assert manager.cert_path == Path("/certs/tls.crt") and manager.key_path == Path("/certs/tls.key")
    assert manager.mutating_names == ("kafka-expose",) and manager.validating_names == ("kafka-expose",)
    assert "kafka-expose.team-x.svc" in manager.dns_names


def test_first_pass_retries_until_the_api_answers(api: FakeApi, tmp_path: Path) -> None:
    failures = iter(range(2))
    original = api._handle

    def flaky(method: str, url: str, body: Any) -> tuple[int, Any]:
        if next(failures, None) is not None:
            return 503, {"message": "unavailable"}
        return original(method, url, body)

    api._handle = flaky  # type: ignore[method-assign]
    manager = _manager(api, tmp_path, Clock())
    manager.first_pass(timeout=10)
    assert manager.is_ready() and (tmp_path / "tls.crt").exists()


def test_run_loop_becomes_ready_and_stops(api: FakeApi, tmp_path: Path) -> None:
    manager = _manager(api, tmp_path, Clock())
    thread, stop = manager.start(interval=0.05)
    try:
        assert manager.ready.wait(10)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
