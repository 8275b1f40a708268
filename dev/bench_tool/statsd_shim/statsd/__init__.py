"""Minimal stand-in for the ``statsd`` client package, used only when it is not installed.

Airflow's StatsD logger imports ``StatsClient`` and ``UnixSocketStatsClient`` from
``statsd``.  The bench needs the scheduler's and Dag Processor's metrics but must not
change the project's locked virtualenv, so when ``statsd`` is missing it puts this
directory on the components' ``PYTHONPATH``.  It speaks the plain StatsD line protocol
over UDP (one datagram per metric), which is all the bench's listener reads.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Self

__all__ = ["StatsClient", "UnixSocketStatsClient"]


class _Timer:
    def __init__(self, client: _Base, stat: str, rate: float = 1) -> None:
        self.client = client
        self.stat = stat
        self.rate = rate
        self.ms: float | None = None
        self._start: float | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        self.ms = None
        self._start = time.perf_counter()
        return self

    def stop(self, send: bool = True) -> _Timer:
        if self._start is None:
            raise RuntimeError("timer not started")
        self.ms = 1000.0 * (time.perf_counter() - self._start)
        if send:
            self.send()
        return self

    def send(self) -> None:
        if self.ms is not None:
            self.client.timing(self.stat, self.ms, self.rate)


class _Base:
    prefix: str | None = None

    def _send(self, data: str) -> None:
        raise NotImplementedError

    def _emit(self, stat: str, value: str) -> None:
        name = f"{self.prefix}.{stat}" if self.prefix else stat
        with contextlib.suppress(OSError):  # metrics are best effort, like the real client
            self._send(f"{name}:{value}")

    def timer(self, stat: str, rate: float = 1) -> _Timer:
        return _Timer(self, stat, rate)

    def timing(self, stat: str, delta: object, rate: float = 1) -> None:
        if hasattr(delta, "total_seconds"):
            delta = delta.total_seconds() * 1000.0
        self._emit(stat, f"{float(delta):0.6f}|ms")

    def incr(self, stat: str, count: int = 1, rate: float = 1) -> None:
        self._emit(stat, f"{count}|c")

    def decr(self, stat: str, count: int = 1, rate: float = 1) -> None:
        self.incr(stat, -count, rate)

    def gauge(self, stat: str, value: float, rate: float = 1, delta: bool = False) -> None:
        sign = "+" if delta and value >= 0 else ""
        self._emit(stat, f"{sign}{value}|g")

    def set(self, stat: str, value: object, rate: float = 1) -> None:
        self._emit(stat, f"{value}|s")


class StatsClient(_Base):
    def __init__(
        self,
        host: str = "localhost",
        port: int = 8125,
        prefix: str | None = None,
        maxudpsize: int = 512,
        ipv6: bool = False,
    ) -> None:
        family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self._addr = (host, port)
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self.prefix = prefix

    def _send(self, data: str) -> None:
        self._sock.sendto(data.encode("ascii", "replace"), self._addr)


class UnixSocketStatsClient(_Base):
    def __init__(self, socket_path: str, prefix: str | None = None, timeout: float | None = None) -> None:
        self._path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.prefix = prefix

    def _send(self, data: str) -> None:
        self._sock.sendto(data.encode("ascii", "replace"), self._path)
