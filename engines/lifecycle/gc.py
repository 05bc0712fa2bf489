"""Garbage collection: blobs no committed record points to, and records without blobs.

What gc may delete, and nothing else:
- *deleted-record blobs*: blobs whose records are tombstones (DELETE or
  retention removed the record, then could not remove the blob);
- *orphan blobs*: finished objects under `tenants/` that no row of any URI
  column references (a create killed between writing its blob and its
  metadata), once older than the grace period;
- *abandoned uploads*: unfinished uploads (temporary files in `_uploads/`,
  S3 multipart uploads) older than the grace period and holding no live
  upload lease;
- *expired upload sessions*: open sessions past their expiry, whose parts
  are aborted (their lease ends with them).
Before each delete the reference model is asked again (a slow create may
have committed since the scan). Records whose blob is missing are reported.

Interlock: orphans are blobs nothing knows about, so a store mounted in the
wrong place, or the wrong database, makes *everything* look orphaned. With
`apply`, gc refuses to delete more orphans than `max_share` of the store's
objects unless forced, and deletes nothing at all in that case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from engines.canvas_artifacts.repository import canvas_artifacts
from engines.canvas_artifacts.uploads import expire_sessions
from engines.lifecycle.references import (
    delete_if_unreferenced,
    referenced_keys,
    tombstoned_keys,
)
from engines.observability import metrics
from engines.storage.base import BlobInfo, BlobStore
from engines.storage.leases import drop_expired, live_leases

PREFIX = "tenants/"


@dataclass
class GcReport:
    scanned: int = 0
    deleted_record_blobs: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)
    incomplete_uploads: list[str] = field(default_factory=list)
    expired_sessions: list[str] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)
    deleted: int = 0
    kept_referenced: int = 0
    applied: bool = False
    refused: str | None = None

    def summary(self) -> dict[str, object]:
        return {
            "scanned_blobs": self.scanned,
            "deleted_record_blobs": len(self.deleted_record_blobs),
            "orphan_blobs": len(self.orphan_blobs),
            "incomplete_uploads": len(self.incomplete_uploads),
            "expired_upload_sessions": len(self.expired_sessions),
            "records_missing_blob": self.missing_blobs,
            "deleted": self.deleted,
            "kept_referenced": self.kept_referenced,
            "applied": self.applied,
            "refused": self.refused,
        }

    def planned(self) -> list[tuple[str, str]]:
        """(reason, key) of everything this run deletes (or would, in a dry run)."""
        return ([("deleted_record", k) for k in self.deleted_record_blobs]
                + [("orphan", k) for k in self.orphan_blobs]
                + [("abandoned_upload", k) for k in self.incomplete_uploads]
                + [("expired_upload_session", k) for k in self.expired_sessions])


def _records_missing_blob(engine: Engine, store: BlobStore) -> list[str]:
    missing = []
    with engine.connect() as conn:
        rows = conn.execute(select(canvas_artifacts.c.id, canvas_artifacts.c.uri).where(
            canvas_artifacts.c.deleted_at.is_(None)))
        for artifact_id, uri in rows:
            key = store.key_for(uri)
            if key is not None and not store.exists(key):
                missing.append(artifact_id)
    return missing


def collect(store: BlobStore, engine: Engine, *, older_than: timedelta, apply: bool,
            force: bool = False, max_share: float = 0.10,
            progress: Callable[[str], None] = lambda _m: None) -> GcReport:
    report = GcReport(applied=apply)
    now = datetime.now(UTC)
    cutoff = now - older_than
    with engine.connect() as conn:
        referenced = referenced_keys(conn, store)
        tombstoned = tombstoned_keys(conn, store, referenced)
        leased = live_leases(conn, now)
    progress(f"gc: {len(referenced)} blobs referenced by live records, "
             f"{len(tombstoned)} only by deleted ones")
    for info in store.iter_blobs(PREFIX):
        report.scanned += 1
        if report.scanned % 10_000 == 0:
            progress(f"gc: scanned {report.scanned} blobs")
        if info.key in referenced:
            continue
        if info.key in tombstoned:
            report.deleted_record_blobs.append(info.key)
        elif info.modified <= cutoff:
            report.orphan_blobs.append(info.key)
    report.expired_sessions = expire_sessions(store, engine, now, apply=apply)
    uploads: list[BlobInfo] = [info for info in store.iter_uploads()
                               if info.modified <= cutoff and info.key not in leased]
    report.incomplete_uploads = [info.key for info in uploads]
    if len(report.orphan_blobs) > max_share * report.scanned and apply and not force:
        report.refused = (f"{len(report.orphan_blobs)} of {report.scanned} blobs look orphaned, "
                          f"more than {max_share:.0%}: is MEDIA_LOCAL_ROOT/RAW_BUCKET the store "
                          "of this DATABASE_URL? Re-run with --force if this is right")
    elif apply:
        _apply(store, engine, report, uploads)
    report.missing_blobs = _records_missing_blob(engine, store)
    progress(f"gc: {report.scanned} blobs scanned, {len(report.deleted_record_blobs)} of "
             f"deleted records, {len(report.orphan_blobs)} orphans, "
             f"{len(report.incomplete_uploads)} abandoned uploads, "
             f"{len(report.missing_blobs)} records missing their blob")
    return report


def _apply(store: BlobStore, engine: Engine, report: GcReport, uploads: list[BlobInfo]) -> None:
    for key in report.deleted_record_blobs + report.orphan_blobs:
        if delete_if_unreferenced(engine, store, key):
            report.deleted += 1
        else:
            report.kept_referenced += 1
    for info in uploads:
        store.discard_incomplete(info)
        report.deleted += 1
    with engine.begin() as conn:
        drop_expired(conn, datetime.now(UTC))
    metrics.record_gc(report.deleted)
