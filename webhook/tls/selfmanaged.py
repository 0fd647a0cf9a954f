"""Self-managed certificates (`kafka-expose serve --self-managed`).

The server keeps its CA in a Secret, issues itself a short-lived serving certificate, writes it to
files the TLS server hot-reloads, and patches `caBundle` into its own webhook configurations. It
reports ready only once every webhook's `caBundle` trusts the CA that signed the certificate it
serves. Several replicas share one CA because the Secret is the single source of truth: creation
races end in 409 AlreadyExists (re-read), and every change is a `replace` guarded by the Secret's
resourceVersion (409 Conflict: re-read and decide again).

The Secret (type Opaque) holds:

    ca.crt, ca.key            the current CA: it signs every replica's serving certificate
    next-ca.crt, next-ca.key  a staged CA (during a rotation): already trusted, not yet signing
    previous-ca.crt           the CA before the last rotation: still trusted until every certificate
                              it signed has expired
    annotations kafka-expose.io/next-ca-since and kafka-expose.io/previous-ca-until (RFC 3339)

A rotation never breaks trust because a CA enters `caBundle` before anything is signed by it and
leaves it only after everything it signed has expired:

1. stage: a new CA goes to `next-*`; every webhook's caBundle becomes previous + current + next;
2. promote (once `next` has been in every caBundle for `propagation_delay`, so the API server's
   informer has seen it): next becomes current, current becomes previous with `previous-ca-until`
   = now + cert_validity + propagation_delay; each replica re-issues its certificate from the new
   CA on its next pass;
3. retire: after `previous-ca-until`, previous leaves the Secret and the caBundles.

A rotation starts by itself when the current CA has less than `ca_renew_before` left, or on
`rotate_ca()`. The serving certificate is re-issued when it has less than `renew_before` left, is
not signed by the current CA, does not match its key or lacks a wanted name.

caBundle writes are JSON patches guarded by the webhook configuration's resourceVersion, computed
from a Secret read *after* the configuration was read: a replica holding an old view of the Secret
can then never remove a CA another replica has just added (its patch fails the test and retries).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from webhook.core.names import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from webhook.kube.client import ApiError, Kube
from webhook.tls import primitives as certs
from webhook.tls.rotation import NEXT_SINCE, PREVIOUS_UNTIL, CAState, Rotation, b64, der_set, unb64

log = logging.getLogger(__name__)

MANAGED_BY = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "app.kubernetes.io/component": "webhook-ca"}
_ATTEMPTS = 8
API_TIMEOUT_SECONDS = 10.0
# Written into cert_dir while ready, removed when not: worker processes forked by gunicorn cannot see
# the `ready` event of the process running the loop, but they can see this file (see `injected`).
READY_FILE = ".ca-injected"

WebhookConfigNames = tuple[Sequence[str], Sequence[str]]
Clock = Callable[[], dt.datetime]


class SelfManagedCerts:
    """Keeps the webhook's CA (in a Secret), serving certificate (in files) and caBundles in step."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        secret_name: str,
        service_name: str,
        webhook_config_names: WebhookConfigNames,
        cert_dir: str | os.PathLike[str],
        ca_validity: dt.timedelta = dt.timedelta(days=730),
        cert_validity: dt.timedelta = dt.timedelta(hours=24),
        renew_before: dt.timedelta = dt.timedelta(hours=8),
        *,
        ca_renew_before: dt.timedelta | None = None,
        propagation_delay: dt.timedelta = dt.timedelta(seconds=30),
        extra_dns_names: Iterable[str] = (),
        extra_ip_addresses: Iterable[str] = (),
        cert_file: str = "tls.crt",
        key_file: str = "tls.key",
        clock: Clock | None = None,
    ) -> None:
        if renew_before >= cert_validity:
            raise ValueError("renew_before must be shorter than cert_validity")
        self.kube = Kube(api_client, timeout=API_TIMEOUT_SECONDS)
        self.namespace = namespace
        self.secret_name = secret_name
        self.service_name = service_name
        self.mutating_names = tuple(webhook_config_names[0])
        self.validating_names = tuple(webhook_config_names[1])
        self.cert_dir = Path(cert_dir)
        self.cert_path = self.cert_dir / cert_file
        self.key_path = self.cert_dir / key_file
        self.ca_path = self.cert_dir / "ca.crt"
        self.ready_path = self.cert_dir / READY_FILE
        self.ca_validity = ca_validity
        self.cert_validity = cert_validity
        self.renew_before = renew_before
        self.ca_renew_before = ca_renew_before or max(ca_validity / 5, 2 * cert_validity)
        self.propagation_delay = propagation_delay
        self.rotation = Rotation(self.cert_validity, self.ca_renew_before, propagation_delay)
        self.dns_names = certs.service_dns_names(service_name, namespace) + list(extra_dns_names)
        self.ip_addresses = list(extra_ip_addresses)
        self.clock: Clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._force_rotation = False
        self.next_wakeup: dt.timedelta | None = None
        self.last_error: str | None = None

    # ---- public ---------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def ensure(self) -> bool:
        """One idempotent pass; returns (and records in `ready`) whether the CA is injected."""
        with self._lock:
            now = self.clock()
            state = self._sync_secret(now)
            # The certificate files first: the server can start listening while caBundle is patched
            # (the current CA is in every bundle already, unless it was just created).
            self._ensure_serving_cert(state, now)
            injected = self._inject(now)
            ready = injected and self._serving_cert_ok(state.ca_cert, now)
            self._set_ready(ready)
            self.next_wakeup = self.rotation.wakeup(state, now, self._renew_serving_at())
            self.last_error = None
            return ready

    def _set_ready(self, ready: bool) -> None:
        if ready:
            if not self.ready_path.exists():
                certs.write_file(self.ready_path, b"ok\n")
            self.ready.set()
        else:
            self.ready.clear()
            self.ready_path.unlink(missing_ok=True)

    def rotate_ca(self) -> bool:
        """Stage a new CA now (unless one is already staged) and run a pass."""
        with self._lock:
            self._force_rotation = True
        return self.ensure()

    def run(self, stop_event: threading.Event, interval: float = 60.0) -> None:
        """Loop until `stop_event` is set: a pass, then a wait (shorter while not ready or rotating)."""
        failures = 0
        while not stop_event.is_set():
            try:
                self.ensure()
                failures = 0
                wait = interval
                if not self.is_ready():
                    wait = min(interval, 1.0)
                if self.next_wakeup is not None:
                    wait = min(wait, max(self.next_wakeup.total_seconds(), 0.2))
            except Exception as err:  # keep serving with what we have; retry with backoff
                failures += 1
                self.last_error = str(err)
                wait = min(interval, 0.5 * 2 ** min(failures, 7))
                log.warning("self-managed certificates: pass failed (retry in %.1fs): %s", wait, err)
            stop_event.wait(wait)

    def first_pass(self, timeout: float = 60.0, stop_event: threading.Event | None = None) -> bool:
        """Retry `ensure()` until the certificate files exist (for a server about to start); returns
        whether ready. Raises the last error after `timeout` seconds without certificate files."""
        import time

        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            try:
                return self.ensure()
            except Exception as err:
                if self.cert_path.exists() and self.key_path.exists():
                    log.warning("self-managed certificates: first pass incomplete: %s", err)
                    return False
                if time.monotonic() + delay > deadline or (stop_event and stop_event.is_set()):
                    raise
                log.warning("self-managed certificates: first pass failed (retry in %.1fs): %s", delay, err)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def start(self, interval: float = 60.0) -> tuple[threading.Thread, threading.Event]:
        """Run `run()` in a daemon thread; returns the thread and the event that stops it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop, interval), name="self-managed-certs", daemon=True
        )
        thread.start()
        return thread, stop

    def current_bundle(self) -> bytes:
        """The bundle the Secret says should be trusted now (reads the Secret)."""
        return CAState(self._read_secret() or {}).bundle(self.clock())

    # ---- the Secret -----------------------------------------------------------------------------

    def _secret_path(self, name: str | None = None) -> str:
        base = f"/api/v1/namespaces/{self.namespace}/secrets"
        return f"{base}/{name}" if name else base

    def _read_secret(self) -> dict[str, Any] | None:
        try:
            secret: dict[str, Any] = self.kube.request("GET", self._secret_path(self.secret_name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        return secret

    def _new_secret_body(self, state: CAState) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.secret_name,
                "namespace": self.namespace,
                "labels": dict(MANAGED_BY),
                "annotations": state.to_annotations(),
            },
            "data": state.to_data(),
        }

    def _fresh_ca(self) -> tuple[bytes, bytes]:
        stamp = self.clock().strftime("%Y%m%dT%H%M%SZ")
        return certs.make_ca(
            f"kafka-expose-webhook-ca {self.namespace} {stamp}", self.ca_validity, now=self.clock()
        )

    def _sync_secret(self, now: dt.datetime) -> CAState:
        """Get or create the CA Secret and apply at most the due transitions; returns the state."""
        for _ in range(_ATTEMPTS):
            secret = self._read_secret()
            if secret is None:
                state = CAState({})
                state.ca_cert, state.ca_key = self._fresh_ca()
                try:
                    created = self.kube.create(self._secret_path(), self._new_secret_body(state))
                    log.info("created CA Secret %s/%s", self.namespace, self.secret_name)
                    return CAState(created)
                except ApiError as err:
                    if err.status == 409:  # another replica won the race: use its CA
                        continue
                    raise
            state = CAState(secret)
            if not self.rotation.transition(
                state, now, self._fresh_ca, self._all_bundles_contain, self._force_rotation
            ):
                self._force_rotation = False
                return state
            secret.setdefault("metadata", {})
            annotations = {
                k: v
                for k, v in (secret["metadata"].get("annotations") or {}).items()
                if k not in (NEXT_SINCE, PREVIOUS_UNTIL)
            }
            annotations.update(state.to_annotations())
            secret["metadata"]["annotations"] = annotations
            secret["data"] = state.to_data()
            secret["type"] = secret.get("type") or "Opaque"
            try:
                replaced = self.kube.replace(self._secret_path(self.secret_name), secret)
                self._force_rotation = False
                return CAState(replaced)
            except ApiError as err:
                if err.status in (409, 404):  # somebody else changed (or deleted) it: decide again
                    continue
                raise
        raise RuntimeError(f"CA Secret {self.namespace}/{self.secret_name}: too many conflicting updates")

    # ---- the webhook configurations -------------------------------------------------------------

    def _config_paths(self) -> list[str]:
        group = "/apis/admissionregistration.k8s.io/v1"
        return [f"{group}/mutatingwebhookconfigurations/{n}" for n in self.mutating_names] + [
            f"{group}/validatingwebhookconfigurations/{n}" for n in self.validating_names
        ]

    def _read_config(self, path: str) -> dict[str, Any] | None:
        try:
            config: dict[str, Any] = self.kube.request("GET", path)
        except ApiError as err:
            if err.status == 404:
                log.warning("webhook configuration %s not found", path.rsplit("/", 1)[-1])
                return None
            raise
        return config

    @staticmethod
    def _bundles(config: dict[str, Any]) -> list[bytes]:
        return [
            unb64((hook.get("clientConfig") or {}).get("caBundle")) for hook in config.get("webhooks") or []
        ]

    def _all_bundles_contain(self, ca_pem: bytes) -> bool:
        wanted = der_set(ca_pem)
        if not wanted:
            return False
        for path in self._config_paths():
            config = self._read_config(path)
            if config is None:
                return False
            for bundle in self._bundles(config):
                if not set(wanted) <= set(der_set(bundle)):
                    return False
        return True

    def _inject(self, now: dt.datetime) -> bool:
        """Make every webhook's caBundle the Secret's bundle; True once all trust the current CA."""
        all_ok = True
        for path in self._config_paths():
            for _ in range(_ATTEMPTS):
                config = self._read_config(path)
                if config is None:
                    all_ok = False
                    break
                # Read the Secret after the configuration (see the module docstring).
                state = CAState(self._read_secret() or {})
                bundle = state.bundle(now)
                encoded = b64(bundle)
                hooks = config.get("webhooks") or []
                ops: list[dict[str, Any]] = []
                for index, hook in enumerate(hooks):
                    if (hook.get("clientConfig") or {}).get("caBundle") != encoded:
                        ops.append(
                            {
                                "op": "add",
                                "path": f"/webhooks/{index}/clientConfig/caBundle",
                                "value": encoded,
                            }
                        )
                if not ops:
                    current = set(der_set(state.ca_cert))
                    if not hooks or not current or not current <= set(der_set(bundle)):
                        all_ok = False
                    break
                version = (config.get("metadata") or {}).get("resourceVersion", "")
                patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, *ops]
                try:
                    self.kube.json_patch(path, patch)
                    log.info(
                        "caBundle of %s updated (%d CA(s))", path.rsplit("/", 1)[-1], len(der_set(bundle))
                    )
                except ApiError as err:
                    # 409: resourceVersion moved (another replica or a user wrote it); 422: the test op
                    # failed on a server that reports it that way. Read both again and retry.
                    if err.status in (409, 422):
                        continue
                    raise
            else:
                all_ok = False
        return all_ok

    # ---- the serving certificate ----------------------------------------------------------------

    def _renew_serving_at(self) -> dt.datetime | None:
        try:
            return certs.cert_not_after(self.cert_path.read_bytes()) - self.renew_before
        except (OSError, ValueError):
            return None

    def _serving_cert_ok(self, ca_cert: bytes, now: dt.datetime) -> bool:
        try:
            cert = self.cert_path.read_bytes()
            key = self.key_path.read_bytes()
        except OSError:
            return False
        if not (ca_cert and certs.is_signed_by(cert, ca_cert) and certs.key_matches(cert, key)):
            return False
        try:
            if certs.cert_not_after(cert) - now < self.renew_before:
                return False
            dns, ips = certs.cert_sans(cert)
        except ValueError:
            return False
        return set(self.dns_names) <= set(dns) and {str(i) for i in self.ip_addresses} <= set(ips)

    def _ensure_serving_cert(self, state: CAState, now: dt.datetime) -> None:
        if self._serving_cert_ok(state.ca_cert, now):
            if self.ca_path.exists() and self.ca_path.read_bytes() == state.bundle(now):
                return
        else:
            cert, key = certs.issue_serving_cert(
                state.ca_cert, state.ca_key, self.dns_names, self.ip_addresses, self.cert_validity, now=now
            )
            self.cert_dir.mkdir(parents=True, exist_ok=True)
            # Key first: a reloader that watches the certificate then always finds its key.
            certs.write_file(self.key_path, key, 0o600)
            certs.write_file(self.cert_path, cert)
            log.info("issued a serving certificate valid until %s", certs.cert_not_after(cert).isoformat())
        certs.write_file(self.ca_path, state.bundle(now))


def injected(cert_dir: str | os.PathLike[str]) -> bool:
    """True while a SelfManagedCerts writing into `cert_dir` reports ready (any process may ask)."""
    return (Path(cert_dir) / READY_FILE).exists()
