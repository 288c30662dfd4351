"""The console's HTTP plumbing: cookies, query strings, form bodies, HTML answers with their security
headers, redirects and the packaged static files. Plain ASGI like the rest of the gateway."""

from __future__ import annotations

import mimetypes
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from urllib.parse import parse_qs

from ...schema.errors import ApiError
from ..asgi import Header, Receive, Scope, Send, header, read_body, send_bytes

# Everything the pages load comes from the gateway itself: no CDN, no inline script or style.
CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY: list[Header] = [
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),  # pages hold tenants' data, and a new key's secret once
]
_FORM_LIMIT = 64 * 1024
_STATIC = resources.files(__package__).joinpath("static")


def cookie(scope: Scope, name: str) -> str | None:
    return _jar(scope).get(name)


def _jar(scope: Scope) -> dict[str, str]:
    raw = header(scope, b"cookie")
    if raw is None:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def query(scope: Scope) -> dict[str, str]:
    """Each query parameter's last value; empty values left out (an empty form field means "any")."""
    parsed = parse_qs(scope.get("query_string", b"").decode("utf-8", "replace"))
    return {k: v[-1].strip() for k, v in parsed.items() if v[-1].strip()}


async def form(scope: Scope, receive: Receive) -> dict[str, list[str]]:
    """An `application/x-www-form-urlencoded` body, every value of every field."""
    ctype = (header(scope, b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if ctype != b"application/x-www-form-urlencoded":
        raise ApiError(415, "Send the form as application/x-www-form-urlencoded.", code="unsupported_media_type")
    body = await read_body(scope, receive, _FORM_LIMIT)
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def https(scope: Scope) -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a proxy that says so)."""
    proto = header(scope, b"x-forwarded-proto")
    return scope.get("scheme") == "https" or (proto is not None and proto.split(b",")[0].strip() == b"https")


def same_origin(scope: Scope) -> bool:
    """A POST's Origin (sent by every current browser) names this host; absent: left to the CSRF token."""
    origin = header(scope, b"origin")
    if origin is None:
        return True
    host = header(scope, b"host")
    return host is not None and origin.split(b"://", 1)[-1] == host


def set_cookie(name: str, value: str, *, secure: bool, max_age: int, same_site: str = "Strict") -> Header:
    parts = [f"{name}={value}", "Path=/console", "HttpOnly", f"SameSite={same_site}", f"Max-Age={max_age}"]
    if secure:
        parts.append("Secure")
    return (b"set-cookie", "; ".join(parts).encode())


# A browser keeps a cookie's name and value up to 4,096 bytes and drops a longer one without a word. A sealed
# OIDC ID token can be longer (a person's every group in it), so a long value is sent in parts: the first
# cookie holds `<parts>.<first part>` (a sealed value never holds a "."), the others `<name>_1`, `<name>_2`...
_PART = 3800
MAX_PARTS = 12  # ~45 KB in all, well within the request head the gateway accepts (server.max_header_bytes)


def set_cookie_parts(scope: Scope, name: str, value: str, *, secure: bool, max_age: int) -> list[Header]:
    """`value` in as many cookies as it needs (at most MAX_PARTS), and any further part a longer value left
    in this browser cleared."""
    pieces = [value[i : i + _PART] for i in range(0, len(value), _PART)] or [""]
    if len(pieces) > MAX_PARTS:
        raise ValueError(f"a cookie value of {len(value)} characters needs more than {MAX_PARTS} parts")
    first = pieces[0] if len(pieces) == 1 else f"{len(pieces)}.{pieces[0]}"
    out = [set_cookie(name, first, secure=secure, max_age=max_age)]
    out += [set_cookie(f"{name}_{i}", piece, secure=secure, max_age=max_age) for i, piece in enumerate(pieces) if i]
    return out + [set_cookie(n, "", secure=secure, max_age=0) for n in _parts_held(scope, name, len(pieces))]


def clear_cookie_parts(scope: Scope, name: str, *, secure: bool) -> list[Header]:
    return [set_cookie(name, "", secure=secure, max_age=0)] + [
        set_cookie(n, "", secure=secure, max_age=0) for n in _parts_held(scope, name, 1)
    ]


def cookie_parts(scope: Scope, name: str) -> str | None:
    """The value `set_cookie_parts` set, joined again; None if a part is missing."""
    jar = _jar(scope)
    first = jar.get(name)
    if first is None or "." not in first:
        return first
    count, _, head = first.partition(".")
    if not count.isdigit() or not 1 < int(count) <= MAX_PARTS:
        return None
    rest = [jar.get(f"{name}_{i}") for i in range(1, int(count))]
    return None if None in rest else head + "".join(p for p in rest if p is not None)


def _parts_held(scope: Scope, name: str, start: int) -> list[str]:
    jar = _jar(scope)
    return [f"{name}_{i}" for i in range(start, MAX_PARTS) if f"{name}_{i}" in jar]


async def send_html(send: Send, status: int, html: str, headers: list[Header] | None = None) -> None:
    out = [(b"content-type", b"text/html; charset=utf-8"), *_SECURITY, *(headers or [])]
    await send_bytes(send, status, html.encode(), out)


async def send_text(send: Send, media: bytes, body: bytes, headers: list[Header] | None = None) -> None:
    await send_bytes(send, 200, body, [(b"content-type", media), *_SECURITY, *(headers or [])])


async def redirect(send: Send, location: str, headers: list[Header] | None = None) -> None:
    """303 See Other: after a form's POST the browser GETs the page (a reload does not post again)."""
    await send_bytes(send, 303, b"", [(b"location", location.encode()), *_SECURITY, *(headers or [])])


async def send_static(send: Send, name: str) -> None:
    """A file of the package's static/ directory (vendored libraries, the stylesheet, the glue script)."""
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ApiError(404, "No such file.", code="not_found")
    target = _STATIC.joinpath(*parts)
    try:  # a name the file system refuses (longer than it allows) is no file either, not a 500 to anyone
        body = target.read_bytes() if target.is_file() else None
    except OSError:
        body = None
    if body is None:
        raise ApiError(404, "No such file.", code="not_found")
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = [
        (b"content-type", media.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"public, max-age=3600"),
    ]
    await send_bytes(send, 200, body, headers)
