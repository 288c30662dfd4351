"""Native time per call of parts of the governed call, in process: bench/plain_percall.py's run (the app
`serve` builds, its ASGI callable called at concurrency 16 with a canned upstream), each part wrapped in
a `perf_counter_ns` pair, the MEDIAN per call reported (robust to preemption by other processes and to
the writer threads taking the GIL, which a mean is not). Unlike valgrind's count, this sees what the
real CPU pays, cache misses included: a part's code and data are cold again by the next call, so it
costs natively about twice what it costs in a tight loop. The wrapper itself costs ~0.1 µs per part.

    PYTHONPATH=src python bench/part_native.py [--config +metering] [--calls 10000] [--rounds 3]

Pin it (`taskset -c 0`) and interleave trees (PYTHONPATH=/tmp/base/src ...) in the same minutes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import plain_percall  # bench/ is on the path when run as a script

# label: (module, class or None for a module function, name)
PARTS = {
    "gate": ("multihome.api.policy_gate", "PolicyGate", "admit"),
    "admit": ("multihome.accounting.tracker", "CallTracker", "admit_at_once"),
    "finish_unary": ("multihome.api.openai.chat", None, "finish_unary"),  # as the chat door calls it
    "finish": ("multihome.accounting.tracker", "CallTracker", "finish_produced"),
    "record_call": ("multihome.metering.service", "Metering", "record_call"),
}


def _wrap(samples: dict[str, list[int]]) -> None:
    ns = time.perf_counter_ns
    for label, (module, cls_name, name) in PARTS.items():
        owner = importlib.import_module(module)
        if cls_name is not None:
            owner = getattr(owner, cls_name)
        orig = getattr(owner, name)
        out = samples[label] = []

        def timed(*args, __orig=orig, __out=out, **kwargs):
            t = ns()
            try:
                return __orig(*args, **kwargs)
            finally:
                __out.append(ns() - t)

        setattr(owner, name, timed)


def main() -> None:
    import uvloop

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="+metering", choices=sorted(plain_percall.CONFIGS))
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    samples: dict[str, list[int]] = {}
    _wrap(samples)
    plain_percall._logging(True)
    uvloop.run(plain_percall._run(plain_percall.WARM, args.config))
    medians: dict[str, list[int]] = {label: [] for label in samples}
    for _ in range(args.rounds):
        for out in samples.values():
            out.clear()
        uvloop.run(plain_percall._run(args.calls, args.config))
        for label, out in samples.items():
            out.sort()
            medians[label].append(out[len(out) // 2] if out else 0)
    parts = ", ".join(f"{label} {min(v) / 1000:.2f}-{max(v) / 1000:.2f}" for label, v in medians.items())
    print(f"{args.config}: median µs per call ({args.rounds} rounds): {parts}")


if __name__ == "__main__":
    sys.exit(main())
