"""A refused caller leaves nothing behind: every 401 or 403 of identify is a new error, so the requests it
refused are freed once answered. (A module-level error raised again appends every frame it passes through
to its own traceback: each refused request's frames, its scope and its call, stayed alive for good, some
7 kB a request that anyone without a key could send.)"""

from __future__ import annotations

import asyncio
import gc
import os
import traceback

import pytest

from builders import api_keys, identity, oidc, single
from multihome.api.pipeline import Call
from multihome.identity.oidc import OidcVerifier
from multihome.schema.errors import ApiError
from oidc_issuer import LocalIssuer
from stored_app import served

from .helpers import outcome

KEY_ENV = "MH_TEST_REFUSALS_KEY"
CALLS = 150


def _live_calls() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Call))


def test_refused_requests_are_freed_once_answered():
    os.environ[KEY_ENV] = "sk-refusals-test-key"
    with LocalIssuer() as idp, LocalIssuer() as stranger:
        cfg = single(server=api_keys(KEY_ENV), identity=identity(None, oidc(idp)))
        refusals = [
            ("/v1/chat/completions", {}),  # no key at all
            ("/v1/messages", {}),  # no key, the Anthropic front door's own refusal
            ("/v1/chat/completions", {"authorization": "Bearer sk-not-a-key"}),
            ("/v1/chat/completions", {"authorization": "Bearer mh_not_a_managed_key"}),
            ("/v1/chat/completions", {"authorization": f"Bearer {stranger.mint(tenant='acme')}"}),  # unknown iss
        ]

        async def go() -> tuple[int, int, set[int]]:
            async with served(cfg) as (client, _, _):
                statuses = set()
                for path, headers in refusals:  # warm: whatever is made once is made now
                    statuses.add((await client.post(path, json={}, headers=headers)).status_code)
                before = _live_calls()
                for _ in range(CALLS):
                    for path, headers in refusals:
                        statuses.add((await client.post(path, json={}, headers=headers)).status_code)
                return before, _live_calls(), statuses

        before, after, statuses = asyncio.run(go())
    assert statuses == {401}
    assert after - before < 10, f"{after - before} refused requests still held after {CALLS * len(refusals)}"


@pytest.mark.parametrize("case", ["malformed", "unknown_issuer", "unknown_tenant"])
def test_each_token_refusal_is_a_new_error(case):
    with LocalIssuer() as idp, LocalIssuer() as stranger:
        token = {
            "malformed": "e30.e30.e30",
            "unknown_issuer": stranger.mint(tenant="acme"),
            "unknown_tenant": idp.mint(tenant="nobody"),
        }[case]

        async def miss() -> bool:
            return False

        async def go() -> list[int]:
            verifier = OidcVerifier(
                [idp.config(claims={"tenant": "tenant"})], tenants=lambda: {"acme"}, tenants_miss=miss
            )
            depths = []  # of each refusal's traceback, as it is raised
            try:
                for _ in range(20):
                    err = await outcome(verifier, token)
                    assert isinstance(err, ApiError) and err.status in (401, 403)
                    depths.append(len(traceback.extract_tb(err.__traceback__)))
                return depths
            finally:
                await verifier.close()

        depths = asyncio.run(go())
    assert len(set(depths)) == 1, f"the refusal's traceback grew with each call: {depths}"
