"""`NamespaceIndex`: one memory namespace's records, opened, held in memory for hybrid search.

Why in memory: a record's text, metadata and embedding are sealed in the database (docs/memory.md
"What is stored"), so neither SQL nor a database vector extension can search them; a replica opens
a namespace's records once, keeps them here, and catches up with what changed since (store.py).

Search is hybrid, as the strong LongMemEval baselines are: a dense list (cosine similarity of the
query's embedding with every live record: one matrix-vector product) and a keyword list (BM25 over
stemmed terms with `bm25s`), fused by reciprocal rank fusion (each list contributes 1/(60 + rank)).

`bm25s` precomputes its scores at build time and cannot add documents, so the keyword side is a
built index over most records plus a small "delta" of records added since, scored directly with
the same formula (Lucene's BM25, the built index's document frequencies plus the delta's); deleted
records are masked. When the delta or the deleted share grows past a bound, `rebuild` compacts the
arrays and builds a new `bm25s` index (the store runs it off the event loop).
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import Stemmer

from .numeric import np  # numpy with BLAS on one thread; this module is imported on the first memory use

COARSE_DIM = 64  # the embedding's first dimensions (a Matryoshka model: a prefix is an embedding too)
EXACT_UPTO = 10_000  # up to this many records, every similarity is computed in full
COARSE_POOL = 512  # candidates the coarse pass hands to the exact one
KEPT_FILTERS = 8  # filters whose admitted positions an index keeps (the most recently used)
# Words longer than this are stemmed each time, never cached: the cache is bounded in words, and a query
# (10,000 characters) or a record (32,768) of one long made-up word each would have filled it with ~20 kB
# entries (~4 GB at its 200,000 words; PyStemmer's own cache, now off, held 10,000 such). No word of a
# language comes near it.
STEM_CACHED_UPTO = 40
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al.); 60 is the usual choice
K1, B = 1.5, 0.75  # bm25s' defaults, used by the delta scorer too
_WORD = re.compile(r"(?u)\b\w\w+\b")
_stemmer = Stemmer.Stemmer("english", 0)  # no cache of its own: `_stem` is the one, bounded by word length too


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def _stem_long(word: str) -> str:
    return str(_stemmer.stemWord(word))


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    """bm25s' English stop words. Imported on first use: `import bm25s` costs ~0.3 s of gateway start-up."""
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS)


def terms(text: str) -> list[str]:
    """The keyword terms of a text: lower-cased words of 2+ characters, stop words out, stemmed."""
    stop = _stopwords()
    return [
        _stem(w) if len(w) <= STEM_CACHED_UPTO else _stem_long(w) for w in _WORD.findall(text.lower()) if w not in stop
    ]


