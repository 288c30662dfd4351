"""Instructions per call of one part of the governed call, in process: bench/plain_percall.py's run (the app
`serve` builds, its ASGI callable called with a canned upstream), under callgrind collecting only inside
that part (`--toggle-collect` on `operator.call`, through which the part is entered), N calls less 0
calls, over N. Only the part's own work is counted, so the writer threads' timing (which moves a
whole-process count by ±15k instructions between runs) does not blur a change of a few hundred.

Parts (one per run: toggles do not nest). Admission, on the event loop's thread:
- begin: `Accounting.begin` (the request's hash, the CallTracker; `Pipeline.run` no longer enters
  `pipeline.begin_call`, which this part measured before 2026-12-06);
- gate: `PolicyGate.admit` (policy's decision, told to the tracker);
- admit: `CallTracker.admit_at_once` (the prompt estimate, budgets and rate limits with their
  x-ratelimit-* headers, the audit's `call_started`; before 2026-12-06 the pipeline's `_admit_at_once`
  around it also picked the deployments policy allows: `Pipeline.run` does that now).
The finish side:
- finish: `CallTracker.finish_produced` (the record or its facts, metering's row, the spool copy, budget
  and limit settlement, the audit `call` event's body), on the event loop's thread;
- flush: `AuditLog._flush_step` (chaining, hashing and writing the step's audit events), likewise;
- sqlite: `UsageWriter._sqlite_batch` (binding and inserting the usage rows), on the writer's thread
  (its count varies from run to run with the batches' sizes).

    PYTHONPATH=src python bench/part_percall.py [--config all-sqlite] [--calls 1000] [--part admit ...]
        [--base-src /tmp/main/src]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys

# (module, class or None for a module function, name)
PARTS = {
    "begin": ("multihome.accounting.tracker", "Accounting", "begin"),
    "gate": ("multihome.api.policy_gate", "PolicyGate", "admit"),
    "admit": ("multihome.accounting.tracker", "CallTracker", "admit_at_once"),
    "finish": ("multihome.accounting.tracker", "CallTracker", "finish_produced"),
    "flush": ("multihome.audit.writer", "AuditLog", "_flush_step"),
    "sqlite": ("multihome.metering.writer", "UsageWriter", "_sqlite_batch"),
}


def _wrap(part: str) -> None:
    """Enter the part through operator.call (a C function callgrind can toggle collection on)."""
    import importlib
    import operator

    module, cls_name, name = PARTS[part]
    owner = importlib.import_module(module)
    if cls_name is not None:
        owner = getattr(owner, cls_name)
    orig = getattr(owner, name)
    call = operator.call

    def entered(*args, **kwargs):
        return call(orig, *args, **kwargs)

    setattr(owner, name, entered)


def child(calls: int, config: str, part: str) -> None:
    import uvloop

    import plain_percall  # bench/ is on the path when run as a script

    _wrap(part)
    plain_percall._logging(True)
    uvloop.run(plain_percall._run(plain_percall.WARM + calls, config))


def instructions(src: str, calls: int, config: str, part: str) -> int:
    from percall_instructions import callgrind  # bench/ is on the path when run as a script

    args = ["--child", str(calls), config, part]
    return callgrind(src, __file__, args, options=("--toggle-collect=_operator_call",))


def per_call(src: str, calls: int, config: str, part: str) -> float:
    return (instructions(src, calls, config, part) - instructions(src, 0, config, part)) / calls


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--config", default="all-sqlite")
    ap.add_argument("--part", action="append", choices=sorted(PARTS))
    ap.add_argument("--base-src", help="another tree's src/, counted in the same run (in parallel)")
    ap.add_argument("--src", help="this tree's src/ (default: the tree this script is in)")
    args = ap.parse_args()
    here = args.src or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    trees = [("this tree", here)] + ([("base", args.base_src)] if args.base_src else [])
    for part in args.part or sorted(PARTS):
        with concurrent.futures.ThreadPoolExecutor(len(trees)) as pool:
            counts = [pool.submit(per_call, src, args.calls, args.config, part) for _, src in trees]
            for (label, _), count in zip(trees, counts):
                print(f"{args.config} {part} ({label}): {count.result():,.0f} instructions per call", flush=True)


if __name__ == "__main__":
    main()
