"""Claude's signed thinking blocks carried in a Responses reasoning item's encrypted_content
(api/responses/thinking.py): sealed to the tenant under its `responses` data key, written only for
blocks that can go back, read back onto the assistant turn they preceded; another tenant's, an edited
one, an old unbound one and one whose key was shredded refused with a 400 naming the item; a key
rotated out still opens; never sent to a native upstream. Real keyring over a real SQLite database."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from multihome.api.responses.items import chat_messages
from multihome.api.responses.native import upstream_items
from multihome.api.responses.thinking import PREFIX, Thinking, ThinkingKeys
from multihome.config.kms import KmsConfig
from multihome.crypto import Keyring, init_key_file, open_keyring
from multihome.schema.errors import ApiError
from multihome.storage.engine import create_engine
from multihome.storage.tables import data_keys

SIGNED = {"type": "thinking", "thinking": "The user said: hi.", "signature": "c2lnbmVk"}
REDACTED = {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"}
USER = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}


def _reasoning(blob: str | None, item_id: str = "rs_1") -> dict:
    return {"type": "reasoning", "id": item_id, "summary": [], "encrypted_content": blob}


def _run(sqlite_database: Callable[..., str], tmp_path: Path, body: Callable[[Keyring], Awaitable[None]]) -> None:
    async def main() -> None:
        init_key_file(tmp_path / "kms.key")
        kms = msgspec.convert({"backend": "local", "local": {"key_file": str(tmp_path / "kms.key")}}, KmsConfig)
        engine = create_engine(sqlite_database())
        keyring = open_keyring(kms, engine)
        try:
            await body(keyring)
        finally:
            await keyring.close()
            await engine.dispose()

    asyncio.run(main())


async def _sealed(thinking: Thinking, blocks: list[dict]) -> str:
    await thinking.ready()
    blob = thinking.carry(blocks)
    assert blob is not None and blob.startswith(PREFIX)
    return blob


async def _refusal(thinking: Thinking, blob: str) -> ApiError:
    with pytest.raises(ApiError) as refused:
        await thinking.open([USER, _reasoning(blob, "rs_pasted")], "input")
    err = refused.value
    assert err.status == 400 and err.body.param == "input[1].encrypted_content" and "rs_pasted" in err.body.message
    return err


def test_the_tenants_blob_opens_and_the_blocks_open_the_turn_that_called_the_tool(sqlite_database, tmp_path):
    async def body(keyring: Keyring) -> None:
        keys = ThinkingKeys(lambda: keyring)
        blob = await _sealed(keys.of("t1"), [SIGNED, REDACTED, {"type": "thinking", "thinking": "g", "signature": ""}])
        assert SIGNED["thinking"].encode() not in base64.urlsafe_b64decode(blob[len(PREFIX) :])  # encrypted
        later = keys.of("t1")  # the next turn: a stateless client sends the item back
        items = [USER, _reasoning(blob), CALL, _reasoning("gAAAAB-openais-own", "rs_2")]
        await later.open(items, "input")
        messages: list[dict] = []
        chat_messages(items, messages, None, later)
        turn = messages[1]
        assert turn["role"] == "assistant" and turn["thinking_blocks"] == [SIGNED, REDACTED]
        assert turn["tool_calls"][0]["id"] == "call_1"
        assert later.blocks("gAAAAB-openais-own") is None  # OpenAI's own: left alone
        # Unsigned reasoning (Gemini's) cannot go back: nothing is carried.
        assert later.carry([{"type": "thinking", "thinking": "unsigned", "signature": ""}]) is None
        # Without the turn's Thinking the blob is not read: no blocks are sent.
        plain: list[dict] = []
        chat_messages([USER, _reasoning(blob), CALL], plain)
        assert "thinking_blocks" not in plain[1]

    _run(sqlite_database, tmp_path, body)


def test_another_tenants_blob_an_edited_one_and_a_forged_one_are_400s(sqlite_database, tmp_path):
    async def body(keyring: Keyring) -> None:
        keys = ThinkingKeys(lambda: keyring)
        theirs = await _sealed(keys.of("tenant-a"), [SIGNED])
        await keys.of("tenant-b").ready()  # b has a key of its own: a's blob still does not open for b
        err = await _refusal(keys.of("tenant-b"), theirs)
        assert "another organisation" in err.body.message and SIGNED["thinking"] not in err.body.message
        raw = bytearray(base64.urlsafe_b64decode(theirs[len(PREFIX) :]))
        raw[-1] ^= 1
        await _refusal(keys.of("tenant-a"), PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode())
        for forged in (PREFIX + "not base64!", PREFIX + "W10", PREFIX):
            await _refusal(keys.of("tenant-a"), forged)

    _run(sqlite_database, tmp_path, body)


def test_an_old_unbound_blob_is_refused_from_a_client_and_read_without_blocks_from_the_store(sqlite_database, tmp_path):
    async def body(keyring: Keyring) -> None:
        v1 = "mh-thinking-v1." + base64.urlsafe_b64encode(json.dumps([SIGNED]).encode()).decode()
        thinking = ThinkingKeys(lambda: keyring).of("t1")
        err = await _refusal(thinking, v1)
        assert "mh-thinking-v1" in err.body.message and "without encrypted_content" in err.body.message
        stored = [USER, _reasoning(v1), CALL]
        await thinking.open(stored, None)  # written by an earlier version into the tenant's own store
        messages: list[dict] = []
        chat_messages(stored, messages, None, thinking)
        assert all("thinking_blocks" not in m for m in messages)

    _run(sqlite_database, tmp_path, body)


def test_a_blob_opens_after_a_rotation_and_not_once_its_key_is_shredded(sqlite_database, tmp_path):
    async def body(keyring: Keyring) -> None:
        keys = ThinkingKeys(lambda: keyring)
        old = await _sealed(keys.of("t1"), [SIGNED])
        assert await keyring.repo.retire(tenants=["t1"]) == 1  # `multihome kms rotate`: new seals, new key
        keyring.forget()
        new = await _sealed(keys.of("t1"), [REDACTED])
        thinking = keys.of("t1")
        await thinking.open([_reasoning(old), _reasoning(new, "rs_2")], "input")
        assert thinking.blocks(old) == [SIGNED] and thinking.blocks(new) == [REDACTED]
        async with keyring.repo.engine.begin() as conn:  # the old key shredded
            await conn.execute(sa.delete(data_keys).where(data_keys.c.state == "retired"))
        keyring.forget()
        err = await _refusal(keys.of("t1"), old)
        assert "does not have" in err.body.message
        await keys.of("t1").open([_reasoning(new)], "input")

    _run(sqlite_database, tmp_path, body)


def test_without_a_ready_key_nothing_is_carried(sqlite_database, tmp_path):
    async def body(keyring: Keyring) -> None:
        assert ThinkingKeys(lambda: keyring).of("cold").carry([SIGNED]) is None  # never a KMS call from a converter

    _run(sqlite_database, tmp_path, body)


def test_without_a_database_blobs_are_sealed_under_a_key_of_the_process():
    async def body() -> None:
        keys = ThinkingKeys(None)
        blob = await _sealed(keys.of("t1"), [SIGNED])
        again = keys.of("t1")
        await again.open([USER, _reasoning(blob)], "input")
        assert again.blocks(blob) == [SIGNED]
        await _refusal(keys.of("t2"), blob)  # another tenant
        await _refusal(ThinkingKeys(None).of("t1"), blob)  # another process (or this one restarted)

    asyncio.run(body())


def test_a_native_upstream_never_gets_the_gateways_carrier():
    blob = asyncio.run(_sealed(ThinkingKeys(None).of("t1"), [SIGNED]))
    ours, old = _reasoning(blob), _reasoning("mh-thinking-v1.W10", "rs_3")
    theirs = _reasoning("gAAAAB-opaque", "rs_2")
    assert upstream_items([ours, theirs, old]) == [theirs]
