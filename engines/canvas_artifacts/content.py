"""Serving an artifact's payload: ETag, If-None-Match, Range, safe headers."""

from __future__ import annotations

import re

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response, StreamingResponse

from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.replay_store import DecodedReplay
from engines.config import Settings
from engines.http.errors import ApiError, NotFound
from engines.http.head import is_head
from engines.http.sniff import ACTIVE_TYPES, EXTENSIONS, RASTER_TYPES, sniff
from engines.storage.base import BlobNotFound, BlobStore
from engines.storage.ingest import HEAD_BYTES

_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
_MAX_DIGITS = 18
"""Positions with more significant digits than this are past any blob we store."""
SMALL_BODY = 1024 * 1024
"""Bodies up to this size are read whole and sent in one go; larger ones stream."""
INLINE_READ = 256 * 1024
"""From a local disk, bodies up to this size are read on the event loop: a page-cache
copy of 256 KiB takes ~30 us, less than the thread hop it saves."""
SANDBOX_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


def etag_of(record: ArtifactRecord) -> str:
    return f'"{record.sha256}"'


def not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def range_applies(request: Request, etag: str) -> bool:
    """If-Range: honour Range only for the representation the client already holds.

    Strong comparison with our ETag (RFC 9110 13.1.5). We send no
    Last-Modified, so a date, a weak tag or another tag means "send it all".
    """
    validator = request.headers.get("if-range")
    return validator is None or validator.strip() == etag


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
        length = _position(last)
        if length == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise _unsatisfiable(size)
    return start, end


def _position(digits: str) -> int:
    """A range position, without converting thousands of digits (int() refuses them).

    Any number too long to be a byte offset stands for 10**18: past every end.
    """
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _unsatisfiable(size: int) -> ApiError:
    return ApiError("requested range is not satisfiable", code="request.range_not_satisfiable",
                    status=416, headers={"Content-Range": f"bytes */{size}"})


_PRIVATE = "private, max-age=0, must-revalidate"


def _sandbox(headers: dict[str, str], filename: str, inline: bool) -> None:
    """What makes active content inert on our origin: no scripts, and a download."""
    headers["Content-Security-Policy"] = SANDBOX_CSP
    if not inline:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'


def payload_headers(record: ArtifactRecord, inline: bool) -> dict[str, str]:
    headers = {"ETag": etag_of(record), "X-Content-Type-Options": "nosniff",
               "Accept-Ranges": "bytes", "Cache-Control": _PRIVATE}
    if record.mime_type in ACTIVE_TYPES:
        _sandbox(headers, f"{record.id}.{record.uri.rsplit('.', 1)[-1]}", inline)
    return headers


def presign_ttl(settings: Settings) -> int | None:
    """How long a presigned URL lives when content is redirected; None when it is proxied."""
    return settings.presign_ttl_seconds if settings.media_serve_mode == "redirect" else None


async def _presigned(store: BlobStore | DecodedReplay, key: str, ttl: int) -> Response | None:
    url = await run_in_threadpool(store.presign, key, ttl)
    if not url:
        return None
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})


async def serve_blob(request: Request, store: BlobStore | DecodedReplay, key: str,
                     record: ArtifactRecord, *, inline: bool,
                     presign_ttl: int | None) -> Response:
    """Proxy the bytes (with conditional and range support) or redirect to a presigned URL.

    Only raster images are redirected: the bucket serves objects inline with
    none of our headers, so anything a browser could run there is proxied.
    """
    headers = payload_headers(record, inline)
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if presign_ttl is not None and record.mime_type in RASTER_TYPES:
        redirect = await _presigned(store, key, presign_ttl)
        if redirect is not None:
            return redirect
    size = record.size_bytes or 0
    byte_range = (parse_range(request.headers.get("range"), size)
                  if range_applies(request, headers["ETag"]) else None)
    status, (start, end) = (200, (0, size - 1)) if byte_range is None else (206, byte_range)
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1
    headers["Content-Length"] = str(length)
    if is_head(request):
        return Response(status_code=status, media_type=record.mime_type, headers=headers)
    if length <= INLINE_READ and store.reads_block_briefly:
        data = store.read_all(key, start, end)
        return Response(data, status_code=status, media_type=record.mime_type, headers=headers)
    if length <= SMALL_BODY:
        # one thread hop for the whole body instead of one per streamed chunk
        data = await run_in_threadpool(store.read_all, key, start, end)
        return Response(data, status_code=status, media_type=record.mime_type, headers=headers)
    body = await run_in_threadpool(store.read, key, start, end)
    return StreamingResponse(body, status_code=status, media_type=record.mime_type,
                             headers=headers)


async def serve_render_ref(request: Request, store: BlobStore, key: str | None,
                           record: ArtifactRecord, *, inline: bool, presign_ttl: int) -> Response:
    """A render-ref's payload. An https URI is the client's to follow; an object in
    our bucket is presigned only if its bytes are a raster image.

    Anything else there (HTML, SVG, unknown bytes: a media_v2 upload can be
    any file) is proxied under the sandbox CSP, as an attachment unless
    inline: the record's declared type is the client's word, not the bytes'.
    """
    if key is None:
        return RedirectResponse(record.uri, status_code=307)
    try:
        mime = sniff(await run_in_threadpool(store.read_all, key, 0, HEAD_BYTES - 1))
    except BlobNotFound as exc:
        # the ref names an object the client was to put there: theirs to fix, not an outage
        raise NotFound("the render-ref's object does not exist",
                       code="canvas.render_ref_missing") from exc
    if mime in RASTER_TYPES:
        redirect = await _presigned(store, key, presign_ttl)
        if redirect is not None:
            return redirect
    mime = mime or "application/octet-stream"
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": _PRIVATE}
    _sandbox(headers, f"{record.id}.{EXTENSIONS.get(mime, 'bin')}", inline)
    if is_head(request):
        return Response(media_type=mime, headers=headers)
    body = await run_in_threadpool(store.read, key)
    return StreamingResponse(body, media_type=mime, headers=headers)
