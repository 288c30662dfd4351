"""The conformance matrix: every scenario against every provider, through one gateway process.

Test ids name both (`test_conformance[anthropic-stream_tool_call]`). A scenario the provider cannot
do is skipped with the provider's documented reason (`Target.gaps`); a known gateway bug runs as a
strict xfail (`KNOWN_BUGS`). `make conformance` renders the outcome into docs/conformance.md.
"""

from __future__ import annotations

import openai
import pytest

from multihome.providers.registry import NAMES as KIND_NAMES

from .providers import CLIENT_KEY, KNOWN_BUGS, SECRETS, TARGET_NAMES, TARGETS, Stack
from .scenarios import SCENARIOS, Ctx


def test_every_provider_kind_has_a_target() -> None:
    """The matrix covers exactly the kinds the gateway speaks: a kind added to the registry without
    a `Target` (or a Target for a kind that no longer exists) fails here, not silently."""
    assert sorted(TARGET_NAMES) == sorted(KIND_NAMES)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    started = Stack(tmp_path_factory.mktemp("conformance"))
    yield started
    log = started.close()
    leaked = [name for name, secret in SECRETS.items() if secret in log]
    assert not leaked, f"secrets reached the gateway's log: {leaked}"


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    with openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15) as c:
        yield c


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("provider", TARGET_NAMES)
def test_conformance(stack, client, request, provider: str, scenario: str) -> None:
    target = TARGETS[TARGET_NAMES.index(provider)]
    if scenario in target.gaps:
        pytest.skip(f"gap: {target.gaps[scenario]}")
    bug = KNOWN_BUGS.get((provider, scenario))
    if bug:
        request.applymarker(pytest.mark.xfail(reason=bug, strict=True))
    sim, backup = stack.sims[provider], stack.sims["backup"]
    sim.reset()  # clears faults, the request log and the stats left by the previous scenario
    backup.reset()
    SCENARIOS[scenario].run(Ctx(client, target, sim, backup))
