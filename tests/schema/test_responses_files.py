"""Files by `file_id` are refused on the Responses API, as docs/responses.md "Not yet" says: an upstream
file id belongs to one cloud account shared by every tenant, so it neither routes to another cloud nor
stays within its tenant. A file sent inline (`file_data`) is served."""

from __future__ import annotations

import json

import pytest

from multihome.schema.errors import ApiError
from multihome.schema.responses import parse_add_items, parse_create

FILE_DATA = {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}
FILE_ID = {"type": "input_file", "file_id": "file-abc123"}


def _message(*parts: dict[str, str]) -> dict[str, object]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "read it"}, *parts]}


def test_a_file_sent_inline_is_taken():
    req = parse_create(json.dumps({"model": "m", "input": [_message(FILE_DATA)]}).encode())
    assert req.input is not None


@pytest.mark.parametrize("part", [FILE_ID, {**FILE_DATA, **FILE_ID}], ids=["by-id", "both"])
def test_a_file_by_id_is_a_400_naming_it(part):
    with pytest.raises(ApiError) as err:
        parse_create(json.dumps({"model": "m", "input": [_message(part)]}).encode())
    assert err.value.status == 400
    assert err.value.body.param == "input[0].content[1].file_id"
    assert "file_data" in err.value.body.message


def test_a_conversation_item_with_a_file_by_id_is_a_400_too():
    with pytest.raises(ApiError) as err:
        parse_add_items(json.dumps({"items": [_message(FILE_ID)]}).encode())
    assert err.value.status == 400 and err.value.body.param.endswith(".content[1].file_id")


def test_an_image_naming_a_file_id_beside_its_url_is_a_400_too():
    # Its url let it pass, and its file_id went to a native upstream in the item as sent (native.py).
    image = {"type": "input_image", "image_url": "https://example.com/a.png", "file_id": "file-abc123"}
    with pytest.raises(ApiError) as err:
        parse_create(json.dumps({"model": "m", "input": [_message(image)]}).encode())
    assert err.value.status == 400
    assert err.value.body.param == "input[0].content[1].file_id"
