"""Hostile request bodies on every door of a running gateway: what the OpenAPI documents cannot
express (control characters and CR/LF in field names, bad UTF-8, nesting past the decoder's
stack, numbers past 64 bits, JSON inside strings) around otherwise valid requests to every model
group. Fills the same Report as schema_fuzz.Runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from .schema_fuzz import Finding, Report, _late
from .strategies import mutated
from .test_request_properties import CHAT, CHAT_PATHS, EMBEDDINGS, EMBEDDINGS_PATHS, MESSAGES, MESSAGES_PATHS

_CHAT = {k: v for k, v in CHAT.items() if k != "multihome"}  # its narrowing names test deployments
_MESSAGES = {k: v for k, v in MESSAGES.items() if k != "multihome"}
_SIMPLE = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": False}
_SIMPLE_PATHS = [("messages", 0, "content"), ("messages", 0), ("stream",), ("n",), ("max_tokens",)]


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
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout_s, headers={**auth, "content-type": "application/json"}
        )
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.strategy = calls(chat_groups, embedding_groups)
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
            if resp.status_code < 500:
                return
            outcome, detail, rid = f"HTTP {resp.status_code}", resp.text[:300], resp.headers.get("x-request-id")
        curl = f"curl -X POST {self.base_url}{path} -H 'content-type: application/json' --data-binary {body[:2000]!r}"
        self.report.record(Finding(label, outcome, curl, detail, rid), self.known("POST", path, body, None, outcome))
