"""Upload sessions: a large preview sent in parts, straight to the bucket where there is one.

Open (`POST .../preview/uploads?rev=N`, `{size_bytes, mime_type, sha256?}`): the
declared type, size limit and quota are checked as a create checks them, an
upload in parts is started under the artifact's final key, and the session
answers one URL per part: presigned S3 `upload_part` URLs (the bytes go from
the client to the bucket), or signed PUT URLs on this service for the local
store. Parts may be sent in any order, again after a failure, and resumed
after a disconnect: GET of the session lists the parts the store holds.

Complete (`POST .../uploads/{id}/complete`) claims the session, checks every
part's size, assembles the object while hashing it and checking its first
bytes against the declared type, and compares the sha256 if one was declared;
any mismatch is 422 with nothing stored. It then runs the one create protocol
(`commit._commit`: records, lineage, event, quota, usage), claimed by the
session's id, so a second complete replays the first answer.

A session lives UPLOAD_SESSION_SECONDS. Its unfinished upload holds an upload
lease until then, so gc's sweep of abandoned uploads leaves it alone; after it,
`engines gc` aborts the upload and marks the session expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from sqlalchemy import BigInteger, Column, Connection, Engine, Index, String, Table, select, update
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.auth.routing import RequestContext
from engines.auth.tokens import Caller
from engines.canvas_artifacts import commit, quotas
from engines.canvas_artifacts.models import MAX_INT
from engines.common.ids import new_id
from engines.config import Settings
from engines.db import idempotency
from engines.db.engine import retry_on_disconnect
from engines.db.metadata import UtcDateTime, metadata
from engines.db.upsert import upsert
from engines.db.writer import write_transaction
from engines.http.body import limited_stream, read_limited, require_json
from engines.http.errors import (
    ApiError,
    Conflict,
    Forbidden,
    NotFound,
    Unprocessable,
    UnsupportedMediaType,
    first_error_message,
)
from engines.http.jsonutil import parse_json
from engines.http.sniff import EXTENSIONS, MAGIC
from engines.runtime import Runtime
from engines.storage.base import BlobNotFound, BlobStore, StoredBlob
from engines.storage.ingest import BATCH_BYTES, HEAD_BYTES, too_large
from engines.storage.keys import canvas_key
from engines.storage.leases import upload_leases

upload_sessions = Table(
    "upload_sessions", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("env", String(16), nullable=False),
    Column("canvas_id", String(128), nullable=False),
    Column("rev", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("actor_id", String(256), nullable=False),
    Column("mime_type", String(128), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64)),
    Column("part_size", BigInteger, nullable=False),
    Column("artifact_id", String(64), nullable=False),
    Column("key", String(1024), nullable=False),
    Column("upload_id", String(1024), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("claimed_at", UtcDateTime),
    Index("ix_upload_sessions_scope", "tenant_id", "env", "canvas_id", "id"),
    Index("ix_upload_sessions_expiry", "status", "expires_at"),
)

OPEN, COMPLETING, COMPLETED = "open", "completing", "completed"
FAILED, ABORTED, EXPIRED = "failed", "aborted", "expired"
INCOMPLETE = "upload.incomplete"
"""The one complete failure that keeps the session open: send the missing parts."""
CLAIM_STALE = timedelta(minutes=10)
"""A complete that claimed a session and vanished (a crashed process) is taken over
by the next one after this long."""
MAX_PARTS = 10_000
"""S3's limit on the parts of one multipart upload."""
REQUEST_BYTES = 4096
PRESIGN_MAX_SECONDS = 7 * 86_400
"""The longest a SigV4 presigned URL may live."""


class OpenUpload(BaseModel):
    """Body of POST .../preview/uploads: what the client is about to send."""

    model_config = ConfigDict(extra="forbid")
    size_bytes: StrictInt = Field(ge=1, le=MAX_INT)
    mime_type: str = Field(min_length=1, max_length=128)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class UploadPart(BaseModel):
    part_number: int
    size: int
    """The part's exact size: part_size, the last one the rest."""
    uploaded: bool
    uploaded_size: int | None = None
    """What the store holds for this part (a part of the wrong size fails complete)."""
    url: str | None = None
    """PUT the part's bytes here, with no other header; null once the session is closed."""


