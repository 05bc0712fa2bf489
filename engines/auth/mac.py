"""The one MAC behind header-free capabilities: signed content URLs and SSE tickets.

Signed with the URL signing key, never the JWT key: a leaked URL or ticket can
never be turned into a bearer token, nor a token into a URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

import orjson


def mac(key: bytes, fields: Sequence[str | None]) -> str:
    """HMAC-SHA256 of the fields, base64url without padding: what signs URLs and SSE
    tickets. The first field names what is signed, so one can never pass for the other."""
    message = orjson.dumps(list(fields))  # a JSON array: no way to shift text between fields
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
