"""Import an export: restore a canvas archive (`manifest.jsonl` + payloads) into a tenant/env.

Two passes, so that a bad archive writes nothing:

1. The whole archive is read and checked first. It must be a tar whose first
   member is `manifest.jsonl`, each line a valid artifact record; anything
   else is refused whole (422 `import.malformed`). Each payload's size and
   sha256 are compared with its record: one that differs (or is missing)
   fails that artifact only (422 `import.checksum_mismatch`).
2. Each artifact is then imported on its own, the way a create is: its blob
   first, then one metadata transaction (the canvas's media_v2 asset, the
   media_v2 artifact, the record, a replay's index, the NexusDocument and the
   DatasetEvent `canvas.{kind}.imported`, which the SSE feed and webhooks
   publish as `artifact_written`). If that transaction fails the blob is
   removed, so a failed artifact leaves nothing behind. An artifact whose id
   (or media_v2 artifact id) is taken, by a live or a deleted artifact,
   answers 409 for that artifact; the rest goes on.

An imported record is the exported one, field for field, but for where it
lives: tenant and env (the importer's), canvas (the target, when one is
given), the canvas's media_v2 asset id (derived from those) and the blob URI
(the same key layout under the new place). Exported into the same place, as
after a purge, the record comes back identical. Its Nexus lineage says it was
imported, from where, by whom and from which archive.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from engines.auth.routing import RequestContext
from engines.auth.tokens import Caller
from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.commit import canvas_asset_id, metadata_writer
from engines.canvas_artifacts.models import MAX_INT, ArtifactRecord, AuditReport
from engines.canvas_artifacts.replay_prepare import prepare_replay, store_replay
from engines.create import create_stored
from engines.db.idempotency import Writer
from engines.db.metadata import row_exists
from engines.http.body import UPLOAD_CHUNK, limited_stream, request_media_type
from engines.http.errors import (
    ApiError,
    Conflict,
    Unprocessable,
    UnsupportedMediaType,
    first_error_message,
)
from engines.http.params import is_safe_id
from engines.http.sniff import head_checker
from engines.lifecycle.export import SPOOL_BYTES, extension
from engines.media_v2.repository import artifacts as media_artifacts
from engines.runtime import Runtime
from engines.storage.base import StoredBlob
from engines.storage.ingest import ingest, ingest_bytes, too_large
from engines.storage.keys import canvas_key
from engines.storage.uris import check_uri_in_scope

MANIFEST = "manifest.jsonl"
MAX_MANIFEST_LINE = 4 * 1024 * 1024
ARCHIVE_TYPES = frozenset({"", "application/x-tar", "application/tar",
                           "application/octet-stream"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where an archive goes, and who is importing it from where."""

    tenant_id: str
    env: str
    canvas_id: str | None
    """Every artifact goes to this canvas; None keeps each record's own."""
    actor_id: str
    request_id: str
    correlation_id: str
    source: str
    """The archive's name for the lineage: a file path, or `upload`."""


@dataclass(slots=True)
class Entry:
    record: ArtifactRecord
    member: tarfile.TarInfo | None
    problem: ApiError | None = None


@dataclass(slots=True)
class Archive:
    tar: tarfile.TarFile
    entries: list[Entry]
    sha256: str


class ImportProblem(BaseModel):
    id: str
    kind: str
    status: int
    code: str
    message: str


class ImportReport(BaseModel):
    """What an import did: `ids` imported, and per artifact why the others were not."""

    imported: int = 0
    ids: list[str] = []
    conflicts: list[ImportProblem] = []
    failed: list[ImportProblem] = []


# ---- pass 1: read and check the archive ------------------------------------------


def _malformed(message: str) -> Unprocessable:
    return Unprocessable(f"not an export archive: {message}", code="import.malformed")


def _checksum_mismatch() -> Unprocessable:
    return Unprocessable("the payload does not match its manifest record (sha256 or size)",
                         code="import.checksum_mismatch")


def _sha256(file: IO[bytes]) -> str:
    digest = hashlib.sha256()
    file.seek(0)
    while chunk := file.read(UPLOAD_CHUNK):
        digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()


def _manifest_lines(tar: tarfile.TarFile, member: tarfile.TarInfo) -> list[dict[str, Any]]:
    file = tar.extractfile(member)
    assert file is not None  # a regular file, checked by the caller
    lines = []
    while raw := file.readline(MAX_MANIFEST_LINE + 1):
        if len(raw) > MAX_MANIFEST_LINE:
            raise _malformed(f"manifest line {len(lines) + 1} is over {MAX_MANIFEST_LINE} bytes")
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _malformed(f"manifest line {len(lines) + 1} is not JSON") from exc
        if not isinstance(line, dict) or not isinstance(line.get("record"), dict):
            raise _malformed(f"manifest line {len(lines) + 1} holds no record")
        lines.append(line)
    return lines


