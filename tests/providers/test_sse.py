from multihome.providers.sse import SseSplitter, frame


def test_events_split_across_network_chunks():
    s = SseSplitter()
    assert s.feed(b'data: {"a":') == []
    assert s.feed(b'1}\n\ndata: {"b":2}\n\nda') == [b'{"a":1}', b'{"b":2}']
    assert s.feed(b"ta: [DONE]\n\n") == [b"[DONE]"]


def test_crlf_comments_and_multiline_data():
    s = SseSplitter()
    assert s.feed(b': keep-alive\r\n\r\nevent: x\r\ndata: {"a":\r\ndata: 1}\r\n\r\n') == [b'{"a":\n1}']


def test_frame_round_trip():
    assert SseSplitter().feed(frame(b'{"x":1}')) == [b'{"x":1}']
