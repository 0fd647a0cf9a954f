"""Run real Apache Kafka brokers/controllers (and a ZooKeeper) on loopback for tests.

Plain Python (no pytest dependency).  Pieces:

* Distributions: ``ensure_dists()`` runs ``tools/build-kafka.sh`` (idempotent; ~20 ms
  when warm) and returns the cached dirs that hold ``libs/*.jar``:
  Kafka 4.x (KRaft) and Kafka 3.9.x (ZooKeeper mode) + ZooKeeper.

* Name resolution: ``enter_private_hosts()`` gives *this process* (and every thread and
  child it starts afterwards) a private ``/etc/hosts`` without touching the machine's file:
  ``unshare(CLONE_NEWNS)`` via libc, ``mount --make-rprivate /`` and a bind mount of a
  private file over ``/etc/hosts``.  Entries can be added at any time
  (``PrivateHosts.add``); the file is written in place (same inode), so the bind mount
  keeps showing it.  Verified on this machine (root, Linux 6.x, glibc):
    - glibc (``files`` in nsswitch, no nscd) re-reads /etc/hosts on every
      getaddrinfo(): appends and in-place rewrites are seen by the next lookup in Python,
      in librdkafka (confluent-kafka) and in child processes (getent, the JVM);
    - the machine's /etc/hosts and other processes are unaffected;
    - threads that already existed before the unshare stay in the old namespace (the
      kernel unshares per thread), so call it early, from the main thread;
    - the JVM caches lookups: positive 30 s, negative 10 s (the JDK's java.security
      sets ``networkaddress.cache.negative.ttl=10``, which wins over
      ``-Dsun.net.inetaddr.negative.ttl``).  The JVMs started here get
      ``-Djava.security.properties=<file>`` with both TTLs = 0, so entries added or
      changed later are seen at once.
  Needs CAP_SYS_ADMIN (root); ``private_hosts_available()`` says whether it works.
  The shell equivalent (used as ``wrap_private_hosts_argv``) is
  ``unshare --mount --propagation private sh -c 'mount --bind F /etc/hosts && exec ...'``.

* ``KafkaCluster``: given per node the Kafka properties a pod would have and a loopback
  IP for that node, rewrites only what cannot exist here (data dirs, the bind host of
  every listener, quorum voters / bootstrap servers / zookeeper.connect when their names
  would not resolve), returns the list of rewrites, writes server.properties, formats
  storage (KRaft, one cluster id; static voters or dynamic quorum with
  ``--initial-controllers``), starts ``java -cp libs/* kafka.Kafka``, waits until each node
  is up, and stops all process groups (also on failure and at interpreter exit).

* ``ZooKeeper``: a standalone ZooKeeper from the 3.9 dist's jars on a loopback IP.

* ``LoadBalancer``: a small TCP forwarder ``lb_ip:port -> node_ip:target_port``, i.e.
  what a Service of type LoadBalancer does, for when the advertised port differs from the
  container port (bitnami: LB 9094 -> container 9095).

Every node binds its own loopback IP (127.0.0.0/8 is all local on Linux), so several
nodes can use the same port, as pods of one chart do.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import ctypes.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# One module whichever name imports it (`tests.kafkarun`, or `kafkarun` with tests/ on sys.path):
# the private /etc/hosts and the set of live processes are process-wide state, kept once.
for _alias in ("kafkarun", "tests.support.kafkarun"):
    sys.modules.setdefault(_alias, sys.modules[__name__])

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-kafka.sh"

DEFAULT_HEAP = "384m"
DEFAULT_JVM_OPTS: tuple[str, ...] = (
    "-XX:+UseSerialGC",  # 2 cores, several JVMs: fewest GC threads
    "-XX:TieredStopAtLevel=1",  # C1 only: much less JIT CPU at start-up
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)


# ----------------------------------------------------------------------------
# distributions
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaDist:
    """A directory with ``libs/*.jar`` as made by tools/build-kafka.sh."""

    home: Path

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")

    @property
    def version(self) -> str:
        for jar in self.libs.glob("kafka_2.13-*.jar"):
            return jar.name[len("kafka_2.13-") : -len(".jar")]
        raise FileNotFoundError(f"no kafka_2.13-*.jar in {self.libs}")

    @property
    def log4j2(self) -> bool:
        """True for 4.x dists (log4j2 backend), False for 3.x (reload4j)."""
        return any(self.libs.glob("log4j-core-*.jar"))

    @property
    def has_zookeeper(self) -> bool:
        return any(self.libs.glob("zookeeper-[0-9]*.jar"))


def ensure_dists(env: Mapping[str, str] | None = None) -> dict[str, KafkaDist]:
    """Run tools/build-kafka.sh (fast when cached) -> {"kraft": dist, "zk": dist}."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        env=dict(os.environ, **(env or {})),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = proc.stdout
    dists: dict[str, KafkaDist] = {}
    for line in out.splitlines():
        key, sep, val = line.partition("=")
        if sep and key in ("kraft", "zk"):
            dists[key] = KafkaDist(Path(val))
    if set(dists) != {"kraft", "zk"}:
        raise RuntimeError(f"unexpected output of {BUILD_SCRIPT}: {out!r}")
    return dists


def java_bin() -> str:
    jh = os.environ.get("JAVA_HOME")
    if jh and (Path(jh) / "bin" / "java").exists():
        return str(Path(jh) / "bin" / "java")
    j = shutil.which("java")
    if not j:
        raise FileNotFoundError("java not found (need Java 17+)")
    return j


# ----------------------------------------------------------------------------
# private /etc/hosts
# ----------------------------------------------------------------------------

_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18

_private_hosts: PrivateHosts | None = None
_private_hosts_lock = threading.Lock()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


class PrivateHosts:
    """The private hosts file bind-mounted over /etc/hosts in this process's mount ns.

    Writes go to the same inode (append, or truncate+write in one call), never a rename,
    because the bind mount pins the inode.  A concurrent lookup may at worst miss a
    line that is being written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def entries(self) -> dict[str, str]:
        """name -> address, for every name in the file (first match wins, as in glibc)."""
        res: dict[str, str] = {}
        for line in self.path.read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            for name in fields[1:]:
                res.setdefault(name, fields[0])
        return res

    def add(self, name: str, ip: str) -> None:
        self.update({name: ip})

    def update(self, mapping: Mapping[str, str]) -> None:
        """Add or change entries (name -> ip)."""
        with self._lock:
            current = self.entries()
            new = {n: ip for n, ip in mapping.items() if current.get(n) != ip}
            if not new:
                return
            if any(n in current for n in new):
                # change in place: drop old lines for those names, then append
                kept = []
                for line in self.path.read_text().splitlines():
                    fields = line.split("#", 1)[0].split()
                    if len(fields) > 1 and any(n in new for n in fields[1:]):
                        rest = [n for n in fields[1:] if n not in new]
                        if rest:
                            kept.append(" ".join([fields[0], *rest]))
                        continue
                    kept.append(line)
                text = "\n".join(kept) + "\n" + "".join(f"{ip} {n}\n" for n, ip in new.items())
                with open(self.path, "r+") as f:
                    f.write(text)
                    f.truncate()
            else:
                with open(self.path, "a") as f:
                    f.write("".join(f"{ip} {n}\n" for n, ip in new.items()))

    def remove(self, name: str) -> None:
        with self._lock:
            lines = []
            for line in self.path.read_text().splitlines():
                fields = line.split("#", 1)[0].split()
                if len(fields) > 1 and name in fields[1:]:
                    rest = [n for n in fields[1:] if n != name]
                    if rest:
                        lines.append(" ".join([fields[0], *rest]))
                    continue
                lines.append(line)
            with open(self.path, "r+") as f:
                f.write("\n".join(lines) + "\n")
                f.truncate()


def enter_private_hosts(path: Path | str | None = None) -> PrivateHosts:
    """Give this process a private /etc/hosts (idempotent; returns the same object).

    Call from the main thread, before starting threads that must see it (threads that
    already exist keep the machine's /etc/hosts).  Children started later inherit it.
    The private file starts as a copy of the current /etc/hosts.
    """
    global _private_hosts
    with _private_hosts_lock:
        if _private_hosts is not None:
            return _private_hosts
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("enter_private_hosts() must run on the main thread")
        if path is None:
            d = Path(os.environ.get("TMPDIR", "/tmp")) / f"kafkarun-hosts-{os.getpid()}"
            d.mkdir(parents=True, exist_ok=True)
            # the bind mount keeps the inode alive; the name can go at exit
            atexit.register(shutil.rmtree, d, True)
            path = d / "hosts"
        path = Path(path)
        path.write_text(Path("/etc/hosts").read_text())
        libc = _libc()
        _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS) (needs CAP_SYS_ADMIN)")
        # without this, mounts made here could propagate back to the machine's namespace
        _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
        _check(
            libc.mount(str(path).encode(), b"/etc/hosts", None, _MS_BIND, None),
            f"mount --bind {path} /etc/hosts",
        )
        if os.stat(path).st_ino != os.stat("/etc/hosts").st_ino:
            raise RuntimeError("bind mount over /etc/hosts did not take effect")
        _private_hosts = PrivateHosts(path)
        return _private_hosts


def private_hosts_entered() -> bool:
    """Has enter_private_hosts() already run in this process?"""
    return _private_hosts is not None


def private_hosts_available() -> tuple[bool, str]:
    """Can enter_private_hosts() work here?  Tried in a throw-away child process."""
    code = (
        "import ctypes,ctypes.util,os,sys;"
        "l=ctypes.CDLL(ctypes.util.find_library('c') or None,use_errno=True);"
        f"r=l.unshare({_CLONE_NEWNS}) or l.mount(b'none',b'/',None,{_MS_REC | _MS_PRIVATE},None);"
        "sys.exit(0 if r==0 else os.strerror(ctypes.get_errno()))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return (p.returncode == 0, p.stderr.strip() or "ok")


def wrap_private_hosts_argv(hosts_file: Path | str, argv: Sequence[str]) -> list[str]:
    """argv that runs ``argv`` with ``hosts_file`` bind-mounted over /etc/hosts
    (util-linux unshare; for running e.g. a whole pytest inside)."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /etc/hosts && exec "$@"',
        str(hosts_file),
        *argv,
    ]


# ----------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------

_live: set[subprocess.Popen[bytes]] = set()


def _kill_group(p: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    _live.discard(p)


@atexit.register
def _kill_all_at_exit() -> None:
    for p in list(_live):
        _kill_group(p, timeout=5)


_SETPRIV = shutil.which("setpriv")


def _spawn(
    argv: Sequence[str], log: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start argv in its own process group (session), output to ``log``.

    With util-linux setpriv, the child also gets PDEATHSIG=KILL, so it dies with the
    thread that started it even if this process is SIGKILLed (start nodes from the main
    thread, or from a thread that lives as long as they should).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if _SETPRIV:
        argv = [_SETPRIV, "--pdeathsig", "KILL", *argv]
    with open(log, "ab") as out:
        out.write(f"# {shlex.join(argv)}\n".encode())
        out.flush()
        p = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
        )  # own process group
    _live.add(p)
    return p


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return f"<{path} missing>"


def port_open(ip: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_bindable(ip: str, port: int) -> None:
    """Raise if ip:port cannot be bound (e.g. left over broker, or *:port taken)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
    except OSError as e:
        raise OSError(e.errno, f"cannot bind {ip}:{port}: {e.strerror}") from None
    finally:
        s.close()


def loopback_ips(n: int, start: int = 11, prefix: str = "127.0.0.") -> list[str]:
    """[127.0.0.11, 127.0.0.12, ...]"""
    return [f"{prefix}{start + i}" for i in range(n)]


def random_kafka_uuid() -> str:
    """A Kafka Uuid string (base64url of 16 random bytes, no padding, not starting with '-')."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


def _jvm_options(tmp: Path, dist: KafkaDist) -> tuple[list[str], str]:
    """The JVM options of every process here (GC, DNS caching off) and the log4j option (console)."""
    sec = tmp / "java.security.properties"
    if not sec.exists():
        sec.parent.mkdir(parents=True, exist_ok=True)
        # no JVM DNS caching: entries added to the private hosts file are seen at once
        sec.write_text("networkaddress.cache.ttl=0\nnetworkaddress.cache.negative.ttl=0\n")
    options = [*DEFAULT_JVM_OPTS, f"-Djava.security.properties={sec}"]
    if dist.log4j2:
        cfg = tmp / "log4j2.properties"
        if not cfg.exists():
            cfg.write_text(_LOG4J2)
        return options, f"-Dlog4j2.configurationFile={cfg}"
    cfg = tmp / "log4j.properties"
    if not cfg.exists():
        cfg.write_text(_LOG4J1)
    return options, f"-Dlog4j.configuration=file:{cfg}"


def _jvm_common(tmp: Path, dist: KafkaDist, heap: str, extra: Sequence[str]) -> list[str]:
    options, log4j = _jvm_options(tmp, dist)
    return [java_bin(), f"-Xmx{heap}", *options, log4j, *extra, "-cp", dist.classpath]


# ----------------------------------------------------------------------------
# the distribution's own start scripts
# ----------------------------------------------------------------------------

#: Apache Kafka's bin/kafka-server-start.sh and bin/kafka-run-class.sh, unchanged (README there).
KAFKA_BIN = Path(__file__).resolve().parent / "kafka-bin"
START_SCRIPTS = ("kafka-server-start.sh", "kafka-run-class.sh")

_STORAGE_STAND_IN = """#!/bin/sh
# kafkarun: storage is formatted by the harness (KafkaCluster.format_commands, with the data dirs
# it rewrote); a pod's own `kafka-storage.sh format` would format the image's paths.
echo "kafkarun: kafka-storage.sh $* (formatted by the harness)"
"""


def distribution_layout(dist: KafkaDist, dest: Path) -> Path:
    """``dest`` laid out as the Kafka distribution is (``bin/`` beside ``libs/``): the vendored start
    scripts in ``bin/``, ``libs`` a symlink to the cached jars, so ``kafka-run-class.sh`` builds its
    class path from ``$base_dir/libs/*`` as in the image. Returns ``dest/bin``."""
    bin_dir = dest / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in START_SCRIPTS:
        shutil.copy2(KAFKA_BIN / name, bin_dir / name)
    storage = bin_dir / "kafka-storage.sh"
    storage.write_text(_STORAGE_STAND_IN)
    storage.chmod(0o755)
    libs = dest / "libs"
    if not libs.exists():
        libs.symlink_to(dist.libs.resolve(), target_is_directory=True)
    return bin_dir


@dataclass
class StartCommand:
    """A pod's own main command (it ends in the real kafka-server-start.sh of distribution_layout):
    argv and env as the container has them, mount paths mapped to directories under ``cwd``."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    #: set by KafkaCluster: what the harness sets besides (JVM environment, JAVA_HOME)
    harness_env: dict[str, str] = field(default_factory=dict)


_JAVA_SHIM = """#!/bin/sh
# kafkarun: the real java; kafka.Kafka gets the harness's rewrites as its LAST --override flags
# (they win over the pod's file and its own overrides, as kafka.Kafka applies them in order).
case " $* " in
  *" kafka.Kafka "*) exec {java} "$@" {overrides} ;;
esac
exec {java} "$@"
"""


_LOG4J2 = """\
status = warn
name = kafkarun
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.req.name = kafka.request.logger
logger.req.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""

_LOG4J1 = """\
log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


# ----------------------------------------------------------------------------
# properties helpers
# ----------------------------------------------------------------------------


def parse_properties(text: str) -> dict[str, str]:
    """Minimal java.util.Properties reader (key=value / key: value, # and ! comments,
    backslash line continuation)."""
    props: dict[str, str] = {}
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.lstrip()
        if not buf and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            buf += line[:-1]
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    for line in logical:
        m = re.match(r"((?:[^=:\s\\]|\\.)+)\s*[=:\s]\s*(.*)$", line)
        if m:
            props[m.group(1)] = m.group(2)
        else:
            props[line.strip()] = ""
    return props


def format_properties(props: Mapping[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n")

    return "".join(f"{k}={esc(v)}\n" for k, v in props.items())


_LISTENER_RE = re.compile(r"^\s*([A-Za-z0-9_\-.]+)://(\[[^\]]*\]|[^:/]*):(\d+)\s*$")


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"


def parse_listeners(value: str) -> list[Listener]:
    res = []
    for part in value.split(","):
        if not part.strip():
            continue
        m = _LISTENER_RE.match(part)
        if not m:
            raise ValueError(f"cannot parse listener {part!r}")
        res.append(Listener(m.group(1), m.group(2), int(m.group(3))))
    return res


def _split_hostport(hp: str) -> tuple[str, int]:
    host, _, port = hp.strip().rpartition(":")
    return host.strip("[]"), int(port)


# ----------------------------------------------------------------------------
# nodes and cluster
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rewrite:
    node: str
    key: str
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"{self.node}: {self.key}: {self.old!r} -> {self.new!r}"


@dataclass
class KafkaNode:
    """One Kafka process (a pod's container).

    props: the server.properties the pod would run with (strings), e.g. from a chart's
      ConfigMap or derived from the container env.
    ip: the loopback IP this node binds to (its "pod IP").
    hostnames: DNS names that must resolve to ``ip`` (pod FQDNs, service names); they
      are added to the private hosts file when the cluster has one.
    """

    name: str
    ip: str
    props: dict[str, str]
    hostnames: Sequence[str] = ()
    heap: str | None = None
    #: run the pod's own command (the real kafka-server-start.sh) instead of java kafka.Kafka
    start: StartCommand | None = None

    # filled in by KafkaCluster
    dir_id: str = field(default_factory=random_kafka_uuid, repr=False)  # KRaft directory.id
    dir: Path | None = field(default=None, repr=False)
    final_props: dict[str, str] = field(default_factory=dict, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def roles(self) -> set[str]:
        r = self.props.get("process.roles", "")
        return {x.strip() for x in r.split(",") if x.strip()}

    @property
    def kraft(self) -> bool:
        return bool(self.roles)

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles

    @property
    def is_broker(self) -> bool:
        return "broker" in self.roles or not self.kraft

    @property
    def node_id(self) -> int:
        v = self.props.get("node.id", self.props.get("broker.id"))
        if v is None:
            raise ValueError(f"{self.name}: no node.id / broker.id")
        return int(v)

    @property
    def log_file(self) -> Path:
        assert self.dir is not None
        return self.dir / "server.log"

    def listeners(self) -> list[Listener]:
        return parse_listeners((self.final_props or self.props).get("listeners", ""))

    def advertised(self) -> list[Listener]:
        p = self.final_props or self.props
        return parse_listeners(p.get("advertised.listeners", "")) if p.get("advertised.listeners") else []

    def advertised_address(self, listener: str) -> str:
        for lst in self.advertised():
            if lst.name == listener:
                return f"{lst.host}:{lst.port}"
        for lst in self.listeners():
            if lst.name == listener:
                return f"{lst.host}:{lst.port}"
        raise KeyError(f"{self.name}: no listener {listener}")


class ZooKeeper:
    """Standalone ZooKeeper (from the Kafka 3.9 dist's jars) on ip:port."""

    def __init__(
        self,
        dist: KafkaDist,
        workdir: Path | str,
        ip: str = "127.0.0.2",
        port: int = 2181,
        hostnames: Sequence[str] = (),
        heap: str = "128m",
    ) -> None:
        if not dist.has_zookeeper:
            raise ValueError(f"{dist.home} has no zookeeper jar")
        self.dist, self.ip, self.port, self.hostnames, self.heap = dist, ip, port, tuple(hostnames), heap
        self.dir = Path(workdir) / "zookeeper"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connect(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.dir / "zookeeper.log"

    def start(self, timeout: float = 60.0) -> None:
        check_bindable(self.ip, self.port)
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "zoo.cfg"
        cfg.write_text(
            f"dataDir={self.dir / 'data'}\nclientPort={self.port}\nclientPortAddress={self.ip}\n"
            "tickTime=2000\nmaxClientCnxns=0\nadmin.enableServer=false\n"
            "4lw.commands.whitelist=ruok,srvr\n"
        )
        argv = [
            *_jvm_common(self.dir, self.dist, self.heap, ()),
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(cfg),
        ]
        self.process = _spawn(argv, self.log_file, self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"zookeeper exited {self.process.returncode}:\n{tail(self.log_file)}")
            if self._ruok():
                return
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"zookeeper not up after {timeout}s:\n{tail(self.log_file)}")

    def _ruok(self) -> bool:
        try:
            with socket.create_connection((self.ip, self.port), timeout=1) as s:
                s.sendall(b"ruok")
                return s.recv(16) == b"imok"
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process)

    def __enter__(self) -> ZooKeeper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_READY_PATTERNS = (
    re.compile(r"Kafka Server started"),  # KRaft (KafkaRaftServer), 3.x and 4.x
    re.compile(r"\[KafkaServer id=\d+\] started"),  # ZooKeeper mode
)


class KafkaCluster:
    """Kafka nodes on loopback: ``prepare()`` (rewrites, server.properties, format),
    ``start()``, ``stop()``; also a context manager (start/stop).

    hosts: a PrivateHosts (from enter_private_hosts()); every node's ``hostnames`` are
      added to it mapped to the node's IP, and names in quorum voters / bootstrap
      servers / zookeeper.connect that resolve that way are left as they are.  Without
      it (or with resolve_names=False) such names are rewritten to IPs.
    """

    def __init__(
        self,
        dist: KafkaDist,
        workdir: Path | str,
        nodes: Sequence[KafkaNode],
        *,
        hosts: PrivateHosts | None = None,
        zookeeper: ZooKeeper | None = None,
        cluster_id: str | None = None,
        heap: str = DEFAULT_HEAP,
        jvm_opts: Sequence[str] = (),
        resolve_names: bool = True,
    ) -> None:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names: {names}")
        self.dist = dist
        self.workdir = Path(workdir)
        self.nodes = list(nodes)
        self.hosts = hosts
        self.zookeeper = zookeeper
        self.cluster_id = cluster_id or random_kafka_uuid()
        self.heap = heap
        self.jvm_opts = tuple(jvm_opts)
        self.resolve_names = resolve_names and hosts is not None
        self.rewrites: list[Rewrite] = []
        self.format_commands: dict[str, list[str]] = {}
        self._prepared = False
        self._planned = False
        kinds = {n.kraft for n in self.nodes}
        if len(kinds) != 1:
            raise ValueError("mixing KRaft (process.roles) and ZooKeeper-mode nodes")
        self.kraft = kinds.pop()
        if not self.kraft and zookeeper is None:
            raise ValueError("ZooKeeper-mode nodes need zookeeper=ZooKeeper(...)")

    # ---- lookup helpers
    def node(self, name: str) -> KafkaNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def brokers(self) -> list[KafkaNode]:
        return [n for n in self.nodes if n.is_broker]

    @property
    def controllers(self) -> list[KafkaNode]:
        return [n for n in self.nodes if n.is_controller]

    def bootstrap(self, listener: str) -> str:
        """Comma-separated advertised addresses of ``listener`` on all brokers."""
        return ",".join(b.advertised_address(listener) for b in self.brokers)

    def _name_map(self) -> dict[str, str]:
        m: dict[str, str] = {}
        for n in self.nodes:
            for h in n.hostnames:
                m[h] = n.ip
        if self.zookeeper:
            for h in self.zookeeper.hostnames:
                m[h] = self.zookeeper.ip
        return m

    def _host_for(self, host: str, fallback_ip: str | None, what: str) -> str:
        """The host to use here for a reference to ``host``."""
        names = self._name_map()
        if host in names:
            return host if self.resolve_names else names[host]
        if fallback_ip is not None:
            return fallback_ip
        if host in {n.ip for n in self.nodes} or (self.zookeeper and host == self.zookeeper.ip):
            return host
        raise ValueError(
            f"{what}: host {host!r} is not a hostname of any node; pass it in KafkaNode.hostnames"
        )

    # ---- rewriting
    def _rewrite(self, node: KafkaNode) -> dict[str, str]:
        assert node.dir is not None
        p = dict(node.props)

        def setp(key: str, new: str) -> None:
            old = p.get(key)
            if old != new:
                self.rewrites.append(Rewrite(node.name, key, old, new))
                p[key] = new

        # data dirs
        data = node.dir / "data"
        dir_keys = [k for k in ("log.dirs", "log.dir") if k in p]
        if not dir_keys:
            dir_keys = ["log.dirs"]
        for k in dir_keys:
            n_dirs = len([d for d in p.get(k, "x").split(",") if d.strip()]) or 1
            new = ",".join(str(data if n_dirs == 1 else node.dir / f"data{i}") for i in range(n_dirs))
            setp(k, new)
        if "metadata.log.dir" in p:
            setp("metadata.log.dir", str(node.dir / "metadata"))

        # bind host of every listener
        if "listeners" in p:
            lst = parse_listeners(p["listeners"])
        elif node.kraft:
            raise ValueError(f"{node.name}: KRaft node without listeners")
        else:
            # old ZK-mode default: PLAINTEXT://:port (port default 9092)
            lst = [Listener("PLAINTEXT", "", int(p.get("port", "9092")))]
        setp("listeners", ",".join(str(Listener(x.name, node.ip, x.port)) for x in lst))

        # quorum / zookeeper references
        if "controller.quorum.voters" in p and p["controller.quorum.voters"].strip():
            by_id = {c.node_id: c for c in self.controllers}
            parts = []
            for v in p["controller.quorum.voters"].split(","):
                vid, _, hp = v.strip().partition("@")
                host, port = _split_hostport(hp)
                c = by_id.get(int(vid))
                h = self._host_for(host, c.ip if c else None, f"{node.name} controller.quorum.voters")
                parts.append(f"{vid}@{h}:{port}")
            setp("controller.quorum.voters", ",".join(parts))
        if p.get("controller.quorum.bootstrap.servers", "").strip():
            parts = []
            for hp in p["controller.quorum.bootstrap.servers"].split(","):
                host, port = _split_hostport(hp)
                parts.append(
                    f"{self._host_for(host, None, f'{node.name} controller.quorum.bootstrap.servers')}:{port}"
                )
            setp("controller.quorum.bootstrap.servers", ",".join(parts))
        if "zookeeper.connect" in p:
            if self.zookeeper is None:
                raise ValueError(f"{node.name}: zookeeper.connect set but no ZooKeeper given")
            conn, slash, chroot = p["zookeeper.connect"].partition("/")
            names = self._name_map()
            parts = []
            for hp in conn.split(","):
                host, port = _split_hostport(hp)
                if (
                    self.resolve_names
                    and names.get(host) == self.zookeeper.ip
                    and port == self.zookeeper.port
                ):
                    parts.append(f"{host}:{port}")  # resolves to our ZooKeeper: keep
                else:
                    parts.append(self.zookeeper.connect)
            # one ZooKeeper here: keep a single entry
            setp("zookeeper.connect", ",".join(dict.fromkeys(parts)) + (slash + chroot if slash else ""))
        return p

    def _initial_controllers(self) -> str:
        """--initial-controllers value for a dynamic quorum: id@host:port:directoryId."""
        entries = []
        for c in sorted(self.controllers, key=lambda c: c.node_id):
            cl_names = [
                x.strip() for x in c.final_props.get("controller.listener.names", "").split(",") if x.strip()
            ]
            if not cl_names:
                raise ValueError(f"{c.name}: no controller.listener.names")
            port = next(x.port for x in c.listeners() if x.name == cl_names[0])
            host = next((h for h in c.hostnames), None) if self.resolve_names else None
            entries.append(f"{c.node_id}@{host or c.ip}:{port}:{c.dir_id}")
        return ",".join(entries)

    def plan(self) -> list[Rewrite]:
        """Compute each node's final properties and the rewrites (no files, no
        processes).  Idempotent."""
        if not self._planned:
            self.rewrites.clear()
            for n in self.nodes:
                n.dir = self.workdir / n.name
            for n in self.nodes:
                n.final_props = self._rewrite(n)
            self._planned = True
        return self.rewrites

    def prepare(self) -> list[Rewrite]:
        """plan(), register hostnames in the private hosts file, write
        server.properties, format storage (KRaft).  Returns the rewrites made (also in
        ``self.rewrites``; ``describe_rewrites()`` prints them)."""
        if self._prepared:
            return self.rewrites
        self.plan()
        if self.hosts is not None:
            self.hosts.update(self._name_map())
        for n in self.nodes:
            assert n.dir is not None
            n.dir.mkdir(parents=True, exist_ok=True)
            (n.dir / "server.properties").write_text(format_properties(n.final_props))
        if self.kraft:
            self._format()
        self._prepared = True
        return self.rewrites

    def _format(self) -> None:
        dynamic = any("controller.quorum.voters" not in n.final_props for n in self.nodes)
        init = self._initial_controllers() if dynamic else None
        procs: list[tuple[KafkaNode, subprocess.Popen[bytes], Path]] = []
        for n in self.nodes:
            assert n.dir is not None
            argv = [
                *_jvm_common(self.workdir, self.dist, "256m", self.jvm_opts),
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                self.cluster_id,
                "--config",
                str(n.dir / "server.properties"),
            ]
            if init is not None:
                argv += ["--initial-controllers", init] if n.is_controller else ["--no-initial-controllers"]
            self.format_commands[n.name] = argv
            log = n.dir / "format.log"
            procs.append((n, _spawn(argv, log, n.dir), log))
        errors = []
        for n, p, log in procs:
            try:
                rc = p.wait(120)
            except subprocess.TimeoutExpired:
                _kill_group(p)
                rc = -1
            _live.discard(p)
            if rc != 0:
                errors.append(f"{n.name}: format failed ({rc}):\n{tail(log)}")
        if errors:
            raise RuntimeError("\n".join(errors))

    # ---- running
    def _check_resolvable(self) -> None:
        """Names other nodes must connect to (inter-broker / controller advertised
        listeners) must resolve here, else a broker hangs instead of failing."""
        for n in self.nodes:
            # inter-broker listener: its name, else the one named like
            # security.inter.broker.protocol (default PLAINTEXT)
            ibl = n.final_props.get("inter.broker.listener.name") or n.final_props.get(
                "security.inter.broker.protocol", "PLAINTEXT"
            )
            hosts = {lst.host for lst in n.advertised() if lst.name == ibl}
            for h in hosts:
                if not h:
                    continue
                try:
                    socket.getaddrinfo(h, None)
                except OSError:
                    raise ValueError(
                        f"{n.name}: advertised host {h!r} does not resolve here "
                        f"(add it to KafkaNode.hostnames and pass hosts=)"
                    ) from None

    def start(self, timeout: float = 180.0) -> KafkaCluster:
        """Start all nodes and wait until every one is up.  Stops everything on failure."""
        try:
            self.prepare()
            self._check_resolvable()
            for n in self.nodes:
                for lst in n.listeners():
                    check_bindable(lst.host, lst.port)
            # controllers first (a broker waits for the quorum anyway)
            for n in sorted(self.nodes, key=lambda n: (not n.is_controller, n.node_id)):
                self._start_node(n)
            self.wait_ready(timeout)
        except BaseException:
            self.stop(graceful=False)
            raise
        return self

    def _start_node(self, n: KafkaNode) -> None:
        assert n.dir is not None
        if n.start is not None:
            self._start_command(n, n.start)
            return
        argv = [
            *_jvm_common(self.workdir, self.dist, n.heap or self.heap, self.jvm_opts),
            f"-Dkafka.logs.dir={n.dir / 'logs'}",
            "kafka.Kafka",
            str(n.dir / "server.properties"),
        ]
        n.process = _spawn(argv, n.log_file, n.dir)

    def overrides(self, node: KafkaNode) -> list[str]:
        """The rewrites of ``node`` as kafka.Kafka ``--override key=value`` arguments."""
        return [
            word
            for r in self.rewrites
            if r.node == node.name
            for word in ("--override", f"{r.key}={node.final_props[r.key]}")
        ]

    def _start_command(self, n: KafkaNode, start: StartCommand) -> None:
        """The pod's own command with the real kafka-server-start.sh; the harness sets only the JVM
        environment the scripts read (heap, GC, log4j to the console, DNS caching off, LOG_DIR under
        the node's dir) and JAVA_HOME, whose java appends the rewrites as the last overrides."""
        assert n.dir is not None
        options, log4j = _jvm_options(self.workdir, self.dist)
        home = n.dir / "java-home"
        (home / "bin").mkdir(parents=True, exist_ok=True)
        shim = home / "bin" / "java"
        shim.write_text(
            _JAVA_SHIM.format(java=shlex.quote(java_bin()), overrides=shlex.join(self.overrides(n)))
        )
        shim.chmod(0o755)
        start.harness_env = {
            "JAVA_HOME": str(home),
            "KAFKA_HEAP_OPTS": f"-Xmx{n.heap or self.heap}",
            "KAFKA_JVM_PERFORMANCE_OPTS": " ".join([*options, *self.jvm_opts]),
            "KAFKA_LOG4J_OPTS": log4j,
            "LOG_DIR": str(n.dir / "logs"),
        }
        n.process = _spawn(start.argv, n.log_file, start.cwd, {**start.env, **start.harness_env})

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.nodes)
        while pending:
            for n in list(pending):
                assert n.process is not None
                if n.process.poll() is not None:
                    raise RuntimeError(f"{n.name} exited with {n.process.returncode}:\n{tail(n.log_file)}")
                text = n.log_file.read_text(errors="replace") if n.log_file.exists() else ""
                if any(pat.search(text) for pat in _READY_PATTERNS) and all(
                    port_open(x.host, x.port) for x in n.listeners()
                ):
                    pending.remove(n)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "not up after {:.0f}s: {}\n{}".format(
                        timeout,
                        [n.name for n in pending],
                        "\n".join(f"--- {n.name}\n{tail(n.log_file, 20)}" for n in pending),
                    )
                )
            time.sleep(0.5)

    def restart_node(self, name: str, timeout: float = 120.0) -> None:
        """SIGTERM one node (as a pod eviction does), start it again on the same data and wait until
        it is up again (its log's ready line after the restart, its listeners open)."""
        n = self.node(name)
        assert n.process is not None and n.dir is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(n.process.pid, signal.SIGTERM)
        _kill_group(n.process, timeout=30)
        _live.discard(n.process)
        offset = n.log_file.stat().st_size if n.log_file.exists() else 0
        self._start_node(n)
        deadline = time.monotonic() + timeout
        while True:
            assert n.process is not None
            if n.process.poll() is not None:
                raise RuntimeError(f"{n.name} exited with {n.process.returncode}:\n{tail(n.log_file)}")
            with n.log_file.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            if any(p.search(text) for p in _READY_PATTERNS) and all(
                port_open(x.host, x.port) for x in n.listeners()
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{n.name} not up {timeout:.0f}s after its restart:\n{tail(n.log_file, 20)}"
                )
            time.sleep(0.5)

    def stop(self, graceful: bool = True) -> None:
        """Stop all nodes.  graceful: SIGTERM brokers (in parallel), then controllers,
        SIGKILL after 20 s; otherwise SIGKILL everything at once (fast, for tests that
        do not care about a clean shutdown)."""
        groups = (
            [[n for n in self.nodes if not n.is_controller], [n for n in self.nodes if n.is_controller]]
            if graceful
            else [self.nodes]
        )
        sig = signal.SIGTERM if graceful else signal.SIGKILL
        for group in groups:
            procs = [n.process for n in group if n.process is not None and n.process.poll() is None]
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
            for p in procs:
                _kill_group(p, timeout=20)
        for n in self.nodes:
            if n.process is not None:
                _live.discard(n.process)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe_rewrites(self) -> str:
        return "\n".join(str(r) for r in self.rewrites)


# ----------------------------------------------------------------------------
# LoadBalancer simulation
# ----------------------------------------------------------------------------


class LoadBalancer:
    """TCP forwarder listen (ip, port) -> target (ip, port), with threads.

    Simulates a Service of type LoadBalancer (its IP and ``port``) in front of one pod
    (``targetPort``), e.g. bitnami's per-broker LB 9094 -> container port 9095.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen, self.target = listen, target
        self.connections = 0
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(listen)
        self._srv.listen(64)
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> LoadBalancer:
        self._thread = threading.Thread(target=self._accept_loop, name=f"lb-{self.listen}", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while True:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return  # closed
            try:
                u = socket.create_connection(self.target, timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self._lock:
                if self._closed:
                    c.close()
                    u.close()
                    return
                self.connections += 1
                self._socks |= {c, u}
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            done = threading.Semaphore(0)
            threading.Thread(target=self._pump, args=(c, u, done), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, done), daemon=True).start()
            threading.Thread(target=self._reap, args=(c, u, done), daemon=True).start()

    def _reap(self, c: socket.socket, u: socket.socket, done: threading.Semaphore) -> None:
        done.acquire()
        done.acquire()
        with self._lock:
            self._socks -= {c, u}
        c.close()
        u.close()

    def _pump(self, src: socket.socket, dst: socket.socket, done: threading.Semaphore) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                s.shutdown(how)
        done.release()

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            socks, self._socks = self._socks, set()
        with contextlib.suppress(OSError):
            self._srv.shutdown(socket.SHUT_RDWR)
        self._srv.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> LoadBalancer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "KafkaCluster",
    "KafkaDist",
    "KafkaNode",
    "Listener",
    "LoadBalancer",
    "PrivateHosts",
    "Rewrite",
    "ZooKeeper",
    "check_bindable",
    "ensure_dists",
    "enter_private_hosts",
    "format_properties",
    "java_bin",
    "loopback_ips",
    "parse_listeners",
    "parse_properties",
    "port_open",
    "private_hosts_available",
    "private_hosts_entered",
    "random_kafka_uuid",
    "tail",
    "wrap_private_hosts_argv",
]