class UploadSession(BaseModel):
    id: str
    canvas_id: str
    rev: int
    kind: str
    status: str
    """open, completing, completed, failed, aborted or expired."""
    size_bytes: int
    mime_type: str
    sha256: str | None
    part_size: int
    part_count: int
    direct: bool
    """True when parts go to the object store itself (presigned S3 URLs)."""
    artifact_id: str
    """The id the artifact gets when the session completes."""
    created_at: datetime
    expires_at: datetime
    parts: list[UploadPart]


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    tenant_id: str
    env: str
    canvas_id: str
    rev: int
    kind: str
    actor_id: str
    mime_type: str
    size_bytes: int
    sha256: str | None
    part_size: int
    artifact_id: str
    key: str
    upload_id: str
    status: str
    created_at: datetime
    expires_at: datetime
    claimed_at: datetime | None

    @property
    def part_count(self) -> int:
        return math.ceil(self.size_bytes / self.part_size)

    def part_bytes(self, number: int) -> int:
        """The exact size part `number` must have."""
        if number < self.part_count:
            return self.part_size
        return self.size_bytes - (self.part_count - 1) * self.part_size


def _now() -> datetime:
    return datetime.now(UTC)


def part_size_for(settings: Settings, size: int) -> int:
    """UPLOAD_PART_BYTES, or more where the object would need over 10 000 parts."""
    return max(settings.upload_part_bytes, math.ceil(size / MAX_PARTS))


# ---- signed part URLs of the local store ---------------------------------------------

PART_PATH = "/uploads/{session_id}/parts/{part_number}"


def _part_signature(key: bytes, session_id: str, number: int, exp: str) -> str:
    message = orjson.dumps(["engines-upload-part-v1", session_id, number, exp])
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _service_part_url(settings: Settings, base_url: str, session: Session, number: int) -> str:
    exp = str(int(session.expires_at.timestamp()))
    sig = _part_signature(settings.url_key(), session.id, number, exp)
    path = PART_PATH.format(session_id=session.id, part_number=number)
    return f"{base_url}{path}?{urlencode({'exp': exp, 'sig': sig})}"


def verify_part_url(settings: Settings, session_id: str, number: int,
                    query: dict[str, str]) -> None:
    exp, sig = query.get("exp", ""), query.get("sig", "")
    expected = _part_signature(settings.url_key(), session_id, number, exp)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise Forbidden("the part URL is invalid", code="upload.url_invalid")
    if not exp.isdigit() or int(exp) <= time.time():
        raise Forbidden("the part URL has expired", code="upload.url_expired")


# ---- rows ---------------------------------------------------------------------------


def _session(row: Any) -> Session:
    return Session(**{name: row[name] for name in Session.__dataclass_fields__})


def _load(conn: Connection, session_id: str) -> Session | None:
    row = conn.execute(select(upload_sessions).where(
        upload_sessions.c.id == session_id)).mappings().first()
    return _session(row) if row is not None else None


@retry_on_disconnect
def _load_by_id(engine: Engine, session_id: str) -> Session | None:
    with engine.connect() as conn:
        return _load(conn, session_id)


def _not_found() -> NotFound:
    return NotFound("upload session not found", code="upload.not_found")


@retry_on_disconnect
def find(rt: Runtime, ctx: RequestContext, canvas_id: str, session_id: str) -> Session:
    """The caller's session; another tenant's, env's or canvas's is a missing one."""
    session = _load_by_id(rt.engine, session_id)
    if session is None or (session.tenant_id, session.env, session.canvas_id) != (
            ctx.tenant_id, ctx.env, canvas_id):
        raise _not_found()
    return session


def _set_status(engine: Engine, session_id: str, status: str, *, when: str | None = None,
                release: str | None = None) -> bool:
    """Move a session to `status` (only from `when`, if given); True if it moved.
    `release` drops the upload lease of a session that no longer needs one."""
    c = upload_sessions.c
    query = update(upload_sessions).where(c.id == session_id)
    if when is not None:
        query = query.where(c.status == when)
    with write_transaction(engine) as conn:
        moved = conn.execute(query.values(status=status)).rowcount == 1
        if release is not None:
            conn.execute(upload_leases.delete().where(upload_leases.c.key == release))
    return moved


def _claim(engine: Engine, session_id: str) -> bool:
    """Take the session for one complete: open, or claimed by a complete long gone."""
    c = upload_sessions.c
    now = _now()
    with write_transaction(engine) as conn:
        return conn.execute(update(upload_sessions).where(
            c.id == session_id,
            (c.status == OPEN) | ((c.status == COMPLETING) & (c.claimed_at < now - CLAIM_STALE)),
        ).values(status=COMPLETING, claimed_at=now)).rowcount == 1


# ---- the session as the client sees it -------------------------------------------------


