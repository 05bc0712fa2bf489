"""Reading request bodies with a byte limit enforced while they arrive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engines.http.decoding import BodyDecoder, content_encoding
from engines.http.errors import (
    ApiError,
    Unprocessable,
    UnsupportedMediaType,
    first_error_message,
    too_large,
)
from engines.http.jsonutil import parse_json

UPLOAD_CHUNK = 1024 * 1024
M = TypeVar("M", bound=BaseModel)


def media_type(content_type: str | None) -> str:
    """`Image/PNG; charset=x` -> `image/png`: the part every check compares."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def request_media_type(request: Request) -> str:
    return media_type(request.headers.get("content-type"))


def require_json(request: Request) -> None:
    """JSON routes take JSON: anything else declared is 415, not a parse attempt."""
    content_type = request_media_type(request)
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType("send the body as application/json")


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def reject_declared_oversize(request: Request, limit: int) -> None:
    """Fail fast on an honest Content-Length; a lying one is caught while reading."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise too_large(limit)


def limited_receive(request: Request, limit: int) -> Receive:
    """An ASGI receive that fails once more than limit body bytes arrived.

    Lets Starlette's multipart parser run unchanged while the limit holds.
    A body sent with `Content-Encoding: gzip` or `zstd` is decoded here and
    the limit applies to the decoded bytes (engines/http/decoding.py).
    """
    encoding = content_encoding(request.headers.get("content-encoding"))
    if encoding is not None:
        return _decoding_receive(request.receive, BodyDecoder(encoding, limit,
                                                              lambda: too_large(limit)))
    reject_declared_oversize(request, limit)
    receive = request.receive
    seen = 0

    async def guarded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit)
        return message

    return guarded


def _decoding_receive(receive: Receive, decoder: BodyDecoder) -> Receive:
    async def decoded() -> Message:
        message = await receive()
        if message["type"] != "http.request":
            return message
        body = decoder.feed(message.get("body", b""))
        if not message.get("more_body", False):
            body += decoder.finish()
        return {**message, "body": body}

    return decoded


def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The raw body as it arrives (decoded, if it was sent encoded), under the limit."""
    return Request(request.scope, limited_receive(request, limit)).stream()


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, for JSON routes; over limit is 413 as soon as it shows."""
    return await Request(request.scope, limited_receive(request, limit)).body()


async def read_small_json(request: Request, model: type[M], limit: int) -> M:
    """An optional small JSON body as `model`: empty means the model's defaults; over
    `limit` bytes 413, not JSON 415, invalid 422 naming the first problem."""
    raw = await read_limited(request, limit)
    if not raw.strip():
        return model()
    require_json(request)
    try:
        return model.model_validate(parse_json(raw, max_depth=4))
    except ValidationError as exc:
        raise Unprocessable(first_error_message(exc), code="request.invalid") from exc


@contextlib.asynccontextmanager
async def read_upload(request: Request, limit: int, *, code: str) -> AsyncIterator[UploadFile]:
    """The multipart field `file`, parsed under the body limit (422 `code` if absent).

    A context manager: the form's spooled temporary file is closed when the
    block ends, however it ends.
    """
    form = await Request(request.scope, limited_receive(request, limit)).form(max_files=1,
                                                                              max_fields=8)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Unprocessable("multipart body needs a file field named 'file'", code=code)
        yield upload
    finally:
        await form.close()


async def upload_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    """A multipart file part as a byte stream, for `ingest`."""
    while chunk := await upload.read(UPLOAD_CHUNK):
        yield chunk


class BodyIdleTimeoutMiddleware:
    """Fail a request whose body stalls: a client that stops sending mid-upload
    must not hold a worker, a blob writer and a DB slot forever (slowloris).

    Each receive() of body bytes gets `seconds`; past that the request fails
    with 408 and whatever was being written is aborted by the upload code.
    The deadline covers the request body only: once its last message arrived,
    a receive() is a wait for the client to go away (Starlette's streaming
    response makes one for the whole download), which takes as long as the
    client reads.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        body_done = False

        async def receive_with_deadline() -> Message:
            nonlocal body_done
            if body_done:  # later receives only wait for the disconnect (e.g. an SSE stream)
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):  # cheaper than an anyio scope
                    message = await receive()
            except TimeoutError as exc:
                raise ApiError("request body stalled", code="request.timeout", status=408,
                               headers={"Connection": "close"}) from exc
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receive_with_deadline, send)
