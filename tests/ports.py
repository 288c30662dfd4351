"""Free loopback ports for servers a test starts that bind later (another process, or a thread).

The port is found free and handed over, so something else may take it in between. Alone, the kernel's
ephemeral allocator makes that rare; but two pytest processes handing out ports from the same place
(two xdist workers, or two suites run at once on a shared machine) could hand out the same port, and a
test would talk to the other one's gateway. So each pytest process claims a range of its own, below
the kernel's ephemeral range (32768-60999 on Linux), which client sockets use: slot k is
[_FIRST + k * _SPAN, _FIRST + (k + 1) * _SPAN), held by an exclusive lock on a file in the temp
directory for the life of the process (the kernel drops the lock when the process dies, however it
dies, so a crashed run leaves nothing to clean up). A process never hands out a port it handed out
recently. With every slot taken, it falls back to the kernel's ephemeral allocator (bind to port 0).
"""

from __future__ import annotations

import collections
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path
from typing import IO

_FIRST, _SPAN, _SLOTS = 10_000, 1_500, 15  # 10000-32499: below the ephemeral range
# The lock files' folder: one per machine, so that every suite running on it sees the others' claims.
_LOCKS = Path(os.environ.get("MH_TEST_PORT_LOCKS") or Path(tempfile.gettempdir()) / "multihome-test-ports")
_recent: collections.deque[int] = collections.deque(maxlen=512)
_held: list[IO[bytes]] = []  # the open lock file of this process's slot (closing it would free the slot)
_base: list[int | None] = []  # the claimed range's first port, or None (no slot free), once claimed


def _claim() -> int | None:
    """This process's range (its first port), claimed on first use; None when every slot is held."""
    if _base:
        return _base[0]
    _LOCKS.mkdir(mode=0o1777, exist_ok=True)
    start = random.randrange(_SLOTS)  # spread first tries: fewer lock attempts when several start at once
    for i in range(_SLOTS):
        slot = (start + i) % _SLOTS
        lock = open(slot_file(_FIRST + slot * _SPAN), "ab")  # held open for the process's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _held.append(lock)
        _base.append(_FIRST + slot * _SPAN)
        return _base[0]
    _base.append(None)
    return None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    base = _claim()
    if base is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
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


def claimed_range() -> tuple[int, int] | None:
    """[first, end) of this process's range, claiming it if need be (None: every slot was taken)."""
    base = _claim()
    return None if base is None else (base, base + _SPAN)


def slot_file(first: int) -> Path:
    """The lock file of the range that starts at `first`."""
    return _LOCKS / f"slot-{(first - _FIRST) // _SPAN}.lock"
