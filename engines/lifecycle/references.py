"""The reference model: which blobs committed records still point at.

Every column that holds a blob URI is listed here, once. Compensation after
a failed create, DELETE, retention, purge and `engines gc` all ask this
module "can anything committed reference this key?" before a blob is
removed, so adding a table that keeps URIs means adding one line below and
no deleting path can forget it.

URIs are stored canonical (`uris.canonical_uri`), so a reference is an exact
match on an indexed column. A row with `deleted_at` set is a tombstone: it no
longer keeps its blob alive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
from sqlalchemy import Column, Connection, Engine, case, exists, false, func, or_, select, true
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from starlette.concurrency import run_in_threadpool

from engines.canvas_artifacts.repository import canvas_artifacts
from engines.db.metadata import in_key_order
from engines.media_v2.repository import artifacts as media_artifacts
from engines.media_v2.repository import assets as media_assets
from engines.storage.base import BlobStore

log = logging.getLogger("engines.lifecycle.references")

URI_COLUMNS: dict[Column[str], ColumnElement[bool]] = {
    # a render-ref (no sha256: we never stored its bytes) points at a blob that is not
    # the artifact's own, so even deleted it never makes its target removable
    canvas_artifacts.c.uri: or_(canvas_artifacts.c.deleted_at.is_(None),
                                canvas_artifacts.c.sha256.is_(None)),
    media_assets.c.source_uri: true(),
    media_artifacts.c.uri: media_artifacts.c.deleted_at.is_(None),
}
"""Every column that may hold the URI of a blob in our store, and which of its rows
keep that blob alive (the others are tombstones)."""


def _live(column: Column[str]) -> ColumnElement[bool]:
    return URI_COLUMNS[column]


def is_referenced(conn: Connection, uri: str) -> bool:
    """True if any live committed row holds this (canonical) URI."""
    dialect = conn.dialect.name
    return any(conn.execute(select(exists().where(in_key_order(column, dialect) == uri,
                                                  _live(column)))).scalar()
               for column in URI_COLUMNS)


def referenced_among(conn: Connection, uris: Iterable[str]) -> set[str]:
    """Which of these (canonical) URIs a live committed row holds: one query per URI
    column for all of them, where `is_referenced` asks per URI."""
    left, found = set(uris), set()
    for column in URI_COLUMNS:
        if not left:
            break
        held = set(conn.execute(select(column).where(
            in_key_order(column, conn.dialect.name).in_(left), _live(column))
                                .distinct()).scalars())
        found |= held
        left -= held
    return found


@dataclass
class KeyRange:
    """What the database says about the keys of one stretch of a listing."""

    kept: set[str] = field(default_factory=set)
    """Keys a live row references: never to be deleted."""
    tombstoned: set[str] = field(default_factory=set)
    """Keys only deleted rows reference: their blobs are due for removal."""
    records: set[str] = field(default_factory=set)
    """Keys live canvas artifact records point at (each should be in the listing)."""


def references_between(conn: Connection, store: BlobStore, after: str, upto: str) -> KeyRange:
    """Every key in (after, upto] that a row of a URI column holds, in byte order.

    One index range scan per column (`in_key_order`: the listing's order, grouped in
    that order too, so the scan needs no sort), so gc holds one page of keys at a
    time, never the set of all of them.
    """
    low, high = store.uri_for(after), store.uri_for(upto)
    found = KeyRange()
    dialect = conn.dialect.name
    record_column = canvas_artifacts.c.uri
    for column, live in URI_COLUMNS.items():
        ordered = in_key_order(column, dialect)
        record = (canvas_artifacts.c.deleted_at.is_(None) if column is record_column
                  else false())
        rows = conn.execute(select(ordered, func.max(case((live, 1), else_=0)),
                                   func.max(case((record, 1), else_=0)))
                            .where(ordered > low, ordered <= high).group_by(ordered))
        for uri, keeps, is_record in rows:
            key = store.key_for(uri)
            if key is None:
                continue
            (found.kept if keeps else found.tombstoned).add(key)
            if is_record:
                found.records.add(key)
    found.tombstoned -= found.kept
    return found


def live_records_at(conn: Connection, store: BlobStore, keys: Iterable[str]) -> list[str]:
    """Ids of the live canvas artifact records whose blob is one of these keys."""
    c = canvas_artifacts.c
    uris = [store.uri_for(key) for key in keys]
    return list(conn.execute(select(c.id).where(
        in_key_order(c.uri, conn.dialect.name).in_(uris), c.deleted_at.is_(None))
        .order_by(c.id)).scalars()) if uris else []


def delete_if_unreferenced(engine: Engine, store: BlobStore, key: str) -> bool:
    """Remove the blob unless a committed record references it; True if removed.

    If the database cannot be asked, this raises and nothing is removed.
    """
    with engine.connect() as conn:
        if is_referenced(conn, store.uri_for(key)):
            log.warning("kept blob %s: a committed record references it", key)
            return False
    store.delete(key)
    return True


def delete_unreferenced(engine: Engine, store: BlobStore, keys: list[str]) -> list[str]:
    """`delete_if_unreferenced` for many keys, asked of the database together; returns the
    keys it could not remove (each failure is logged and left to gc)."""
    with engine.connect() as conn:
        held = referenced_among(conn, [store.uri_for(key) for key in keys])
    failed, kept = [], []
    for key in keys:
        if store.uri_for(key) in held:
            kept.append(key)
            continue
        try:
            store.delete(key)
        except Exception:  # noqa: BLE001 - the caller's delete stands; gc removes it later
            log.exception("could not remove the blob %s", key)
            failed.append(key)
    if kept:  # another live row holds them (a media_v2 asset, say): expected, one line
        log.info("kept %d of %d blobs that committed records still reference (first: %s)",
                 len(kept), len(keys), kept[0])
    return failed


def _discard(engine: Engine, store: BlobStore, key: str) -> None:
    try:
        delete_if_unreferenced(engine, store, key)
    except DBAPIError:
        # the database is unreachable, so nothing could commit a reference to this key
        log.warning("could not check the references of %s; removing it", key)
        store.delete(key)


async def discard_fresh_blob(engine: Engine, store: BlobStore, key: str) -> None:
    """Compensation for a create whose transaction did not commit; even under cancellation.

    The key was made for this request only, so once its transaction has
    certainly not committed, a reference can only come from a row written
    since (an `s3://` URI registered through media_v2): asked when the
    database answers. A create whose COMMIT outcome is unknown never comes
    here; its blob stays for gc. A failure is logged, not raised: the request
    already has its answer, and `engines gc` removes what this could not.
    """
    with anyio.CancelScope(shield=True):
        try:
            await run_in_threadpool(_discard, engine, store, key)
        except Exception:  # noqa: BLE001 - see docstring
            log.exception("could not delete orphan blob %s", key)
