"""`GET /metrics`: the Prometheus exposition (observability/metrics.py), behind the access rule the
config chooses (`metrics.access`, config/metrics.py):

- `loopback`: only a caller connecting from 127.0.0.1 / ::1 (no key), not through a proxy; anyone else gets
  a 403. uvicorn rewrites the client address from `X-Forwarded-For` when the connection comes from an address
  it trusts (loopback by default, any with `FORWARDED_ALLOW_IPS=*`), and with `*` it takes the first address
  of the header, which the caller wrote: so a request carrying a forwarding header is never loopback here;
- `key`: a key or token whose principal is an org-admin or an auditor (401 without or with a bad
  one, 403 for another role). The exposition shows every tenant's spend, so a tenant's own admins
  and members do not read it, and an auditor, whose role is its tenant's (an auditor key belongs to
  one tenant), reads its own tenant's series only (observability/metrics_view.py);
- `open`: anyone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..identity.authenticator import Authenticator
from ..schema.errors import ApiError
from ..schema.principal import AUDITOR, ORG_ADMIN
from .asgi import Receive, Send, header
from .pipeline import Call
from .render import send_json

if TYPE_CHECKING:
    from ..observability.metrics import Metrics  # prometheus_client is loaded only when metrics are on

_LOOPBACK = ("127.", "::1", "::ffff:127.")


class MetricsEndpoint:
    def __init__(self, metrics: Metrics, auth: Authenticator, access: str) -> None:
        self.metrics = metrics
        self.auth = auth
        self.access = access

    async def handle(self, call: Call, receive: Receive, send: Send) -> None:
        tenant = await self._check(call)
        accept = header(call.scope, b"accept")
        body, content_type = await self.metrics.exposition(accept.decode("latin-1") if accept else None, tenant)
        await send_json(call, send, 200, body, [(b"content-type", content_type.encode())])

    async def _check(self, call: Call) -> str | None:
        """Refuse a caller the access rule does not admit; -> the tenant whose series alone it may read (None:
        every series)."""
        if self.access == "open":
            return None
        if self.access == "loopback":
            client = call.scope.get("client")
            forwarded = (
                header(call.scope, b"x-forwarded-for") is not None or header(call.scope, b"forwarded") is not None
            )
            if client is None or forwarded or not str(client[0]).startswith(_LOOPBACK):
                raise ApiError(
                    403,
                    "GET /metrics answers only callers on this host, not through a proxy (metrics.access: loopback); "
                    "scrape it from the same host, or set metrics.access to key (an org-admin or auditor key) or open.",
                    type="permission_error",
                    code="metrics_forbidden",
                )
            return None
        principal = call.principal = await self.auth.authenticate(call.scope)
        if not (principal.has_role(ORG_ADMIN) or principal.has_role(AUDITOR)):
            raise ApiError(
                403,
                "GET /metrics needs an org-admin or auditor key (metrics.access: key): it shows every tenant's spend.",
                type="permission_error",
                code="metrics_forbidden",
            )
        # An auditor's role is its tenant's (its key belongs to one tenant): its own tenant's series only.
        return None if principal.has_role(ORG_ADMIN) else principal.tenant
