"""A KMS failure as the client sees it: a 503 in OpenAI's error envelope that names the KMS.

Sealing fails closed (docs/encryption.md "KMS outage"): a write that needs a data key the KMS
cannot give now is refused before anything is stored, on every request path (the admin API, the
stateful runtime), so the gateway maps `KmsError` once, where it renders every error.
"""

from __future__ import annotations

from ..crypto.errors import KmsError, KmsUnavailable
from ..schema.errors import ApiError


def kms_api_error(exc: KmsError) -> ApiError:
    if isinstance(exc, KmsUnavailable):
        return ApiError(
            503,
            f"The key management service {exc.kms} cannot be reached, so nothing was stored; try again later.",
            type="server_error",
            code="kms_unavailable",
            headers={"retry-after": "5"},
        )
    return ApiError(
        503,
        f"The key management service {exc.kms} refused the key operation, so nothing was stored; "
        "an operator must check the KMS key and the gateway's access to it.",
        type="server_error",
        code="kms_refused",
    )
