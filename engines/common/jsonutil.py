"""Fast JSON in and out (orjson), with the limits hostile bodies need."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

from engines.common.errors import Unprocessable


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
