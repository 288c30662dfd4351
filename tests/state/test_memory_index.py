"""The in-memory namespace index and the offline embedder: the two-pass dense search past 20,000
records finds what the exact product finds, the keyword delta scores like the built index, and the
embedder loads from its package folder with the network unreachable."""

from __future__ import annotations

import math
import socket
import tracemalloc

import numpy as np
import pytest

from multihome.state.memory.embedder import WordLlamaEmbedder
from multihome.state.memory.index import EXACT_UPTO, NamespaceIndex, _best, _top, terms


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_the_two_pass_dense_search_agrees_with_the_exact_one():
    """Clustered vectors (as embeddings of a namespace's records are): the two passes find the query's
    record first, and most of the exact top five."""
    rng = np.random.default_rng(3)
    n, dim = EXACT_UPTO + 5000, 256
    centers = _unit(rng.standard_normal((300, dim)))
    vecs = _unit(0.8 * centers[rng.integers(0, 300, n)] + 0.6 * _unit(rng.standard_normal((n, dim))))
    index = NamespaceIndex(dim)
    for i in range(n):
        index.add(f"r{i}", vecs[i], [], {"even": i % 2 == 0}, math.inf)
    overlap = []
    for q in range(20):
        target = q * 701 % n
        query = _unit((vecs[target] + 0.05 * rng.standard_normal(dim)).reshape(1, -1))[0]
        exact = [f"r{i}" for i in np.argsort(-(vecs @ query))[:5]]
        found = index.search(query, [], 5, now=0.0, mode="vector")
        assert found[0][0] == exact[0] == f"r{target}"
        assert found[0][2] == pytest.approx(float(vecs[target] @ query), abs=1e-5)
        assert [s for _, _, s in found] == sorted((s for _, _, s in found), reverse=True)
        overlap.append(len(set(exact) & {rid for rid, _, _ in found}) / 5)
    assert sum(overlap) / len(overlap) >= 0.8, overlap
    odd = index.search(query, [], 5, now=0.0, mode="vector", keep=lambda m: not m["even"])
    assert all(int(rid[1:]) % 2 == 1 for rid, _, _ in odd) and len(odd) == 5
    none = index.search(query, [], 5, now=0.0, mode="vector", keep=lambda m: m.get("missing") == 1)
    assert none == []


def test_keyword_scores_of_the_delta_match_the_built_index():
    docs = [f"record {i} mentions apples" if i % 5 == 0 else f"record {i} mentions pears and plums" for i in range(400)]
    built, fresh = NamespaceIndex(4), NamespaceIndex(4)
    for i, text in enumerate(docs):
        for index in (built, fresh):
            index.add(f"r{i}", np.ones(4, dtype=np.float32) / 2, terms(text), {}, math.inf)
    built.rebuild()  # fresh keeps everything in its delta
    a = built._keyword_scores(terms("apples"), len(docs))
    b = fresh._keyword_scores(terms("apples"), len(docs))
    assert np.flatnonzero(a).tolist() == np.flatnonzero(b).tolist() == list(range(0, 400, 5))
    for index in (built, fresh):
        top = [r for r, _, _ in index.search(None, terms("apples"), 3, now=0.0, mode="keyword")]
        assert len(top) == 3 and all(int(r[1:]) % 5 == 0 for r in top)


def test_expired_and_removed_records_are_never_returned():
    index = NamespaceIndex(4)
    v = np.ones(4, dtype=np.float32) / 2
    index.add("old", v, terms("parking code"), {}, 100.0)
    index.add("gone", v, terms("parking code"), {}, math.inf)
    index.add("kept", v, terms("parking code"), {}, math.inf)
    index.remove("gone")
    assert [r for r, _, _ in index.search(v, terms("parking"), 5, now=50.0)] == ["old", "kept"]
    assert [r for r, _, _ in index.search(v, terms("parking"), 5, now=150.0)] == ["kept"]


def test_the_offline_embedder_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the embedder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HOME", "/nonexistent")  # and no cache under $HOME either
    model = WordLlamaEmbedder()
    vecs = model.embed(["my dog is called Biscuit", "what is my dog's name?", "quarterly tax return"])
    assert vecs.shape == (3, model.dim) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
    assert model.embed([]).shape == (0, model.dim)


