"""Memory and liveness of the processes under test, from /proc (Linux only, as the control plane)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

_KB = re.compile(r"^(\w+):\s+(\d+) kB$", re.MULTILINE)


@dataclass(frozen=True)
class Memory:
    """Resident set now and its peak (VmHWM) of one process, in KiB."""

    pid: int
    rss_kib: int
    hwm_kib: int

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def hwm_mib(self) -> float:
        return self.hwm_kib / 1024


def memory(pid: int) -> Memory | None:
    """VmRSS and VmHWM of `pid`, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {name: int(kib) for name, kib in _KB.findall(text)}
    return Memory(pid, values.get("VmRSS", 0), values.get("VmHWM", 0))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time `pid` has used so far (all its threads), or None once it is gone. CPU
    time, unlike wall time, does not grow when other work on the machine takes the CPUs."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (writing 5 to clear_refs, Linux >= 4.0); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(found))


GUNICORN_EVENTS = ("Booting worker", "Worker exiting", "WORKER TIMEOUT", "Exception in worker process")


def gunicorn_events(log_path: Path) -> dict[str, int]:
    """How often each worker life-cycle line of gunicorn appears in the server log."""
    counts = dict.fromkeys(GUNICORN_EVENTS, 0)
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return counts
    for line in text.splitlines():
        for event in GUNICORN_EVENTS:
            if event in line:
                counts[event] += 1
    return counts


def worker_pids(log_path: Path) -> list[int]:
    """The pids of the workers gunicorn booted (in order), from `Booting worker with pid: N`."""
    pids = []
    for line in log_path.read_text(errors="replace").splitlines():
        if "Booting worker with pid:" in line:
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                message = line
            pids.append(int(re.findall(r"\d+", message)[-1]))
    return pids


def server_memory(master_pid: int, log_path: Path | None = None) -> list[Memory]:
    """Memory of the gunicorn master and every live worker (master first). Workers are the master's
    children; the log (gunicorn's `Booting worker` lines) is read only if /proc lists no children."""
    found = [memory(master_pid)]
    pids = set(children(master_pid))
    if not pids and log_path is not None:
        pids = set(worker_pids(log_path))
    found += [memory(pid) for pid in sorted(pids)]
    return [m for m in found if m is not None]
