"""Export a canvas: a streamed tar of `manifest.jsonl` and every live payload.

The manifest comes first (one line per artifact: the record, its lineage and
the path of its payload in the archive), then each payload at
`{kind}/{artifact_id}.{ext}`; render-refs appear in the manifest only. Tar
headers need sizes up front: payload sizes are in the records, and the
manifest is spooled to a temporary file (in memory while small), so server
memory stays flat however large the canvas.
"""

from __future__ import annotations

import tarfile
import tempfile
import time
from collections.abc import Iterator
from typing import IO

import orjson

from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.models import ArtifactRecord, Lineage
from engines.canvas_artifacts.replay_store import DecodedReplay, json_reader
from engines.canvas_artifacts.service import read_lineage
from engines.common.errors import NotFound
from engines.common.identity import RequestContext
from engines.common.runtime import Runtime
from engines.storage.base import BlobNotFound, BlobStore

PAGE = 500
SPOOL_BYTES = 1024 * 1024
_CHUNK = 256 * 1024
_BLOCK = 512


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def extension(record: ArtifactRecord) -> str:
    """The extension of the payload's blob key ('' for none): an import keeps it."""
    name = record.uri.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1] if "." in name else ""


def payload_path(record: ArtifactRecord) -> str | None:
    """Where the payload sits in the archive; None for a render-ref (not our bytes)."""
    if record.sha256 is None:
        return None
    return f"{record.kind}/{record.id}.{extension(record) or 'bin'}"


def _pages(rt: Runtime, ctx: RequestContext, canvas_id: str,
           kind: str | None) -> Iterator[list[tuple[ArtifactRecord, Lineage]]]:
    """Live records in id order with their lineage, one connection per page."""
    after = ""
    while True:
        with rt.engine.connect() as conn:
            page = [(record, read_lineage(conn, rt, record)) for record in repo.records_after(
                conn, ctx.tenant_id, ctx.env, canvas_id, kind=kind, after_id=after, limit=PAGE)]
        if not page:
            return
        yield page
        after = page[-1][0].id


def _spool(rt: Runtime, ctx: RequestContext, canvas_id: str, kind: str | None,
           manifest: IO[bytes], payloads: IO[bytes]) -> None:
    for page in _pages(rt, ctx, canvas_id, kind):
        for record, lineage in page:
            path = payload_path(record)
            line = {"record": record.model_dump(mode="json"), "path": path,
                    "lineage": lineage.model_dump(mode="json", exclude={"artifact_id"})}
            manifest.write(orjson.dumps(line) + b"\n")
            if path is not None:
                payloads.write(orjson.dumps([path, record.uri, record.size_bytes,
                                             record.kind == "replay" and record.id]) + b"\n")


def _reader(rt: Runtime, ctx: RequestContext,
            replay_id: str | bool) -> BlobStore | DecodedReplay:
    """A replay is stored compressed: the archive holds its JSON, size_bytes long."""
    if not replay_id:
        return rt.store
    with rt.engine.connect() as conn:
        index = repo.replay_index(conn, ctx.tenant_id, ctx.env, str(replay_id))
    return json_reader(rt.store, index)


def has_live_artifacts(rt: Runtime, ctx: RequestContext, canvas_id: str) -> None:
    """404 (like every foreign resource) unless the canvas has a live artifact here."""
    with rt.engine.connect() as conn:
        if not repo.records_after(conn, ctx.tenant_id, ctx.env, canvas_id, kind=None,
                                  after_id="", limit=1):
            raise NotFound("canvas has no artifacts", code="canvas.not_found")


def stream_export(rt: Runtime, ctx: RequestContext, canvas_id: str,
                  kind: str | None) -> Iterator[bytes]:
    """The tar, chunk by chunk (a sync generator: Starlette runs it in a thread)."""
    now = time.time()
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as manifest, \
            tempfile.SpooledTemporaryFile(SPOOL_BYTES) as payloads:
        _spool(rt, ctx, canvas_id, kind, manifest, payloads)
        size = manifest.tell()
        manifest.seek(0)
        yield _header("manifest.jsonl", size, now)
        while chunk := manifest.read(_CHUNK):
            yield chunk
        yield _padding(size)
        payloads.seek(0)
        for line in payloads:
            path, uri, length, replay_id = orjson.loads(line)
            key = rt.store.key_for(uri)
            try:
                body = _reader(rt, ctx, replay_id).read(key) if key else None
            except BlobNotFound:
                body = None  # deleted since the manifest was written: the entry is skipped
            if body is None:
                continue
            yield _header(path, length, now)
            yield from body
            yield _padding(length)
        yield b"\0" * (2 * _BLOCK)
