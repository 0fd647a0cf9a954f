"""A real Kubernetes control plane for tests: etcd, kube-apiserver and
kube-controller-manager built from source by ``tools/build-controlplane.sh``,
run as local processes on free loopback ports (no Docker, no kind, no kubelet).

Plus :class:`NodeAgentStandIn`, a *stand-in* for the kubelet: it only patches
pod status so controllers that wait for Running/Ready pods (StatefulSets with
the default OrderedReady policy) make progress. No container is ever run.

Plain module, no pytest imports. Typical use::

    with ControlPlane() as cp, NodeAgentStandIn(cp):
        api = kubernetes.client.CoreV1Api(cp.api_client())
        ...

Design choices (mirroring controller-runtime's envtest where it has one):

* Authentication: client certificates from a per-plane CA. The admin user is
  ``admin`` in group ``system:masters``; :meth:`ControlPlane.kubeconfig_for`
  issues more. Authorization is RBAC only.
* ServiceAccount admission is disabled by default (as envtest does): pods are
  not given a service-account token volume, and a pod can be created in a
  namespace right after the namespace itself, without racing the
  serviceaccount-controller. ``ControlPlane(service_account_admission=True)``
  enables it (pods then get the projected ``kube-api-access-*`` volume that
  real clusters add) and also runs the serviceaccount-token controller.
* kube-controller-manager runs :data:`DEFAULT_CONTROLLERS` with
  ``--leader-elect=false``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import kubernetes.client
import requests
import urllib3
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.tlsutil import CA, key_pem

__all__ = [
    "DEFAULT_CONTROLLERS",
    "REPO_ROOT",
    "ControlPlane",
    "ControlPlaneBinariesMissing",
    "ControlPlaneError",
    "ControlPlaneStartError",
    "NodeAgentStandIn",
    "WaitTimeout",
    "ensure_no_proxy",
    "find_bin_dir",
    "wait_for",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-controlplane.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "helm")

#: Controllers run by kube-controller-manager. All cheap; none needs nodes.
DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "statefulset-controller",
    "garbage-collector-controller",  # cascading deletes (ownerReferences)
    "namespace-controller",  # namespace deletion empties the namespace
    "deployment-controller",
    "replicaset-controller",
    "serviceaccount-controller",  # "default" ServiceAccount per namespace
    "root-ca-certificate-publisher-controller",  # kube-root-ca.crt ConfigMap
    "clusterrole-aggregation-controller",  # fills admin/edit/view ClusterRoles
    "persistentvolumeclaim-protection-controller",  # lets StatefulSet PVCs go with their namespace
    "endpointslice-controller",  # EndpointSlices: what the load-balancer stand-in routes through
)

_LOOPBACK_NO_PROXY = ("127.0.0.1", "localhost", "::1")


class ControlPlaneError(RuntimeError):
    """Base class of this module's errors."""


class ControlPlaneBinariesMissing(ControlPlaneError):
    """The binaries have not been built (run tools/build-controlplane.sh)."""


class ControlPlaneStartError(ControlPlaneError):
    """A component did not start; the message carries the tail of its logs."""


class WaitTimeout(TimeoutError, AssertionError):
    """`wait_for` gave up: a TimeoutError, and an AssertionError for the tests that wait on a condition."""


# --------------------------------------------------------------------------
# binaries


