"""Checks on admin API answers shared by the in-process admin tests."""

from __future__ import annotations

import httpx


async def ok(resp: httpx.Response, status: int = 200) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()


def error(resp: httpx.Response, status: int) -> dict:
    """The OpenAI error envelope of a refused request, checked for its four fields."""
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    return body