def _base_url(settings: Settings, request: Request) -> str:
    return (settings.public_base_url or str(request.base_url)).rstrip("/")


def _view(rt: Runtime, request: Request, session: Session) -> UploadSession:
    parts = rt.store.parts()
    live = session.status == OPEN and session.expires_at > _now()
    held = parts.sizes(session.key, session.upload_id) if live else {}
    ttl = min(PRESIGN_MAX_SECONDS, max(1, int((session.expires_at - _now()).total_seconds())))
    base = _base_url(rt.settings, request)

    def url(number: int) -> str | None:
        if not live:
            return None
        if parts.direct:
            return parts.part_url(session.key, session.upload_id, number, ttl)
        return _service_part_url(rt.settings, base, session, number)

    return UploadSession(
        id=session.id, canvas_id=session.canvas_id, rev=session.rev, kind=session.kind,
        status=EXPIRED if session.status == OPEN and not live else session.status,
        size_bytes=session.size_bytes, mime_type=session.mime_type, sha256=session.sha256,
        part_size=session.part_size, part_count=session.part_count, direct=parts.direct,
        artifact_id=session.artifact_id, created_at=session.created_at,
        expires_at=session.expires_at,
        parts=[UploadPart(part_number=n, size=session.part_bytes(n), uploaded=n in held,
                          uploaded_size=held.get(n), url=url(n))
               for n in range(1, session.part_count + 1)])


async def view(rt: Runtime, request: Request, session: Session) -> UploadSession:
    return await run_in_threadpool(_view, rt, request, session)


# ---- open ---------------------------------------------------------------------------


async def _read_open(request: Request) -> OpenUpload:
    require_json(request)
    raw = await read_limited(request, REQUEST_BYTES)
    try:
        return OpenUpload.model_validate(parse_json(raw, max_depth=2))
    except ValidationError as exc:
        raise Unprocessable(first_error_message(exc), code="upload.invalid") from exc


def _declared_type(mime_type: str) -> str:
    declared = mime_type.split(";", 1)[0].strip().lower()
    if declared not in MAGIC:
        raise UnsupportedMediaType(f"unsupported preview type {declared!r}; declare one of "
                                   + ", ".join(MAGIC))
    return declared


def _insert(rt: Runtime, values: dict[str, Any], lease_key: str) -> None:
    """The session and its upload's lease (held until the session expires), together."""
    with write_transaction(rt.engine) as conn:
        conn.execute(upload_sessions.insert(), values)
        conn.execute(upsert(conn, upload_leases, ["key"]),
                     {"key": lease_key, "expires_at": values["expires_at"]})


async def open_session(rt: Runtime, caller: Caller, request: Request, canvas_id: str,
                       rev: int) -> Response:
    body = await _read_open(request)
    mime = _declared_type(body.mime_type)
    if body.size_bytes > rt.settings.max_preview_bytes:
        raise too_large(rt.settings.max_preview_bytes)
    ctx = caller.ctx
    await quotas.precheck(rt.engine, ctx.tenant_id, ctx.env, body.size_bytes)
    artifact_id = new_id("art")
    key = canvas_key(ctx.tenant_id, ctx.env, canvas_id, "preview", artifact_id, EXTENSIONS[mime])
    parts = rt.store.parts()
    upload_id = await run_in_threadpool(parts.begin, key, mime)
    now = _now()
    values = {
        "id": new_id("ups"), "tenant_id": ctx.tenant_id, "env": ctx.env,
        "canvas_id": canvas_id, "rev": rev, "kind": "preview",
        "actor_id": caller.auth.actor_id, "mime_type": mime, "size_bytes": body.size_bytes,
        "sha256": body.sha256.lower() if body.sha256 else None,
        "part_size": part_size_for(rt.settings, body.size_bytes), "artifact_id": artifact_id,
        "key": key, "upload_id": upload_id, "status": OPEN, "created_at": now,
        "expires_at": now + timedelta(seconds=rt.settings.upload_session_seconds),
        "claimed_at": None}
    try:
        await run_in_threadpool(_insert, rt, values, parts.lease_key(key, upload_id))
    except BaseException:
        await run_in_threadpool(parts.abort, key, upload_id)
        raise
    session = _session(values)
    return Response((await view(rt, request, session)).model_dump_json(), status_code=201,
                    media_type="application/json")


# ---- parts sent through the service (local store) ----------------------------------


