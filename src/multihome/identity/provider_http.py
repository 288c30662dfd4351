"""One bounded HTTP exchange with an identity provider that answers JSON: its discovery document, its JWKS
(jwks.py), its token endpoint (the console's single sign-on). The same rules for each: redirects are not
followed (a secret posted to the endpoint the configuration names goes nowhere else), the whole exchange
ends within `timeout_s`, and an answer over MAX_DOCUMENT_BYTES is refused as it arrives, so a provider
that is down, slow, redirected or hostile costs a bounded wait and a bounded buffer, never a hang.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

MAX_DOCUMENT_BYTES = 512 * 1024


class FetchError(Exception):
    """The document could not be fetched or used (the message is safe to log and to show: no body, no secret)."""


async def fetch_json(
    session: aiohttp.ClientSession,
    url: str,
    what: str,
    *,
    timeout_s: float,
    form: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str]:
    """GET `url` (POST `form` when given) -> (the JSON object it answered with 200, its Cache-Control)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        request = (
            session.post(url, data=form, timeout=timeout, allow_redirects=False)
            if form is not None
            else session.get(url, timeout=timeout, allow_redirects=False)
        )
        async with request as resp:
            if resp.status != 200:  # a redirect too: not followed
                raise FetchError(f"{what} fetch answered HTTP {resp.status}")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise FetchError(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
            cache_control = resp.headers.get("cache-control", "")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise FetchError(f"{what} fetch failed ({type(exc).__name__})") from None
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise FetchError(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise FetchError(f"{what} is not a JSON object")
    return doc, cache_control