def find_bin_dir() -> Path:
    """Directory holding etcd, kube-apiserver, kube-controller-manager, helm.

    ``$KAFKA_EXPOSE_BIN`` wins; otherwise the cache dir that
    ``tools/build-controlplane.sh --print-bin-dir`` names (it honours
    ``$KAFKA_EXPOSE_CACHE``). Raises :class:`ControlPlaneBinariesMissing` if a
    binary is missing.
    """
    env = os.environ.get("KAFKA_EXPOSE_BIN")
    if env:
        bin_dir = Path(env)
    else:
        try:
            out = subprocess.run(
                ["bash", str(BUILD_SCRIPT), "--print-bin-dir"],
                check=True,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.SubprocessError) as e:
            raise ControlPlaneBinariesMissing(
                f"cannot ask {BUILD_SCRIPT} for the bin dir ({e}); set KAFKA_EXPOSE_BIN"
            ) from e
        bin_dir = Path(out.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise ControlPlaneBinariesMissing(
            f"control-plane binaries missing in {bin_dir}: {', '.join(missing)}. "
            f"Build them with: {BUILD_SCRIPT.relative_to(REPO_ROOT)} "
            "(cold build ~17 min on 2 cores, cached afterwards), "
            "or point KAFKA_EXPOSE_BIN at a directory that has them."
        )
    return bin_dir


# --------------------------------------------------------------------------
# certificates


class _CA:
    """A throw-away certificate authority (EC P-256), valid ten years."""

    def __init__(self, common_name: str) -> None:
        self._root = CA(common_name, days=3650)
        self.cert_pem = self._root.cert_pem

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        hosts: Sequence[str] = (),
        client: bool = False,
        server: bool = False,
        days: int = 3650,
    ) -> tuple[bytes, bytes]:
        """Returns (certificate PEM, private key PEM)."""
        now = datetime.datetime.now(datetime.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        return self._root.issue_pem(
            common_name,
            hosts,
            usages=usages,
            organizations=organizations,
            not_before=now - datetime.timedelta(hours=1),
            not_after=now + datetime.timedelta(days=days),
        )


# --------------------------------------------------------------------------
# processes


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(data[-lines:])


def _no_proxy_value(current: str | None) -> str:
    parts = [p for p in (current or "").split(",") if p]
    for h in _LOOPBACK_NO_PROXY:
        if h not in parts:
            parts.append(h)
    return ",".join(parts)


def ensure_no_proxy(env: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Add loopback to NO_PROXY/no_proxy so no client sends 127.0.0.1 to a proxy."""
    value = _no_proxy_value(env.get("NO_PROXY") or env.get("no_proxy"))
    env["NO_PROXY"] = value
    env["no_proxy"] = value


@dataclass
class _Proc:
    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as logf:
            logf.write(f"==== start #{self.starts}: {' '.join(self.args)}\n".encode())
            logf.flush()
            # New session = own process group, so stop() can signal the group.
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15.0, sig: signal.Signals = signal.SIGTERM) -> None:
        p = self.popen
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not exit after SIGTERM; killing", self.name)
        # Whatever is left of the group (the leader may have exited already).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        self.popen = None


# --------------------------------------------------------------------------
# the control plane


@dataclass
class _Creds:
    cert: Path
    key: Path


@dataclass
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    kcm: int


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports.

    Attributes available after :meth:`start`:

    * ``tmpdir`` - working dir: certs, kubeconfigs, etcd data, ``*.log``
    * ``kubeconfig_path`` - admin kubeconfig (user ``admin``, group ``system:masters``)
    * ``api_url`` - ``https://127.0.0.1:<port>``
    * ``ca_pem`` / ``ca_path`` - the CA that signs every cert here (serving and client)
    * ``bin_dir`` - where the binaries (including ``helm``) are
    """

    def __init__(
        self,
        bin_dir: str | Path | None = None,
        *,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        service_account_admission: bool = False,
        extra_apiserver_args: Sequence[str] = (),
        extra_kcm_args: Sequence[str] = (),
        startup_timeout: float = 120.0,
        keep_tmpdir: bool | None = None,
        verbosity: int = 1,
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_bin_dir()
        self.controllers = tuple(controllers)
        if service_account_admission and "serviceaccount-token-controller" not in self.controllers:
            self.controllers += ("serviceaccount-token-controller",)
        self.service_account_admission = service_account_admission
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.extra_kcm_args = list(extra_kcm_args)
        self.startup_timeout = startup_timeout
        if keep_tmpdir is None:
            keep_tmpdir = os.environ.get("KAFKA_EXPOSE_KEEP_TMP", "") not in ("", "0")
        self.keep_tmpdir = keep_tmpdir
        self.verbosity = verbosity

        self._tmpdir: Path | None = None
        self._ports: _Ports | None = None
        self._ca: _CA | None = None
        self._admin: _Creds | None = None
        self._procs: dict[str, _Proc] = {}
        self._issued = 0
        self._lock = threading.Lock()

    # -- public attributes ---------------------------------------------------

    @property
    def tmpdir(self) -> Path:
        if self._tmpdir is None:
            raise ControlPlaneError("control plane not started")
        return self._tmpdir

    @property
    def ports(self) -> _Ports:
        if self._ports is None:
            raise ControlPlaneError("control plane not started")
        return self._ports

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.etcd_client}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.tmpdir / "admin.kubeconfig"

    @property
    def ca_path(self) -> Path:
        return self.tmpdir / "pki" / "ca.crt"

    @property
    def ca_pem(self) -> bytes:
        if self._ca is None:
            raise ControlPlaneError("control plane not started")
        return self._ca.cert_pem

    @property
    def helm_path(self) -> Path:
        return self.bin_dir / "helm"

    def log_paths(self) -> dict[str, Path]:
        """Log file of each component (exists once the component was started)."""
        return {name: p.log_path for name, p in self._procs.items()}

    def logs_tail(self, lines: int = 40) -> str:
        """The last lines of every component's log, for failure reports."""
        return "\n".join(
            f"----- {name} ({path}) -----\n{_tail(path, lines)}" for name, path in self.log_paths().items()
        )

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start etcd, kube-apiserver, kube-controller-manager and wait until ready.

        On failure everything started so far is stopped (the tmpdir is kept so
        the logs can be read) and :class:`ControlPlaneStartError` is raised with
        the tail of the logs.
        """
        if self._tmpdir is not None:
            raise ControlPlaneError("already started")
        ensure_no_proxy()
        self._tmpdir = Path(tempfile.mkdtemp(prefix="kafka-expose-cp-"))
        atexit.register(self.stop)
        try:
            self._prepare()
            self._start_proc("etcd")
            self._wait_etcd()
            self._start_proc("kube-apiserver")
            self._wait_apiserver()
            self._start_proc("kube-controller-manager")
            self._wait_kcm()
        except BaseException:
            self.stop(remove_tmpdir=False)
            raise
        log.info("control plane up at %s (tmpdir %s)", self.api_url, self._tmpdir)
        return self

    def stop(self, remove_tmpdir: bool | None = None) -> None:
        """Stop every process (KCM, apiserver, etcd; whole process groups).

        Removes the tmpdir unless ``remove_tmpdir=False`` or ``keep_tmpdir``.
        Safe to call more than once.
        """
        atexit.unregister(self.stop)
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            p = self._procs.get(name)
            if p is not None:
                p.stop()
        if remove_tmpdir is None:
            remove_tmpdir = not self.keep_tmpdir
        if remove_tmpdir and self._tmpdir is not None and self._tmpdir.exists():
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def stop_component(self, component: str, *, kill: bool = False) -> None:
        """Stop one of "etcd", "kube-apiserver", "kube-controller-manager"
        (SIGTERM, or SIGKILL with ``kill=True``); the others keep running."""
        self._procs[component].stop(sig=signal.SIGKILL if kill else signal.SIGTERM)

    def start_component(self, component: str) -> None:
        """Start a stopped component again (same flags, ports, data) and wait
        until it is healthy. No-op if it is running."""
        p = self._procs[component]
        if p.running():
            return
        p.start()
        {
            "etcd": self._wait_etcd,
            "kube-apiserver": self._wait_apiserver,
            "kube-controller-manager": self._wait_kcm,
        }[component]()

    def stop_apiserver(self, *, kill: bool = False) -> None:
        """Stop kube-apiserver only (etcd and KCM keep running)."""
        self.stop_component("kube-apiserver", kill=kill)

    def start_apiserver(self) -> None:
        """Start kube-apiserver again, same port, same etcd; wait for /readyz."""
        self.start_component("kube-apiserver")

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def is_running(self, component: str) -> bool:
        p = self._procs.get(component)
        return p is not None and p.running()

    # -- clients and credentials ------------------------------------------

    def issue_client_cert(self, user: str, groups: Sequence[str] = ()) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) for ``user`` in ``groups`` (x509 O= fields)."""
        if self._ca is None:
            raise ControlPlaneError("control plane not started")
        return self._ca.issue(user, organizations=groups, client=True)

    def issue_serving_cert(self, *hosts: str) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) of a TLS server cert for ``hosts`` (IPs or DNS
        names; default 127.0.0.1 and localhost), signed by :attr:`ca_pem`. Use
        ``base64(ca_pem)`` as the caBundle of a webhook served with it."""
        if self._ca is None:
            raise ControlPlaneError("control plane not started")
        hosts = hosts or ("127.0.0.1", "localhost")
        return self._ca.issue(hosts[0], hosts=hosts, server=True)

    def kubeconfig_for(self, user: str, groups: Sequence[str] = ()) -> Path:
        """Write a kubeconfig authenticating as ``user`` (groups ``groups``)
        with a client cert from the plane's CA; returns its path. Note that
        RBAC gives such a user nothing unless a (Cluster)RoleBinding does."""
        with self._lock:
            self._issued += 1
            n = self._issued
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        creds = self._write_creds(f"user-{n}-{safe}", *self.issue_client_cert(user, groups))
        path = self.tmpdir / f"user-{n}-{safe}.kubeconfig"
        self._write_kubeconfig(path, user, creds)
        return path

    def api_client(self, kubeconfig: str | Path | None = None) -> kubernetes.client.ApiClient:
        """A ``kubernetes.client.ApiClient`` for the admin kubeconfig (or the given one)."""
        return _api_client_from_kubeconfig(Path(kubeconfig or self.kubeconfig_path))

    def requests_session(self) -> requests.Session:
        """A ``requests.Session`` authenticated as admin; prefix paths with ``api_url``."""
        s = requests.Session()
        assert self._admin is not None
        s.cert = (str(self._admin.cert), str(self._admin.key))
        s.verify = str(self.ca_path)
        s.trust_env = False  # loopback only: never a proxy
        return s

    def env(self, kubeconfig: str | Path | None = None) -> dict[str, str]:
        """Environment for child processes (helm, a webhook server, ...):
        KUBECONFIG, NO_PROXY, and HELM_* dirs inside the tmpdir so helm never
        touches $HOME."""
        env = dict(os.environ)
        ensure_no_proxy(env)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig_path)
        helm_home = self.tmpdir / "helm"
        env["HELM_CACHE_HOME"] = str(helm_home / "cache")
        env["HELM_CONFIG_HOME"] = str(helm_home / "config")
        env["HELM_DATA_HOME"] = str(helm_home / "data")
        return env

    def helm(
        self,
        *args: str,
        kubeconfig: str | Path | None = None,
        check: bool = True,
        timeout: float = 120.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built helm with ``--kubeconfig`` of this plane (never add --wait:
        there is no kubelet)."""
        kc = str(kubeconfig or self.kubeconfig_path)
        cmd = [str(self.helm_path), "--kubeconfig", kc, *args]
        r = subprocess.run(
            cmd,
            env=self.env(kc),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
        return r

    # -- internals ---------------------------------------------------------

    def _write_creds(self, name: str, cert_pem: bytes, key_pem: bytes) -> _Creds:
        pki = self.tmpdir / "pki"
        c, k = pki / f"{name}.crt", pki / f"{name}.key"
        c.write_bytes(cert_pem)
        k.write_bytes(key_pem)
        k.chmod(0o600)
        return _Creds(c, k)

    def _write_kubeconfig(self, path: Path, user: str, creds: _Creds) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.api_url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(creds.cert),
                        "client-key-data": b64(creds.key),
                    },
                }
            ],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)

    def _prepare(self) -> None:
        d = self.tmpdir
        (d / "pki").mkdir()
        for sub in ("etcd", "apiserver", "kcm"):
            (d / sub).mkdir(mode=0o700)
        self._ca = _CA("kafka-expose-test-ca")
        self.ca_path.write_bytes(self._ca.cert_pem)
        srv = self._write_creds(
            "apiserver",
            *self._ca.issue(
                "kube-apiserver",
                hosts=(
                    "127.0.0.1",
                    "localhost",
                    "10.0.0.1",  # first IP of --service-cluster-ip-range ("kubernetes" svc)
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ),
                server=True,
            ),
        )
        self._admin = self._write_creds(
            "admin", *self._ca.issue("admin", organizations=("system:masters",), client=True)
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_priv, sa_pub = d / "pki" / "sa.key", d / "pki" / "sa.pub"
        sa_priv.write_bytes(key_pem(sa_key))
        sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        etcd_client, etcd_peer, apiserver, kcm = _free_ports(4)
        self._ports = _Ports(etcd_client, etcd_peer, apiserver, kcm)
        self._write_kubeconfig(self.kubeconfig_path, "admin", self._admin)

        env = dict(os.environ)
        ensure_no_proxy(env)
        env.pop("KUBECONFIG", None)
        b = self.bin_dir
        peer = f"http://127.0.0.1:{etcd_peer}"
        # etcd as envtest runs it, plus an explicit initial cluster on our peer port.
        etcd_args = [
            str(b / "etcd"),
            "--name=kafka-expose-test",
            f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kafka-expose-test={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        disabled = [] if self.service_account_admission else ["ServiceAccount"]
        api_args = [
            str(b / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--advertise-address=127.0.0.1",  # don't look for a default route
            # 1.37 refuses a loopback advertise address with the default "lease"
            # reconciler (endpoint IPs may not be loopback); "none" leaves the
            # default/kubernetes Service without endpoints, which nothing here needs.
            "--endpoint-reconciler-type=none",
            # Graceful stop (SIGTERM) would otherwise wait up to --request-timeout
            # (60 s) for open watches (KCM, node agent); with this, 2 s.
            "--shutdown-send-retry-after=true",
            "--bind-address=127.0.0.1",
            f"--secure-port={apiserver}",
            f"--cert-dir={d / 'apiserver'}",
            f"--tls-cert-file={srv.cert}",
            f"--tls-private-key-file={srv.key}",
            f"--client-ca-file={self.ca_path}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            f"--service-account-issuer={self.api_url}",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_priv}",
            f"--v={self.verbosity}",
        ]
        if disabled:
            api_args.append(f"--disable-admission-plugins={','.join(disabled)}")
        api_args += self.extra_apiserver_args
        kc = str(self.kubeconfig_path)
        kcm_args = [
            str(b / "kube-controller-manager"),
            f"--kubeconfig={kc}",
            "--leader-elect=false",
            f"--controllers={','.join(self.controllers)}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm}",
            f"--cert-dir={d / 'kcm'}",
            f"--root-ca-file={self.ca_path}",
            f"--service-account-private-key-file={sa_priv}",
            "--use-service-account-credentials=false",
            f"--v={self.verbosity}",
        ]
        kcm_args += self.extra_kcm_args
        for name, args in (
            ("etcd", etcd_args),
            ("kube-apiserver", api_args),
            ("kube-controller-manager", kcm_args),
        ):
            self._procs[name] = _Proc(name, args, d / f"{name}.log", env)

    def _start_proc(self, name: str) -> None:
        self._procs[name].start()

    def _wait(self, name: str, url: str, session: requests.Session) -> None:
        p = self._procs[name]
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while True:
            if not p.running():
                rc = p.popen.returncode if p.popen is not None else None
                raise ControlPlaneStartError(f"{name} exited (code {rc}) during startup\n{self.logs_tail()}")
            try:
                r = session.get(url, timeout=3)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[-500:]}"
            except requests.RequestException as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise ControlPlaneStartError(
                    f"{name} not ready after {self.startup_timeout}s at {url}: {last}\n{self.logs_tail()}"
                )
            time.sleep(0.25)

    def _wait_etcd(self) -> None:
        s = requests.Session()
        s.trust_env = False
        self._wait("etcd", f"{self.etcd_url}/health", s)

    def _wait_apiserver(self) -> None:
        self._wait("kube-apiserver", f"{self.api_url}/readyz", self.requests_session())

    def _wait_kcm(self) -> None:
        s = requests.Session()
        s.trust_env = False
        s.verify = False  # KCM serves a self-signed cert from --cert-dir
        with _quiet_insecure_warning():
            self._wait("kube-controller-manager", f"https://127.0.0.1:{self.ports.kcm}/healthz", s)


class _quiet_insecure_warning:
    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(None, None, None)


def _api_client_from_kubeconfig(path: Path) -> kubernetes.client.ApiClient:
    """ApiClient from a kubeconfig with embedded client cert/key (as written here).

    Builds the Configuration directly (typed API) instead of going through
    ``kubernetes.config``; cert data is materialised next to the kubeconfig.
    """
    cfg_doc: dict[str, Any] = yaml.safe_load(path.read_text())
    ctx_name = cfg_doc["current-context"]
    ctx = next(c["context"] for c in cfg_doc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg_doc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg_doc["users"] if u["name"] == ctx["user"])

    def materialise(data_key: str, file_key: str, src: Mapping[str, Any], suffix: str) -> str:
        if file_key in src:
            return str(src[file_key])
        out = path.with_name(path.name + suffix)
        if not out.exists():
            out.write_bytes(base64.b64decode(src[data_key]))
            out.chmod(0o600)
        return str(out)

    conf = kubernetes.client.Configuration(
        host=cluster["server"],
        ssl_ca_cert=materialise("certificate-authority-data", "certificate-authority", cluster, ".ca.crt"),
        cert_file=materialise("client-certificate-data", "client-certificate", user, ".crt"),
        key_file=materialise("client-key-data", "client-key", user, ".key"),
        no_proxy=",".join(_LOOPBACK_NO_PROXY),
    )
    return kubernetes.client.ApiClient(configuration=conf)


# --------------------------------------------------------------------------
# kubelet stand-in


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeAgentStandIn:
    """A stand-in for the kubelet (NOT a kubelet: it runs nothing).

    A background thread watches pods (all namespaces, or only ``namespaces``)
    and PATCHes ``pods/<name>/status`` of every live, not-yet-ready pod to
    phase Running with PodScheduled/Initialized/ContainersReady/Ready = True,
    running container statuses, podIP/hostIP ``pod_ip``. That is what the
    StatefulSet controller waits for before creating the next ordinal under
    the default OrderedReady policy.

    Pods need no node for this: the apiserver accepts a Running status on an
    unbound pod, and an unbound pod is deleted at once (no grace period),
    which is what we want without a kubelet. With ``node_name`` set, the
    agent instead creates that Node (if missing), binds each pod to it via
    ``pods/<name>/binding`` first, and finishes deletions of bound pods the
    way a kubelet would (DELETE with gracePeriodSeconds=0), since otherwise
    they stay Terminating forever.
    """

    def __init__(
        self,
        plane: ControlPlane,
        namespaces: Collection[str] | None = None,
        *,
        pod_ip: str = "127.0.0.1",
        node_name: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self.plane = plane
        self.namespaces = frozenset(namespaces) if namespaces is not None else None
        self.pod_ip = pod_ip
        self.node_name = node_name
        self.label_selector = label_selector
        self.errors: list[str] = []
        self.patched: list[str] = []  # "ns/name" of every pod made Running, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session = plane.requests_session()
        self._resp: requests.Response | None = None

    def __enter__(self) -> NodeAgentStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> NodeAgentStandIn:
        if self.node_name:
            self._ensure_node()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="node-agent-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            _shutdown_response(resp)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- internals ---------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.plane.api_url + path

    def _pods_path(self) -> str:
        if self.namespaces is not None and len(self.namespaces) == 1:
            (ns,) = self.namespaces
            return f"/api/v1/namespaces/{ns}/pods"
        return "/api/v1/pods"

    def _ensure_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": {"kafka-expose/node-agent-stand-in": "true"}},
        }
        r = self._session.post(self._url("/api/v1/nodes"), json=node, timeout=10)
        if r.status_code not in (201, 409):
            raise ControlPlaneError(f"cannot create Node {self.node_name}: {r.status_code} {r.text}")
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "NodeAgentStandIn",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ],
                "addresses": [{"type": "InternalIP", "address": self.pod_ip}],
            }
        }
        self._session.patch(
            self._url(f"/api/v1/nodes/{self.node_name}/status"),
            data=json.dumps(status),
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=10,
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rv = self._list_and_sync()
                self._watch(rv)
            except Exception as e:  # keep the agent alive; relist
                if self._stop.is_set():
                    break
                self._error(f"watch loop: {type(e).__name__}: {e}")
                self._stop.wait(0.5)

    def _params(self) -> dict[str, str]:
        p: dict[str, str] = {}
        if self.label_selector:
            p["labelSelector"] = self.label_selector
        return p

    def _list_and_sync(self) -> str:
        r = self._session.get(self._url(self._pods_path()), params=self._params(), timeout=30)
        r.raise_for_status()
        doc = r.json()
        for pod in doc.get("items", []):
            self._handle(pod)
        return str(doc["metadata"]["resourceVersion"])

    def _watch(self, rv: str) -> None:
        params = self._params() | {
            "watch": "1",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "60",
        }
        with self._session.get(
            self._url(self._pods_path()), params=params, stream=True, timeout=(10, 90)
        ) as r:
            self._resp = r
            try:
                r.raise_for_status()
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if not line:
                        continue
                    ev = json.loads(line)
                    typ, obj = ev.get("type"), ev.get("object", {})
                    if typ == "ERROR":
                        return  # e.g. 410 Gone: relist
                    if typ in ("ADDED", "MODIFIED"):
                        self._handle(obj)
            finally:
                self._resp = None

    def _wanted(self, pod: Mapping[str, Any]) -> bool:
        return self.namespaces is None or pod["metadata"].get("namespace") in self.namespaces

    def _handle(self, pod: Mapping[str, Any]) -> None:
        if not self._wanted(pod):
            return
        try:
            meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
            ns, name = meta["namespace"], meta["name"]
            if meta.get("deletionTimestamp"):
                if spec.get("nodeName") and spec["nodeName"] == self.node_name:
                    self._finish_deletion(ns, name, meta["uid"])
                return
            if status.get("phase") in ("Succeeded", "Failed"):
                return
            if spec.get("nodeName") and spec["nodeName"] != self.node_name:
                return  # bound to another agent's Node: that agent is its kubelet
            if self.node_name and not spec.get("nodeName"):
                self._bind(ns, name, meta["uid"])
            if self._is_ready(status):
                return
            self._patch_running(ns, name, spec, meta["uid"])
        except Exception as e:
            self._error(f"pod {pod.get('metadata', {}).get('name')}: {type(e).__name__}: {e}")

    def _is_ready(self, status: Mapping[str, Any]) -> bool:
        if status.get("phase") != "Running" or status.get("podIP") != self.pod_ip:
            return False
        return any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
        )

    def _bind(self, ns: str, name: str, uid: str) -> None:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        r = self._session.post(
            self._url(f"/api/v1/namespaces/{ns}/pods/{name}/binding"), json=binding, timeout=10
        )
        if r.status_code not in (201, 404, 409):
            self._error(f"bind {ns}/{name}: {r.status_code} {r.text[:300]}")

    def _finish_deletion(self, ns: str, name: str, uid: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        r = self._session.delete(self._url(f"/api/v1/namespaces/{ns}/pods/{name}"), json=body, timeout=10)
        if r.status_code not in (200, 404, 409):
            self._error(f"delete {ns}/{name}: {r.status_code} {r.text[:300]}")

    def _patch_running(self, ns: str, name: str, spec: Mapping[str, Any], uid: str) -> None:
        now = _now()

        def running(c: Mapping[str, Any]) -> dict[str, Any]:
            return {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "containerID": f"stand-in://{uid}/{c['name']}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }

        def init(c: Mapping[str, Any]) -> dict[str, Any]:
            if c.get("restartPolicy") == "Always":  # sidecar
                return running(c)
            return {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "containerID": f"stand-in://{uid}/{c['name']}",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }

        cond = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        patch = {
            "metadata": {"uid": uid},  # fails (409) instead of patching a new pod of the same name
            "status": {
                "phase": "Running",
                "conditions": cond,
                "hostIP": self.pod_ip,
                "hostIPs": [{"ip": self.pod_ip}],
                "podIP": self.pod_ip,
                "podIPs": [{"ip": self.pod_ip}],
                "startTime": now,
                "containerStatuses": [running(c) for c in spec.get("containers", [])],
                "initContainerStatuses": [init(c) for c in spec.get("initContainers", [])],
            },
        }
        r = self._session.patch(
            self._url(f"/api/v1/namespaces/{ns}/pods/{name}/status"),
            data=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=10,
        )
        if r.status_code == 200:
            self.patched.append(f"{ns}/{name}")
        elif r.status_code not in (404, 409, 422):  # gone / replaced by a new pod (uid)
            self._error(f"patch status {ns}/{name}: {r.status_code} {r.text[:300]}")

    def _error(self, msg: str) -> None:
        log.warning("NodeAgentStandIn: %s", msg)
        self.errors.append(msg)


def _shutdown_response(resp: requests.Response) -> None:
    """Unblock a thread reading a streaming response (close the socket under it)."""
    try:
        raw: Any = resp.raw
        conn = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:
        pass
    with contextlib.suppress(Exception):
        resp.close()


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Poll ``predicate()`` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {message} (last: {last!r})")
        time.sleep(interval)
