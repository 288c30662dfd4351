"""A Responses turn in a conversation (`conversation` on POST /v1/responses: its items read, the turn checked
against the bound, its input and answer appended), for an A/B of two trees: the real app in process, called
through ASGI, against the OpenAI simulator in another process. A conversation of 20 items, 20 turns to warm
every path, then `--calls` turns; it prints the SQL statements on the conversations' and responses' tables run through SQLAlchemy per
turn (the ones on the sqlite3 connection itself are not counted). Under callgrind, run it with K and with 0: the difference
over K is the instructions per turn, start-up cancelling.

    PYTHONPATH=src python bench/conversation_turn.py --calls 100
    PYTHONPATH=src valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/conversation_turn.py --calls 100
    PYTHONPATH=src python bench/conversation_turn.py --calls 100 --opcodes   (the loop thread's, by file)

Loopback only; bounded by --calls.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_bench import ENV, start_sim
from responses_bench import CONFIG, QUESTION
from responses_percall import Client

_encode = msgspec.json.encode


class Opcodes:
    """Python opcodes executed on the event loop's thread (the writer's and readers' threads are not
    traced: they began before the tracer), by file."""

    def __init__(self) -> None:
        self.by_file: collections.Counter[str] = collections.Counter()

    def tracer(self, frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.by_file[frame.f_code.co_filename] += 1
        return self.tracer


async def run(config_text: str, calls: int, opcodes: Opcodes | None = None) -> int:
    """-> the statements SQLAlchemy ran during the measured turns."""
    from multihome.app import build_app
    from multihome.config import parse_config

    app = build_app(parse_config(config_text))
    lifespan: asyncio.Queue = asyncio.Queue()
    await lifespan.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def lsend(message: dict) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.startup.failed":
            raise RuntimeError(message)

    life = asyncio.create_task(app({"type": "lifespan"}, lifespan.get, lsend))
    await asyncio.wait_for(started.wait(), 900)  # generous: under callgrind on a loaded machine
    client = Client(app)
    statements = [0]

    def count(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if "conversation" in statement or "responses" in statement:
            statements[0] += 1

    try:
        items = [{"type": "message", "role": "user", "content": QUESTION.format(i=i)} for i in range(20)]
        conv = (await client.post("/v1/conversations", _encode({"items": items})))["id"]
        for i in range(20 + calls):
            if i == 20:  # warmed: count from here, the statements of the turn's tables only
                sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
                if opcodes is not None:
                    sys.settrace(opcodes.tracer)
            body = {"model": "bench", "input": QUESTION.format(i=i), "conversation": conv}
            out = await client.post("/v1/responses", _encode(body))
            assert out.get("status") == "completed", out
        return statements[0]
    finally:
        sys.settrace(None)
        await lifespan.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(life, 300)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--sync", default="full")
    ap.add_argument("--opcodes", action="store_true", help="count the loop thread's Python opcodes per turn")
    args = ap.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("BENCH_")})
    tmp = Path(tempfile.mkdtemp(prefix="conversation-turn-"))
    sim, sim_url = start_sim()
    try:
        config = CONFIG.format(sim=sim_url, db=tmp / "multihome.db", tmp=tmp, sync=args.sync)
        # No periodic polls (snapshots every 0.25 s, the job worker's every 0.5 s, contracts' every 5 s): under
        # callgrind a run lasts minutes, and their instructions would grow with its wall time, not the turns.
        config = config.replace(f"state_sync: {args.sync}}}", f"state_sync: {args.sync}, refresh_s: 3600}}")
        config += "responses: {background: {poll_s: 3600}}\ncontracts: {refresh_s: 3600}\n"
        assert "refresh_s: 3600" in config
        opcodes = Opcodes() if args.opcodes else None
        statements = asyncio.run(run(config, args.calls, opcodes))
    finally:
        sim.terminate()
        sim.wait(10)
    if args.calls:
        print(f"{args.calls} turns: {statements} statements through SQLAlchemy, {statements / args.calls:.2f} per turn")
    if opcodes is not None and args.calls:
        total = sum(opcodes.by_file.values())
        print(f"{total / args.calls:,.0f} Python opcodes per turn on the event loop's thread; by file:")
        for name, n in opcodes.by_file.most_common(12):
            print(f"  {n / args.calls:10,.0f}  {name.split('/multihome/')[-1].split('site-packages/')[-1]}")


if __name__ == "__main__":
    main()
