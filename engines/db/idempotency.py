"""Idempotency-Key on POST: a retry replays the first response, writes nothing.

The key is claimed inside the same transaction as the records it produced,
so two concurrent retries cannot both create: the second one's insert
conflicts on (tenant_id, env, key), it rolls back (its blob is deleted by
`create_stored`) and it answers with the stored first response (`Replayed`). The
create protocol built on this (blob clean-up, error mapping) is
`engines/create.py`.

`write_once` is also where a create's transaction meets a lost connection.
Lost before COMMIT: nothing was written, so the transaction runs once more
(`retry_on_disconnect`, the one rule for that).
Lost during COMMIT: the outcome is unknown, and it is resolved by reading
whether the create's own rows exist, never by running it again (a rerun
would find its own committed key and "replay" it, and the caller would then
discard the blob of a committed record).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.auth.routing import RequestContext
from engines.db.engine import retry_on_disconnect
from engines.db.metadata import UtcDateTime, metadata
from engines.db.writer import CommitOutcomeUnknown, defer_insert, run_write
from engines.http.errors import BadRequest, Conflict, ServiceUnavailable
from engines.http.params import IDEMPOTENCY_KEY_MAX

log = logging.getLogger("engines.idempotency")

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("env", String(16), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

_INSERT_KEY = insert(idempotency_keys)  # built once: it runs in every keyed create


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A key and what identifies the request it was first used with.

    `caller` is who sent it and every routing header the record keeps (actor,
    project, workspace, surface, app): the same key and body from another
    actor or for another project is another request, so it must be a 409, not
    a replay of a record that names someone else. Per-request ids (request
    and correlation ids) are left out: a retry carries new ones.
    """

    tenant_id: str
    env: str
    key: str
    request_line: str
    caller: str

    def fingerprint(self, body_sha256: str) -> str:
        text = f"{self.request_line}\n{self.caller}\n{body_sha256}"
        return hashlib.sha256(text.encode()).hexdigest()


def _caller_line(ctx: RequestContext, actor_id: str) -> str:
    # NUL-separated: no component may contain one (ids are safe ids, subjects printable)
    return "\x00".join((actor_id, ctx.project_id, ctx.workspace_id or "",
                        ctx.surface_id or "", ctx.app_id or ""))


def claim_from(request: Request, ctx: RequestContext, actor_id: str) -> IdempotencyClaim | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1-255 printable characters",
                         code="request.bad_idempotency_key")
    query = "&".join(sorted(request.url.query.split("&"))) if request.url.query else ""
    line = f"{request.method} {request.url.path}?{query}"
    return IdempotencyClaim(ctx.tenant_id, ctx.env, key, line, _caller_line(ctx, actor_id))


def _store(conn: Connection, claim: IdempotencyClaim, body_sha256: str, status: int,
           body: bytes) -> None:
    defer_insert(conn, _INSERT_KEY, {
        "tenant_id": claim.tenant_id, "env": claim.env, "key": claim.key,
        "fingerprint": claim.fingerprint(body_sha256), "status": status, "body": body,
        "created_at": datetime.now(UTC),
    })


class OutcomeUnknown(ServiceUnavailable):
    """503: the COMMIT's outcome could not be read back; keep what it may reference."""

    code = "metadata.outcome_unknown"


RESOLVE_DELAYS = (0.0, 0.2, 1.0, 3.0)
"""Pauses before each read that resolves an unknown COMMIT outcome."""

Probe = Callable[[Connection], bool]
"""Given a fresh connection, whether the create's rows are committed."""


Writer = Callable[[Connection], None]
"""A create's rows, written on the transaction that also claims the key."""


@dataclass(frozen=True, slots=True)
class Replayed:
    """The stored first response of a key: what a retry is answered with (nothing written)."""

    status: int
    body: bytes

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type="application/json",
                        headers={"Idempotent-Replayed": "true"})


@retry_on_disconnect
async def write_once(engine: Engine, write: Writer, committed: Probe, *,
                     claim: IdempotencyClaim | None, body_sha256: str, status: int,
                     body: bytes) -> Replayed | None:
    """Run write(conn) in one transaction that also claims the key with (status, body).

    Returns None when the writes committed, or the replayed first response
    (nothing written) when the key was already taken; a reused key with a
    different request raises Conflict. If the COMMIT's outcome cannot be
    learned, raises OutcomeUnknown: the caller must then keep whatever the
    rows would reference. Other failures propagate (nothing was committed);
    a connection lost before COMMIT runs the transaction once more.
    """
    def transaction(conn: Connection) -> None:
        if claim is not None:
            _store(conn, claim, body_sha256, status, body)
        write(conn)

    try:
        await run_write(engine, transaction)
    except CommitOutcomeUnknown:
        return await run_in_threadpool(_resolve, engine, committed)
    except IntegrityError as exc:
        if claim is None or not _is_key_conflict(exc):
            raise
        return await run_in_threadpool(_replay, engine, claim, body_sha256)
    return None


def _resolve(engine: Engine, committed: Probe) -> None:
    """Learn an unknown COMMIT's outcome by reading: None if it committed."""
    for delay in RESOLVE_DELAYS:
        time.sleep(delay)
        try:
            with engine.connect() as conn:
                done = committed(conn)
        except DBAPIError:
            log.warning("could not read back a create whose COMMIT reply was lost")
            continue
        if done:
            log.warning("COMMIT reply lost, but the rows are there: the create succeeded")
            return None
        raise ServiceUnavailable("the database connection was lost; nothing was stored",
                                 code="metadata.write_failed")
    raise OutcomeUnknown("the database connection was lost while committing and the "
                         "outcome could not be read back; retry with the same Idempotency-Key")


def _replay(engine: Engine, claim: IdempotencyClaim, body_sha256: str) -> Replayed:
    """The stored response for this key, or 409 if it was used for another request."""
    with engine.connect() as conn:
        row = conn.execute(select(idempotency_keys).where(
            idempotency_keys.c.tenant_id == claim.tenant_id,
            idempotency_keys.c.env == claim.env,
            idempotency_keys.c.key == claim.key)).mappings().first()
    if row is None:
        raise Conflict("Idempotency-Key is in use by a request that did not complete",
                       code="idempotency.in_progress")
    if row["fingerprint"] != claim.fingerprint(body_sha256):
        raise Conflict("Idempotency-Key was already used with a different request",
                       code="idempotency.key_reused")
    return Replayed(row["status"], row["body"])


def _is_key_conflict(exc: IntegrityError) -> bool:
    text = f"{exc.orig} {exc.statement or ''}"
    return "idempotency_keys" in text
