"""botocore writes credentials into its DEBUG log: `install()` puts a filter on the loggers that do, so an
operator who turns every logger up to DEBUG finds no secret there (docs/hostile-input.md "Secrets never
come back out").

- `botocore.auth` logs each SigV4 canonical request, whose headers include `x-amz-security-token`: the
  session token of temporary credentials (an assumed role, IMDS, a container's or a pod's identity);
- `botocore.endpoint` logs each prepared request with its headers, the token among them;
- `botocore.parsers` logs each response body: STS AssumeRole's carries the role's secret access key and
  session token, and KMS GenerateDataKey's and Decrypt's a plaintext data key (and the wrapped one).

The filter runs only on records those loggers make, which they make only at DEBUG: nothing at other levels.
"""

from __future__ import annotations

import logging
import re

LOGGERS = ("botocore.auth", "botocore.endpoint", "botocore.parsers")
_REDACTED = "<redacted>"
# A header line of a canonical request, or a header in a request's repr (`'X-Amz-Security-Token': b'...'`).
_TOKEN_HEADER = re.compile(r"(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,}\\]+", re.IGNORECASE)
# XML (STS) and JSON (KMS, SSO) fields whose value is a secret; a KMS wrapped key too (docs/encryption.md: no
# log line carries key bytes, wrapped or not).
_XML_SECRET = re.compile(r"<(SecretAccessKey|SessionToken)>[^<]*</\1>")
_JSON_SECRET = re.compile(
    r"((?:\\?\")(?:Plaintext|CiphertextBlob|SecretAccessKey|secretAccessKey|SessionToken|sessionToken)(?:\\?\")"
    r"\s*:\s*\\?\")[^\"\\]*"
)


def redact(text: str) -> str:
    """`text` with every credential and plaintext key this module knows of replaced."""
    text = _TOKEN_HEADER.sub(rf"\g<1>{_REDACTED}", text)
    text = _XML_SECRET.sub(rf"<\g<1>>{_REDACTED}</\g<1>>", text)
    return _JSON_SECRET.sub(rf"\g<1>{_REDACTED}", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactSecrets()


def install() -> None:
    """Put the filter on botocore's loggers (once; idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
