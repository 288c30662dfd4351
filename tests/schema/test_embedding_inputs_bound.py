"""docs/hostile-input.md: embeddings take at most 2,048 inputs (OpenAI's published bound), a 400 naming
`input` beyond it; the bound itself is taken, for strings and for token-id arrays alike."""

from __future__ import annotations

import msgspec
import pytest

from multihome.schema import bounds
from multihome.schema.embeddings import parse_embeddings
from multihome.schema.errors import ApiError


@pytest.mark.parametrize("one", ["hello", [1, 2, 3]], ids=["strings", "token ids"])
def test_2048_inputs_are_taken_and_2049_are_a_400_naming_input(one):
    assert bounds.MAX_EMBEDDING_INPUTS == 2048
    parsed = parse_embeddings(msgspec.json.encode({"model": "m", "input": [one] * 2048}))
    assert len(parsed.request.input) == 2048
    with pytest.raises(ApiError) as info:
        parse_embeddings(msgspec.json.encode({"model": "m", "input": [one] * 2049}))
    err = info.value
    assert (err.status, err.body.param, err.body.type) == (400, "input", "invalid_request_error")
    assert "2048" in err.body.message


def test_an_empty_input_is_a_400_naming_input():
    with pytest.raises(ApiError) as info:
        parse_embeddings(msgspec.json.encode({"model": "m", "input": []}))
    assert (info.value.status, info.value.body.param) == (400, "input")
