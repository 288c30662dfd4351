"""The Responses and Conversations APIs end to end: the real gateway (SQLite storage, local KMS, two
tenants with managed keys) in front of an OpenAI-compatible and an Anthropic simulator, driven with
the official openai SDK. What each provider was sent is read from the simulator's own request log."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pydantic
import pytest

from builders import breakers, config, database, deployment, groups, identity, simulated
from multihome.crypto import init_key_file

from .helpers import text_stream_frame
from .processes import Gateway, Simulator
from .stores import head_database

ADMIN_KEY = "mh-responses-e2e-admin"
SECRETS = {"MH_R_ADMIN_KEY": ADMIN_KEY, "MH_R_ANTHROPIC_KEY": "sk-ant-responses-e2e-3c1f"}
MARK = "PLAINTEXT-MARKER-responses-e2e-91d2"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def gateway_config(tmp: Path, db: str, sims: dict[str, Simulator]) -> dict:
    return config(
        storage=database(db),
        kms={"local": {"key_file": str(tmp / "kms.key")}},
        identity=identity("MH_R_ADMIN_KEY"),
        routing=breakers(0),
        providers={
            "oa": simulated("openai", sims["oa"].url, region="us-east-1", data_zone="US"),
            "first": simulated("openai", sims["first"].url),
            "an": simulated(
                "anthropic", sims["an"].url, key_env="MH_R_ANTHROPIC_KEY", region="eu-west-1", data_zone="EU"
            ),
        },
        deployments={
            "oa": deployment("oa", "gpt-r"),
            "first": deployment("first", "gpt-first"),
            "an": deployment("an", "claude-r"),
        },
        model_groups=groups(
            {"gpt": "oa", "claude": "an", "failover": ["first", "an"], "zones": ["oa", "an"]}, retries=0
        ),
    )


class World:
    def __init__(self, tmp: Path, db: str, gateway: Gateway, sims: dict[str, Simulator]) -> None:
        self.tmp, self.db, self.gateway, self.sims = tmp, db, gateway, sims
        admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        self.keys, self.tenants = {}, {}
        for name in ("acme", "globex", "initech"):
            resp = admin.post("/admin/v1/tenants", json={"name": name})
            assert resp.status_code == 201, resp.text
            tenant = self.tenants[name] = resp.json()["id"]
            resp = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": ["member"]})
            assert resp.status_code == 201, resp.text
            self.keys[name] = resp.json()["key"]
        admin.close()

    def http(self, tenant: str | None = "acme") -> httpx.Client:
        """A plain HTTP client with the tenant's key (None: the admin key)."""
        key = self.keys[tenant] if tenant is not None else ADMIN_KEY
        return httpx.Client(base_url=self.gateway.url, headers={"authorization": f"Bearer {key}"}, timeout=20)

    def sdk(self, tenant: str = "acme") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.keys[tenant], max_retries=0, timeout=20)

    def sent(self, sim: str) -> dict:
        """The body of the last request the simulator received."""
        return json.loads(self.sims[sim].requests()[-1]["body"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    yield from running_world(request, tmp_path_factory)


def running_world(request, tmp_path_factory):
    """The gateway and simulators of this module on `request.param`'s database (other modules' fixtures too)."""
    tmp = tmp_path_factory.mktemp(f"responses-{request.param}")
    db = head_database(request, request.param, tmp)
    init_key_file(tmp / "kms.key")
    sims = {
        "oa": Simulator("openai", "resp-openai"),
        "first": Simulator("openai", "resp-first"),
        "an": Simulator("anthropic", "resp-anthropic", "--api-key-env", "MH_R_ANTHROPIC_KEY", env=SECRETS),
    }
    gateway = None
    try:
        gateway = Gateway(gateway_config(tmp, db, sims), tmp, SECRETS)
        yield World(tmp, db, gateway, sims)
    finally:
        log = gateway.stop() if gateway is not None else ""
        for sim in sims.values():
            sim.stop()
        assert "Traceback" not in log, log[-3000:]


def _texts(body: dict) -> str:
    """Every string an upstream request carries, joined (its messages, whatever their shape)."""
    return json.dumps(body)


def test_three_turns_by_previous_response_id_continue_on_another_provider(world):
    client = world.sdk()
    raw = client.responses.with_raw_response.create(model="failover", input="turn one: the code word is heron")
    assert raw.headers["x-multihome-deployment"] == "first"
    one = raw.parse()
    assert one.status == "completed" and one.output_text
    world.sims["first"].stop()  # the first provider is taken down mid-conversation

    raw = client.responses.with_raw_response.create(
        model="failover", input="turn two: what was it?", previous_response_id=one.id
    )
    assert raw.headers["x-multihome-deployment"] == "an"
    two = raw.parse()
    assert two.previous_response_id == one.id and two.output_text
    sent = _texts(world.sent("an"))  # the second provider received turn 1, question and answer
    assert "turn one: the code word is heron" in sent and one.output_text in sent and "turn two" in sent

    with client.responses.stream(model="failover", input="turn three", previous_response_id=two.id) as stream:
        three = stream.get_final_response()
    assert three.status == "completed" and three.output_text
    sent = _texts(world.sent("an"))
    for text in ("turn one: the code word is heron", one.output_text, "turn two: what was it?", two.output_text):
        assert text in sent
    assert sent.index("turn one") < sent.index("turn two") < sent.index("turn three")
    # input_items lists the request's own input, not the chain's
    items = list(client.responses.input_items.list(three.id))
    assert [i.content[0].text for i in items] == ["turn three"]
    assert client.responses.retrieve(three.id).output_text == three.output_text


@pytest.mark.parametrize("model,sim", [("gpt", "oa"), ("claude", "an")])
def test_a_function_call_loop(world, model, sim):
    client = world.sdk()
    first = client.responses.create(model=model, input="What is the weather in Paris?", tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id
    json.loads(calls[0].arguments)
    second = client.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 24C"}],
        tools=[WEATHER],
    )
    assert second.status == "completed" and second.output_text
    assert not [item for item in second.output if item.type == "function_call"]
    sent = _texts(world.sent(sim))  # the call and its result reached the provider, in its own shape
    assert "sunny, 24C" in sent and "get_weather" in sent and "What is the weather in Paris?" in sent

    # The same loop streamed: the SDK assembles the call from its argument deltas.
    with client.responses.stream(model=model, input="Weather in Oslo?", tools=[WEATHER]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    call = next(item for item in final.output if item.type == "function_call")
    assert "response.function_call_arguments.done" in events and json.loads(call.arguments) is not None
    # A text message before the call (Claude writes one) is output 0 and the call output 1; either way the
    # call's item comes last and its arguments are closed before it is.
    assert events.index("response.function_call_arguments.done") < len(events) - 2
    assert final.output[-1].type == "function_call"


def test_a_call_id_used_twice_is_refused_naming_the_item(world):
    """Two function_calls with one call_id, or two outputs for one call: OpenAI's 400 naming the item,
    in the input, against a chain's context and against a conversation's items; nothing reaches the provider."""
    client = world.sdk()
    first = client.responses.create(model="gpt", input="What is the weather in Paris?", tools=[WEATHER])
    call = next(item for item in first.output if item.type == "function_call")
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    replayed = {"type": "function_call", "call_id": call.call_id, "name": "get_weather", "arguments": "{}"}
    ask = {"role": "user", "content": "weather?"}

    def refused(send, param: str, fragment: str) -> None:
        calls = len(world.sims["oa"].requests())
        with pytest.raises(openai.BadRequestError) as raised:
            send()
        body = raised.value.body
        assert (body["param"], body["code"]) == (param, "duplicate_call_id"), body
        assert fragment in body["message"] and call.call_id in body["message"]
        assert len(world.sims["oa"].requests()) == calls  # refused before any upstream call

    create = client.responses.create
    refused(
        lambda: create(model="gpt", input=[ask, replayed, {**replayed, "arguments": '{"city": "Oslo"}'}, result]),
        "input[2]",
        "second function_call",
    )
    refused(lambda: create(model="gpt", input=[ask, replayed, result, result], store=False), "input[3]", "output")
    refused(lambda: create(model="gpt", previous_response_id=first.id, input=[result, result]), "input[1]", "output")
    answered = create(model="gpt", previous_response_id=first.id, input=[result], tools=[WEATHER])
    refused(lambda: create(model="gpt", previous_response_id=answered.id, input=[result]), "input[0]", "output")

    conv = client.conversations.create(items=[ask, replayed, result])
    refused(lambda: client.conversations.items.create(conv.id, items=[replayed]), "items[0]", "second function_call")
    refused(lambda: client.conversations.items.create(conv.id, items=[result]), "items[0]", "output")
    refused(lambda: create(model="gpt", conversation=conv.id, input=[result]), "input[0]", "output")
    refused(lambda: client.conversations.create(items=[ask, replayed, replayed]), "items[2]", "second function_call")
    assert len(client.conversations.items.list(conv.id).data) == 3  # nothing was added


class GetWeather(pydantic.BaseModel):
    """The weather in a city"""

    city: str


class Forecast(pydantic.BaseModel):
    city: str
    high_celsius: int


@pytest.mark.parametrize("model,sim", [("gpt", "oa"), ("claude", "an")])
def test_the_sdk_parse_helpers(world, model, sim):
    """`responses.parse` with a pydantic tool and a pydantic text format: the call's arguments and the
    structured answer come back parsed; the schema reached the provider in its own shape."""
    client = world.sdk()
    tool = openai.pydantic_responses_function_tool(GetWeather)
    called = client.responses.parse(model=model, input="Weather in Rome?", tools=[tool])
    call = next(item for item in called.output if item.type == "function_call")
    assert isinstance(call.parsed_arguments, GetWeather)
    done = client.responses.parse(
        model=model,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}],
        text_format=Forecast,
    )
    assert isinstance(done.output_parsed, Forecast)
    assert "high_celsius" in _texts(world.sent(sim))  # the JSON schema was sent


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_a_stream_has_sdk_ordered_events_and_is_stored_before_it_completes(world, model):
    client = world.sdk()
    seen = []
    with client.responses.stream(model=model, input="Tell me a story", metadata={"run": "stream"}) as stream:
        for event in stream:
            seen.append((event.type, event.sequence_number))
        final = stream.get_final_response()
    assert [n for _, n in seen] == list(range(len(seen)))
    text_stream_frame([t for t, _ in seen])
    assert final.usage.output_tokens > 0 and final.metadata == {"run": "stream"}
    stored = client.responses.retrieve(final.id)  # at once: it was stored before response.completed
    assert stored.output_text == final.output_text and stored.status == "completed"


def test_another_tenant_can_neither_read_continue_nor_delete(world):
    acme, globex = world.sdk("acme"), world.sdk("globex")
    mine = acme.responses.create(model="gpt", input="acme's secret plan")
    conv = acme.conversations.create(metadata={"owner": "acme"})
    with pytest.raises(openai.NotFoundError):
        globex.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        globex.responses.input_items.list(mine.id)
    with pytest.raises(openai.NotFoundError):
        globex.responses.delete(mine.id)
    with pytest.raises(openai.BadRequestError) as refused:
        globex.responses.create(model="gpt", input="continue it", previous_response_id=mine.id)
    assert refused.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        globex.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        globex.conversations.items.list(conv.id)
    with pytest.raises(openai.NotFoundError):
        globex.conversations.delete(conv.id)
    with pytest.raises(openai.NotFoundError):
        globex.responses.create(model="gpt", input="join it", conversation=conv.id)
    assert acme.responses.retrieve(mine.id).output_text == mine.output_text  # untouched
    assert acme.conversations.retrieve(conv.id).metadata == {"owner": "acme"}
    acme.responses.delete(mine.id)  # a real delete: gone for its owner too
    with pytest.raises(openai.NotFoundError):
        acme.responses.retrieve(mine.id)


def test_store_false_is_neither_retrievable_nor_continuable(world):
    client = world.sdk()
    answer = client.responses.create(model="gpt", input="do not keep this", store=False)
    assert answer.store is False and answer.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt", input="next", previous_response_id=answer.id)


def test_a_conversation_collects_its_turns(world):
    client = world.sdk()
    conv = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "My name is Ada."}], metadata={"topic": "names"}
    )
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "names"}
    first = client.responses.create(model="claude", input="What is my name?", conversation=conv.id)
    assert first.conversation.id == conv.id
    assert "My name is Ada." in _texts(world.sent("an"))
    second = client.responses.create(model="gpt", input="And again?", conversation={"id": conv.id})
    sent = _texts(world.sent("oa"))  # another provider gets the whole conversation
    assert "My name is Ada." in sent and "What is my name?" in sent and first.output_text in sent
    items = list(client.conversations.items.list(conv.id, order="asc", limit=2))  # pages of two
    assert len(items) == 5 and items[-1].content[0].text == second.output_text
    added = client.conversations.items.create(conv.id, items=[{"type": "message", "role": "user", "content": "PS"}])
    assert len(added.data) == 1
    got = client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert got.content[0].text == "PS"
    replayed = "msg_67ccd3acc8d48190a77525dc6de64b4104becd0e4e5f2b3e9a1c"  # an id as long as OpenAI's
    client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": "x", "id": replayed}]
    )
    assert client.conversations.items.retrieve(replayed, conversation_id=conv.id).id == replayed
    client.conversations.items.delete(replayed, conversation_id=conv.id)
    with pytest.raises(openai.BadRequestError, match="already in the conversation"):  # an id given twice
        client.conversations.items.create(
            conv.id, items=[{"type": "message", "role": "user", "content": "x", "id": got.id}]
        )
    after = client.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
    assert after.id == conv.id and after.object == "conversation"
    newest = client.conversations.items.list(conv.id, limit=1)
    assert newest.data[0].id == items[-1].id and newest.has_more
    assert client.conversations.update(conv.id, metadata={"topic": "x"}).metadata == {"topic": "x"}
    assert client.conversations.delete(conv.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)


