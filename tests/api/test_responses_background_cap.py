"""A tenant's open background responses are capped (responses.background.max_open_per_tenant): past the
cap a create is a 429 in OpenAI's error format and stores nothing, another tenant is not held by it, and
a cancel frees a place. The job queue is shared and first-come: without the cap one tenant's thousands
of queued runs delayed every other tenant's. The official openai SDK against the app in process, on
SQLite and PostgreSQL; the upstream never answers, so the runs stay open."""

from __future__ import annotations

import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from stored_app import STORES, hung_world, sdk_client

pytestmark = pytest.mark.anyio
CAP = 2


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    responses = {"background": {"max_open_per_tenant": CAP, "concurrency": 1}}
    async with hung_world(request, tmp_path, responses=responses) as (w, _, transport):
        yield w, transport


async def _stored(url: str, tenant: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(sa.text("SELECT count(*) FROM responses WHERE tenant_id = :t"), {"t": tenant})
    finally:
        await engine.dispose()


async def test_a_tenant_past_its_open_background_cap_gets_a_429_and_a_cancel_frees_a_place(world):
    w, transport = world
    acme, acme_key = await w.tenant("acme")
    _, other_key = await w.tenant("other")
    sdk = sdk_client(acme_key, transport)
    opened = [await sdk.responses.create(model="g", input="hi", background=True) for _ in range(CAP)]
    assert [r.status for r in opened] == ["queued"] * CAP

    with pytest.raises(openai.RateLimitError) as refused:
        await sdk.responses.create(model="g", input="one too many", background=True)
    err = refused.value.body
    assert err["code"] == "too_many_background_responses" and str(CAP) in err["message"]
    assert refused.value.response.headers["retry-after"] == "1"
    assert await _stored(w.url, acme) == CAP  # nothing of the refused one was stored

    # Another tenant is not held by acme's cap.
    assert (
        await sdk_client(other_key, transport).responses.create(model="g", input="hi", background=True)
    ).status == "queued"

    await sdk.responses.cancel(opened[-1].id)  # still queued: the one worker place runs the first (it hangs)
    again = await sdk.responses.create(model="g", input="after a cancel", background=True)
    assert again.status == "queued"
