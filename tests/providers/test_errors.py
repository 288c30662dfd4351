import pytest

from multihome.providers.base import CAPACITY, CLIENT_ERROR, CONTEXT_OVERFLOW, REFUSAL, UNAVAILABLE, UNSUPPORTED
from multihome.providers.errors import classify_http, retry_after_seconds

AZURE_FILTER = b'{"error":{"code":"content_filter","message":"filtered","param":"prompt","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}'


@pytest.mark.parametrize(
    "status, headers, body, kind, retry_after",
    [
        (429, {"retry-after": "3"}, b"", CAPACITY, 3.0),
        (429, {"retry-after-ms": "250", "retry-after": "3"}, b"", CAPACITY, 0.25),
        (429, {"x-ms-retry-after-ms": "1500"}, b"", CAPACITY, 1.5),
        (503, {}, b'{"error":{"message":"overloaded"}}', UNAVAILABLE, None),
        (500, {}, b"not json", UNAVAILABLE, None),
        (400, {}, AZURE_FILTER, REFUSAL, None),
        (400, {}, b'{"error":{"code":"context_length_exceeded"}}', CONTEXT_OVERFLOW, None),
        (400, {}, b'{"error":{"code":"unsupported_parameter"}}', UNSUPPORTED, None),
        (404, {}, b"{}", CLIENT_ERROR, None),
        (401, {}, b"", CLIENT_ERROR, None),
    ],
)
def test_classification(status, headers, body, kind, retry_after):
    c = classify_http(status, headers, body)
    assert c.kind == kind
    assert c.retry_after == retry_after


def test_retry_after_http_date_and_garbage():
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
