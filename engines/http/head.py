"""HEAD on every GET route: the GET's status and headers, no body (RFC 9110 9.3.2).

FastAPI routes only the methods they declare, so HEAD was 405 everywhere.
Routing HEAD as GET here answers it for every GET route at once, with the
very headers the GET sends (Content-Length, ETag, Content-Type, ...).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_HEAD = "engines.head"


def is_head(request: Request) -> bool:
    """True when the GET being served answers a HEAD: skip reading the payload."""
    return bool(request.scope.get(_HEAD))


def head_of_stream(media_type: str, headers: dict[str, str]) -> Response:
    """What HEAD answers for a streamed GET (an export, an SSE stream), without starting
    it: its type and headers, no Content-Length (the GET's length is not known)."""
    response = Response(headers=headers, media_type=media_type)
    del response.headers["content-length"]
    return response


class HeadAsGetMiddleware:
    """Serve HEAD as GET and drop the body on the way out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", _HEAD: True}, receive, send_headers_only)
