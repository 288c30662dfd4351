"""Text reflected into a response header, made safe whatever a client or tenant put in it.

A header value with CR, LF or another control character makes the server refuse the whole
response head (uvicorn raises before writing a byte), so the client would get nothing although
the upstream already answered. Names the client chose (unknown body fields reported as dropped)
are percent-encoded; free text (a policy rule's description in a skip reason) has its control
characters replaced. Both are bounded: HTTP clients refuse an oversized response head (h11, under
httpx and so under the OpenAI SDK, stops at 16 KiB). The common case costs one `isprintable()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

MAX_CHARS = 2048  # of one reflected header value

# Printable ASCII except space, '%' (the escape) and ',' (the list separator) stays as it is.
_NAME_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%,")


def text(value: str, limit: int = MAX_CHARS) -> str:
    """Free text as a header value: control characters become spaces; at most `limit` characters."""
    if not value.isprintable():
        value = "".join(c if c.isprintable() else " " for c in value)
    if len(value) > limit:
        value = value[: limit - 3] + "..."
    return value


def names(items: Iterable[str], limit: int = MAX_CHARS) -> str:
    """Names as a comma-separated header value, each percent-encoded where it is not plain printable
    ASCII (a ',' or '%' in a name too, so the list reads back unambiguously). Names that do not fit
    in `limit` are counted: `a,b,+3 more`."""
    items = list(items)
    out: list[str] = []
    size = 16  # room for the count of the names left out
    for i, name in enumerate(items):
        encoded = quote(name[:limit], safe=_NAME_SAFE, errors="replace")  # a lone surrogate too
        size += len(encoded) + 1
        if size > limit:
            out.append(f"+{len(items) - i} more")
            break
        out.append(encoded)
    return ",".join(out)
