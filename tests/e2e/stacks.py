"""One test module's gateway and the simulators behind it: started once for the module, each
simulator's request log cleared before every test (`sims`), an openai SDK client of the module's key
(`client`), and at the end the gateway's log checked for the secrets it was given and for tracebacks.

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory):
        with gateway_stack(CLIENT_KEY, secrets=(SECRET,)) as s:
            s.sims["eu"] = Simulator(...)
            s.start(cfg, tmp, env)
            yield s

and `from .stacks import client, sims` for the two per-test fixtures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import openai
import pytest

from .processes import Gateway, Simulator


@dataclass
class Stack:
    client_key: str
    sims: dict[str, Simulator] = field(default_factory=dict)
    gateway: Gateway | None = None

    def start(self, config: dict, tmp: Path, env: dict[str, str]) -> Gateway:
        self.gateway = Gateway(config, tmp, env)
        return self.gateway

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    def openai(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or self.client_key, max_retries=0, timeout=15)

    def anthropic(self, key: str | None = None) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key or self.client_key, max_retries=0, timeout=15)


@contextmanager
def gateway_stack(client_key: str, *, secrets: Iterable[str]) -> Iterator[Stack]:
    stack = Stack(client_key)
    try:
        yield stack
    finally:
        log = stack.gateway.stop() if stack.gateway is not None else ""
        for sim in stack.sims.values():
            sim.stop()
    for secret in secrets:
        assert secret not in log, "a secret reached the gateway's log"
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def sims(stack: Stack) -> dict[str, Simulator]:
    for sim in stack.sims.values():
        sim.reset()
    return stack.sims


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return stack.openai()
