"""The routed memory embedder's own arithmetic (api/memory_embeddings.py): how a write's texts are cut
into upstream requests, and how an answer becomes unit vectors in input order or is refused. The
routing itself is tested end to end (tests/e2e/test_memory_routed.py)."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import numpy as np
import pytest

from multihome.api.memory_embeddings import BATCH_CHARS, _vectors, batches


def test_a_write_goes_in_one_request_unless_it_passes_the_providers_limits():
    assert batches(["a"] * 100, 96) == [["a"] * 96, ["a"] * 4]
    assert batches(["x"] * 3, 96) == [["x"] * 3]
    assert batches(["x"] * 3, 1) == [["x"], ["x"], ["x"]]  # one text per call (Amazon Titan)
    big = "y" * (BATCH_CHARS // 2 + 1)
    assert batches([big, big, "z"], 96) == [[big], [big, "z"]]  # never past the character budget
    huge = "w" * (BATCH_CHARS + 5)
    assert batches(["a", huge, "b"], 96) == [["a"], [huge], ["b"]]  # too long alone: the upstream's limit decides
    assert [t for part in batches([str(i) for i in range(250)], 96) for t in part] == [str(i) for i in range(250)]


def answer(data: list[dict]) -> SimpleNamespace:
    return SimpleNamespace(body=msgspec.json.encode({"object": "list", "data": data}))


def test_an_answer_becomes_unit_vectors_in_input_order():
    got = _vectors(answer([{"index": 1, "embedding": [0, 3, 4]}, {"index": 0, "embedding": [2, 0, 0]}]), 2)
    assert got.dtype == np.float32 and np.allclose(got, [[1, 0, 0], [0, 0.6, 0.8]])
    assert np.allclose(_vectors(answer([{"index": 0, "embedding": [0, 0]}]), 1), [[0, 0]])  # no division by zero


@pytest.mark.parametrize(
    "data, count, why",
    [
        ([{"index": 0, "embedding": [1.0]}], 2, "1 embeddings for 2 inputs"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}], 2, "2 embeddings for 2 inputs"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}], 2, "sizes"),
        ([{"index": 0, "embedding": []}], 1, "sizes"),
    ],
)
def test_an_answer_that_does_not_fit_the_request_is_refused(data, count, why):
    with pytest.raises(ValueError, match=why):
        _vectors(answer(data), count)
    with pytest.raises(ValueError, match="not an embeddings list"):
        _vectors(SimpleNamespace(body=b"<html>"), 1)


@pytest.mark.parametrize("values", [[1e300] * 8, [-1e38] * 8, [1e39, 1.0, 0.0]])
def test_huge_values_from_a_broken_upstream_still_make_a_unit_vector(values):
    """Past float32's range, or whose norm is: normalised before narrowing, never stored as NaN or zeros
    (a NaN vector is never found by a search again, and nothing would say why)."""
    [got] = _vectors(answer([{"index": 0, "embedding": values}]), 1)
    assert np.isfinite(got).all() and np.isclose(np.linalg.norm(got), 1)
    expected = np.sign(values) * (np.abs(values) == np.max(np.abs(values)))
    assert np.allclose(got, expected / np.linalg.norm(expected))


def test_a_value_that_is_no_finite_number_is_refused():
    with pytest.raises(ValueError, match="not an embeddings list|not finite"):  # (msgspec refuses it first)
        _vectors(SimpleNamespace(body=b'{"object": "list", "data": [{"index": 0, "embedding": [1e400, 1]}]}'), 1)


class _Kind:
    kind = "openai"


class _Runtime:
    """The fields of routing.catalog.DeploymentRuntime that the embedder and the call's record read."""

    provider, adapter, region, data_zone, upstream_model = "p", _Kind(), "reg", "zone", "emb-model"

    def __init__(self, name: str) -> None:
        self.name = name


class _Records:
    def __init__(self) -> None:
        self.records: list = []

    def record(self, record) -> None:
        self.records.append(record)


class _Pipeline:
    """The pipeline's part the embedder uses: accounting begun as `Pipeline.run` begins it, and a served answer
    reached after a hedge whose loser completed too (billed: the meter charges it as an unserved answer)."""

    def __init__(self, accounting, served) -> None:
        self.catalog = SimpleNamespace(groups={"embed": object()})
        self.accounting, self.served = accounting, served

    async def run(self, call, endpoint, raw, parsed, *_, **__):
        call.tracker = self.accounting.begin(
            call.request_id.decode(), endpoint, call.principal, raw, "embed", parsed.request
        )
        return self.served, []


