"""Constants and helpers shared by the simulator tests."""

from __future__ import annotations

import time

OPENAI_KEY = "sk-test-openai"
AZURE_KEY = "azure-test-key"
AZURE_DEPLOYMENTS = {"gpt-4o": "gpt-4o-2024-08-06", "embed": "text-embedding-3-small", "gpt-4o-mini": "gpt-4o-mini"}


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.02):
    """Poll until ``predicate()`` is truthy (the simulator updates counters asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
