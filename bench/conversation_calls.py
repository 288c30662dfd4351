"""Instructions per call of the state store's conversation calls (the ones a conversation turn and the
Conversations API make), for an A/B of two trees under callgrind: a SQLite file (its reader and writer
threads, as the gateway runs it), a conversation of `--items` items, then `--calls` rounds of: read its
items (a turn's context), append two items (a turn's input and answer, or an add), delete one.

    PYTHONPATH=src valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/conversation_calls.py --calls 200
    (and --calls 0: the difference over 200 is the instructions per round, start-up cancelling)

Loopback-free (no server), bounded by --calls.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import msgspec

from multihome.config.kms import KmsConfig
from multihome.crypto import init_key_file, open_keyring
from multihome.state import StateStore
from multihome.storage import migrate_sync
from multihome.storage.engine import create_engine


def _item(i: int) -> dict:
    text = f"message {i}: " + "words " * 40
    return {"id": f"msg_{i}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def run(args: argparse.Namespace, tmp: Path, url: str) -> None:
    init_key_file(tmp / "kms.key")
    kms = msgspec.convert({"backend": "local", "local": {"key_file": str(tmp / "kms.key")}}, KmsConfig)
    engine = create_engine(url)
    keyring = open_keyring(kms, engine)
    store = StateStore(engine, keyring)
    try:
        await store.create_conversation("t1", "conv_b", {}, [_item(i) for i in range(args.items)])
        n = 10_000
        for _ in range(20):  # warm every path (the key cache, compiled statements)
            await store.items("t1", "conv_b")
            await store.append_items("t1", "conv_b", [_item(n), _item(n + 1)])
            await store.delete_item("t1", "conv_b", f"msg_{n}")
            n += 2
        ops = set(args.ops.split(","))
        for _ in range(args.calls):
            if "items" in ops:
                page = await store.items("t1", "conv_b")
                assert page is not None
            if "append" in ops:
                await store.append_items("t1", "conv_b", [_item(n), _item(n + 1)])
            if "delete" in ops:
                await store.delete_item("t1", "conv_b", f"msg_{n}")
            n += 2
    finally:
        await store.close()
        await keyring.close()
        await engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--ops", default="items,append,delete", help="the calls of a round (delete: of an appended item)")
    tmp = Path(tempfile.mkdtemp(prefix="conv-calls-"))
    url = f"sqlite+aiosqlite:///{tmp}/multihome.db"
    migrate_sync(url)
    asyncio.run(run(ap.parse_args(), tmp, url))


if __name__ == "__main__":
    main()
