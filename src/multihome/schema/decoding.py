"""Decode every request body (both front doors and the admin API) in one place, and turn what can
go wrong into client-facing 400s that name the offending field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar, overload

import msgspec

from . import bounds
from .errors import ApiError, bad_request, echo_quoted
from .json_values import MAX_VALUES, check_values

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]*)`")


def _param(path: str) -> str | None:
    # msgspec writes a map's key as `[...]` (`metadata[...]`): the param is the map, as OpenAI names it.
    path = path.replace("[...]", "").lstrip(".")
    return path or None


def decode_error(exc: msgspec.DecodeError, *, prefix: str = "") -> ApiError:
    """Map a msgspec error to 400 with `param` set to the JSON path (e.g. `messages[0].content`)."""
    text = str(exc)
    match = _PATH.search(text)
    if isinstance(exc, msgspec.ValidationError):
        if match is None and text.startswith("Expected `object`"):
            return bad_request("Request body must be a JSON object.", code="invalid_json")
        param = _param(prefix + (match.group("path") if match else ""))
        missing = _MISSING.match(text)
        if missing is not None:  # OpenAI's words, and the field itself as `param` (not the object holding it)
            field = missing.group("field")  # a field of the gateway's own types: short, never the client's text
            param = f"{param}.{field}" if param else field
            return bad_request(
                f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
            )
        detail = echo_quoted(text[: match.start()] if match else text)
        where = f" at '{param}'" if param else ""
        return bad_request(f"Invalid request body{where}: {detail}.", param=param, code="invalid_type")
    return bad_request(
        f"Request body is not valid JSON ({text}). Send a JSON object with Content-Type: application/json.",
        code="invalid_json",
    )


_top = msgspec.json.Decoder(dict[str, msgspec.Raw])

_TOO_DEEP = (
    "Request body is nested too deeply to be read (arrays and objects inside each other, hundreds of "
    "levels deep). Send the same data nested less deeply."
)


_T = TypeVar("_T")


@overload
def decode_body(body: bytes, typed: msgspec.json.Decoder[_T], most_values: int = MAX_VALUES) -> _T: ...
@overload
def decode_body(body: bytes, typed: object, most_values: int = MAX_VALUES) -> Any: ...  # a type or union (admin)
def decode_body(body: bytes, typed: object, most_values: int = MAX_VALUES) -> Any:
    """`body` decoded as `typed` (a Decoder, or a type for the admin API's bodies); raises a 400 that
    says what to fix: not JSON, not an object, a field of the wrong type, or nested too deeply
    (msgspec raises RecursionError past the interpreter's recursion limit); a body of more than `most_values`
    values (json_values.py) is a 413 before any decode."""
    check_values(body, most_values)
    try:
        if isinstance(typed, msgspec.json.Decoder):
            return typed.decode(body)
        return msgspec.json.decode(body, type=typed)
    except msgspec.DecodeError as exc:
        raise decode_error(exc) from None
    except RecursionError:
        raise bad_request(_TOO_DEEP, code="nested_too_deeply") from None


def top_level(body: bytes) -> dict[str, msgspec.Raw]:
    """A request body's top-level fields, raw (for pass-through and for peeking at its kind)."""
    return decode_body(body, _top)


# A body beyond this has its arrays counted (each element skipped, not decoded) before the typed decode:
# a body of 500,000 tiny items would take the typed decode ~0.3 s, the count ~0.06 s. A body this short
# cannot hold more than MAX_ITEMS (or MAX_PARTS) of anything (the shortest JSON value and its comma are 2
# bytes), so it needs no count at all: the common request pays one length comparison.
COUNT_ITEMS_OVER = 2 * bounds.MAX_ITEMS
_items = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(frozen=True, slots=True)
class Counted:
    """What decode_views counts in a large body before its typed decode, each a 400 naming the array
    (bounds.py): the top-level array of the request's items (`messages`, `input`, at most MAX_ITEMS);
    `parts`, the arrays in each item whose elements the gateway works on one by one (content parts, tool
    calls, blocks: at most MAX_PARTS in all the items together), and `nested`, such arrays inside each part
    (an Anthropic tool_result's blocks, at any depth); and `tools`, the top-level `tools` (at most
    `max_tools`)."""

    items: str
    parts: tuple[str, ...] = ()
    nested: tuple[str, ...] = ()
    top_parts: tuple[str, ...] = ()  # top-level arrays of parts counted with the items' (Anthropic's `system`)
    max_tools: int = bounds.MAX_TOOLS
    noun: str = "content parts"
    # Top-level objects of numbers keyed by ids (chat's `logit_bias`): at most this many members, counted by
    # their colons (a key that is an id holds none), never decoded: 2,000,000 of them took the typed decode
    # ~0.9 s in one call.
    maps: tuple[tuple[str, int], ...] = ()
    # Top-level objects of bounded size (Responses' `metadata`: 16 pairs of short strings): at most this many
    # bytes, whatever they hold; past it the request breaks the field's own rule (`why`).
    sized: tuple[tuple[str, int, str], ...] = ()
    # Fields of each item and of each tool that the typed decode takes whole, of any shape (the Responses
    # door's `Any`: an `mcp_call`'s `error`, an `mcp` tool's `headers`): at most this many bytes each. A
    # tool's `headers` of 1,500,000 entries took the typed decode ~2 s in one call.
    item_sized: tuple[tuple[str, int], ...] = ()
    tool_sized: tuple[tuple[str, int], ...] = ()
    item_fields: msgspec.json.Decoder[Any] = field(init=False, repr=False, compare=False)
    part_fields: msgspec.json.Decoder[Any] = field(init=False, repr=False, compare=False)
    tool_fields: msgspec.json.Decoder[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Views of an item and of a part with only the counted arrays, each left raw: decoding one skips
        # everything else and never fails on a value of the wrong type (the typed decode names that).
        item = dict.fromkeys((*self.parts, *(name for name, _ in self.item_sized)))
        object.__setattr__(self, "item_fields", _fields(tuple(item)))
        object.__setattr__(self, "part_fields", _fields(self.nested))
        object.__setattr__(self, "tool_fields", _fields(tuple(name for name, _ in self.tool_sized)))


def _fields(names: tuple[str, ...]) -> msgspec.json.Decoder[Any]:
    view = msgspec.defstruct("_Counted", [(name, msgspec.Raw, msgspec.Raw()) for name in names], gc=False)
    return msgspec.json.Decoder(view)


_COUNTED: dict[int, Counted] = {}  # id of a request's decoder -> what decode_views counts before it


def count_items(typed: msgspec.json.Decoder[_T], counted: str | Counted) -> msgspec.json.Decoder[_T]:
    """Register what decode_views counts in a large body before `typed` decodes it (a field name: that
    top-level array of items only)."""
    _COUNTED[id(typed)] = counted if isinstance(counted, Counted) else Counted(counted)
    return typed


def decode_views(body: bytes, typed: msgspec.json.Decoder[_T]) -> tuple[dict[str, msgspec.Raw], _T]:
    """A request body as its top-level fields (raw, for pass-through) and as the typed struct.

    Raises 400s that say what to fix: not JSON, not UTF-8, not an object, a field of the wrong type, too deep,
    too many items, parts or tools; a 413 for too many values (json_values.py)."""
    if not body.isascii():
        _check_utf8(body)
    try:  # decode_body's errors, in one frame for both views
        if len(body) > COUNT_ITEMS_OVER:  # (json_values.SCAN_OVER is more: a short body pays no call for it)
            check_values(body)
            top = _top.decode(body)
            counted = _COUNTED.get(id(typed))
            if counted is not None:
                count_body(body, top, counted)
            return top, typed.decode(body)
        return _top.decode(body), typed.decode(body)
    except msgspec.DecodeError as exc:
        raise decode_error(exc) from None
    except RecursionError:
        raise bad_request(_TOO_DEEP, code="nested_too_deeply") from None


def _array(raw: msgspec.Raw | None) -> TypeGuard[msgspec.Raw]:
    return raw is not None and memoryview(raw)[:1].tobytes() == b"["


# An array's elements counted as empty structs without a GC header (each part skipped, none of it kept):
# ~35 ms for 700,000 tiny parts where a list of Raw takes ~47 ms, and the typed decode ~130 ms. An array
# that holds something other than objects is counted as Raw (the typed decode refuses it after).
class _Element(msgspec.Struct, gc=False):
    pass


_elements = msgspec.json.Decoder(list[_Element])


def _length(raw: msgspec.Raw) -> int:
    try:
        return len(_elements.decode(raw))
    except msgspec.ValidationError:
        return len(_items.decode(raw))


def count_body(body: bytes, top: dict[str, msgspec.Raw], counted: Counted) -> None:
    """Refuse a body of more items, parts or tools than bounds.py allows, from counts of its arrays'
    elements (skipped, not decoded). Runs where the body is decoded (a pool thread for a large one), as
    many short decoder calls: the event loop waits for the longest, not for the whole count."""
    for name, most in counted.maps:
        raw = top.get(name)
        if raw is not None and len(raw) > 4 * most and bytes(raw).count(b":") > most:
            raise bad_request(
                f"Invalid '{name}': too many entries. Expected an object of at most {most} token ids.",
                param=name,
                code="object_above_max_properties",
            )
    for name, size, why in counted.sized:
        raw = top.get(name)
        if raw is not None and len(raw) > size:
            raise bad_request(why, param=name)
    tools = top.get("tools")
    if _array(tools) and len(tools) > 2 * counted.max_tools:  # (shorter: cannot hold more)
        length = len(_items.decode(tools))
        if length > counted.max_tools:
            raise bounds.too_many("tools", length, counted.max_tools)
    if counted.tool_sized and _array(tools) and len(tools) > min(most for _, most in counted.tool_sized):
        _check_sizes(_items.decode(tools), counted.tool_fields, counted.tool_sized, "tools")
    array = top.get(counted.items)
    if not _array(array):
        return
    items = _items.decode(array)
    if len(items) > bounds.MAX_ITEMS:
        raise bounds.too_many_items(len(items), counted.items)
    # Every part is an object, so a body of no more `{` than MAX_PARTS holds no more parts: the common large
    # body (long strings) is not walked item by item.
    parts = bool(counted.parts) and body.count(b"{") > bounds.MAX_PARTS
    sizes = bool(counted.item_sized) and len(array) > min(most for _, most in counted.item_sized)
    if parts or sizes:
        _walk_items(top, items, counted, parts, sizes)


def _check_sizes(
    elements: list[msgspec.Raw], view: msgspec.json.Decoder[Any], sized: tuple[tuple[str, int], ...], where: str
) -> None:
    for i, element in enumerate(elements):
        if memoryview(element)[:1].tobytes() == b"{":
            _check_fields(view.decode(element), sized, f"{where}[{i}]")


def _check_fields(fields: Any, sized: tuple[tuple[str, int], ...], where: str) -> None:
    for name, most in sized:
        if len(getattr(fields, name)) > most:
            param = f"{where}.{name}"
            raise bad_request(
                f"Invalid '{param}': longer than this gateway takes ({most // 1024} KiB of JSON).",
                param=param,
                code="value_too_large",
            )


def _walk_items(
    top: dict[str, msgspec.Raw], items: list[msgspec.Raw], counted: Counted, parts: bool, sizes: bool
) -> None:
    total = 0
    for name in counted.top_parts if parts else ():
        raw = top.get(name)
        if _array(raw):
            total = _add(total, raw, counted, name)
    for i, item in enumerate(items):
        if memoryview(item)[:1].tobytes() != b"{":
            continue  # not an item: the typed decode says so
        fields = counted.item_fields.decode(item)
        if sizes:
            _check_fields(fields, counted.item_sized, f"{counted.items}[{i}]")
        for name in counted.parts if parts else ():
            raw = getattr(fields, name)
            if _array(raw):
                total = _add(total, raw, counted, f"{counted.items}[{i}].{name}")


def _add(total: int, raw: msgspec.Raw, counted: Counted, param: str) -> int:
    """`total` and the parts in the array `raw` (and in the arrays nested in them)."""
    parts = _items.decode(raw) if counted.nested else None  # each part's own arrays are counted too
    total += _length(raw) if parts is None else len(parts)
    if total > bounds.MAX_PARTS:
        raise bounds.too_many_parts(param, total, counted.items, counted.noun)
    for j, part in enumerate(parts or ()):
        if memoryview(part)[:1].tobytes() == b"{":
            fields = counted.part_fields.decode(part)
            for name in counted.nested:
                inner = getattr(fields, name)
                if _array(inner):
                    total = _add(total, inner, counted, f"{param}[{j}].{name}")
    return total


def _check_utf8(body: bytes) -> None:
    """JSON is UTF-8 (RFC 8259). The decoder checks the strings it reads but only skips the
    fields it does not model, which translators read later (and pass-through upstreams get as
    sent): the whole body is checked once here. ASCII bodies, the common case, skip this."""
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"Request body is not valid UTF-8 (byte {exc.start}). Send JSON encoded as UTF-8.", code="invalid_json"
        ) from None