async def put_part(rt: Runtime, request: Request, session_id: str, number: int) -> Response:
    """PUT of one part to a signed part URL: the part's bytes, at most its exact size."""
    verify_part_url(rt.settings, session_id, number, dict(request.query_params))
    session = await run_in_threadpool(_load_by_id, rt.engine, session_id)
    if session is None or not 1 <= number <= session.part_count:
        raise _not_found()
    if session.status != OPEN or session.expires_at <= _now():
        raise Conflict(f"the upload session is {session.status}; parts are closed",
                       code="upload.closed")
    parts = rt.store.parts()
    if parts.direct:
        raise _not_found()  # parts of this store go to the store itself
    writer = await run_in_threadpool(parts.open_part, session.upload_id, number)
    size, batched, batch = 0, 0, []
    try:
        async for chunk in limited_stream(request, session.part_bytes(number)):
            size += len(chunk)
            batch.append(chunk)
            batched += len(chunk)
            if batched >= BATCH_BYTES:  # one join: the only copy the bytes go through
                await run_in_threadpool(writer.write, b"".join(batch))
                batch, batched = [], 0
        await run_in_threadpool(writer.write, b"".join(batch))
        await run_in_threadpool(writer.commit)
    except BaseException:
        await run_in_threadpool(writer.abort)
        raise
    return Response(orjson.dumps({"part_number": number, "size": size}),
                    media_type="application/json")


# ---- complete -----------------------------------------------------------------------


class _Verifier:
    """Sees the assembled object go by: counts, hashes, checks the first bytes."""

    def __init__(self, mime_type: str) -> None:
        self.mime_type = mime_type
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.checked = False

    def __call__(self, chunk: bytes) -> None:
        if not self.checked:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
            if len(self.head) >= HEAD_BYTES:
                self.check_head()
        self.digest.update(chunk)
        self.size += len(chunk)

    def check_head(self) -> None:
        self.checked = True
        if not MAGIC[self.mime_type](self.head):
            raise Unprocessable(f"content does not look like {self.mime_type}",
                                code="upload.content_mismatch")


def _check_parts(session: Session, held: dict[int, int]) -> None:
    expected = range(1, session.part_count + 1)
    missing = [n for n in expected if n not in held]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise Unprocessable(f"parts not uploaded yet: {shown}", code=INCOMPLETE)
    wrong = [n for n in held if n not in expected or held[n] != session.part_bytes(n)]
    if wrong:
        n = wrong[0]
        want = session.part_bytes(n) if n in expected else 0
        raise Unprocessable(f"part {n} has {held[n]} bytes, {want} expected: the parts add up "
                            f"to {sum(held.values())} bytes, not the declared "
                            f"{session.size_bytes}", code="upload.size_mismatch")


def _assemble(store: BlobStore, session: Session) -> StoredBlob:
    """Check the parts, assemble the object and verify it; on a mismatch nothing stays.

    A missing part leaves the session as it is (send the part, complete again), and
    so does an outage (complete again); a mismatch removes the parts and whatever was
    assembled.
    """
    parts = store.parts()
    verifier = _Verifier(session.mime_type)
    try:
        held = parts.sizes(session.key, session.upload_id)
        # no parts and an object: assembled by an earlier attempt that did not get to commit
        if held or not store.exists(session.key):
            _check_parts(session, held)
        parts.finish(session.key, session.upload_id, list(range(1, session.part_count + 1)),
                     verifier)
        if not verifier.checked:
            verifier.check_head()
        sha256 = verifier.digest.hexdigest()
        if verifier.size != session.size_bytes:
            raise Unprocessable(f"the object has {verifier.size} bytes, not the declared "
                                f"{session.size_bytes}", code="upload.size_mismatch")
        if session.sha256 is not None and sha256 != session.sha256:
            raise Unprocessable(f"sha256 of the parts is {sha256}, not the declared "
                                f"{session.sha256}", code="upload.sha256_mismatch")
    except ApiError as exc:
        if exc.code != INCOMPLETE:
            parts.abort(session.key, session.upload_id)
            store.delete(session.key)
        raise
    return StoredBlob(key=session.key, uri=store.uri_for(session.key), size=verifier.size,
                      sha256=sha256)


def _completion_claim(session: Session) -> idempotency.IdempotencyClaim:
    """The session's id claims its one artifact: every complete of it is the same request."""
    return idempotency.IdempotencyClaim(session.tenant_id, session.env,
                                        f"upload-session/{session.id}",
                                        f"POST upload-session {session.id}", "")


async def _replay(rt: Runtime, caller: Caller, request: Request, session: Session) -> Response:
    """A complete of a completed session: the first answer, through the same claim."""
    blob = StoredBlob(key=session.key, uri=rt.store.uri_for(session.key),
                      size=session.size_bytes, sha256=session.sha256 or "")
    return await _create(rt, caller, request, session, blob)


