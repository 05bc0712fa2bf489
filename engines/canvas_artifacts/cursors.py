"""Opaque page cursors: the last id of a page, base64url.

Only ids we minted decode (`is_safe_id`): anything else is 422
`request.bad_cursor` before it reaches a query.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from engines.http.errors import Unprocessable
from engines.http.params import is_safe_id

T = TypeVar("T")


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Unprocessable("cursor is not valid", code="request.bad_cursor") from exc
    # only ids we minted are cursors: anything else (a NUL, control characters, text)
    # would reach the database, where PostgreSQL refuses what SQLite compares
    if not is_safe_id(value):
        raise Unprocessable("cursor is not valid", code="request.bad_cursor")
    return value


def cut_page(rows: list[T], limit: int, key: Callable[[T], str]) -> tuple[list[T], str | None]:
    """Rows read with `limit + 1`: the page, and the cursor of the next one (None: last)."""
    items = rows[:limit]
    return items, encode_cursor(key(items[-1])) if len(rows) > limit else None