class NamespaceIndex:
    """`dim`: the namespace's embedding dimension (its `Space`'s); vectors are unit length (the embedders
    normalise), so a dot product is the cosine similarity. `prefix`: the model is a Matryoshka model, so
    past `EXACT_UPTO` records the first `COARSE_DIM` dimensions may pick the candidates; without it every
    search computes every similarity in full."""

    def __init__(self, dim: int, prefix: bool = True) -> None:
        self.dim = dim
        self.prefix = prefix
        self.seq = 0  # the highest change (record or tombstone) of the namespace applied here
        self.namespace_id = ""
        self.ids: list[str] = []
        self.meta: list[Mapping[str, Any]] = []
        self.tokens: list[list[str]] = []
        self.pos: dict[str, int] = {}
        # Rows allocated: few at first (a namespace of a handful of records is common, and every row is
        # memory the store's budget counts, `capacity`); `add_many` doubles them as records come.
        cap = 16
        self._vec = np.zeros((cap, dim), dtype=np.float32)
        self._coarse = np.zeros((cap, min(dim, COARSE_DIM)), dtype=np.float32)
        self._alive = np.zeros(cap, dtype=bool)
        self._expires = np.full(cap, math.inf)
        self._bm25: Any = None
        self._vocab: dict[str, int] = {}
        self._df = np.zeros(0, dtype=np.int64)
        self._avgdl = 1.0
        self._main = 0  # positions below this are in the built bm25s index
        self._delta: dict[str, dict[int, int]] = {}  # term -> {position: term frequency}, positions >= _main
        self._dead = 0
        # Filters used more than once: which positions each admits (kept current by every change), so a
        # filtered search masks its candidates before the scan instead of testing them one by one after it.
        self._admits: OrderedDict[str, tuple[Callable[[Mapping[str, Any]], bool], np.ndarray]] = OrderedDict()
        self._asked: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.pos)

    @property
    def capacity(self) -> int:
        """Rows the arrays hold room for: what the index weighs, whatever is in them (store.py `_evict`)."""
        return len(self._alive)

    # -- changes --------------------------------------------------------------------------------
    def add(
        self, record_id: str, vector: np.ndarray, tokens: list[str], meta: Mapping[str, Any], expires: float
    ) -> None:
        self.add_many([record_id], vector.reshape(1, -1), [tokens], [meta], [expires])

    def add_many(
        self,
        ids: list[str],
        vectors: np.ndarray,
        tokens: list[list[str]],
        metas: list[Mapping[str, Any]],
        expires: list[float],
    ) -> None:
        """Records in one go (a replica loading a namespace adds thousands: the arrays grow and fill once)."""
        for rid in ids:
            if rid in self.pos:
                self.remove(rid)
        n, k = len(self.ids), len(ids)
        if n + k > len(self._alive):
            cap = max(2 * len(self._alive), n + k)
            self._vec = np.resize(self._vec, (cap, self.dim))
            self._coarse = np.resize(self._coarse, (cap, self._coarse.shape[1]))
            self._alive = np.concatenate([self._alive, np.zeros(cap - len(self._alive), dtype=bool)])
            self._expires = np.concatenate([self._expires, np.full(cap - len(self._expires), math.inf)])
            for key, (test, admits) in self._admits.items():
                self._admits[key] = (test, np.concatenate([admits, np.zeros(cap - len(admits), dtype=bool)]))
        for test, admits in self._admits.values():
            admits[n : n + k] = [test(m) for m in metas]
        self._vec[n : n + k] = vectors
        prefix = vectors[:, : self._coarse.shape[1]]
        norms = np.linalg.norm(prefix, axis=1, keepdims=True)
        self._coarse[n : n + k] = prefix / np.where(norms > 0, norms, 1)
        self._alive[n : n + k] = True
        self._expires[n : n + k] = expires
        self.ids.extend(ids)
        self.meta.extend(metas)
        self.tokens.extend(tokens)
        delta = self._delta
        for i, (rid, words) in enumerate(zip(ids, tokens, strict=True), start=n):
            self.pos[rid] = i
            for t in words:
                post = delta.get(t)
                if post is None:
                    post = delta[t] = {}
                post[i] = post.get(i, 0) + 1

    def remove(self, record_id: str) -> None:
        at = self.pos.pop(record_id, None)
        if at is not None:
            self._alive[at] = False
            self.meta[at] = {}
            self.tokens[at] = []
            self._dead += 1

    def needs_rebuild(self) -> bool:
        delta = len(self.ids) - self._main
        return delta > max(512, len(self.ids) // 10) or self._dead > max(512, len(self.ids) // 4)

    def rebuild(self) -> None:
        """Compact (drop deleted positions) and index every record's terms with `bm25s`. CPU-bound:
        seconds at 100,000 records, so the caller runs it on a thread while nothing else changes the index."""
        keep = np.flatnonzero(self._alive[: len(self.ids)])
        n = len(keep)
        cap = max(256, n + n // 4)
        vec = np.zeros((cap, self.dim), dtype=np.float32)
        vec[:n] = self._vec[keep]
        coarse = np.zeros((cap, self._coarse.shape[1]), dtype=np.float32)
        coarse[:n] = self._coarse[keep]
        alive = np.zeros(cap, dtype=bool)
        alive[:n] = True
        expires = np.full(cap, math.inf)
        expires[:n] = self._expires[keep]
        self.ids = [self.ids[i] for i in keep]
        self.meta = [self.meta[i] for i in keep]
        self.tokens = [self.tokens[i] for i in keep]
        self.pos = {rid: i for i, rid in enumerate(self.ids)}
        self._vec, self._coarse, self._alive, self._expires = vec, coarse, alive, expires
        for key, (test, admits) in self._admits.items():
            kept = np.zeros(cap, dtype=bool)
            kept[:n] = admits[keep]
            self._admits[key] = (test, kept)
        self._dead = 0
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in self.tokens]
        self._bm25 = None
        self._main = n
        self._delta = {}
        if n and vocab:
            import bm25s
            from bm25s.tokenization import Tokenized

            # bm25s sets its logger to DEBUG when imported, which would put a line per build in the gateway's log.
            logging.getLogger("bm25s").setLevel(logging.WARNING)

            index = bm25s.BM25(k1=K1, b=B)
            index.index(Tokenized(ids=ids, vocab=vocab), show_progress=False)
            self._bm25 = index
            self._vocab = index.vocab_dict
            self._df = np.diff(index.scores["indptr"])
            self._avgdl = max(1.0, sum(len(d) for d in self.tokens) / n)

    # -- search ---------------------------------------------------------------------------------
    def search(
        self,
        query_vec: np.ndarray | None,
        query_terms: list[str],
        top_k: int,
        *,
        now: float,
        keep: Callable[[Mapping[str, Any]], bool] | None = None,
        mode: str = "hybrid",
    ) -> list[tuple[str, float, float]]:
        """The best `top_k` live records: (record id, fused score, cosine similarity), best first."""
        n = len(self.ids)
        if n == 0:
            return []
        valid = self._alive[:n] & (self._expires[:n] > now)
        admits = self._admitted(keep)
        if admits is not None:  # the filter's records known: masked before the scan, nothing tested after it
            valid &= admits[:n]
            keep = None
        depth = max(4 * top_k, 40)  # how deep each list goes before fusion
        checked: dict[int, bool] = {}

        def passes(i: int) -> bool:
            if keep is None:
                return True
            ok = checked.get(i)
            if ok is None:
                ok = checked[i] = keep(self.meta[i])
            return ok

        lists: list[list[int]] = []
        if mode in ("hybrid", "vector") and query_vec is not None:
            lists.append(self._dense(query_vec, valid, depth, passes))
        if mode in ("hybrid", "keyword"):
            words = list(dict.fromkeys(query_terms))
            if words:
                scores = self._keyword_scores(words, n)
                # Ranked among the records that hold a query term only (a few percent of n, typically).
                hit = np.flatnonzero(valid & (scores > 0))
                ranked = _best(scores[hit], depth, lambda j: passes(int(hit[j])))
                lists.append([int(hit[j]) for j in ranked])
        fused: dict[int, float] = {}
        for ranked in lists:
            for rank, i in enumerate(ranked):
                fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused.items(), key=lambda kv: -kv[1])[:top_k]
        return [
            (self.ids[i], score, float(self._vec[i] @ query_vec) if query_vec is not None else 0.0) for i, score in best
        ]

    def _admitted(self, keep: Callable[[Mapping[str, Any]], bool] | None) -> np.ndarray | None:
        """The positions `keep` admits, for a filter used before (its second use tests every record once;
        a filter used once is tested on the candidates only, as that is cheaper); None: test candidates."""
        key = getattr(keep, "key", None)
        if keep is None or key is None:
            return None
        found = self._admits.get(key)
        if found is not None:
            self._admits.move_to_end(key)
            return found[1]
        seen = self._asked[key] = self._asked.get(key, 0) + 1
        if seen < 2:
            if len(self._asked) > 64 * KEPT_FILTERS:  # one-off filters: forget them
                self._asked.clear()
            return None
        admits = np.zeros(len(self._alive), dtype=bool)
        n = len(self.ids)
        admits[:n] = np.fromiter((keep(m) for m in self.meta), dtype=bool, count=n)
        self._admits[key] = (keep, admits)
        if len(self._admits) > KEPT_FILTERS:
            self._admits.popitem(last=False)
        return admits

    def _dense(self, query: np.ndarray, valid: np.ndarray, depth: int, passes: Callable[[int], bool]) -> list[int]:
        """The `depth` records most similar to `query` that pass. Past `EXACT_UPTO` records, in two passes:
        the embeddings' first `COARSE_DIM` dimensions pick a pool of candidates (a quarter of the memory
        to read: the product is bound by memory bandwidth, ~10 ms for 100,000 full vectors), the full
        vectors rank the pool; a filter that rejects too much of the pool falls back to the full product."""
        n = len(valid)
        if n <= EXACT_UPTO or not self.prefix:
            return _best(np.where(valid, _dot(self._vec[:n], query), -np.inf), depth, passes)
        finite = int(np.count_nonzero(valid))
        if finite <= EXACT_UPTO and 8 * finite <= n:  # few records can match (a selective filter): those only, exactly
            rows = np.flatnonzero(valid)
            return [int(rows[j]) for j in _best(_dot(self._vec[rows], query), depth, lambda j: passes(int(rows[j])))]
        coarse = _blas_dot(self._coarse[:n], _unit(query[: self._coarse.shape[1]]))
        if finite < n:
            np.copyto(coarse, -np.inf, where=~valid)  # in place: no second array of n scores
        pool = min(finite, max(COARSE_POOL, 8 * depth))
        if pool == 0:
            return []
        cand = _top(coarse, pool)
        cand = cand[np.isfinite(coarse[cand])]
        order = cand[np.argsort(-_dot(self._vec[cand], query), kind="stable")]
        out: list[int] = []
        for i in order.tolist():  # until `depth` pass: a filter's check need not run on the whole pool
            if passes(i):
                out.append(i)
                if len(out) == depth:
                    break
        if len(out) < depth and pool < finite:
            return _best(np.where(valid, _dot(self._vec[:n], query), -np.inf), depth, passes)
        return out

    def _keyword_scores(self, words: list[str], n: int) -> np.ndarray:
        scores = np.zeros(n, dtype=np.float32)
        main = self._main
        known = [w for w in words if w in self._vocab]
        if self._bm25 is not None and known:
            scores[:main] = self._bm25.get_scores(known)
        for w in words:  # the delta, scored with the same formula
            post = self._delta.get(w)
            if not post:
                continue
            at = np.fromiter(post.keys(), dtype=np.int64, count=len(post))
            tf = np.fromiter(post.values(), dtype=np.float32, count=len(post))
            df = len(post) + (int(self._df[self._vocab[w]]) if w in self._vocab else 0)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            dl = np.fromiter((len(self.tokens[i]) for i in post), dtype=np.float32, count=len(post))
            scores[at] += idf * tf / (tf + K1 * (1 - B + B * dl / self._avgdl))
        return scores


