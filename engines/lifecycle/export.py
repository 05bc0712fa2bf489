"""Export a canvas: a streamed tar of `manifest.jsonl` and every live payload.

The manifest comes first (one line per artifact: the record, its lineage and
the path of its payload in the archive), then each payload at
`{kind}/{artifact_id}.{ext}`; render-refs appear in the manifest only. Tar
headers need sizes up front: payload sizes are in the records, and the
manifest is spooled to a temporary file (in memory while small), so server
memory stays flat however large the canvas.

The manifest is read a page at a time (the page's records, then the lineage
of all of them in one query), and each step of the generator does at most
one page of work: Starlette runs each step in the shared thread pool, which
therefore never holds a thread for a whole canvas. After each page the
archive carries a pax global header whose only field is a `comment` (as
`git archive` writes one): tar readers skip it, and the client gets bytes
within a page's work instead of waiting for the whole manifest.
"""

from __future__ import annotations

import tarfile
import tempfile
import time
from collections.abc import Iterator
from typing import IO

import orjson

from engines.auth.routing import RequestContext
from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.models import ArtifactRecord, Lineage
from engines.canvas_artifacts.reads import read_lineages
from engines.canvas_artifacts.replay_store import DecodedReplay, json_reader
from engines.http.errors import NotFound
from engines.runtime import Runtime
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
    """Live records in id order with their lineage: one connection and two queries a page."""
    after = ""
    while True:
        with rt.engine.connect() as conn:
            records = repo.records_after(conn, ctx.tenant_id, ctx.env, canvas_id, kind=kind,
                                         after_id=after, limit=PAGE)
            lineages = read_lineages(conn, rt, ctx.tenant_id, ctx.env, records)
        if not records:
            return
        yield list(zip(records, lineages, strict=True))
        after = records[-1].id


def _spool(page: list[tuple[ArtifactRecord, Lineage]], manifest: IO[bytes],
           payloads: IO[bytes]) -> None:
    for record, lineage in page:
        path = payload_path(record)
        line = {"record": record.model_dump(mode="json"), "path": path,
                "lineage": lineage.model_dump(mode="json", exclude={"artifact_id"})}
        manifest.write(orjson.dumps(line) + b"\n")
        if path is not None:
            payloads.write(orjson.dumps([path, record.uri, record.size_bytes,
                                         record.kind == "replay" and record.id]) + b"\n")


def _progress(listed: int) -> bytes:
    """A pax global header that says how far the manifest is; readers ignore it."""
    return tarfile.TarInfo.create_pax_global_header(
        {"comment": f"engines export: {listed} artifacts listed"})


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
    """The tar, chunk by chunk (a sync generator: Starlette runs each step in a thread)."""
    now = time.time()
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as manifest, \
            tempfile.SpooledTemporaryFile(SPOOL_BYTES) as payloads:
        listed = 0
        for page in _pages(rt, ctx, canvas_id, kind):
            _spool(page, manifest, payloads)
            listed += len(page)
            yield _progress(listed)
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
