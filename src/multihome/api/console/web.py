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
    raw = header(scope, b"cookie")
    if raw is None:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


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
    if not target.is_file():
        raise ApiError(404, "No such file.", code="not_found")
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    body = target.read_bytes()
    headers = [
        (b"content-type", media.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"public, max-age=3600"),
    ]
    await send_bytes(send, 200, body, headers)
