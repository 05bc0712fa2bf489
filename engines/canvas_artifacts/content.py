"""Serving an artifact's payload: ETag, If-None-Match, Range, safe headers."""

from __future__ import annotations

import re

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response, StreamingResponse

from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.sniff import ACTIVE_TYPES
from engines.common.errors import ApiError
from engines.config import Settings
from engines.storage.base import BlobStore

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
SMALL_BODY = 1024 * 1024
"""Bodies up to this size are read whole and sent in one go; larger ones stream."""
SANDBOX_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


def etag_of(record: ArtifactRecord) -> str:
    return f'"{record.sha256}"'


def not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One byte range as (start, end inclusive); None means the whole body.

    Multiple ranges are answered with the whole body, as RFC 9110 allows.
    """
    if not header or "," in header:
        return None
    match = _RANGE_RE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ApiError:
    return ApiError("requested range is not satisfiable", code="request.range_not_satisfiable",
                    status=416, headers={"Content-Range": f"bytes */{size}"})


def payload_headers(record: ArtifactRecord, inline: bool) -> dict[str, str]:
    headers = {"ETag": etag_of(record), "X-Content-Type-Options": "nosniff",
               "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=0, must-revalidate"}
    if record.mime_type in ACTIVE_TYPES:
        headers["Content-Security-Policy"] = SANDBOX_CSP
        if not inline:
            ext = record.uri.rsplit(".", 1)[-1]
            headers["Content-Disposition"] = f'attachment; filename="{record.id}.{ext}"'
    return headers


def presign_ttl(settings: Settings) -> int | None:
    """How long a presigned URL lives when content is redirected; None when it is proxied."""
    return settings.presign_ttl_seconds if settings.media_serve_mode == "redirect" else None


async def serve_blob(request: Request, store: BlobStore, key: str, record: ArtifactRecord, *,
               inline: bool, presign_ttl: int | None) -> Response:
    """Proxy the bytes (with conditional and range support) or redirect to a presigned URL."""
    headers = payload_headers(record, inline)
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if presign_ttl is not None:
        url = await run_in_threadpool(store.presign, key, presign_ttl)
        if url:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    size = record.size_bytes or 0
    byte_range = parse_range(request.headers.get("range"), size)
    status, (start, end) = (200, (0, size - 1)) if byte_range is None else (206, byte_range)
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1
    if length <= SMALL_BODY:
        # one thread hop for the whole body instead of one per streamed chunk
        data = await run_in_threadpool(store.read_all, key, start, end)
        return Response(data, status_code=status, media_type=record.mime_type, headers=headers)
    headers["Content-Length"] = str(length)
    body = await run_in_threadpool(store.read, key, start, end)
    return StreamingResponse(body, status_code=status, media_type=record.mime_type,
                             headers=headers)
