"""Text to vectors for memory search: an `Embedder` is anything with `dim` and `embed(texts)`.

Two sources: the offline model in the gateway process (below), and, when `memory.embeddings.model`
names a model group, a `Routed` source: embeddings made by a deployment through the gateway's own
routing, as calls of the `Caller` (api/memory_embeddings.py). A namespace's vectors all come from one
`Space` (model and dimension), recorded on the namespace at its first write: later writes and queries of
that namespace are embedded in the same space, or refused (`SpaceUnavailable`), never compared across
models (docs/memory.md "Embeddings").

The offline default, `WordLlamaEmbedder`, loads WordLlama's weights and tokenizer from the
`wordllama` package's own folder (both ship inside its wheel) and never calls the library's loader,
which would look in a cache under $HOME and download from a model hub when a file is missing: here
a missing file is an error, so nothing is fetched at run time (tests/state/test_memory_embedder.py
runs it with sockets disabled). WordLlama is a static-embedding model: a token lookup and a pool,
~0.1 ms per short text on one core, so it can run on the event loop for one record or one query.

Vectors are L2-normalised float32, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ...schema.principal import Principal

if TYPE_CHECKING:
    import numpy as np

OFFLINE_PREFIX = "wordllama/"  # the offline model's names: a space so named is always the offline model here
WORDLLAMA_CONFIG = "l2_supercat"
WORDLLAMA_DIM = 256  # the dimension whose weights the wheel ships (a Matryoshka model: a prefix also works)


class Embedder(Protocol):
    """What the memory store needs of an embedding model. `name` is stored with each record so that a
    change of model is noticed (records embedded by another model are re-embedded when loaded)."""

    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


class EmbedderUnavailable(RuntimeError):
    """The offline model's files are not where its package should have put them."""


@dataclass(frozen=True, slots=True)
class Space:
    """The embedding model a namespace's vectors come from, and their dimension. `prefix`: the model's
    leading dimensions are an embedding too (Matryoshka), so the index may rank candidates by them."""

    model: str
    dim: int
    prefix: bool = True


class SpaceUnavailable(LookupError):
    """The namespace's embedding model can no longer be reached: its vectors cannot be compared with another's."""

    def __init__(self, space: Space, why: str) -> None:
        super().__init__(f"{space.model} ({space.dim} dimensions): {why}")
        self.space = space
        self.why = why


@dataclass(frozen=True, slots=True)
class Caller:
    """Whose memory operation this is: routed embeddings are that principal's calls (its policy, its
    stateful-work pins, its bill). `request_id` names them: `<request_id>-emb` (`-emb<n>` for batches)."""

    principal: Principal
    request_id: str
    headers: Mapping[str, str] | None = None  # the client's trace context (traceparent, tracestate), if any
    # Told of each upstream answer a routed embedding is charged for, as the meter charged it: (its deployment,
    # its usage, an accounting.record.Usage); a hedge's completed loser is one too. An agent run counts them in
    # its spend (`max_spend`: api/responses/agent.py).
    charged: Callable[[str, Any], None] | None = None
    # A background run's, resumed after its replica died (api/responses/agent.py): whether an earlier run recorded
    # the embedding of a request id (metering's `stored_row`: the ids are the same in every run), so it is not
    # counted against the budgets twice; and what to tell after recording one (`mark_recorded`).
    recorded: Callable[[str], Awaitable[bool]] | None = None
    mark: Callable[[str], None] | None = None


class Routed(Protocol):
    """Embeddings from a deployment, routed like any call of the caller (api/memory_embeddings.py)."""

    async def embed(
        self, texts: list[str], space: Space | None, caller: Caller, *, purpose: str
    ) -> tuple[np.ndarray, Space]:
        """L2-normalised float32 vectors of `texts` (one row each) in `space` (None: the configured
        model's, whichever deployment serves), and the space they are in. `purpose`: "records" or "query",
        for the errors' wording."""
        ...


class WordLlamaEmbedder:
    def __init__(self, dim: int = WORDLLAMA_DIM) -> None:
        if not 16 <= dim <= WORDLLAMA_DIM:
            raise ValueError(f"dim must be between 16 and {WORDLLAMA_DIM}")
        import wordllama
        from safetensors import safe_open
        from tokenizers import Tokenizer
        from wordllama.inference import WordLlamaInference

        from . import numeric  # noqa: F401  (BLAS on one thread before the model makes its first call)

        root = Path(wordllama.__file__).parent
        weights = root / "weights" / f"{WORDLLAMA_CONFIG}_{WORDLLAMA_DIM}.safetensors"
        tokenizer = root / "tokenizers" / f"{WORDLLAMA_CONFIG}_tokenizer_config.json"
        for path in (weights, tokenizer):
            if not path.is_file():
                raise EmbedderUnavailable(
                    f"the offline embedding model's file {path} is missing: reinstall the 'wordllama' package"
                )
        with safe_open(str(weights), framework="np", device="cpu") as f:
            table = f.get_tensor("embedding.weight")[:, :dim]
        self._model: Any = WordLlamaInference(table, Tokenizer.from_file(str(tokenizer)))
        self.dim = dim
        self.name = f"wordllama/{WORDLLAMA_CONFIG}/{dim}"

    def embed(self, texts: list[str]) -> np.ndarray:
        from .numeric import np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.embed(texts, norm=True)
        return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim))
