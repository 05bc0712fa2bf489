"""Fast JSON in and out (orjson), with the limits hostile bodies need."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.responses import JSONResponse

from engines.http.errors import Unprocessable


class OrjsonResponse(JSONResponse):
    """JSONResponse rendered by orjson.

    It must subclass JSONResponse: FastAPI only publishes a route's
    `response_model` in the OpenAPI schema for JSONResponse classes, and
    documents any other class's body as a bare string.
    """

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def loads(body: bytes) -> Any:
    """Parse JSON; malformed is 422."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unprocessable(f"body is not valid JSON: {exc}",
                            code="request.malformed_json") from exc


def too_deep(max_depth: int) -> Unprocessable:
    return Unprocessable(f"JSON nesting deeper than {max_depth}", code="request.too_deep")


def parse_json(body: bytes, *, max_depth: int) -> Any:
    """Parse a request body; malformed JSON or nesting past max_depth is 422."""
    value = loads(body)
    if json_depth(value) > max_depth:
        raise too_deep(max_depth)
    return value


def json_depth(value: Any) -> int:
    """Nesting depth, iteratively (a deep document must not exhaust the stack)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return deepest


# ---- reading one value at a time -------------------------------------------------
#
# orjson parses a whole document into Python objects, which cost 20-50 times the bytes
# of a dense JSON text (`[{}, {}, ...]`: 3 bytes each, 72 as dicts). To validate a large
# document in bounded memory we parse it value by value: each value is handed to orjson
# as a bounded slice of the buffer, and orjson's "unexpected content after document"
# error says where the value ends. Only that one value is ever materialised.

_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_AFTER_VALUE = frozenset(b" \t\r\n,:]}")
_FIRST_SLICE = 4096
_TRUNCATION_MARGIN = 16
"""A parse error this close to the slice's end may be the cut, not the document."""


class ValueTooLarge(ValueError):
    """The value does not end within the bytes allowed for it."""


class MalformedJson(ValueError):
    """The text is not JSON; the message says where."""


def skip_whitespace(data: bytes, pos: int) -> int:
    match = _WHITESPACE.match(data, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _byte_offset(data: bytes, start: int, end: int, chars: int) -> int:
    """orjson reports error positions in characters; slicing needs bytes.

    The text before an error position is valid UTF-8 (orjson got that far).
    """
    text = data[start:end]
    if text.isascii():
        return chars
    return len(text.decode("utf-8", "replace")[:chars].encode())


def read_value(data: bytes, pos: int, limit: int) -> tuple[Any, int]:
    """The JSON value starting at data[pos] and the position just after it.

    At most `limit` bytes of the value are read (ValueTooLarge beyond), in
    slices that grow from 4 KiB, so a small value costs a small parse. What
    follows the value is left to the caller.
    """
    view = memoryview(data)
    size = min(_FIRST_SLICE, limit)
    while True:
        end = min(pos + size, len(data))
        while end < len(data) and end > pos and data[end] & 0xC0 == 0x80:
            end -= 1  # never cut a UTF-8 character: orjson would call the slice invalid, not short
        chunk = view[pos:end]
        try:
            value = orjson.loads(chunk)
        except orjson.JSONDecodeError as exc:
            at = _byte_offset(data, pos, end, exc.pos)
            if exc.msg == "unexpected content after document":
                return orjson.loads(chunk[:at]), pos + at
            if end == len(data) or at < len(chunk) - _TRUNCATION_MARGIN:
                raise MalformedJson(f"{exc.msg} at byte {pos + at}") from exc
        else:
            # the slice may end inside the value (`12` of `123`): only a delimiter ends it
            if end == len(data) or data[end] in _AFTER_VALUE:
                return value, end
        if size >= limit:
            raise ValueTooLarge(f"value at byte {pos} is larger than {limit} bytes")
        size = min(size * 8, limit)