def test_incomplete_and_bad_requests(world):
    client = world.sdk()
    short = client.responses.create(model="gpt", input="Write a long essay about the sea", max_output_tokens=16)
    assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens"
    bad = [
        ({"input": "x", "frobnicate": 1}, "frobnicate"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "background": True, "store": False}, "background"),
        ({"input": "x", "previous_response_id": "resp_1", "conversation": "conv_1"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ]
    http = httpx.Client(base_url=world.gateway.url, headers={"authorization": f"Bearer {world.keys['acme']}"})
    for body, param in bad:
        resp = http.post("/v1/responses", json={"model": "gpt", **body})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param
    with pytest.raises(openai.BadRequestError, match="Only background responses can be cancelled"):
        client.responses.cancel(short.id)


@pytest.mark.parametrize("group", ["claude", "gpt"])  # translated (Anthropic), native (OpenAI's /responses)
def test_every_turn_is_metered_like_a_chat_call(world, group):
    """Each turn goes through the pipeline: metered per turn, the re-sent context billed as input again."""
    admin = world.http(None)
    globex = world.tenants["globex"]

    def claude_row() -> dict:
        summary = admin.get(f"/admin/v1/tenants/{globex}/usage", params={"group_by": "model_group"}).json()
        return next((r for r in summary["data"] if r["model_group"] == group), {"calls": 0, "prompt_tokens": 0})

    before = claude_row()
    client = world.sdk("globex")
    one = client.responses.create(model=group, input="first turn of a metered chain")
    two = client.responses.create(model=group, input="second", previous_response_id=one.id)
    assert two.usage.input_tokens > one.usage.input_tokens  # the first turn is sent (and billed) again
    deadline = time.monotonic() + 10
    while (row := claude_row())["calls"] < before["calls"] + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert row["calls"] == before["calls"] + 2
    assert row["prompt_tokens"] == before["prompt_tokens"] + one.usage.input_tokens + two.usage.input_tokens


def test_policy_is_decided_per_turn(world):
    """A conversation begun on a US deployment never continues there once its tenant is EU-only."""
    client = world.sdk("initech")
    raw = client.responses.with_raw_response.create(model="zones", input="begun in the US")
    assert raw.headers["x-multihome-deployment"] == "oa"
    one = raw.parse()
    admin = world.http(None)
    policy = {"scope": "tenant", "rules": [{"effect": "allow", "data_zones": ["EU"]}], "description": "EU only"}
    resp = admin.post(f"/admin/v1/tenants/{world.tenants['initech']}/policies", json=policy)
    assert resp.status_code == 201, resp.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # replicas pick the policy up within storage.refresh_s
        probe = client.responses.with_raw_response.create(model="zones", input="probe", store=False)
        if probe.headers["x-multihome-deployment"] == "an":
            break
        time.sleep(0.1)
    raw = client.responses.with_raw_response.create(model="zones", input="continued", previous_response_id=one.id)
    assert raw.headers["x-multihome-deployment"] == "an"
    assert "begun in the US" in _texts(world.sent("an"))  # the EU provider got the earlier turn
    world.sims["an"].fault(status=503)
    try:
        with pytest.raises(openai.InternalServerError) as refused:
            client.responses.create(model="zones", input="once more", previous_response_id=raw.parse().id)
    finally:
        world.sims["an"].clear_faults()
    assert "oa: denied by policy" in refused.value.message
    rid = refused.value.response.headers["x-request-id"]
    assert rid not in {r["request_id"] for r in world.sims["oa"].requests()}


def _dump(world) -> bytes:
    """Everything the database holds on disk: the SQLite file and its WAL, or a `pg_dump`."""
    if world.db.startswith("sqlite"):
        db = world.tmp / "multihome.db"
        return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    url = world.db.replace("postgresql+asyncpg://", "postgresql://")
    return subprocess.run(["pg_dump", url], capture_output=True, check=True).stdout


def test_the_database_holds_no_plaintext(world):
    client = world.sdk()
    answer = client.responses.create(model="gpt", input=f"remember {MARK}", metadata={"note": MARK})
    conv = client.conversations.create(items=[{"role": "user", "content": MARK}], metadata={"m": MARK})
    assert client.responses.retrieve(answer.id).metadata == {"note": MARK}  # stored, and readable through the API
    assert client.conversations.items.list(conv.id).data[0].content[0].text == MARK
    blob = _dump(world)
    assert answer.id.encode() in blob  # the rows are there (ids in clear)...
    assert MARK.encode() not in blob  # ...and nothing the tenant wrote is


def test_an_id_with_a_nul_is_a_4xx_on_every_backend(world):
    """PostgreSQL's text refuses a NUL outright: an id, cursor or reference holding one was a 500 there.
    No id the gateway issues has one: a 404 for a path, a 400 naming the field otherwise."""
    key = world.keys["acme"]
    http = httpx.Client(base_url=world.gateway.url + "/v1", headers={"authorization": f"Bearer {key}"}, timeout=20)
    conv = http.post("/conversations", json={}).json()["id"]
    for method, path in [
        ("GET", "/responses/resp_%00x"),
        ("GET", "/responses/resp_%00x/input_items"),
        ("DELETE", "/responses/resp_%00x"),
        ("POST", "/responses/resp_%00x/cancel"),
        ("GET", "/conversations/conv_%00x"),
        ("DELETE", "/conversations/conv_%00x"),
        ("GET", f"/conversations/{conv}/items/%00"),
        ("GET", "/memory/records/mem_%00"),
    ]:
        resp = http.request(method, path)
        assert resp.status_code == 404 and resp.json()["error"]["message"], (path, resp.text)
    for path in (f"/conversations/{conv}/items?after=%00", "/responses/resp_x/input_items?before=%00"):
        resp = http.get(path)
        assert resp.status_code == 400, (path, resp.text)
    for field in ("previous_response_id", "conversation"):
        resp = http.post("/responses", json={"model": "gpt", "input": "x", field: "id_\x00"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == field, resp.text
    assert http.get(f"/conversations/{conv}/items").status_code == 200  # and the gateway is fine


def test_an_error_echoes_at_most_64_characters_of_a_clients_id(world):
    """A path segment or a JSON string can be megabytes: an error names it by its first 64 characters and "…"."""
    key = world.keys["acme"]
    http = httpx.Client(base_url=world.gateway.url + "/v1", headers={"authorization": f"Bearer {key}"}, timeout=20)
    conv = http.post("/conversations", json={}).json()["id"]
    long = "x" * 20_000
    answers = [
        http.get(f"/responses/resp_{long}"),
        http.get(f"/responses/resp_{long}/input_items"),
        http.post(f"/responses/resp_{long}/cancel"),
        http.get(f"/conversations/conv_{long}"),
        http.get(f"/conversations/{conv}/items/msg_{long}"),
        http.get(f"/conversations/{conv}/items?after=msg_{long}"),
        http.get(f"/memory/records/mem_{long}"),
        http.post("/responses", json={"model": "gpt", "input": "x", "previous_response_id": f"resp_{long}"}),
        http.post("/responses", json={"model": "gpt", "input": "x", "conversation": f"conv_{long}"}),
        http.post("/responses", json={"model": f"gpt{long}", "input": "x"}),
        http.post("/responses", json={"model": "gpt", "input": "x", long: 1}),
        http.post("/chat/completions", json={"model": f"gpt{long}", "messages": [{"role": "user", "content": "x"}]}),
    ]
    for resp in answers:
        assert resp.status_code in (400, 404), resp.text[:300]
        error = resp.json()["error"]
        assert len(resp.content) < 1000 and "x" * 50 + "…" in error["message"], (str(resp.request.url)[:60], error)
        assert "x" * 65 not in error["message"]
        assert error["param"] is None or len(error["param"]) <= 65


def test_claudes_thinking_goes_back_only_for_the_tenant_it_was_sealed_for(world):
    """A reasoning item's encrypted_content (Claude's signed thinking) is sealed under the tenant's key: the
    tenant's stateless client sends it back and Claude gets its block; another tenant pasting it, or an
    edited copy, is a 400 naming the item; the store holds neither the thinking nor the prompt in clear."""
    acme, globex = world.sdk("acme"), world.sdk("globex")
    ask = [{"role": "user", "content": f"use get_weather for {MARK}"}]
    settings = {"model": "claude", "tools": [WEATHER], "reasoning": {"effort": "medium"}}
    first = acme.responses.create(input=ask, **settings)
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content.startswith("mh-thinking-v2.")
    assert MARK not in reasoning.encrypted_content
    call = next(i for i in first.output if i.type == "function_call")
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    replay = [*ask, *(i.model_dump(exclude_none=True) for i in first.output), result]

    second = acme.responses.create(input=replay, store=False, **settings)  # stateless: the items sent back
    assert second.status == "completed" and second.output_text
    block = world.sent("an")["messages"][1]["content"][0]
    assert block["type"] == "thinking" and block["signature"] and MARK in block["thinking"]
    third = acme.responses.create(input=[result], previous_response_id=first.id, **settings)  # from the store
    assert third.status == "completed" and world.sent("an")["messages"][1]["content"][0] == block

    def refused(client: openai.OpenAI, items: list) -> dict:
        calls = len(world.sims["an"].requests())
        with pytest.raises(openai.BadRequestError) as raised:
            client.responses.create(input=items, **settings)
        assert len(world.sims["an"].requests()) == calls  # refused before any upstream call
        return raised.value.body

    body = refused(globex, replay)  # another tenant's blob
    assert body["param"] == "input[1].encrypted_content" and reasoning.id in body["message"]
    assert MARK not in body["message"]
    blob = reasoning.encrypted_content
    edited = blob[:-6] + ("AAAAAA" if not blob.endswith("AAAAAA") else "BBBBBB")
    assert refused(acme, [*replay[:1], {**replay[1], "encrypted_content": edited}, *replay[2:]])["param"] == (
        "input[1].encrypted_content"
    )
    conv = globex.conversations.create()
    with pytest.raises(openai.BadRequestError) as raised:  # nor stored into another tenant's conversation
        globex.conversations.items.create(conv.id, items=[replay[1]])
    assert raised.value.body["param"] == "items[0].encrypted_content"

    dump = _dump(world)
    assert first.id.encode() in dump and MARK.encode() not in dump and block["signature"].encode() not in dump
