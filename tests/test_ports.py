"""tests/ports.py: each pytest process (xdist worker, or another suite on the same machine) hands out
ports from a range of its own, held by a file lock that the kernel drops when the process dies."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import ports

TESTS = Path(__file__).parent
# Another process claims its range, prints it ("None" if it got none) and a port, and holds the range
# until its standard input closes.
HOLDER = "import sys, ports; print(ports.claimed_range(), ports.free_port(), flush=True); sys.stdin.read()"


class Holder:
    def __init__(self, locks: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            cwd=TESTS,
            env={**os.environ, "MH_TEST_PORT_LOCKS": str(locks)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        claimed, port = self.proc.stdout.readline().rsplit(" ", 1)
        self.range: tuple[int, int] | None = eval(claimed)  # a tuple's repr, or None
        self.port = int(port)

    def stop(self, *, kill: bool = False) -> None:
        self.proc.kill() if kill else self.proc.stdin.close()
        self.proc.wait(timeout=60)


def test_ports_come_from_this_processs_range_and_are_not_handed_out_twice():
    first, end = ports.claimed_range()
    handed = ports.free_ports(50)
    assert len(set(handed)) == 50 and all(first <= p < end for p in handed)
    assert end <= 32768  # below the kernel's ephemeral range, which client sockets take from


def test_processes_running_at_once_hold_disjoint_ranges(tmp_path):
    held = [Holder(tmp_path) for _ in range(4)]
    try:
        ranges = sorted(h.range for h in held)
        assert all(b <= c for (_, b), (c, _) in zip(ranges, ranges[1:])), ranges  # none overlaps another
        assert all(h.range[0] <= h.port < h.range[1] for h in held)
    finally:
        for h in held:
            h.stop()


def test_a_killed_processs_range_is_free_again(tmp_path):
    holder = Holder(tmp_path)
    lock = open(tmp_path / ports.slot_file(holder.range[0]).name, "ab")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise AssertionError("a live process's range could be claimed")
        except BlockingIOError:
            pass
        holder.stop(kill=True)  # no clean-up ran: the kernel drops the lock with the process
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        lock.close()


def test_with_every_range_held_ports_come_from_the_kernel(tmp_path):
    held = [Holder(tmp_path) for _ in range(ports._SLOTS)]
    try:
        last = Holder(tmp_path)
        assert last.range is None and last.port >= 32768  # the ephemeral range
        last.stop()
    finally:
        for h in held:
            h.stop()
