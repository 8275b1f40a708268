"""Free TCP port allocation on the loopback interface."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def find_free_port(host: str = LOOPBACK, exclude: frozenset[int] | set[int] = frozenset()) -> int:
    """Return a TCP port that is currently free on ``host``.

    The port is found by binding to port 0 and letting the kernel choose.  There is an
    unavoidable window between closing the probe socket and the real server binding it;
    for a throwaway local demo that is acceptable.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise RuntimeError(f"could not find a free port on {host}")


def find_free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free ports on ``host``."""
    ports: list[int] = []
    for _ in range(count):
        ports.append(find_free_port(host, exclude=set(ports)))
    return ports


def is_port_free(port: int, host: str = LOOPBACK) -> bool:
    """Return True if nothing is listening on ``host:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
