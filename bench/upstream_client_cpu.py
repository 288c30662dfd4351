"""Process CPU per call of the gateway on two source trees (here: the upstream client on pyreqwest
against main's aiohttp), and of bare_passthrough.py, A/B interleaved: what callgrind cannot show
(pyreqwest's Tokio thread hands each response back to the loop: futex wake-ups and GIL hand-offs).

    PYTHONPATH=src:tests python bench/upstream_client_cpu.py --base-src /tmp/base/src
        [--also-src pyreqwest=/tmp/other/src] [--only bare,plain] [--rounds 3] [--seconds 8]

Each server starts under `taskset -c 0` (a Rust runtime's threads inherit the pin), the simulator and
wrk run on core 1; a 2 s warm-up at c=8, then wrk at c=64 for --seconds; CPU per call = the server's
utime + stime over the run (every thread, /proc/PID/stat) / its calls. Loopback only; bounded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway_bench import ENV, cpu_per_call, start_sim  # noqa: E402
from governance_bench import LAYERS, config_for, slug, stop, wait_ready, workspace  # noqa: E402

BIN = Path(sys.executable).parent


def start(name: str, src: str, sim_url: str, tmp: Path, port: int) -> tuple[subprocess.Popen, str]:
    env = {**ENV, "PYTHONPATH": src}
    if name == "bare":
        cmd = [sys.executable, str(HERE / "bare_passthrough.py"), "--port", str(port), "--upstream", sim_url + "/v1"]
        cmd += ["--model", "bench=bench-model"]
        ready = f"http://127.0.0.1:{port}/"
    else:
        cfg = tmp / f"{slug(name)}-{port}.yaml"
        cfg.write_text(config_for(name, sim_url, tmp, None))
        cmd = [str(BIN / "multihome"), "serve", "--config", str(cfg), "--port", str(port)]
        ready = f"http://127.0.0.1:{port}/readyz"
    log = open(tmp / f"{slug(name)}-{port}.log", "w")
    # pinned from the start: a Rust runtime's threads inherit core 0 (pinning the pid later misses them)
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, ready


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-src", required=True)
    ap.add_argument("--src", default=str(HERE.parent / "src"))
    ap.add_argument("--only", default="bare,plain")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--also-src", action="append", default=[], help="LABEL=PATH: a third tree, and more")
    args = ap.parse_args()
    also = [tuple(a.split("=", 1)) for a in args.also_src]
    runs: list[tuple[str, str, str]] = []  # label, configuration, src
    for name in args.only.split(","):
        if name == "bare":
            runs.append(("bare", "bare", args.src))
        elif name in LAYERS:
            runs += [(f"{name} (base)", name, args.base_src), (name, name, args.src)]
            runs += [(f"{name} ({label})", name, path) for label, path in also]
    tmp = workspace("mh-upstream-cpu-")
    sim, sim_url = start_sim()
    cpu: dict[str, list[float]] = {r[0]: [] for r in runs}
    rps: dict[str, list[float]] = {r[0]: [] for r in runs}
    try:
        for rnd in range(args.rounds):
            # Alternate the order each round: neither tree always runs first on a shared machine.
            for i, (label, name, src) in enumerate(runs if rnd % 2 == 0 else runs[::-1]):
                port = 4950 + i
                proc, ready = start(name, src, sim_url, tmp, port)
                try:
                    wait_ready(ready, proc, seconds=60)
                    us, r = cpu_per_call(f"http://127.0.0.1:{port}", proc.pid, sim.pid, seconds=args.seconds, tmp=tmp)
                finally:
                    stop(proc)
                cpu[label].append(us)
                rps[label].append(r["rps"])
                print(
                    f"round {rnd + 1} {label}: {r['rps']:,.0f} req/s, {us:.1f} us CPU per call "
                    f"(errors {r['errors']}, load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    finally:
        stop(sim)
    print("\n| run | CPU per call, median (all) | req/s median |\n|---|---|---|")
    for label in cpu:
        runs_us = ", ".join(f"{u:.0f}" for u in cpu[label])
        print(
            f"| {label} | {statistics.median(cpu[label]):.0f} us ({runs_us}) | {statistics.median(rps[label]):,.0f} |"
        )


if __name__ == "__main__":
    main()
