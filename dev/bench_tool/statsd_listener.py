"""A UDP StatsD listener on loopback that keeps timestamped samples of chosen metrics."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    ts: float  # wall clock when the datagram arrived
    name: str
    value: float
    kind: str  # ms, g, c, ...


def parse_statsd(packet: str) -> list[tuple[str, float, str]]:
    """Parse StatsD lines ``name:value|type[|@rate][|#tags]`` (one or many per packet)."""
    out = []
    for line in packet.splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split("|")
        if len(fields) < 2:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        out.append((name, value, fields[1]))
    return out


class StatsdListener:
    """Collects samples whose name ends with one of ``suffixes`` (all when empty)."""

    def __init__(self, host: str = "127.0.0.1", suffixes: tuple[str, ...] = ()) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.suffixes = suffixes
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="statsd-listener", daemon=True)

    def start(self) -> StatsdListener:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.time()
            for name, value, kind in parse_statsd(data.decode("utf-8", "replace")):
                if self.suffixes and not name.endswith(self.suffixes):
                    continue
                with self._lock:
                    self.samples.append(Sample(now, name, value, kind))

    def select(self, name: str, since: float = 0.0, until: float = float("inf")) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.name == name and since <= s.ts <= until]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            self.sock.close()