@pytest.mark.anyio
async def test_a_routed_embedding_tells_the_caller_what_the_meter_charged():
    """An agent run counts its memory embeddings in its `max_spend` from what it is told here: the very usage
    the meter charged (cached tokens, at their price), and every answer it charged (a hedge's completed loser)."""
    from multihome.accounting.tracker import Accounting
    from multihome.api.memory_embeddings import RoutedEmbeddings
    from multihome.config.memory import MemoryEmbeddingsConfig
    from multihome.routing.attempts import Attempt, Served
    from multihome.schema.peek import peek_decoder
    from multihome.schema.principal import Principal
    from multihome.state.memory.embedder import Caller

    data = [{"index": 0, "embedding": [1.0, 0.0]}]
    body = msgspec.json.encode({"object": "list", "data": data})
    usage = {"prompt_tokens": 7, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 3}}
    peek = peek_decoder.decode(msgspec.json.encode({"object": "list", "data": data, "usage": usage}))
    lost = peek_decoder.decode(msgspec.json.encode({"object": "list", "data": data, "usage": {"prompt_tokens": 5}}))
    attempts = [Attempt("ex", "hedge_lost", 1.0, billed=(_Runtime("ex"), lost)), Attempt("ey", "ok", 2.0)]
    served = Served(_Runtime("ey"), 200, attempts, body, peek=peek)  # type: ignore[arg-type]
    meter = _Records()
    embedder = RoutedEmbeddings(_Pipeline(Accounting([meter]), served), MemoryEmbeddingsConfig(model="embed"))  # type: ignore[arg-type]
    told: list = []
    who = Principal(tenant="ten_a", subject="key_a", source="api_key", key_id="key_a")
    await embedder.embed(
        ["a fact"], None, Caller(who, "req-1", charged=lambda d, u: told.append((d, u))), purpose="records"
    )
    assert [r.request_id for r in meter.records] == ["req-1-emb.1", "req-1-emb"]  # the loser's row, the call's
    assert told == [(r.deployment, r.usage) for r in meter.records]
    assert told[1][1].cached_tokens == 3


@pytest.mark.anyio
@pytest.mark.parametrize("earlier", [True, False], ids=["recorded-before", "first"])
async def test_a_resumed_run_s_embedding_recorded_by_an_earlier_run_is_not_recorded_again(earlier):
    """A background run resumed after its replica died makes its memory embeddings again under the same request
    ids: one the earlier run recorded is not recorded again (its row stands: counted against the budgets once,
    as billed once); one it did not is recorded, and marked (metering's `mark_recorded`, for Redis counters)."""
    from multihome.accounting.tracker import Accounting
    from multihome.api.memory_embeddings import RoutedEmbeddings
    from multihome.config.memory import MemoryEmbeddingsConfig
    from multihome.routing.attempts import Attempt, Served
    from multihome.schema.peek import peek_decoder
    from multihome.schema.principal import Principal
    from multihome.state.memory.embedder import Caller

    data = [{"index": 0, "embedding": [1.0, 0.0]}]
    body = msgspec.json.encode({"object": "list", "data": data, "usage": {"prompt_tokens": 7}})
    served = Served(_Runtime("ey"), 200, [Attempt("ey", "ok", 1.0)], body, peek=peek_decoder.decode(body))  # type: ignore[arg-type]
    meter = _Records()
    embedder = RoutedEmbeddings(_Pipeline(Accounting([meter]), served), MemoryEmbeddingsConfig(model="embed"))  # type: ignore[arg-type]
    asked, marked, told = [], [], []

    async def recorded(request_id: str) -> bool:
        asked.append(request_id)
        return earlier

    who = Principal(tenant="ten_a", subject="key_a", source="api_key", key_id="key_a")
    caller = Caller(who, "run-1-m0a", charged=lambda d, u: told.append(d), recorded=recorded, mark=marked.append)
    await embedder.embed(["a fact"], None, caller, purpose="records")
    assert asked == ["run-1-m0a-emb"]
    assert [r.request_id for r in meter.records] == ([] if earlier else ["run-1-m0a-emb"])
    assert marked == ([] if earlier else ["run-1-m0a-emb"])
    assert told == ["ey"]  # the run's spend counts it either way (its journal lost the earlier run's)
