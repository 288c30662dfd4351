"""Memory search: latency at 100,000 records per namespace on SQLite and PostgreSQL, and recall@5 on
a labelled long-conversation set (issue 16 targets: p95 <= 10 ms; recall@5 reported).

    .venv/bin/python bench/memory_bench.py [--records 100000] [--queries 300] [--stores sqlite,postgresql]
                                           [--conversations 30] [--out FILE]
    .venv/bin/python bench/memory_bench.py --longmemeval longmemeval_s.json [--limit 500]   # by hand

Latency: one `MemoryStore` (what a gateway replica runs, state/memory/store.py) on a SQLite file or
a private PostgreSQL server (tests/pg.py), a `local` KMS keyring, the offline WordLlama embedder.
`--records` records are written into one namespace (batches of 500: embed, seal, insert), then one
search builds the replica's index (opens every record: reported as the cold load), then `--queries`
searches are timed one after another, each as a request pays it: embed the query, the single-row
freshness read, the hybrid search, the answer's records. Also timed: the same with a metadata
filter, vector-only and keyword-only, and writing one record.

Recall: `memory_convos.generate` (seeded) gives conversations with planted facts and paraphrased
questions; each conversation's turns are written as records of one namespace, each question is
searched with top_k 5, and a hit is the fact's turn among the five. `--longmemeval` runs the same
on LongMemEval-S (turn-level recall via `has_answer`, and session-level recall).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec

from memory_convos import TOPICS, Case, generate, load_longmemeval
from multihome.crypto import init_key_file, open_keyring
from multihome.state.memory import MODES, MemoryStore, NewRecord, WordLlamaEmbedder, compile_filter
from multihome.storage import migrate_sync
from multihome.storage.engine import create_engine

TARGET_P95_MS = 10.0
WORDS = (
    "budget travel recipe garden meeting invoice doctor train flight hotel museum concert jacket bicycle "
    "laptop password birthday vacation project deadline report coffee lunch dinner weekend family friend "
    "teacher school homework football tennis swimming river mountain beach winter summer autumn spring"
).split()


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _filler(i: int, rng_words: list[str]) -> str:
    a, b, c = rng_words[i % len(rng_words)], rng_words[(i * 7) % len(rng_words)], rng_words[(i * 13) % len(rng_words)]
    topic = TOPICS[i % len(TOPICS)]
    return f"Note {i}: talked about {topic}, the {a} and the {b}; remember the {c} for next time."


async def _store(kind: str, tmp: Path, pg) -> tuple[MemoryStore, list]:
    tmp = Path(tempfile.mkdtemp(dir=tmp))
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/memory.db"
    else:
        url = pg.create_database()
    await asyncio.to_thread(migrate_sync, url)
    key = tmp / f"kms-{kind}.key"
    init_key_file(key)
    kms = msgspec.convert({"backend": "local", "local": {"key_file": str(key)}}, _kms_type())
    engine = create_engine(url)
    keyring = open_keyring(kms, engine)
    model = WordLlamaEmbedder()
    store = MemoryStore(engine, keyring, lambda: model)
    return store, [store, keyring, engine]


def _kms_type():
    from multihome.config.kms import KmsConfig

    return KmsConfig


async def latency(kind: str, records: int, queries: int, tmp: Path, pg) -> dict[str, object]:
    store, closers = await _store(kind, tmp, pg)
    out: dict[str, object] = {"store": kind, "records": records}
    try:
        t0 = time.perf_counter()
        batch = 500
        for start in range(0, records, batch):
            new = [
                NewRecord(_filler(i, WORDS), {"kind": ("travel", "work", "home")[i % 3], "n": i})
                for i in range(start, min(records, start + batch))
            ]
            await store.write("bench", "agent", "user", new)
        out["write_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        await store.search("bench", "agent", "user", "warm up", top_k=5)
        out["cold_load_s"] = time.perf_counter() - t0
        questions = [
            f"what did we say about the {WORDS[i % len(WORDS)]} and {TOPICS[i % len(TOPICS)]}?" for i in range(queries)
        ]
        keep = compile_filter({"kind": "travel"})
        gc.collect()
        out["load"] = os.getloadavg()[0]
        for label, mode, filt in [
            ("hybrid", "hybrid", None),
            ("hybrid + filter", "hybrid", keep),
            ("vector", "vector", None),
            ("keyword", "keyword", None),
        ]:
            times, cpu = [], []
            for q in questions:
                t, c = time.perf_counter(), time.process_time()
                hits = await store.search("bench", "agent", "user", q, top_k=10, keep=filt, mode=mode)
                times.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
                assert hits, (label, q)
            out[label] = (statistics.median(times), _pct(times, 95), _pct(times, 99))
            out[label + " cpu"] = (statistics.median(cpu), _pct(cpu, 95))
        times = []
        for i in range(min(queries, 200)):
            t = time.perf_counter()
            await store.write("bench", "agent", "user", [NewRecord(f"one more note {i} about the {WORDS[i % 40]}", {})])
            times.append((time.perf_counter() - t) * 1000)
        out["write one"] = (statistics.median(times), _pct(times, 95), _pct(times, 99))
        times, cpu = [], []
        for q in questions[:100]:  # each search now also catches up with the record written just before it
            await store.write("bench", "agent", "user", [NewRecord(f"fresh note about {q}", {})])
            t, c = time.perf_counter(), time.process_time()
            await store.search("bench", "agent", "user", q, top_k=10)
            times.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        out["hybrid after a write"] = (statistics.median(times), _pct(times, 95), _pct(times, 99))
        out["hybrid after a write cpu"] = (statistics.median(cpu), _pct(cpu, 95))
        # Recall among the 100,000: one generated conversation with every kind of fact planted, its
        # questions asked of the whole namespace (past 20,000 records the dense side runs in two passes).
        [case] = generate(conversations=1, facts=20, seed=11)
        written = await store.write("bench", "agent", "user", [NewRecord(t.text, {}) for t in case.turns])
        turn_of = {rec.id: t.id for rec, t in zip(written, case.turns, strict=True)}
        found = 0
        for question, turns, _ in case.questions:
            hits = await store.search("bench", "agent", "user", question, top_k=5)
            found += any(turn_of.get(h.record.id) in turns for h in hits)
        out["recall"] = (found / len(case.questions), len(case.questions))
    finally:
        await closers[0].close()
        await closers[1].close()
        await closers[2].dispose()
    return out


async def recall(cases: list[Case], tmp: Path, modes: tuple[str, ...] = MODES) -> dict[str, tuple[float, float, int]]:
    """recall@5 per mode: (turn-level, session-level, questions)."""
    store, closers = await _store("sqlite", tmp, None)
    hits = {m: [0, 0] for m in modes}
    asked = 0
    try:
        for c, case in enumerate(cases):
            user = f"case-{c}"
            written = []
            for start in range(0, len(case.turns), 500):
                chunk = case.turns[start : start + 500]
                written += await store.write(
                    "bench", "convo", user, [NewRecord(t.text, {"role": t.role}) for t in chunk]
                )
            turn_of = {rec.id: turn for rec, turn in zip(written, case.turns, strict=True)}
            for question, turns, sessions in case.questions:
                if not turns and not sessions:
                    continue
                asked += 1
                for mode in modes:
                    found = await store.search("bench", "convo", user, question, top_k=5, mode=mode)
                    got = [turn_of[h.record.id] for h in found]
                    hits[mode][0] += any(t.id in turns for t in got)
                    hits[mode][1] += any(t.session in sessions for t in got)
            await store.forget_user("bench", user)
    finally:
        await closers[0].close()
        await closers[1].close()
        await closers[2].dispose()
    return {m: (h[0] / max(1, asked), h[1] / max(1, asked), asked) for m, h in hits.items()}


def report(lat: list[dict[str, object]], rec: dict[str, tuple[float, float, int]], what: str) -> str:
    from gateway_bench import machine

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Run {when}; {machine()}. One `MemoryStore` (a replica's), the `local` KMS, the offline WordLlama "
        "embedder; wall time per search as a request pays it (embedding the query, the freshness read, the "
        "search, the answer's records), and the process CPU it took.",
        "",
        "| store | records in the namespace | operation | p50 ms | p95 ms | p99 ms | CPU p50 / p95 ms | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lat:
        for label in ("hybrid", "hybrid + filter", "vector", "keyword", "hybrid after a write", "write one"):
            p50, p95, p99 = r[label]  # type: ignore[misc]
            cpu = r.get(label + " cpu")
            cpu_text = f"{cpu[0]:.2f} / {cpu[1]:.2f}" if cpu else ""  # type: ignore[index]
            target = f"p95 ≤ {TARGET_P95_MS:g} ms" if label.startswith("hybrid") else ""
            met = ("yes" if p95 <= TARGET_P95_MS else "**no**") if target else ""
            lines.append(
                f"| {r['store']} | {r['records']:,} | {label} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {cpu_text} | {target} | {met} |"
            )
    lines.append("")
    for r in lat:
        lines.append(
            f"- {r['store']}: writing {r['records']:,} records (batches of 500: embed, seal, insert) took "
            f"{r['write_s']:.1f} s; the first search on a replica (opening every record, building the index) "
            f"{r['cold_load_s']:.1f} s; recall@5 of {r['recall'][1]} planted facts among them (hybrid): "
            f"{r['recall'][0]:.0%}. Load average when the searches began: {r['load']:.1f} on {os.cpu_count()} cores."
        )
    lines += [
        "",
        f"Recall@5 on {what}:",
        "",
        "| retrieval | recall@5 (evidence turn) | recall@5 (evidence session) | questions |",
        "|---|---|---|---|",
    ]
    for mode, (turn, session, n) in rec.items():
        lines.append(f"| {mode} | {turn:.1%} | {session:.1%} | {n} |")
    return "\n".join(lines)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--stores", default="sqlite,postgresql")
    p.add_argument("--conversations", type=int, default=30)
    p.add_argument("--longmemeval", type=Path, help="LongMemEval-S JSON: recall on it instead of the generated set")
    p.add_argument("--limit", type=int, help="with --longmemeval: the first N questions")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("alembic", "bm25s"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.longmemeval:
            cases = load_longmemeval(args.longmemeval, limit=args.limit)
            what = f"LongMemEval ({args.longmemeval.name}, {len(cases)} questions, every turn a record)"
            print(report([], await recall(cases, tmp), what))
            return
        lat = []
        stores = [s for s in args.stores.split(",") if s]
        pg = None
        if "postgresql" in stores:
            from pg import PostgresServer

            pg = PostgresServer()
        try:
            for kind in stores:
                lat.append(await latency(kind, args.records, args.queries, tmp, pg))
        finally:
            if pg is not None:
                pg.stop()
        cases = generate(conversations=args.conversations)
        turns = sum(len(c.turns) for c in cases) // max(1, len(cases))
        what = (
            f"the generated set (bench/memory_convos.py: {len(cases)} conversations of {turns} turns, "
            f"{len(cases[0].questions) if cases else 0} planted facts each, paraphrased questions)"
        )
        text = report(lat, await recall(cases, tmp), what)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