def _entry(number: int, line: dict[str, Any], members: dict[str, tarfile.TarInfo]) -> Entry:
    try:
        record = ArtifactRecord.model_validate(line["record"])
    except ValidationError as exc:
        raise _malformed(f"manifest line {number}: {first_error_message(exc)}") from exc
    if not all(is_safe_id(value) for value in (record.id, record.canvas_id,
                                               record.media_artifact_id)):
        raise _malformed(f"manifest line {number}: an id is not a safe identifier")
    if not 0 <= record.rev <= MAX_INT:
        raise _malformed(f"manifest line {number}: rev is out of range")
    if record.sha256 is None:  # a render-ref: a URI only, no payload in the archive
        return Entry(record, None)
    path = line.get("path")
    member = members.get(path) if isinstance(path, str) else None
    if member is None or not member.isfile():
        return Entry(record, None, Unprocessable("the archive holds no payload for this "
                                                 "artifact", code="import.payload_missing"))
    return Entry(record, member)


def _verify(tar: tarfile.TarFile, entry: Entry) -> ApiError | None:
    """A payload must be exactly the bytes its record describes."""
    assert entry.member is not None
    if entry.member.size != entry.record.size_bytes:
        return _checksum_mismatch()
    file = tar.extractfile(entry.member)
    assert file is not None
    digest = hashlib.sha256()
    while chunk := file.read(UPLOAD_CHUNK):
        digest.update(chunk)
    return None if digest.hexdigest() == entry.record.sha256 else _checksum_mismatch()


def open_archive(file: IO[bytes]) -> Archive:
    """Pass 1 (blocking): parse and check everything; 422 for what is not an export."""
    digest = _sha256(file)
    try:
        # on a file object the TarFile holds no descriptor: the caller's `with` on the file
        tar = tarfile.open(fileobj=file, mode="r:")  # noqa: SIM115 - closes what it reads
        members = tar.getmembers()
        if not members or members[0].name != MANIFEST or not members[0].isfile():
            raise _malformed(f"{MANIFEST} must be its first member")
        by_name: dict[str, tarfile.TarInfo] = {}
        for member in members[1:]:
            if member.name in by_name or member.name == MANIFEST:
                raise _malformed(f"{member.name} is in the archive twice")
            by_name[member.name] = member
        entries = [_entry(number, line, by_name)
                   for number, line in enumerate(_manifest_lines(tar, members[0]), 1)]
        if len({entry.record.id for entry in entries}) != len(entries):
            raise _malformed("the manifest lists an artifact twice")
        for entry in entries:
            if entry.member is not None:
                entry.problem = _verify(tar, entry)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _malformed(str(exc) or type(exc).__name__) from exc
    return Archive(tar=tar, entries=entries, sha256=digest)


# ---- pass 2: import each artifact --------------------------------------------------


async def _member_chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await run_in_threadpool(file.read, UPLOAD_CHUNK):
        yield chunk


def _read_member(archive: Archive, entry: Entry, limit: int) -> bytes:
    assert entry.member is not None
    if entry.member.size > limit:
        raise too_large(limit)
    file = archive.tar.extractfile(entry.member)
    assert file is not None
    return file.read()


async def _store(rt: Runtime, archive: Archive, entry: Entry,
                 key: str) -> tuple[StoredBlob, dict[str, Any] | None]:
    """The payload under its new key, checked as a create checks it; (blob, replay index)."""
    settings, kind = rt.settings, entry.record.kind
    if kind == "preview":
        assert entry.member is not None
        file = archive.tar.extractfile(entry.member)
        assert file is not None
        blob, _ = await ingest(rt.store, _member_chunks(file), limit=settings.max_preview_bytes,
                               head_check=head_checker(entry.record.mime_type),
                               key_for=lambda _mime: key, leases=rt.leases)
        return blob, None
    if kind == "replay":
        raw = await run_in_threadpool(_read_member, archive, entry, settings.max_replay_bytes)
        prepared = await run_in_threadpool(prepare_replay, raw, settings)
        if prepared.json_sha256 != entry.record.sha256:
            raise _checksum_mismatch()
        return await store_replay(rt, key, prepared), prepared.index
    raw = await run_in_threadpool(_read_member, archive, entry, settings.max_audit_bytes)
    try:
        AuditReport.model_validate_json(raw)
    except ValidationError as exc:
        raise Unprocessable(first_error_message(exc), code="audit.invalid") from exc
    return await ingest_bytes(rt.store, key, raw, "application/json"), None


