"""Instructions per call of one part of the governed call's FINISH side, in process: bench/plain_percall.py's
run (the app `serve` builds, its ASGI callable called with a canned upstream), under callgrind with
collection only inside that part (`--toggle-collect`), N calls less 0 calls over N.

Parts (each entered through `operator.call`, so callgrind can toggle on its C function):
- finish: `CallTracker.finish_produced` (the record or its replacement, metering's row, the spool copy,
  budget and limit settlement, the audit `call` event's body), on the event loop's thread;
- flush: `AuditLog._flush_step` (chaining, hashing and writing the step's audit events: `call_started`
  and `call` alike), on the event loop's thread;
- sqlite: `UsageWriter._sqlite_batch` (binding and inserting the usage rows), on the writer's thread.

    PYTHONPATH=src python bench/finish_percall.py [--config all-sqlite] [--calls 1000] [--part finish]
        [--base-src /tmp/main/src]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

PARTS = {
    "finish": ("multihome.accounting.tracker", "CallTracker", "finish_produced"),
    "flush": ("multihome.audit.writer", "AuditLog", "_flush_step"),
    "sqlite": ("multihome.metering.writer", "UsageWriter", "_sqlite_batch"),
}


def _wrap(part: str) -> None:
    import importlib
    import operator

    module, cls_name, name = PARTS[part]
    cls = getattr(importlib.import_module(module), cls_name)
    orig = getattr(cls, name)
    call = operator.call

    def entered(self, *args, **kwargs):
        return call(orig, self, *args, **kwargs)

    setattr(cls, name, entered)


def child(calls: int, config: str, part: str) -> None:
    import uvloop

    import plain_percall

    _wrap(part)
    plain_percall._logging(True)
    uvloop.run(plain_percall._run(plain_percall.WARM + calls, config))


def instructions(src: str, calls: int, config: str, part: str) -> int:
    return callgrind_toggled(src, ["--child", str(calls), config, part])


def callgrind_toggled(src: str, args: list[str]) -> int:
    """As percall_instructions.callgrind, collecting only inside operator.call."""
    import re
    import subprocess

    env = dict(os.environ, PYTHONPATH=src, PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--toggle-collect=_operator_call",
                f"--callgrind-out-file={d}/cg.out",
                sys.executable,
                __file__,
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    assert found, proc.stderr[-2000:]
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--config", default="all-sqlite")
    ap.add_argument("--part", action="append", choices=sorted(PARTS))
    ap.add_argument("--base-src", help="another tree's src/, counted in the same run")
    args = ap.parse_args()
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    trees = [("this tree", here)] + ([("base", args.base_src)] if args.base_src else [])
    for part in args.part or ["finish", "flush", "sqlite"]:
        for label, src in trees:
            n = instructions(src, args.calls, args.config, part)
            z = instructions(src, 0, args.config, part)
            print(f"{args.config} {part} ({label}): {(n - z) / args.calls:,.0f} instructions per call", flush=True)


if __name__ == "__main__":
    main()
