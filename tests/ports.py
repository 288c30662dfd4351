"""Free loopback ports for servers a test starts that bind later (another process, or a thread).

The port is found free and handed over, so something else may take it in between. Alone, the kernel's
ephemeral allocator makes that rare; under pytest-xdist two workers could be handed the same port and a
test would talk to the other worker's gateway. So each xdist worker takes ports from a range of its own,
below the kernel's ephemeral range (32768-60999 on Linux), which client sockets use, and never hands out
a port it handed out recently.
"""

from __future__ import annotations

import collections
import os
import random
import socket

_FIRST, _SPAN = 10_000, 4_000  # worker gwN: [_FIRST + N * _SPAN, _FIRST + (N + 1) * _SPAN)
_recent: collections.deque[int] = collections.deque(maxlen=512)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    base = _FIRST + int(worker[2:]) * _SPAN
    for _ in range(1000):
        port = random.randrange(base, base + _SPAN)
        if port not in _recent and _bindable(port):
            _recent.append(port)
            return port
    raise RuntimeError(f"no free port in {base}-{base + _SPAN}")


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
