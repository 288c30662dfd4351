"""The gateway's request ids, and the Responses API's object ids: unique, of their form, in time order."""

from __future__ import annotations

import re
import time

from multihome.api.pipeline import new_request_id
from multihome.api.responses.items import new_id


def test_ids_have_the_documented_form_and_are_unique():
    ids = [new_request_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids), ids[:3]
    assert len(set(ids)) == len(ids)


def test_ids_sort_by_time_so_their_index_grows_at_its_end():
    first = new_request_id()
    now_ms = int(time.time() * 1000)
    while int(time.time() * 1000) <= now_ms + 1:  # bounded: until the clock is two milliseconds on
        pass
    later = [new_request_id() for _ in range(100)]
    assert all(first < i for i in later)
    assert abs(int(first[4:16], 16) - now_ms) <= 60_000  # the first 12 digits are the time in milliseconds


def test_response_and_item_ids_are_opaque_unique_and_in_time_order():
    ids = [new_id("resp") for _ in range(20_000)]
    assert all(re.fullmatch(r"resp_[0-9a-f]{32}", i) for i in ids), ids[:3]
    assert len(set(ids)) == len(ids)
    now_ms = int(time.time() * 1000)
    while int(time.time() * 1000) <= now_ms + 1:  # bounded: until the clock is two milliseconds on
        pass
    assert all(i < new_id("resp") for i in ids[-100:])
