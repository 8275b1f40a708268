"""Starting Airflow components in their own process groups and stopping them reliably.

Every component is started with ``start_new_session=True``: it leads a new session and
process group whose id equals its pid.  Stopping sends SIGTERM to the group, waits for a
grace period, then SIGKILLs whatever is left: the group, plus any process still in the
session (the Task SDK moves task runners into process groups of their own, but they stay
in the session).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` that we need."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int


def parse_proc_stat(text: str) -> ProcStat:
    """Parse a ``/proc/<pid>/stat`` line (the command name may contain spaces and parens)."""
    pid_part, _, rest = text.partition(" (")
    fields = rest.rpartition(") ")[2].split()
    return ProcStat(
        pid=int(pid_part),
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
    )


def iter_processes() -> Iterable[ProcStat]:
    """Yield the stat of every visible process (nothing if ``/proc`` is unavailable)."""
    try:
        entries = list(PROC.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            yield parse_proc_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # the process went away, or an unreadable entry


def live_members(pgid: int | None = None, session: int | None = None) -> list[int]:
    """Pids (zombies excluded) in process group ``pgid`` or session ``session``."""
    if not PROC.is_dir():
        # No /proc: fall back to asking the kernel whether the group has any member.
        if pgid is None:
            return []
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for stat in iter_processes():
        if stat.state in ("Z", "X"):
            continue
        if (pgid is not None and stat.pgrp == pgid) or (session is not None and stat.session == session):
            members.append(stat.pid)
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class ManagedProcess:
    """An Airflow component run as the leader of its own session / process group."""

    name: str
    argv: Sequence[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            list(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def remaining(self) -> list[int]:
        """Live pids still in this component's group or session (after reaping the leader)."""
        if self.popen is None:
            return []
        self.popen.poll()
        return live_members(pgid=self.popen.pid, session=self.popen.pid)

    def close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def stop_processes(
    procs: Sequence[ManagedProcess],
    grace: float = 15.0,
    poll: float = 0.2,
    log: Callable[[str], None] | None = None,
    hurry: Callable[[], bool] = lambda: False,
) -> list[int]:
    """Stop every process group in ``procs``: SIGTERM, wait ``grace`` seconds, then SIGKILL.

    ``hurry`` is polled while waiting; once it returns True the grace period ends early
    (e.g. the user pressed Ctrl-C again).  Returns the pids that were still alive after
    SIGKILL (normally an empty list).
    """
    started = [proc for proc in procs if proc.popen is not None]
    for proc in started:
        assert proc.pid is not None
        _signal_group(proc.pid, signal.SIGTERM)

    deadline = time.monotonic() + grace
    pending = list(started)
    while pending and time.monotonic() < deadline and not hurry():
        pending = [proc for proc in pending if proc.remaining()]
        if pending:
            time.sleep(poll)

    for proc in pending:
        assert proc.pid is not None
        if log is not None:
            log(f"{proc.name} did not stop within {grace:.0f}s, sending SIGKILL")
        _signal_group(proc.pid, signal.SIGKILL)
        _signal_pids(proc.remaining(), signal.SIGKILL)

    survivors: list[int] = []
    kill_deadline = time.monotonic() + 5
    for proc in started:
        while proc.remaining() and time.monotonic() < kill_deadline:
            time.sleep(poll)
        survivors.extend(proc.remaining())
        if proc.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, kill_deadline - time.monotonic()))
        proc.close_log()
    return survivors


def tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """Return the last ``lines`` lines of ``path`` (empty string if it can't be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list((PROC / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _decode_address(hex_addr: str) -> str:
    """Decode the local address column of /proc/net/tcp{,6} into an IP string."""
    addr_hex = hex_addr.split(":")[0]
    raw = bytes.fromhex(addr_hex)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    # IPv6: four 32-bit little-endian words.
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    full = b"".join(words).hex()
    return ":".join(full[i : i + 4] for i in range(0, 32, 4))


def parse_listening_sockets(table: str) -> dict[int, tuple[str, int]]:
    """Map socket inode -> (ip, port) for LISTEN rows of a /proc/net/tcp{,6} table."""
    result: dict[int, tuple[str, int]] = {}
    for line in table.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != "0A":  # 0A == TCP_LISTEN
            continue
        port = int(parts[1].split(":")[1], 16)
        result[int(parts[9])] = (_decode_address(parts[1]), port)
    return result


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("0000:0000:0000:0000:0000:0000:0000:0001",)


def listening_addresses(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """(pid, ip, port) for every TCP socket in LISTEN state owned by ``pids`` (Linux only)."""
    listening: dict[int, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            listening.update(parse_listening_sockets((PROC / "net" / table).read_text()))
        except OSError:
            continue
    found = []
    for pid in pids:
        for inode in _socket_inodes(pid):
            if inode in listening:
                ip, port = listening[inode]
                found.append((pid, ip, port))
    return found
