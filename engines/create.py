"""The create protocol: a stored blob, one transaction with the idempotency claim, one outcome.

Every create that commits rows (canvas artifacts, upload-session completions,
imports, media_v2 assets and artifacts) goes through `create_stored`, so its
rules exist once:

- the rows are written in one transaction that also claims the
  Idempotency-Key (`idempotency.write_once`, which also runs a transaction
  again when the connection was lost before COMMIT);
- a key already taken replays the stored first response (`Replayed`) and the
  request's fresh blob is discarded;
- a COMMIT whose outcome is unknown keeps the blob (the rows may reference
  it; gc decides once it can read) and answers 503 `metadata.outcome_unknown`;
- any other failure discards the blob; an unexpected one (not an ApiError) is
  logged and answered 503 `metadata.write_failed`.

It sits in the runtime layer: it needs the Runtime's `discard_fresh_blob`
(lifecycle's reference model, wired in by the app).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from engines.db.idempotency import (
    IdempotencyClaim,
    OutcomeUnknown,
    Probe,
    Replayed,
    Writer,
    write_once,
)
from engines.http.errors import ApiError, ServiceUnavailable
from engines.runtime import Runtime
from engines.storage.base import StoredBlob

log = logging.getLogger("engines.create")

T = TypeVar("T")

@dataclass(frozen=True, slots=True)
class Created(Generic[T]):
    """The rows committed: the record and the 201 body stored with its key."""

    record: T
    body: bytes

    def response(self) -> Response:
        return Response(self.body, status_code=201, media_type="application/json")


Again = Callable[[IntegrityError], Writer]
"""After a constraint failure, the writer to run the transaction once more with; raising
(the error itself, or an ApiError) refuses to."""


async def create_stored(rt: Runtime, record: T, body: bytes, write: Writer, committed: Probe,
                        *, record_id: str, blob: StoredBlob | None = None,
                        claim: IdempotencyClaim | None = None, body_sha256: str = "",
                        again: Again | None = None) -> Created[T] | Replayed:
    """Commit `write` for `record` (answered with `body`, 201) and own the fresh `blob`.

    `committed` reads whether the rows exist (an unknown COMMIT outcome is
    resolved by it); `again`, when given, decides whether a constraint failure
    is run once more with another writer (a stale cache entry skipped an
    insert the rows need).
    """
    try:
        replayed = await _write(rt, write, committed, claim, body_sha256, body, again)
    except OutcomeUnknown:
        raise  # the rows may be committed: the blob stays, gc decides when it can read
    except BaseException as exc:
        if blob is not None:
            await rt.discard_fresh_blob(blob.key)
        if isinstance(exc, Exception) and not isinstance(exc, ApiError):
            log.exception("metadata write failed for %s", record_id)
            raise ServiceUnavailable("metadata write failed; nothing was stored",
                                     code="metadata.write_failed") from exc
        raise
    if replayed is not None:
        if blob is not None:
            await rt.discard_fresh_blob(blob.key)
        return replayed
    return Created(record, body)


async def _write(rt: Runtime, write: Writer, committed: Probe, claim: IdempotencyClaim | None,
                 body_sha256: str, body: bytes, again: Again | None) -> Replayed | None:
    def attempt(writer: Writer) -> Awaitable[Replayed | None]:
        return write_once(rt.engine, writer, committed, claim=claim, body_sha256=body_sha256,
                          status=201, body=body)

    try:
        return await attempt(write)
    except IntegrityError as exc:
        if again is None:
            raise
        retry = again(exc)
    return await attempt(retry)
