"""Hostile request bodies on every door of a running gateway: what the OpenAPI documents cannot
express (control characters and CR/LF in field names, bad UTF-8, nesting past the decoder's
stack, numbers past 64 bits, JSON inside strings) around otherwise valid requests to every model
group, and to the stateful routes (Responses, Conversations and their items, memory) with live ids.
Fills the same Report as schema_fuzz.Runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from .schema_fuzz import Finding, Report, _late
from .strategies import LONG_RUN, all_paths, mutated
from .test_request_properties import CHAT, CHAT_PATHS, EMBEDDINGS, EMBEDDINGS_PATHS, MESSAGES, MESSAGES_PATHS

_CHAT = {k: v for k, v in CHAT.items() if k != "multihome"}  # its narrowing names test deployments
_MESSAGES = {k: v for k, v in MESSAGES.items() if k != "multihome"}
_SIMPLE = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": False}
_SIMPLE_PATHS = [("messages", 0, "content"), ("messages", 0), ("stream",), ("n",), ("max_tokens",)]


_WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}
_MESSAGE = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
_CALL = {"type": "function_call", "call_id": "call_f", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
_RESPONSE = {
    "input": [
        _MESSAGE,
        {
            "role": "user",
            "content": [{"type": "input_image", "image_url": "https://img.example/a.png", "detail": "low"}],
        },
        _CALL,
        {"type": "function_call_output", "call_id": "call_f", "output": "cold"},
    ],
    "instructions": "be brief",
    "tools": [_WEATHER],
    "tool_choice": "auto",
    "metadata": {"k": "v"},
    "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}, "verbosity": "low"},
    "reasoning": {"effort": "low"},
    "max_output_tokens": 64,
    "temperature": 0.5,
    "truncation": "auto",
    "include": ["reasoning.encrypted_content"],
    "store": True,
}
_NAMESPACE = {"agent_id": "fuzz-agent", "user_id": "fuzz-user"}


def stateful_calls(chat_groups: list[str], conversation: str, response: str) -> st.SearchStrategy[tuple[str, bytes]]:
    """(path, body) pairs for the stateful routes: a turn (alone, streamed, in the background, continuing
    `response`, in `conversation`), a conversation and its items, memory records, search and namespaces."""

    def bodies(path: str, base: dict):
        return st.tuples(st.just(path), mutated(base, all_paths(base)))

    def turns(group: str):
        base = {**_RESPONSE, "model": group}
        return st.one_of(
            bodies("/v1/responses", base),
            bodies("/v1/responses", {**base, "stream": True}),
            bodies("/v1/responses", {**base, "background": True}),
            bodies("/v1/responses", {**base, "previous_response_id": response}),
            bodies("/v1/responses", {**base, "input": [_MESSAGE], "conversation": {"id": conversation}}),
        )

    items = [_MESSAGE, {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "yo"}]}]
    return st.one_of(
        st.sampled_from(chat_groups).flatmap(turns),
        bodies("/v1/conversations", {"metadata": {"k": "v"}, "items": items}),
        bodies(f"/v1/conversations/{conversation}", {"metadata": {"k": "v"}}),
        bodies(f"/v1/conversations/{conversation}/items", {"items": items}),
        bodies("/v1/memory/records", {**_NAMESPACE, "records": [{"text": "likes tea", "metadata": {"n": 3}}]}),
        bodies("/v1/memory/search", {**_NAMESPACE, "query": "tea", "top_k": 3, "filters": {"n": {"gte": 2}}}),
        bodies("/v1/memory/namespaces", {**_NAMESPACE, "default_ttl_seconds": 3600}),
    )


def calls(chat_groups: list[str], embedding_groups: list[str]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(path, body) pairs: valid requests to these groups with hostile members and extra fields."""

    def bodies(base: dict, paths: list[tuple], groups: list[str]):
        return st.sampled_from(groups).flatmap(lambda g: mutated({**base, "model": g}, paths))

    return st.one_of(
        st.tuples(st.just("/v1/chat/completions"), bodies(_CHAT, CHAT_PATHS, chat_groups)),
        st.tuples(st.just("/v1/chat/completions"), bodies(_SIMPLE, _SIMPLE_PATHS, chat_groups)),
        st.tuples(st.just("/v1/messages"), bodies(_MESSAGES, MESSAGES_PATHS, chat_groups)),
        st.tuples(st.just("/v1/embeddings"), bodies(EMBEDDINGS, EMBEDDINGS_PATHS, embedding_groups)),
        st.tuples(st.just("/v1/route/explain"), bodies(_CHAT, CHAT_PATHS, chat_groups)),
    )


class HostileBodies:
    """`known(method, path, body, query, outcome) -> str | None`: as for schema_fuzz.Runner."""

    def __init__(
        self,
        base_url: str,
        auth: dict[str, str],
        chat_groups: list[str],
        embedding_groups: list[str],
        *,
        timeout_s: float = 10.0,
        known: Callable | None = None,
        report: Report | None = None,
        strategy: st.SearchStrategy[tuple[str, bytes]] | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout_s, headers={**auth, "content-type": "application/json"}
        )
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.strategy = strategy if strategy is not None else calls(chat_groups, embedding_groups)
        self.known = known or (lambda method, path, body, query, outcome: None)
        self.report = report or Report()

    def run(self, *, examples: int, run_seed: int | None, deadline: float | None = None) -> Report:
        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(self.strategy)
        def fuzz(call) -> None:
            if not _late(deadline):
                self.send(*call)

        if run_seed is not None:
            fuzz = seed(run_seed)(fuzz)
        start = time.monotonic()
        fuzz()
        self.report.seconds += time.monotonic() - start
        return self.report

    def send(self, path: str, body: bytes) -> None:
        label = f"POST {path} (hostile body)"
        self.report.calls += 1
        self.report.per_operation[label] = self.report.per_operation.get(label, 0) + 1
        try:
            resp = self.http.post(path, content=body)
        except httpx.TimeoutException:
            outcome, detail, rid = "timeout", f"no answer within {self.timeout_s:g} s", None
        except httpx.TransportError as exc:
            outcome, detail, rid = "connection error", repr(exc)[:300], None
        else:
            self.report.statuses[resp.status_code] += 1
            if resp.status_code < 400 or (resp.status_code < 500 and LONG_RUN not in resp.text):
                return
            outcome = f"HTTP {resp.status_code}" if resp.status_code >= 500 else "a long value repeated whole"
            detail, rid = resp.text[:300], resp.headers.get("x-request-id")
        curl = f"curl -X POST {self.base_url}{path} -H 'content-type: application/json' --data-binary {body[:2000]!r}"
        self.report.record(Finding(label, outcome, curl, detail, rid), self.known("POST", path, body, None, outcome))
