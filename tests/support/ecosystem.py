"""The real ecosystem around kafka-expose, run as local processes: external-dns and a DNS server.

Nothing here is a stand-in. The binaries come from tools/build-ecosystem.sh (the Go module proxy,
cached by version):

* `DnsServer`: CoreDNS (its `etcd` plugin) serving a zone out of an etcd of its own (the etcd the
  control plane is built with, tools/build-controlplane.sh), on port 53 of a loopback address of
  its own, so a `resolv.conf` can name it (glibc's resolver takes no port).
* `ExternalDns`: external-dns as a user deploys it for kafka-expose (README, "DNS"): `--source=service`,
  `--domain-filter=<the kafka-expose domain>`, the TXT registry with an owner id, the `coredns`
  provider writing skydns records into that etcd. It reads Services from the real API server as
  its own user, with the ClusterRole external-dns's chart gives it (`grant_external_dns`).
* `query()`: a plain DNS query over UDP (A or TXT) to the server, and `resolver_argv()`: a command
  line that runs a process in its own mount namespace whose /etc/resolv.conf names only the DNS
  server and whose /etc/hosts names only localhost: what such a client resolves is exactly what
  external-dns published.

Plain module, no pytest imports; processes die with their starter (tests/support/kafkarun.py).
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support import kafkarun
from tests.support.controlplane import REPO_ROOT, ControlPlane, find_bin_dir

BUILD_SCRIPT = REPO_ROOT / "tools" / "build-ecosystem.sh"
SKYDNS_PREFIX = "/skydns/"
TXT_OWNER_ID = "kafka-expose-tests"

#: The ClusterRole of external-dns's own Helm chart (charts/external-dns, source: service).
EXTERNAL_DNS_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]},
    {"apiGroups": [""], "resources": ["services", "endpoints"], "verbs": ["get", "watch", "list"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "watch", "list"]},
]


class EcosystemMissing(RuntimeError):
    """A binary of tools/build-ecosystem.sh is not built."""


def tool_path(tool: str) -> Path:
    """Where tools/build-ecosystem.sh puts `tool` (external-dns, coredns, helm4); raises when absent."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-path", tool], capture_output=True, text=True, check=True
    ).stdout.split()
    path = Path(out[-1])
    if not os.access(path, os.X_OK):
        raise EcosystemMissing(f"{tool} is not built: run `make tools` (tools/build-ecosystem.sh) ({path})")
    return path


def _log(msg: str) -> None:
    print(f"[ecosystem] {msg}", flush=True)


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_loopback_53() -> str:
    """A loopback address whose UDP and TCP port 53 are free (127.53.x.y, x,y random)."""
    for _ in range(50):
        address = f"127.53.{random.randint(1, 254)}.{random.randint(1, 254)}"
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((address, 53))
            return address
        except OSError:
            continue
    raise RuntimeError("no loopback address with a free port 53 (is this process root?)")


# ------------------------------------------------------------------------------------------- DNS


QTYPES = {"A": 1, "TXT": 16}


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _skip_name(data: bytes, at: int) -> int:
    while True:
        length = data[at]
        if length & 0xC0 == 0xC0:
            return at + 2
        if length == 0:
            return at + 1
        at += length + 1


def query(
    server: str, name: str, qtype: str = "A", port: int = 53, timeout: float = 3.0
) -> tuple[int, list[str]]:
    """(rcode, answers) of one DNS question: A records as dotted quads, TXT records as text."""
    ident = random.randint(0, 0xFFFF)
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _encode_name(name)
    packet += struct.pack(">HH", QTYPES[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, port))
        data, _ = sock.recvfrom(65535)
    got_id, flags, qdcount, ancount = struct.unpack(">HHHH", data[:8])
    if got_id != ident:
        raise RuntimeError(f"DNS answer for another question ({got_id} != {ident})")
    at = 12
    for _ in range(qdcount):
        at = _skip_name(data, at) + 4
    answers: list[str] = []
    for _ in range(ancount):
        at = _skip_name(data, at)
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", data[at : at + 10])
        at += 10
        rdata = data[at : at + length]
        at += length
        if rtype == 1 and qtype == "A":
            answers.append(socket.inet_ntoa(rdata))
        elif rtype == 16 and qtype == "TXT":
            text, i = b"", 0
            while i < len(rdata):
                text += rdata[i + 1 : i + 1 + rdata[i]]
                i += 1 + rdata[i]
            answers.append(text.decode())
    return flags & 0xF, sorted(answers)


