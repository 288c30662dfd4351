"""schema/peek.py Usage.reasoning_tokens: whatever the upstream claims, clamped into [0, completion_tokens]."""

from __future__ import annotations

import itertools

from multihome.schema.peek import CompletionDetails, Usage


def test_reasoning_tokens_is_the_claim_clamped_into_the_completion_tokens():
    claims = (None, -5, 0, 1, 6, 7, 8, 2**40)
    completions = (-3, 0, 1, 7, 2**40)
    for claimed, completion in itertools.product(claims, completions):
        usage = Usage(completion_tokens=completion, completion_tokens_details=CompletionDetails(claimed))
        assert usage.reasoning_tokens == min(max(claimed or 0, 0), max(completion, 0)), (claimed, completion)
        assert type(usage.reasoning_tokens) is int
    assert Usage(completion_tokens=7).reasoning_tokens == 0  # no details at all
    # A Responses body's output_tokens_details reads the same.
    assert Usage(output_tokens=7, output_tokens_details=CompletionDetails(3)).reasoning_tokens == 3
