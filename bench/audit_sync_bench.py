"""What making one audit line durable costs on this disk, by method: the c=1 call waits for it.

    .venv/bin/python bench/audit_sync_bench.py [--dir /tmp] [--lines 300] [--rounds 3]

Each method appends `--lines` lines of ~700 bytes (a `call_started` event's size) one at a time and
makes each durable before the next, as an idle gateway does; methods interleave round by round. What
the audit writer does today is `write` (O_APPEND) + `fsync`. The alternatives: `fdatasync` (skips
syncing the inode's times, but an append still changes the file's size, which it must sync);
a file preallocated with `fallocate` and written with `pwrite` at the tail, then `fdatasync` (the size
and the extents are already on disk, so only the data blocks are written); and O_DSYNC writes (the
write itself returns once durable: one system call). The preallocated file has zeros past its last
line until it is full or truncated at close: a reader (and a recovery) would have to stop at the first
NUL. Wall-clock microseconds per line, p50 and p99: the machine's load moves them; read the pairs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

LINE = b'{"kind":"call_started","seq":1,"body":' + b"x" * 620 + b"}\n"
_PREALLOC = 64 << 20


def appended(path: str, n: int, sync, flags: int = 0) -> list[float]:
    """`n` lines appended one at a time, each `sync`ed (or made durable by `flags`, O_DSYNC) before the next."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | flags, 0o600)
    os.fsync(fd)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, LINE)
            sync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return out


def preallocated(path: str, n: int) -> list[float]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.posix_fallocate(fd, 0, _PREALLOC)
    os.fsync(fd)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    # A first pass over the blocks: fallocate leaves them "unwritten", and the first write to such an
    # extent converts it, a metadata change that the fdatasync then has to journal.
    zeros = b"\0" * (1 << 20)
    for off in range(0, _PREALLOC, len(zeros)):
        os.pwrite(fd, zeros, off)
    os.fsync(fd)
    out = []
    at = 0
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.pwrite(fd, LINE, at)
            os.fdatasync(fd)
            out.append(time.perf_counter() - t0)
            at += len(LINE)
    finally:
        os.close(fd)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    methods = {
        "write + fsync (today)": lambda p, n: appended(p, n, os.fsync),
        "write + fdatasync": lambda p, n: appended(p, n, os.fdatasync),
        "O_DSYNC write": lambda p, n: appended(p, n, lambda fd: None, os.O_DSYNC),
        "preallocated, pwrite + fdatasync": preallocated,
    }
    results: dict[str, list[float]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mh-sync-") as tmp:
        for r in range(args.rounds):
            for i, (name, run) in enumerate(methods.items()):
                results[name] += run(os.path.join(tmp, f"{r}-{i}.log"), args.lines)
    print(f"{args.lines} lines x {args.rounds} rounds in {args.dir}; load average {os.getloadavg()[0]:.2f}\n")
    print("| method | p50 µs | p90 µs | p99 µs |")
    print("|---|---|---|---|")
    for name, xs in results.items():
        q = statistics.quantiles(xs, n=100)
        print(f"| {name} | {q[49] * 1e6:.0f} | {q[89] * 1e6:.0f} | {q[98] * 1e6:.0f} |")


if __name__ == "__main__":
    main()
