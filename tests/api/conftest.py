"""Fixtures of the in-process API tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend():
    """The anyio tests here run on asyncio (the gateway's loop), not on trio too."""
    return "asyncio"