def resolver_argv(directory: Path, server: str, argv: Sequence[str]) -> list[str]:
    """argv run with /etc/resolv.conf naming only `server` and /etc/hosts naming only localhost,
    in a mount namespace of its own (util-linux unshare; the machine's files are never edited)."""
    directory.mkdir(parents=True, exist_ok=True)
    resolv, hosts = directory / "resolv.conf", directory / "hosts"
    resolv.write_text(f"nameserver {server}\noptions timeout:2 attempts:2\n")
    hosts.write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /etc/resolv.conf && mount --bind "$1" /etc/hosts && shift && exec "$@"',
        str(resolv),
        str(hosts),
        *argv,
    ]


def resolve_outside(directory: Path, server: str, names: Sequence[str]) -> dict[str, str | None]:
    """What a client whose only resolver is `server` gets from getaddrinfo for each name."""
    code = (
        "import json, socket, sys\n"
        "def r(n):\n"
        "    try:\n"
        "        return socket.getaddrinfo(n, None, socket.AF_INET)[0][4][0]\n"
        "    except OSError:\n"
        "        return None\n"
        "print(json.dumps({n: r(n) for n in sys.argv[1:]}))\n"
    )
    proc = subprocess.run(
        resolver_argv(directory, server, ["python3", "-c", code, *names]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise AssertionError(f"resolver client failed ({proc.returncode}): {proc.stderr[-2000:]}")
    answer: dict[str, str | None] = json.loads(proc.stdout.strip().splitlines()[-1])
    return answer


class DnsServer:
    """CoreDNS serving `zone` from its own etcd (skydns records under /skydns/), on `address`:53."""

    def __init__(self, workdir: Path, zone: str) -> None:
        self.workdir, self.zone = workdir, zone.strip(".")
        self.address = ""
        self.etcd_url = ""
        self._procs: list[Any] = []

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DnsServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        client, peer = _free_port(), _free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        etcd = find_bin_dir() / "etcd"
        self._procs.append(
            kafkarun._spawn(
                [
                    str(etcd),
                    "--name=dns",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={self.etcd_url}",
                    f"--advertise-client-urls={self.etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=dns=http://127.0.0.1:{peer}",
                    "--log-level=warn",
                ],
                self.workdir / "etcd.log",
                self.workdir,
            )
        )
        wait_until(self._etcd_healthy, 60, "the DNS server's etcd")
        self.address = _free_loopback_53()
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f"{self.zone}:53 {{\n"
            f"    bind {self.address}\n"
            "    errors\n"
            "    log\n"
            f"    etcd {self.zone} {{\n"
            f"        path {SKYDNS_PREFIX.rstrip('/')}\n"
            f"        endpoint {self.etcd_url}\n"
            "    }\n"
            "}\n"
        )
        self._procs.append(
            kafkarun._spawn(
                [str(tool_path("coredns")), "-conf", str(corefile)],
                self.workdir / "coredns.log",
                self.workdir,
            )
        )
        wait_until(self._answers, 60, f"CoreDNS on {self.address}:53")
        _log(f"CoreDNS serves {self.zone} on {self.address}:53 from etcd {self.etcd_url}")
        return self

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except OSError:
            return False

    def _answers(self) -> bool:
        try:
            rcode, _ = query(self.address, f"probe.{self.zone}", timeout=1)
        except OSError:
            return False
        return rcode in (0, 3)  # NOERROR or NXDOMAIN: the zone is served

    def a(self, name: str) -> list[str]:
        return query(self.address, name, "A")[1]

    def txt(self, name: str) -> list[str]:
        return query(self.address, name, "TXT")[1]

    def records(self) -> dict[str, dict[str, Any]]:
        """Every skydns record in the etcd: key -> its JSON (what external-dns wrote)."""
        prefix = SKYDNS_PREFIX.encode()
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        body = json.dumps(
            {"key": base64.b64encode(prefix).decode(), "range_end": base64.b64encode(end).decode()}
        ).encode()
        req = urllib.request.Request(f"{self.etcd_url}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            kvs = json.loads(r.read()).get("kvs") or []
        return {base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"])) for kv in kvs}

    def published(self) -> dict[str, str]:
        """name -> address of every A record in the zone (first one of a name), from the etcd."""
        out: dict[str, str] = {}
        for key, record in sorted(self.records().items()):
            if record.get("host"):
                labels = key[len(SKYDNS_PREFIX) :].split("/")[:-1]
                out.setdefault(".".join(reversed(labels)), str(record["host"]))
        return out

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(kafkarun.tail(self.workdir / name, lines) for name in ("coredns.log", "etcd.log"))

    def stop(self) -> None:
        for proc in reversed(self._procs):
            kafkarun._kill_group(proc)
        self._procs.clear()


def grant_external_dns(control_plane: ControlPlane, user: str = "external-dns") -> Path:
    """A kubeconfig for `user`, bound to external-dns's own ClusterRole (EXTERNAL_DNS_RULES)."""
    import kubernetes.client
    from kubernetes.client import ApiException

    rbac = kubernetes.client.RbacAuthorizationV1Api(control_plane.api_client())
    role = {"metadata": {"name": user}, "rules": EXTERNAL_DNS_RULES}
    binding = {
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    for create, body in ((rbac.create_cluster_role, role), (rbac.create_cluster_role_binding, binding)):
        try:
            create(body)
        except ApiException as err:
            if err.status != 409:
                raise
    return control_plane.kubeconfig_for(user)


def external_dns_args(domain: str, kubeconfig: Path, interval: str = "2s") -> list[str]:
    """external-dns's flags as the README tells users to run it for kafka-expose."""
    return [
        "--source=service",
        f"--domain-filter={domain}",
        "--provider=coredns",
        "--registry=txt",
        f"--txt-owner-id={TXT_OWNER_ID}",
        "--policy=sync",
        f"--kubeconfig={kubeconfig}",
        f"--interval={interval}",
        "--events",
        "--min-event-sync-interval=1s",
        "--log-level=debug",
        f"--metrics-address=127.0.0.1:{_free_port()}",
    ]


class ExternalDns:
    """external-dns (the real one) writing `domain`'s records into `dns`'s etcd."""

    def __init__(self, workdir: Path, dns: DnsServer, domain: str, kubeconfig: Path) -> None:
        self.workdir, self.dns, self.domain, self.kubeconfig = workdir, dns, domain, kubeconfig
        self._proc: Any = None
        self.log = workdir / "external-dns.log"

    def __enter__(self) -> ExternalDns:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> ExternalDns:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            "env",
            f"ETCD_URLS={self.dns.etcd_url}",
            f"NO_PROXY={os.environ.get('NO_PROXY', '')},127.0.0.1,localhost",
            str(tool_path("external-dns")),
            *external_dns_args(self.domain, self.kubeconfig),
        ]
        self._proc = kafkarun._spawn(argv, self.log, self.workdir)
        _log(f"external-dns started (log {self.log})")
        return self

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return kafkarun.tail(self.log, lines)

    def stop(self) -> None:
        if self._proc is not None:
            kafkarun._kill_group(self._proc)
            self._proc = None


class Ecosystem:
    """DNS server + external-dns, started together (a context manager)."""

    def __init__(self, workdir: Path, control_plane: ControlPlane, domain: str) -> None:
        self.dns = DnsServer(workdir / "dns", domain)
        self.control_plane, self.domain, self.workdir = control_plane, domain, workdir
        self.external_dns: ExternalDns | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Ecosystem:
        self.dns.start()
        try:
            kubeconfig = grant_external_dns(self.control_plane)
            self.external_dns = ExternalDns(
                self.workdir / "external-dns", self.dns, self.domain, kubeconfig
            ).start()
        except BaseException:
            self.dns.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.external_dns is not None:
            self.external_dns.stop()
        self.dns.stop()

    def diagnostics(self) -> str:
        parts = [self.dns.log_tail()]
        if self.external_dns is not None:
            parts.append(self.external_dns.log_tail())
        return "\n".join(parts)
