"""What an MCP server registration (and a request's `mcp` tool) may say, checked in one place.

- A name: 1-40 of `a-z A-Z 0-9 _ -` (it is a path segment of the admin API and the prefix of the
  function names a model sees, which OpenAI limits to 64 characters).
- A URL: `http` or `https`, a host, no userinfo (credentials go in sealed headers, never in a URL
  that is shown), no fragment. The host is reached only at an address the organisation's `egress:` rules
  allow (tools/egress.py, checked when it is dialled, and by the admin API when it is registered: a host
  that resolves then only to refused addresses is not registered); within those, registering is the
  decision. The comparison key (`url_key`) lower-cases scheme and host and drops a default port.
- Headers: HTTP token names, values without line breaks, none of the headers the MCP transport sets
  itself (`Host`, `Content-Type`, `Accept`, `Accept-Encoding`, `Mcp-Session-Id`, …).
- Tool filters and approval rules in OpenAI's shapes: `allowed_tools` a list of names or
  `{tool_names, read_only}`; `require_approval` `"always"`, `"never"` or
  `{always: {tool_names, read_only}, never: {…}}` (a tool matched by neither needs approval).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from ..schema import admin_fields
from ..schema.errors import ApiError, echo

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
MAX_URL = 2000
MAX_HEADERS = 32
MAX_HEADER_VALUE = 8192
# Set by the MCP transport or HTTP itself: a registration or request that named them would break
# the protocol or smuggle a second request.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "accept",
        "accept-encoding",  # identity only: a compressed answer is not bounded as it is read (mcp_client.py)
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-authorization",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ToolSelector(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Which tools a rule is about: by name, and/or those annotated `readOnlyHint`."""

    tool_names: list[str] | None = None
    read_only: bool | None = None

    def matches(self, tool: str, read_only: bool) -> bool:
        if self.tool_names is not None and tool not in self.tool_names:
            return False
        if self.read_only is not None and read_only != self.read_only:
            return False
        return self.tool_names is not None or self.read_only is not None


class ApprovalFilter(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    always: ToolSelector | None = None
    never: ToolSelector | None = None


Approval = Literal["always", "never"] | ApprovalFilter
AllowedTools = list[str] | ToolSelector


def needs_approval(rule: Approval, tool: str, read_only: bool = False) -> bool:
    """Whether calling `tool` waits for the client's approval under `rule` (unmatched: yes)."""
    if isinstance(rule, str):
        return rule == "always"
    if rule.always is not None and rule.always.matches(tool, read_only):
        return True
    return not (rule.never is not None and rule.never.matches(tool, read_only))


def check_name(name: str, param: str = "name") -> str:
    if not NAME.match(name):
        raise ApiError(
            400, f"{param} must be 1-40 characters from a-z, A-Z, 0-9, _ and -; got {echo(name)!r}.", param=param
        )
    return name


def check_url(url: str, param: str = "url") -> str:
    """The URL as it will be called (scheme and host lower-cased), or a 400 saying what is wrong."""
    problem = _url_problem(url)
    if problem:
        raise ApiError(400, f"{param}: {problem}.", param=param, code="invalid_value")
    parts = urlsplit(url)
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()).geturl()


def _url_problem(url: str) -> str | None:
    if len(url) > MAX_URL:
        return f"at most {MAX_URL} characters"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "no spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        return "only http and https URLs can be registered"
    if "@" in parts.netloc:
        return "no user name or password in the URL; register credentials as headers, which are kept sealed"
    if not parts.hostname:
        return "the URL names no host"
    if parts.fragment:
        return "no #fragment"
    if port == 0:
        return "port 0 is not a port"
    return None


def url_key(url: str) -> str | None:
    """The form two URLs are compared in (None for a URL that could never be registered)."""
    if _url_problem(url):
        return None
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    port = parts.port or _DEFAULT_PORTS[scheme]
    host = f"[{host}]" if ":" in host else host
    suffix = "" if port == _DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{suffix}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")


def check_headers(headers: Mapping[str, str], param: str = "headers") -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise ApiError(400, f"{param}: at most {MAX_HEADERS} headers.", param=param)
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if not _TOKEN.match(name):
            raise ApiError(400, f"{param}: {echo(name)!r} is not a valid header name.", param=param)
        if lower in RESERVED_HEADERS:
            raise ApiError(400, f"{param}: {name} is set by the MCP transport itself.", param=param)
        if lower in seen:
            raise ApiError(400, f"{param}: {name} is given twice.", param=param)
        seen.add(lower)
        # The value is never echoed: it is a credential.
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE or _BAD_VALUE.search(value):
            raise ApiError(
                400,
                f"{param}: the value of {name} must be a string of at most {MAX_HEADER_VALUE} characters "
                "without line breaks.",
                param=param,
            )
    return dict(headers)


def check_tool_names(names: list[str] | None, param: str) -> list[str] | None:
    if names is None:
        return None
    for i, n in enumerate(names):
        if not 1 <= len(n) <= 128:
            raise ApiError(400, f"{param}: a tool name has 1-128 characters.", param=param)
        found = admin_fields.text(n, f"{param}[{i}]", max_len=128)  # no control character: it is stored
        if found is not None:
            raise ApiError(400, f"{found.message}.", param=param, code="invalid_value")
    return sorted(set(names))


def check_description(text: str, param: str = "description") -> str:
    """A registration's description: stored and shown, so held to the admin API's bound on stored text
    (at most 1000 characters, no control character: schema/admin_fields.py)."""
    found = admin_fields.text(text, param, max_len=admin_fields.TEXT_MAX, required=False)
    if found is not None:
        raise ApiError(400, f"{found.message}.", param=param, code="invalid_value")
    return text


def check_approval(rule: Approval, param: str = "require_approval") -> Approval:
    if isinstance(rule, ApprovalFilter):
        for which in (rule.always, rule.never):
            if which is not None:
                which.tool_names = check_tool_names(which.tool_names, param)
    return rule