def test_a_filter_used_again_masks_the_records_it_admits_before_the_scan():
    """From its second use, a filter's admitted records are kept by the index (and kept current through
    writes, deletes and a rebuild): a selective filter finds its records past the coarse pool, exactly
    as testing every record would, and the same as the first (candidate-tested) search where that one
    had enough candidates."""
    from multihome.state.memory.filters import compile_filter

    rng = np.random.default_rng(5)
    n, dim = EXACT_UPTO + 5000, 64
    vecs = _unit(rng.standard_normal((n, dim)))
    index = NamespaceIndex(dim)
    words = [["rare"] if i % 500 == 7 else ["common"] for i in range(n)]
    index.add_many([f"r{i}" for i in range(n)], vecs, words, [{"g": i % 500} for i in range(n)], [math.inf] * n)
    query = _unit(rng.standard_normal((1, dim)))[0]

    def exact(admit, k=10):
        ids = [i for i in np.argsort(-(vecs[: len(admit)] @ query)) if admit[i]]
        return [f"r{i}" for i in ids[:k]]

    rare = compile_filter({"g": 7})  # 30 of 15,000 records: few, if any, among the coarse pool's 512
    first = index.search(query, ["rare"], 10, now=0.0, mode="vector", keep=rare)
    again = index.search(query, ["rare"], 10, now=0.0, mode="vector", keep=compile_filter({"g": 7}))
    want = exact([i % 500 == 7 for i in range(n)])
    assert [rid for rid, _, _ in first] == [rid for rid, _, _ in again] == want
    assert len(index._admits) == 1  # kept after its second use

    # Kept current: a new admitted record is found, a removed one is not, and so after a rebuild.
    new = _unit(query.reshape(1, -1) + 0.01)[0]
    index.add("new", new, ["rare"], {"g": 7}, math.inf)
    index.add("other", new, ["rare"], {"g": 8}, math.inf)
    found = [rid for rid, _, _ in index.search(query, ["rare"], 10, now=0.0, mode="vector", keep=rare)]
    assert found[0] == "new" and "other" not in found
    index.remove("new")
    index.remove(want[0])
    index.rebuild()
    found = [rid for rid, _, _ in index.search(query, ["rare"], 10, now=0.0, mode="vector", keep=rare)]
    assert found[:9] == want[1:10]  # neither removed record, the rest in order


@pytest.mark.parametrize("masked", [0.0, 0.5, 0.97, 1.0])
@pytest.mark.parametrize("k", [1, 40, 512, 5000])
def test_the_sampled_top_k_is_the_partitions_top_k(masked, k):
    """`_top` (a threshold read off a sample, then a partition of what passes) picks the very positions a
    partition of every score does, whether few or most scores are masked out (-inf) or ordered by position."""
    rng = np.random.default_rng(k)
    n = 100_000
    for scores in (rng.standard_normal(n).astype(np.float32), np.linspace(-1, 1, n, dtype=np.float32)):
        scores[rng.random(n) < masked] = -np.inf
        got = _top(scores, k)
        assert len(got) == k
        kth = np.sort(scores)[n - k]  # the k-th highest: every higher score is picked, no lower one
        assert np.all(scores[got] >= kth) and set(np.flatnonzero(scores > kth).tolist()) <= set(got.tolist())


def test_the_sampled_top_k_holds_on_periodic_scores():
    """Records written in a pattern (the same few texts again and again) give scores whose every 16th is
    unlike the whole: the threshold is lowered until k pass, and the positions are still the top k."""
    n, k = 100_000, 512
    scores = np.tile(np.float32([0.1, 0.2, 0.9, 0.3, 0.1, 0.2, 0.3, 0.4]), n // 8)
    scores[np.arange(n) % 16 == 2] = -np.inf  # the sample never sees the best
    scores[::3] += np.float32(1e-4) * np.arange(0, n, 3) / n  # distinct scores
    got = _top(scores, k)
    kth = np.sort(scores)[n - k]
    assert len(got) == k and np.all(scores[got] >= kth)


def test_the_sampled_top_k_takes_equal_scores_at_the_threshold():
    """BM25 scores of records alike are equal: the top k then ends inside a run of equal scores, and any
    of those make up the k."""
    rng = np.random.default_rng(5)
    n, k = 40_000, 64
    scores = rng.choice(np.float32([0.0, 1.5, 2.5, 3.0]), n, p=[0.5, 0.3, 0.195, 0.005])
    got = _top(scores, k)
    assert len(set(got.tolist())) == k
    kth = np.sort(scores)[n - k]
    assert np.all(scores[got] >= kth) and set(np.flatnonzero(scores > kth).tolist()) <= set(got.tolist())


@pytest.mark.parametrize("seed", range(40))
def test_a_filtered_best_tests_each_record_once_among_tied_scores(seed):
    """`_best` goes deeper when the filter rejects candidates; with scores tied across a round's boundary it
    must still return distinct records, best first, the best that pass (a review found 163 distinct of 200)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 4000))
    scores = rng.integers(0, 4, n).astype(np.float32)
    scores[rng.random(n) < 0.3] = -np.inf
    every = int(rng.integers(2, 6))
    depth = int(rng.integers(1, 300))
    got = _best(scores, depth, lambda i: i % every == 0)
    passing = [i for i in range(n) if np.isfinite(scores[i]) and i % every == 0]
    assert len(got) == len(set(got)) == min(depth, len(passing))
    assert all(i % every == 0 for i in got)
    assert list(scores[got]) == sorted(scores[got], reverse=True)
    assert sorted(scores[got]) == sorted(sorted(scores[passing], reverse=True)[: len(got)])


def test_long_made_up_words_are_not_kept_by_the_stem_cache():
    """A query or record of one long made-up word each: the stem cache is bounded in words, so caching them
    would hold ~20 kB apiece (~4 GB at its bound); they are stemmed and let go."""
    terms("warm up the stemmer and its stop words")
    words = [f"{i:06d}" + "q" * 5_000 for i in range(1_000)]
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for word in words:
            assert terms(f"about {word}") == [word]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held - before < 1_000_000, f"{held - before} bytes held after 1,000 searches of a 5 kB word"
