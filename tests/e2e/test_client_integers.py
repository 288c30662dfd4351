"""Integers a client controls are bounded before anything is forwarded: a token limit of 2^40 on chat,
Responses or the Anthropic door, a seed past 64 bits, top_logprobs, logit_bias, n, dimensions; each a
400 naming the field, and the simulator never called. A token limit the deployments cannot give is
OpenAI's own 400 ("max_tokens is too large"), naming the field the client set on each API.
The official openai and anthropic SDKs as clients."""

from __future__ import annotations

import anthropic
import openai
import pytest

from builders import api_keys, config, deployment, embedding, group, simulated

from .conftest import CLIENT_KEY
from .processes import Gateway, Simulator

HI = [{"role": "user", "content": "hi"}]
HUGE = 2**40


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    sim = Simulator("openai", "ints-openai")
    gw = None
    try:
        cfg = config(
            server=api_keys("MH_TEST_CLIENT_KEY"),
            providers={"p": simulated("openai", sim.url)},
            deployments={
                "open": deployment("p", "open"),
                "short": deployment("p", "short", max_output_tokens=1000),
                "shorter": deployment("p", "shorter", max_output_tokens=500),
                "embed": embedding("p", "embed"),
            },
            model_groups={
                "open": group("open", retries=0),
                "short": group("short", "shorter", retries=0),
                "embed": group("embed", retries=0),
            },
        )
        gw = Gateway(cfg, tmp_path_factory.mktemp("ints"), {"MH_TEST_CLIENT_KEY": CLIENT_KEY})
        yield sim, gw
    finally:
        log = gw.stop() if gw is not None else ""
        sim.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def client(world) -> openai.OpenAI:
    return openai.OpenAI(base_url=world[1].url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15)


def _refused(world, call) -> openai.BadRequestError:
    before = world[0].stats()["requests"]
    with pytest.raises(openai.BadRequestError) as raised:
        call()
    assert world[0].stats()["requests"] == before  # nothing reached the upstream
    return raised.value


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"max_tokens": HUGE}, "max_tokens"),
        ({"max_completion_tokens": HUGE}, "max_completion_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": HUGE}, "n"),
        ({"seed": 2**63}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"logit_bias": {"50256": 101}}, "logit_bias.50256"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
    ],
)
def test_chat_refuses_integers_outside_openais_bounds(world, client, extra, param):
    err = _refused(world, lambda: client.chat.completions.create(model="open", messages=HI, **extra))
    assert err.param == param and param.split(".")[0] in err.message and err.code == "invalid_value"


def test_chat_accepts_the_bounds_themselves(world, client):
    done = client.chat.completions.create(
        model="open", messages=HI, max_tokens=2**30, seed=-(2**63), logit_bias={"50256": -100}, top_logprobs=0
    )
    assert done.choices[0].message.content


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_token_limit_no_deployment_can_give_is_openais_400(world, client, field):
    err = _refused(world, lambda: client.chat.completions.create(model="short", messages=HI, **{field: 1001}))
    assert err.param == field and err.code == "invalid_value"
    assert (
        err.body["message"].startswith(f"{field} is too large: 1001.")
        and "at most 1000 completion tokens" in err.message
    )
    # One of them can: the planner passes over the other and the call is served.
    raw = client.chat.completions.with_raw_response.create(model="short", messages=HI, **{field: 800})
    assert raw.headers["x-multihome-deployment"] == "short"


def test_responses_names_its_own_field(world, client):
    err = _refused(world, lambda: client.responses.create(model="short", input="hi", max_output_tokens=5000))
    assert err.param == "max_output_tokens" and err.body["message"].startswith("max_output_tokens is too large: 5000.")
    err = _refused(world, lambda: client.responses.create(model="open", input="hi", max_output_tokens=HUGE))
    assert err.param == "max_output_tokens"


def test_the_anthropic_door_bounds_max_tokens(world):
    claude = anthropic.Anthropic(base_url=world[1].url, api_key=CLIENT_KEY, max_retries=0, timeout=15)
    before = world[0].stats()["requests"]
    for max_tokens, extra, field in ((HUGE, {}, "max_tokens"), (10, {"top_k": HUGE}, "top_k")):
        with pytest.raises(anthropic.BadRequestError) as raised:
            claude.messages.create(model="open", messages=HI, max_tokens=max_tokens, extra_body=extra)
        assert raised.value.body["error"]["message"].startswith(f"{field}: must be")
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model="short", messages=HI, max_tokens=5000)
    assert "max_tokens is too large: 5000" in raised.value.body["error"]["message"]
    assert world[0].stats()["requests"] == before


def test_embeddings_bound_dimensions_and_token_ids(world, client):
    err = _refused(world, lambda: client.embeddings.create(model="embed", input="hi", dimensions=HUGE))
    assert err.param == "dimensions"
    for tokens in ([1, -1], [[1, HUGE]]):
        assert _refused(world, lambda: client.embeddings.create(model="embed", input=tokens)).param == "input"
