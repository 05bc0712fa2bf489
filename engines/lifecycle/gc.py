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

The listing streams: a page of keys at a time (in key order) is checked
against the database rows in the same key range, so memory holds a few
pages, not the set of every key (1M blobs scan in well under 300 MiB).

Interlock: orphans are blobs nothing knows about, so a store mounted in the
wrong place, or the wrong database, makes *everything* look orphaned. With
`apply`, gc refuses to delete more orphans than `max_share` of the store's
objects unless forced, and deletes nothing at all in that case.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from engines.canvas_artifacts.uploads import expire_sessions
from engines.common.read_ahead import read_ahead
from engines.db.writer import write_transaction
from engines.lifecycle.references import (
    delete_if_unreferenced,
    live_records_at,
    references_between,
)
from engines.observability import metrics
from engines.storage.base import BlobInfo, BlobStore
from engines.storage.leases import drop_expired, live_leases

PREFIX = "tenants/"
END = "tenants0"
"""Just past every key under PREFIX ("0" follows "/"): where the last range ends."""
PAGE = 1000
"""Keys per listing page checked against the database together (S3 lists 1000 a call)."""
PROGRESS_EVERY = 100_000


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
    rate: float = 0.0
    """Blobs listed and checked per second."""

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
            "scan_rate_per_s": round(self.rate),
        }

    def planned(self) -> list[tuple[str, str]]:
        """(reason, key) of everything this run deletes (or would, in a dry run)."""
        return ([("deleted_record", k) for k in self.deleted_record_blobs]
                + [("orphan", k) for k in self.orphan_blobs]
                + [("abandoned_upload", k) for k in self.incomplete_uploads]
                + [("expired_upload_session", k) for k in self.expired_sessions])


def _pages(blobs: Iterator[BlobInfo]) -> Iterator[list[BlobInfo]]:
    page: list[BlobInfo] = []
    for info in blobs:
        page.append(info)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def _scan(store: BlobStore, engine: Engine, report: GcReport, cutoff: datetime,
          progress: Callable[[str], None]) -> None:
    """The listing, a page at a time, against the database range of the same keys.

    The store lists in key order; each page asks the database only about the
    keys between the previous page's last key and its own, so memory holds a few
    pages (and what the report lists), however many blobs there are. The next
    page is listed while this one is checked (`read_ahead`); a page is still
    listed before the database is asked about its range.
    """
    started = time.monotonic()
    after = PREFIX
    listing = read_ahead(_pages(store.iter_blobs(PREFIX)), "engines-gc-listing")
    with contextlib.closing(listing):
        for page in itertools.chain(listing, [[]]):
            upto = page[-1].key if page else END
            with engine.connect() as conn:
                known = references_between(conn, store, after, upto)
                listed = {info.key for info in page}
                report.missing_blobs += live_records_at(conn, store, known.records - listed)
            for info in page:
                if info.key in known.kept:
                    continue
                if info.key in known.tombstoned:
                    report.deleted_record_blobs.append(info.key)
                elif info.modified <= cutoff:
                    report.orphan_blobs.append(info.key)
            before = report.scanned // PROGRESS_EVERY
            report.scanned += len(page)
            if report.scanned // PROGRESS_EVERY > before:
                rate = report.scanned / max(time.monotonic() - started, 1e-9)
                progress(f"gc: scanned {report.scanned} blobs ({rate:,.0f} blobs/s)")
            after = upto
    report.rate = report.scanned / max(time.monotonic() - started, 1e-9)


def collect(store: BlobStore, engine: Engine, *, older_than: timedelta, apply: bool,
            force: bool = False, max_share: float = 0.10,
            progress: Callable[[str], None] = lambda _m: None) -> GcReport:
    report = GcReport(applied=apply)
    now = datetime.now(UTC)
    cutoff = now - older_than
    with engine.connect() as conn:
        leased = live_leases(conn, now)
    _scan(store, engine, report, cutoff, progress)
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
    progress(f"gc: {report.scanned} blobs scanned ({report.rate:,.0f} blobs/s), "
             f"{len(report.deleted_record_blobs)} of "
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
    with write_transaction(engine) as conn:
        drop_expired(conn, datetime.now(UTC))
    metrics.record_gc(report.deleted)
