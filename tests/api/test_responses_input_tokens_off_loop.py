"""`POST /v1/responses/input_tokens` translates a turn with a stored context on the large bodies' pool, not
on the event loop: a count costs the tenant nothing, and a conversation of up to 64 MiB (or a longer chain)
behind a small body held the loop, and every tenant's calls, for as long as its translation took."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import pytest

from multihome.api.responses import translate
from stored_app import STORES, sdk_client, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-counts-off-loop"


@pytest.fixture(params=STORES)
async def world(request, tmp_path, monkeypatch) -> AsyncIterator[tuple]:
    monkeypatch.setenv("MH_TEST_COUNT_OFF_LOOP", ADMIN_KEY)
    async with stored_world(store_url(request, tmp_path), "MH_TEST_COUNT_OFF_LOOP", ADMIN_KEY) as (w, _, transport):
        yield w, transport


async def test_a_count_with_a_stored_context_is_translated_off_the_event_loop(world, monkeypatch):
    w, transport = world
    translated_on: list[int] = []
    translate_turn = translate._canonical

    def recorded(*args):
        translated_on.append(threading.get_ident())
        return translate_turn(*args)

    _, key = await w.tenant("acme")
    async with sdk_client(key, transport) as sdk:
        kept = await sdk.responses.create(model="g", input="the first turn")
        conv = await sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
        monkeypatch.setattr(translate, "_canonical", recorded)
        await sdk.responses.input_tokens.count(model="g", input="and then?", previous_response_id=kept.id)
        await sdk.responses.input_tokens.count(model="g", input="and then?", conversation=conv.id)
        await sdk.responses.input_tokens.count(model="g", input="no context")
    loop = threading.get_ident()  # the test's thread runs the app's event loop (an in-process transport)
    assert [on != loop for on in translated_on] == [True, True, False]
