"""A KMS failure as the client sees it: a 503 in OpenAI's error envelope that names the KMS.

Sealing fails closed (docs/encryption.md "KMS outage"): a write that needs a data key the KMS
cannot give now is refused before anything is stored, on every request path (the admin API, the
stateful runtime), so the gateway maps `KmsError` once, where it renders every error. A read (GET) whose
stored data cannot be opened is refused the same way, in a read's words.
"""

from __future__ import annotations

from ..crypto.errors import KmsError, KmsUnavailable
from ..schema.errors import ApiError

READS = frozenset({"GET", "HEAD"})


def kms_api_error(exc: KmsError, *, read: bool = False) -> ApiError:
    """The 503 of `exc`; `read`: the request only reads (nothing was to be stored: what it asked for is not
    readable now), else it writes (nothing was stored)."""
    outcome = "what was asked for cannot be read now" if read else "nothing was stored"
    if isinstance(exc, KmsUnavailable):
        return ApiError(
            503,
            f"The key management service {exc.kms} cannot be reached, so {outcome}; try again later.",
            type="server_error",
            code="kms_unavailable",
            headers={"retry-after": "5"},
        )
    return ApiError(
        503,
        f"The key management service {exc.kms} refused the key operation, so {outcome}; "
        "an operator must check the KMS key and the gateway's access to it.",
        type="server_error",
        code="kms_refused",
    )


def for_request(err: ApiError, method: str) -> ApiError:
    """`err` as the request of `method` sees it: a KMS 503 made where the store is called (which does not know
    whether the request reads or writes, `kms_api_error` raised from the KmsError) in a read's words on a read.
    Only on the error path: nothing per call."""
    cause = err.__cause__
    if isinstance(cause, KmsError) and method in READS:
        return kms_api_error(cause, read=True)
    return err