def _placed(rt: Runtime, source: ArtifactRecord,
            target: Target) -> tuple[ArtifactRecord, str | None]:
    """The exported record in its new place (tenant, env, canvas and what follows them),
    and the key its payload goes to (None for a render-ref)."""
    canvas_id = target.canvas_id or source.canvas_id
    place: dict[str, Any] = {
        "tenant_id": target.tenant_id, "env": target.env, "canvas_id": canvas_id,
        "media_asset_id": canvas_asset_id(target.tenant_id, target.env, canvas_id)}
    key = None
    if source.sha256 is None:
        scope = RequestContext(tenant_id=target.tenant_id, env=target.env,
                               project_id=source.project_id, request_id=target.request_id,
                               correlation_id=target.correlation_id)
        place["uri"] = check_uri_in_scope(rt.settings.raw_bucket, scope, source.uri)
    else:
        key = canvas_key(target.tenant_id, target.env, canvas_id, source.kind, source.id,
                         extension(source))
        place["uri"] = rt.store.uri_for(key)
    return source.model_copy(update=place), key


def _ids_taken(rt: Runtime, record: ArtifactRecord) -> bool:
    with rt.engine.connect() as conn:
        return row_exists(conn, repo.canvas_artifacts, record.id) or row_exists(
            conn, media_artifacts, record.media_artifact_id)


def _id_taken() -> Conflict:
    return Conflict("an artifact with this id already exists; nothing was imported for it",
                    code="import.id_taken")


def _provenance(source: ArtifactRecord, archive: Archive, target: Target) -> dict[str, Any]:
    return {"imported": True,
            "imported_from": {"tenant_id": source.tenant_id, "env": source.env,
                              "canvas_id": source.canvas_id, "artifact_id": source.id,
                              "uri": source.uri, "archive": target.source,
                              "archive_sha256": archive.sha256},
            "imported_by": {"actor_id": target.actor_id, "request_id": target.request_id,
                            "correlation_id": target.correlation_id,
                            "imported_at": datetime.now(UTC).isoformat()}}


async def _import_one(rt: Runtime, archive: Archive, entry: Entry, target: Target) -> None:
    record, key = _placed(rt, entry.record, target)
    if await run_in_threadpool(_ids_taken, rt, record):
        raise _id_taken()  # before any write: the key may be that artifact's own blob
    blob, index = (None, None) if key is None else await _store(rt, archive, entry, key)
    # with_asset (the default): the canvas asset is inserted if absent, whatever this
    # process remembers of it, so a canvas purged since is recreated
    write = metadata_writer(rt, record, index, how="imported",
                            provenance=_provenance(entry.record, archive, target))
    def again(exc: IntegrityError) -> Writer:
        raise _id_taken() from exc  # another import of it committed first

    await create_stored(rt, record, b"", write, lambda conn: _committed(conn, record),
                        record_id=record.id, blob=blob, again=again)


def _committed(conn: Connection, record: ArtifactRecord) -> bool:
    return row_exists(conn, repo.canvas_artifacts, record.id)


def _problem(record: ArtifactRecord, error: ApiError) -> ImportProblem:
    return ImportProblem(id=record.id, kind=record.kind, status=error.status, code=error.code,
                         message=error.message)


async def import_archive(rt: Runtime, archive: Archive, target: Target) -> ImportReport:
    """Pass 2: every artifact that passed pass 1, one at a time, in manifest order."""
    report = ImportReport()
    for entry in archive.entries:
        try:
            if entry.problem is not None:
                raise entry.problem
            await _import_one(rt, archive, entry, target)
        except ApiError as exc:
            (report.conflicts if exc.status == 409 else report.failed).append(
                _problem(entry.record, exc))
        else:
            report.imported += 1
            report.ids.append(entry.record.id)
    return report


async def import_upload(rt: Runtime, caller: Caller, request: Request,
                        canvas_id: str) -> ImportReport:
    """POST .../import: the body spooled (memory, then disk) under MAX_IMPORT_BYTES."""
    if request_media_type(request) not in ARCHIVE_TYPES:
        raise UnsupportedMediaType("send the archive as application/x-tar")
    ctx = caller.ctx
    target = Target(tenant_id=ctx.tenant_id, env=ctx.env, canvas_id=canvas_id,
                    actor_id=caller.auth.actor_id, request_id=ctx.request_id,
                    correlation_id=ctx.correlation_id, source="upload")
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as file:
        async for chunk in limited_stream(request, rt.settings.max_import_bytes):
            await run_in_threadpool(file.write, chunk)
        archive = await run_in_threadpool(open_archive, file)
        return await import_archive(rt, archive, target)


async def import_file(rt: Runtime, path: Path, target: Target) -> ImportReport:
    """`engines import FILE`: the same two passes over a file on disk."""
    with path.open("rb") as file:
        archive = await run_in_threadpool(open_archive, file)
        return await import_archive(rt, archive, target)
