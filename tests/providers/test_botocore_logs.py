"""What the botocore log filter redacts, in each shape botocore writes it (providers/botocore_logs.py)."""

from __future__ import annotations

import pytest

from multihome.providers.botocore_logs import redact

TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE/token+with=signs"


@pytest.mark.parametrize(
    "line",
    [
        f"POST\n/\n\ncontent-type:application/x-amz-json-1.1\nx-amz-security-token:{TOKEN}\nx-amz-target:T",
        f"<AWSPreparedRequest headers={{'X-Amz-Date': b'20261207T000000Z', 'X-Amz-Security-Token': b'{TOKEN}'}}>",
        f"b'<Credentials><SessionToken>{TOKEN}</SessionToken><SecretAccessKey>{TOKEN}</SecretAccessKey>'",
        f'b\'{{"CiphertextBlob":"{TOKEN}","Plaintext":"{TOKEN}","KeyId":"arn"}}\'',
        f'{{"roleCredentials": {{"accessKeyId": "ASIA", "secretAccessKey": "{TOKEN}", "sessionToken": "{TOKEN}"}}}}',
    ],
)
def test_each_shape_loses_its_secret_and_keeps_the_rest(line):
    clean = redact(line)
    assert TOKEN not in clean and "<redacted>" in clean
    assert clean.replace("<redacted>", "") == line.replace(TOKEN, "")


def test_lines_without_secrets_are_unchanged():
    for line in ("Calculating signature using v4 auth.", "x-amz-date:20261207T000000Z", 'b\'{"KeyId":"arn"}\''):
        assert redact(line) == line
