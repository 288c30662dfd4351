"""How long one hostile 20 MiB body holds the event loop, in process (docs/hostile-input.md).

The app is the gateway's own (one deployment nothing listens on: a body that is accepted fails over to a
503, after its parse, planning and estimate); the body goes in through httpx's ASGI transport. A ticker on
the same loop sleeps 1 ms at a time: the longest gap between its wake-ups is how long the loop was held,
which every other client's call would have waited. Each body is sent `--runs` times; the longest gap of each
run is printed, with the answer's status and code.

    PYTHONPATH=src:tests python bench/hostile_body_hold.py [--runs 5]
    PYTHONPATH=/other/tree/src:tests python bench/hostile_body_hold.py   # the same on another tree

Bodies: ~700,000 tiny chat content parts, the same as Responses input parts, and (for scale) one 20 MiB
string. Judge by the gaps, run on a quiet machine; nothing here is a pass or a fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx

from builders import open_door, single, typed
from multihome.app import build_app

PARTS = 700_000


def bodies() -> dict[str, tuple[str, bytes]]:
    chat_parts = {"model": "g", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}] * PARTS}]}
    responses_parts = {
        "model": "g",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": ""}] * PARTS}],
    }
    string = {"model": "g", "messages": [{"role": "user", "content": "x" * (19 * 1024 * 1024)}]}
    return {
        "chat: 700k tiny parts": ("/v1/chat/completions", json.dumps(chat_parts).encode()),
        "responses: 700k tiny parts": ("/v1/responses", json.dumps(responses_parts).encode()),
        "chat: one 19 MiB string": ("/v1/chat/completions", json.dumps(string).encode()),
    }


async def held(client: httpx.AsyncClient, path: str, body: bytes) -> tuple[float, int, str]:
    """(the longest gap of the ticker while the request ran, in ms; its status; its error code)."""
    longest = 0.0
    done = False

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    answer = await client.post(path, content=body, headers={"content-type": "application/json"})
    done = True
    await ticker
    code = ""
    if answer.status_code >= 400:
        code = str((answer.json().get("error") or {}).get("code"))
    return longest * 1000, answer.status_code, code


async def main(runs: int) -> None:
    gateway = build_app(typed(single(server=open_door(max_body_bytes=30 * 1024 * 1024))))
    for service in gateway.services:
        await service.start()
    transport = httpx.ASGITransport(app=gateway)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=120) as client:
            for name, (path, body) in bodies().items():
                gaps = []
                for _ in range(runs):
                    gap, status, code = await held(client, path, body)
                    gaps.append(gap)
                shown = ", ".join(f"{g:.0f}" for g in gaps)
                print(f"{name} ({len(body) / 2**20:.1f} MiB): {status} {code}; longest loop hold per run, ms: {shown}")
    finally:
        for service in reversed(gateway.services):
            await service.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