async def _create(rt: Runtime, caller: Caller, request: Request, session: Session,
                  blob: StoredBlob) -> Response:
    payload = commit.Payload(uri=blob.uri, mime_type=session.mime_type,
                             body_sha256=blob.sha256, blob=blob,
                             meta={"upload_session": session.id})
    return await commit.commit_and_count(rt, caller, request, kind=session.kind,
                                         canvas_id=session.canvas_id, rev=session.rev,
                                         artifact_id=session.artifact_id, payload=payload,
                                         claim=_completion_claim(session))


def _record_sha(engine: Engine, session_id: str, sha256: str) -> None:
    with write_transaction(engine) as conn:
        conn.execute(update(upload_sessions).where(upload_sessions.c.id == session_id)
                     .values(sha256=sha256))


async def complete(rt: Runtime, caller: Caller, request: Request, canvas_id: str,
                   session_id: str) -> Response:
    session = await run_in_threadpool(find, rt, caller.ctx, canvas_id, session_id)
    if session.status == COMPLETED:
        return await _replay(rt, caller, request, session)
    if session.status == OPEN and session.expires_at <= _now():
        raise Conflict("the upload session has expired; open a new one", code="upload.expired")
    if not await run_in_threadpool(_claim, rt.engine, session.id):
        session = await run_in_threadpool(find, rt, caller.ctx, canvas_id, session_id)
        if session.status == COMPLETED:
            return await _replay(rt, caller, request, session)
        if session.status == COMPLETING:
            raise Conflict("the upload session is being completed by another request; "
                           "retry shortly", code="upload.in_progress")
        raise Conflict(f"the upload session is {session.status}", code="upload.closed")
    lease = rt.store.parts().lease_key(session.key, session.upload_id)
    try:
        blob = await run_in_threadpool(_assemble, rt.store, session)
    except ApiError as exc:
        back = OPEN if exc.code == INCOMPLETE else FAILED
        await run_in_threadpool(_set_status, rt.engine, session.id, back, when=COMPLETING)
        raise
    except BlobNotFound as exc:  # parts and object gone under it (gc, an abort)
        await run_in_threadpool(_set_status, rt.engine, session.id, FAILED, when=COMPLETING)
        raise Conflict("the session's parts are gone; open a new session",
                       code="upload.closed") from exc
    except Exception:
        await run_in_threadpool(_set_status, rt.engine, session.id, OPEN, when=COMPLETING)
        raise
    if session.sha256 is None:
        await run_in_threadpool(_record_sha, rt.engine, session.id, blob.sha256)
    try:
        response = await _create(rt, caller, request, session, blob)
    except idempotency.OutcomeUnknown:
        raise  # still claimed: the next complete resolves it by replaying
    except ApiError:
        await run_in_threadpool(_set_status, rt.engine, session.id, FAILED, when=COMPLETING)
        raise
    await run_in_threadpool(_set_status, rt.engine, session.id, COMPLETED, release=lease)
    return response


async def abort(rt: Runtime, caller: Caller, canvas_id: str, session_id: str) -> None:
    """DELETE of an open session: its parts are removed, nothing is created."""
    session = await run_in_threadpool(find, rt, caller.ctx, canvas_id, session_id)
    if session.status not in (OPEN, FAILED):
        raise Conflict(f"the upload session is {session.status}", code="upload.closed")
    parts = rt.store.parts()
    await run_in_threadpool(parts.abort, session.key, session.upload_id)
    await run_in_threadpool(_set_status, rt.engine, session.id, ABORTED, when=session.status,
                            release=parts.lease_key(session.key, session.upload_id))


# ---- gc -----------------------------------------------------------------------------


def expire_sessions(store: BlobStore, engine: Engine, now: datetime, *,
                    apply: bool) -> list[str]:
    """Open sessions past their expiry: their uploads aborted (with apply), the sessions
    marked expired. Returns the unfinished uploads' lease keys, as gc reports uploads."""
    c = upload_sessions.c
    with engine.connect() as conn:
        found = [_session(row) for row in conn.execute(select(upload_sessions).where(
            c.status == OPEN, c.expires_at <= now)).mappings()]
    parts = store.parts()
    for session in found if apply else ():
        parts.abort(session.key, session.upload_id)
        _set_status(engine, session.id, EXPIRED, when=OPEN,
                    release=parts.lease_key(session.key, session.upload_id))
    return [parts.lease_key(s.key, s.upload_id) for s in found]
