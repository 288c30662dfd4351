"""A key's `scopes_models` takes what policy matches them by at call time (docs/policy.md): exact model-group
names and family globs ending in `*`. Creation refuses what the call could not read as one (a `*` elsewhere)
and a name or glob that matches no configured group; the key then reaches the groups it matches and no other.
The app in process on SQLite and PostgreSQL, the openai SDK as the client."""

from __future__ import annotations

import openai
import pytest

from admin_http import error, ok
from stored_app import STORES, param_world, sdk_client

pytestmark = pytest.mark.anyio
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    async with param_world(request, tmp_path, groups={"g-mini": "m", "other": "m"}) as parts:
        yield parts


async def test_a_family_glob_scopes_a_key_to_the_groups_it_matches(world):
    w, _, transport = world
    tenant, _ = await w.tenant("acme")
    keys = f"/admin/v1/tenants/{tenant}/keys"
    made = await ok(await w.call("POST", keys, json={"name": "family", "scopes_models": ["g*"]}), 201)
    assert made["scopes_models"] == ["g*"], made
    client = sdk_client(made["key"], transport)
    for model in ("g", "g-mini"):
        answer = await client.chat.completions.create(model=model, messages=HI)
        assert answer.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await client.chat.completions.create(model="other", messages=HI)
    assert caught.value.code == "model_not_in_key_scope", caught.value.body


@pytest.mark.parametrize(
    ("field", "scopes", "words"),
    [
        ("scopes_models", ["x*"], "unknown model groups: x*"),  # matches no configured group: calls nothing of it
        ("scopes_models", ["g", "gx"], "unknown model groups: gx"),
        ("scopes_models", ["g*mini"], "may use '*' only as its last character"),  # no call would match it
        ("scopes_models", [""], "empty value"),
        ("scopes_models", [], "scopes_models is empty"),  # a key that calls no model
        ("scopes_endpoints", ["bogus"], "unknown endpoint scope(s) ['bogus']"),
        ("scopes_endpoints", [], "scopes_endpoints is empty"),  # a key that calls nothing
    ],
)
async def test_a_scope_that_cannot_match_is_refused(world, field, scopes, words):
    w, _, _ = world
    tenant, _ = await w.tenant("acme")
    err = error(await w.call("POST", f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", field: scopes}), 400)
    assert err["param"] == field and words in err["message"], err
