"""What one governed call costs the whole process, thread by thread: CPU, context switches and
system calls per call, for configurations of bench/governance_bench.py, optionally A/B against an
older tree, interleaved in the same run.

    .venv/bin/python bench/governance_threads.py [--only plain,+storage,all-sqlite] [--seconds 6]
        [--rounds 3] [--base-src /tmp/base] [--strace] [--idle 10]

Why: wall-clock req/s on a shared 2-core machine moves by ±20 % between runs, while governance's
cost is mostly hand-offs between the event loop and the writer threads, each a pair of context
switches. Per call, this reports for each thread (named by py-spy at the end of the run) its user and
system CPU and its voluntary / involuntary context switches (/proc/<pid>/task/*/{stat,status}), and
with `--strace` the system calls of one bounded extra run (`strace -c -f`, which slows the process:
read its counts, not its times). The gateway is pinned to core 0, simulator and wrk to core 1, as in
the governance bench. Loopback only; every run bounded by --seconds. With `--idle S`, every process
is first measured idle (after the warm-up, all at once, for S seconds): what its timers and pollers
cost per second, in CPU and context switches (each a wake-up of a thread), thread by thread.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway_bench import ENV, KEY, set_layout, start_sim, wrk  # noqa: E402
from governance_bench import BASE_SUFFIX, LAYERS, config_for, start_gateway, stop, workspace  # noqa: E402

BIN = Path(sys.executable).parent
CLK = os.sysconf("SC_CLK_TCK")


def tasks(pid: int) -> dict[int, list[int]]:
    """Per thread id: utime, stime (ticks), voluntary and involuntary context switches, CPU time in ns
    (schedstat: finer than the ticks)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
            ns = int((task / "schedstat").read_text().split()[0])
        except OSError:
            continue
        vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        inv = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        out[int(task.name)] = [int(fields[11]), int(fields[12]), vol, inv, ns]
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of the threads, by thread id, from `py-spy dump`."""
    spy = BIN / "py-spy"
    try:
        text = subprocess.run(
            [str(spy), "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names = {}
    for m in re.finditer(r'^Thread (0x[0-9a-fA-F]+|\d+) \(\w+\): "([^"]*)"', text, re.M):
        ident = m.group(1)
        names[int(ident, 16) if ident.startswith("0x") else int(ident)] = m.group(2)
    # py-spy prints the OS thread id after the name on Linux when it can: "Thread 123 (idle): "name""
    return names


def diff(before: dict[int, list[int]], after: dict[int, list[int]]) -> dict[int, list[int]]:
    zero = [0, 0, 0, 0, 0]
    return {t: [a - b for a, b in zip(v, before.get(t, zero), strict=True)] for t, v in after.items()}


def one_run(proc: subprocess.Popen, url: str, sim_pid: int, tmp: Path, seconds: int) -> tuple[int, dict]:
    core = set_layout(proc.pid, sim_pid, pinned=True)
    before = tasks(proc.pid)
    c64 = wrk(url, "bench", KEY, connections=64, seconds=seconds, tmp=tmp, core=core)
    after = tasks(proc.pid)
    set_layout(proc.pid, sim_pid, pinned=False)
    return c64["requests"], diff(before, after)


def strace_counts(proc: subprocess.Popen, url: str, sim_pid: int, tmp: Path, seconds: int) -> tuple[int, list]:
    """System calls per call of every thread over one bounded run under `strace -c -f`."""
    out = tmp / f"strace-{proc.pid}.txt"
    st = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(proc.pid)], stderr=subprocess.DEVNULL)
    time.sleep(1)
    core = set_layout(proc.pid, sim_pid, pinned=True)
    c64 = wrk(url, "bench", KEY, connections=64, seconds=seconds, tmp=tmp, core=core)
    set_layout(proc.pid, sim_pid, pinned=False)
    st.send_signal(signal.SIGINT)
    st.wait(60)
    rows = []
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls = int(parts[3])
            rows.append((parts[-1], calls))
    return c64["requests"], sorted(rows, key=lambda r: -r[1])


def label(names: dict[int, str], tid: int, pid: int) -> str:
    if tid == pid:
        return "main"
    return names.get(tid, f"tid {tid}")


def idle_report(procs: dict[str, subprocess.Popen], seconds: float) -> None:
    """Every process idle for the same `seconds`: CPU and context switches per second, by thread."""
    time.sleep(2)  # the warm-up's writes settle
    before = {name: tasks(p.pid) for name, p in procs.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - t0
    print(f"\nidle for {took:.1f} s, load average {os.getloadavg()[0]:.2f}: per second", flush=True)
    for name, proc in procs.items():
        d = diff(before[name], tasks(proc.pid))
        names = thread_names(proc.pid)
        cpu = sum(v[4] for v in d.values()) / 1e6 / took
        cs = sum(v[2] + v[3] for v in d.values()) / took
        busiest = sorted(d.items(), key=lambda kv: -(kv[1][2] + kv[1][3]))[:4]
        threads = ", ".join(f"{label(names, t, proc.pid)} {(v[2] + v[3]) / took:.1f} cs" for t, v in busiest)
        print(f"{name}: {cpu:.2f} ms CPU, {cs:.1f} context switches ({threads})", flush=True)
    print()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="plain,+storage,all-sqlite")
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base-src", help="an older tree's checkout: the same configurations from it, interleaved")
    ap.add_argument("--strace", action="store_true", help="one extra run per configuration under strace -c -f")
    ap.add_argument("--idle", type=float, default=0, help="seconds of every process idle, measured first")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n in LAYERS]
    if args.base_src:
        names += [n + BASE_SUFFIX for n in list(names)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = workspace("mh-gov-threads-")
    sim, sim_url = start_sim()
    procs: dict[str, subprocess.Popen] = {}
    runs: dict[str, list[tuple[int, dict]]] = collections.defaultdict(list)
    straces: dict[str, tuple[int, list]] = {}
    tnames: dict[str, dict[int, str]] = {}
    try:
        for i, name in enumerate(names):
            env = dict(ENV)
            if name.endswith(BASE_SUFFIX):
                env["PYTHONPATH"] = str(Path(args.base_src) / "src")
            procs[name] = start_gateway(name, config_for(name, sim_url, tmp, None), 4800 + i, tmp, env)
        for i, name in enumerate(names):  # warm-up
            wrk(f"http://127.0.0.1:{4800 + i}", "bench", KEY, connections=8, seconds=2, tmp=tmp)
        if args.idle > 0:
            idle_report(procs, args.idle)
        for _ in range(args.rounds):
            for i, name in enumerate(names):
                runs[name].append(one_run(procs[name], f"http://127.0.0.1:{4800 + i}", sim.pid, tmp, args.seconds))
                n, d = runs[name][-1]
                cpu = sum(v[4] for v in d.values()) / 1e3 / max(n, 1)
                cs = sum(v[2] + v[3] for v in d.values()) / max(n, 1)
                print(f"{name}: {n / args.seconds:.0f} req/s, {cpu:.0f} µs/call, {cs:.2f} cs/call", flush=True)
        for i, name in enumerate(names):
            tnames[name] = thread_names(procs[name].pid)
            if args.strace:
                straces[name] = strace_counts(procs[name], f"http://127.0.0.1:{4800 + i}", sim.pid, tmp, 3)
    finally:
        for proc in procs.values():
            stop(proc)
        stop(sim)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}; medians of {args.rounds} rounds of {args.seconds} s\n")
    for name in names:
        pid = procs[name].pid
        per = collections.defaultdict(list)
        for n, d in runs[name]:
            k = 1 / max(n, 1)
            tot = [0.0] * 5
            for tid, v in d.items():
                lab = label(tnames[name], tid, pid)
                per[lab].append([v[4] / 1e3 * k, v[1] / CLK * 1e6 * k, v[2] * k, v[3] * k, v[0] / CLK * 1e6 * k])
                tot = [a + b for a, b in zip(tot, per[lab][-1], strict=True)]
            per["(process)"].append(tot)
        print(f"### {name}")
        print("| thread | CPU µs (schedstat) | of which system µs (ticks) | voluntary cs | involuntary cs |")
        print("|---|---|---|---|---|")
        for lab, vals in sorted(per.items(), key=lambda kv: -statistics.median(v[0] for v in kv[1])):
            med = [statistics.median(v[j] for v in vals) for j in range(4)]
            if sum(med) == 0:
                continue
            print(f"| {lab} | {med[0]:.1f} | {med[1]:.0f} | {med[2]:.3f} | {med[3]:.3f} |")
        if name in straces:
            n, rows = straces[name]
            print(
                f"\nsystem calls per call (strace -c -f, {n} calls): "
                + ", ".join(f"{sc} {c / max(n, 1):.2f}" for sc, c in rows[:12])
            )
        print()


if __name__ == "__main__":
    main()