def _dot(rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    """`rows @ v` on this thread alone. A matrix-vector product through BLAS is spread over BLAS's own
    thread pool, which on a busy machine waits for a free core: measured at 100,000 x 64, p50 0.6 ms but
    p95 9 ms that way, against p50 1.9 / p95 3.9 ms for numpy's own loop (einsum without `optimize`)."""
    return np.einsum("ij,j->i", rows, v)


def _blas_dot(rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    """`rows @ v` through BLAS, held to one thread (at the top): the coarse pass over every record, where
    BLAS's kernel is ~1.5x faster than einsum's loop (100,000 x 64 float32: CPU p50 1.0-1.2 ms
    against 1.8-1.9 ms, bench/RESULTS.md)."""
    return rows @ v


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _best(scores: np.ndarray, depth: int, passes: Callable[[int], bool]) -> list[int]:
    """The positions of the `depth` highest finite scores that pass, best first; goes deeper when
    the filter rejects the first candidates, until enough pass or none are left."""
    finite = int(np.isfinite(scores).sum())
    want = min(depth, finite)
    out: list[int] = []
    # Positions already tested, not a count of them: among tied scores a deeper round may order the
    # boundary differently, so a slice past the count would test one record twice and skip another.
    tested: set[int] = set()
    chunk = max(want, 64)
    while len(out) < want and len(tested) < finite:
        take = min(finite, len(tested) + chunk)
        top = _top(scores, take)
        for i in top[np.argsort(-scores[top], kind="stable")].tolist():
            if i in tested:
                continue
            tested.add(i)
            if np.isfinite(scores[i]) and passes(i):
                out.append(i)
                if len(out) == want:
                    break
        chunk *= 4
    return out


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The positions of the `k` highest scores, in no order (among equal scores at the boundary, any).

    A partition of all n scores costs ~0.9 ms at 100,000 (and up to ~25 ms when most are -inf, as a masked
    filter's are: numpy's introselect on many equal values), the largest cost of a dense search after the
    coarse product. So past `_SAMPLED_FROM` scores, a threshold is read off every 16th score (the value ~4k
    of the n would pass), the scores at or above it are kept (one comparison over n) and only those are
    partitioned: ~0.1 ms, the same positions (many equal scores, which slow a partition down, are not
    partitioned: enough of those at the threshold are taken as they come). A sample unlike the whole (records
    written in a periodic pattern) lets fewer than `k` pass: the threshold is lowered and tried again; then
    all are partitioned."""
    n = len(scores)
    if k >= n:
        return np.arange(n)
    if n >= _SAMPLED_FROM and k * 64 <= n:
        sample = scores[::16]
        m = len(sample)
        want = 4 * k
        while want <= n // 4:
            rank = m - 1 - min(m - 1, want * m // n + 16)
            threshold = np.partition(sample, rank)[rank]
            above = np.flatnonzero(scores > threshold)
            if len(above) > 64 * k:  # a threshold too low to help (a sample unlike the whole)
                break
            if len(above) >= k:
                return above[np.argpartition(scores[above], len(above) - k)[len(above) - k :]]
            # Equal scores are common (BM25's, of records alike): any of those at the threshold will do.
            at = np.flatnonzero(scores == threshold)
            if len(above) + len(at) >= k:
                return np.concatenate([above, at[: k - len(above)]])
            want *= 8
    return np.argpartition(scores, n - k)[n - k :]


_SAMPLED_FROM = 8192
