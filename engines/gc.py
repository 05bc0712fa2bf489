"""Garbage collection: blobs no committed record points to, and records without blobs.

A create writes its blob before its metadata commits, so a process killed
in between leaves an orphan blob (or an unfinished upload). Those are found
here and, with apply, deleted once older than the grace period, which keeps
uploads that are still in flight safe. A blob that any committed record
points to is never deleted; records whose blob is missing are reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from engines.canvas_artifacts.repository import canvas_artifacts
from engines.media_v2.repository import assets
from engines.storage.base import BlobStore

PREFIX = "tenants/"


@dataclass
class GcReport:
    orphan_blobs: list[str] = field(default_factory=list)
    incomplete_uploads: list[str] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)
    deleted: int = 0
    scanned: int = 0
    applied: bool = False

    def summary(self) -> dict[str, object]:
        return {"scanned_blobs": self.scanned, "orphan_blobs": len(self.orphan_blobs),
                "incomplete_uploads": len(self.incomplete_uploads),
                "records_missing_blob": self.missing_blobs, "deleted": self.deleted,
                "applied": self.applied}


def _referenced(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        uris = set(conn.execute(select(canvas_artifacts.c.uri)).scalars())
        uris |= set(conn.execute(select(assets.c.source_uri)).scalars())
    return uris


def _still_referenced(engine: Engine, uri: str) -> bool:
    """Re-check one URI right before deleting: a slow create may have committed since."""
    with engine.connect() as conn:
        for column in (canvas_artifacts.c.uri, assets.c.source_uri):
            if conn.execute(select(column).where(column == uri).limit(1)).first():
                return True
    return False


def _records_with_blobs(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.id, r.uri) for r in conn.execute(
            select(canvas_artifacts.c.id, canvas_artifacts.c.uri))]


def collect(store: BlobStore, engine: Engine, *, older_than: timedelta, apply: bool,
            progress: Callable[[str], None] = lambda _m: None) -> GcReport:
    report = GcReport(applied=apply)
    cutoff = datetime.now(UTC) - older_than
    referenced = _referenced(engine)
    progress(f"gc: {len(referenced)} URIs referenced by committed records")
    for info in store.iter_blobs(PREFIX):
        report.scanned += 1
        if report.scanned % 10_000 == 0:
            progress(f"gc: scanned {report.scanned} blobs")
        if info.modified > cutoff:
            continue
        if not info.complete:
            report.incomplete_uploads.append(info.key)
            if apply:
                store.discard_incomplete(info)
                report.deleted += 1
            continue
        uri = store.uri_for(info.key)
        if uri in referenced:
            continue
        report.orphan_blobs.append(info.key)
        if apply and not _still_referenced(engine, uri):
            store.delete(info.key)
            report.deleted += 1
    for artifact_id, uri in _records_with_blobs(engine):
        key = store.key_for(uri)
        if key is not None and not store.exists(key):
            report.missing_blobs.append(artifact_id)
    progress(f"gc: {report.scanned} blobs scanned, {len(report.orphan_blobs)} orphans, "
             f"{len(report.incomplete_uploads)} unfinished uploads, "
             f"{len(report.missing_blobs)} records missing their blob")
    return report
