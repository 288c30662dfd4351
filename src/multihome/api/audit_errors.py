"""The audit trail unwritable, as the client sees it: a 503 in OpenAI's error envelope.

An answer or a change is never sent unaudited (docs/audit.md "Writing"): when the trail cannot take
its event (the audit directory's disk full or read-only), the call is refused with this, on every
request path, and the gateway maps it once, where it renders every error.
"""

from __future__ import annotations

from ..schema.errors import ApiError

REFUSED = "The gateway cannot write its audit trail right now, so the request was not served; retry shortly."
# A change made before its event could be written (an admin change, a memory deletion): said so, as a retry
# could make it twice.
MADE_UNAUDITED = (
    "The change was made, but the gateway cannot write its audit trail right now, so it is not confirmed; "
    "read it back before retrying."
)


def audit_api_error(message: str = REFUSED) -> ApiError:
    return ApiError(503, message, type="server_error", code="audit_unavailable", headers={"retry-after": "5"})
