"""The end of an artifact's life: delete, expire (retention) and tenant purge.

A delete is two steps, in this order:
1. one transaction marks the artifact deleted everywhere (the record and its
   media_v2 DerivedArtifact become tombstones, the replay index goes) and
   writes the Nexus `DatasetEvent` `canvas.{kind}.deleted` (or `.expired`);
2. the blob is removed, if the reference model says nothing live still
   points at it. A failure here changes nothing for the caller: the blob is
   a deleted-record blob now, and `engines gc` removes it.
A crash between the two is the same case. Nothing is ever removed before
the transaction that makes it unreferenced has committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, update

from engines.canvas_artifacts import quotas
from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.commit import record_lineage
from engines.canvas_artifacts.models import KINDS, ArtifactRecord
from engines.canvas_artifacts.variants.repository import tombstone_variants
from engines.common.ids import new_id
from engines.db.writer import CommitOutcomeUnknown, write_transaction
from engines.http.errors import ApiError, NotFound, ServiceUnavailable
from engines.lifecycle import retention
from engines.lifecycle.references import delete_unreferenced
from engines.lineage.dataset_events import DatasetEvent
from engines.media_v2 import repository as media_repo
from engines.observability import metrics
from engines.runtime import Runtime

log = logging.getLogger("engines.lifecycle")

BATCH = 500
"""Most artifacts per transaction in bulk deletes and expiry: bounded memory and lock time
(a batch holds its (tenant, env) usage row and event counter from its events' insert
until it commits: creates there wait for it, so that must stay well within a second;
every batch is a few statements, and `BatchTimes` measures both, which bench/scale.py
reports, and shrinks the next batch when one ran long)."""
BATCH_SECONDS = 0.5
"""What a bulk delete's batch aims to commit within: one that took longer halves the next
(down to one artifact), one that took under half of it grows the next by half (up to
BATCH). A fixed size cannot hold the bound everywhere: on a cold disk at 10M records each
tombstone is a dozen index-page reads, and 200 of them took seconds."""
SYSTEM_ACTOR = "system"
PROGRESS_EVERY = 50_000
PROGRESS_SECONDS = 10.0
"""Retention prints a progress line each time this many more artifacts have expired, and
at least this often."""


@dataclass(frozen=True, slots=True)
class Deletion:
    """Who removes artifacts, and why (`deleted` by a caller, `expired` by retention)."""

    reason: str
    actor_id: str
    request_id: str
    correlation_id: str
    mode: str | None = None
    """The deleter's X-Mode, when sent."""


def _event(record: ArtifactRecord, deletion: Deletion, document_id: str,
           now: datetime) -> DatasetEvent:
    # the artifact's lineage, with the deleter's actor, request and correlation ids
    lineage = {**record_lineage(record), "actor_id": deletion.actor_id,
               "request_id": deletion.request_id, "correlation_id": deletion.correlation_id,
               "reason": deletion.reason, "deleted_at": now.isoformat(), "mode": deletion.mode}
    return DatasetEvent(id=new_id("dse"), tenant_id=record.tenant_id, env=record.env,
                        event_type=f"canvas.{record.kind}.{deletion.reason}",
                        subject_id=record.id, document_id=document_id,
                        lineage=lineage, created_at=now)


def _tombstone(conn: Connection, rt: Runtime, records: list[ArtifactRecord],
               deletion: Deletion, variant_uris: list[str]) -> list[ArtifactRecord]:
    """Step 1 for a batch of one (tenant, env), on the caller's transaction: the records
    not already deleted, tombstoned with their media_v2 artifacts, replay indexes and
    image variants (whose URIs are added to variant_uris); `_announce` then takes them
    out of the usage and writes their events.

    Set-based: one statement per table for the whole batch, however large."""
    if not records:
        return []
    tenant_id, env = records[0].tenant_id, records[0].env
    if any((r.tenant_id, r.env) != (tenant_id, env) for r in records):
        raise ValueError("a deletion batch is of one tenant and env")
    now = datetime.now(UTC)
    c = repo.canvas_artifacts.c
    marked = set(conn.execute(update(repo.canvas_artifacts).where(
        c.tenant_id == tenant_id, c.env == env, c.id.in_([r.id for r in records]),
        c.deleted_at.is_(None)).values(deleted_at=now).returning(c.id)).scalars())
    done = [r for r in records if r.id in marked]
    if not done:
        return []
    ids = [r.id for r in done]
    media_repo.mark_artifacts_deleted(conn, tenant_id, env,
                                     [r.media_artifact_id for r in done], now)
    conn.execute(delete(repo.replay_indexes).where(repo.replay_indexes.c.artifact_id.in_(ids)))
    variant_uris.extend(tombstone_variants(conn, tenant_id, env, ids, now))
    return done


def _announce(conn: Connection, rt: Runtime, done: list[ArtifactRecord],
              deletion: Deletion) -> float:
    """The batch's usage and deletion events: the last statements of its transaction.

    Everything read first (the documents the events name), then the two rows every
    create of the scope also writes: its usage row(s) and its event counter (which
    takes the batch's count in one upsert). Creates wait on those from here to the
    commit; returns when that began (time.monotonic()), for `BatchTimes`."""
    now = datetime.now(UTC)
    if not done:
        return time.monotonic()
    tenant_id, env = done[0].tenant_id, done[0].env
    documents = rt.nexus.first_documents(conn, tenant_id, env, [r.id for r in done])
    events = [_event(r, deletion, documents.get(r.id, ""), now) for r in done]
    locked = time.monotonic()
    quotas.count_deleted(conn, done)
    rt.nexus.record_events(conn, events)
    return locked


def _remove_blobs(rt: Runtime, uris: list[str]) -> None:
    """Step 2: each blob, unless still referenced (asked for the batch at once); failures
    are left to gc."""
    keys = [key for key in dict.fromkeys(rt.store.key_for(uri) for uri in uris) if key]
    if not keys:
        return
    try:
        delete_unreferenced(rt.engine, rt.store, keys)
    except Exception:  # noqa: BLE001 - the delete stands; gc removes the blobs later
        log.exception("could not remove the blobs of %d deleted artifacts", len(keys))


@dataclass(slots=True)
class BatchTimes:
    """How long a bulk delete's batches took: the longest transaction, and the longest
    hold of the scope's usage row and event counter (from updating them to the end of
    the commit), which is what a create beside the delete can wait for. Seconds. And so
    how many artifacts the next batch takes (`BATCH_SECONDS`)."""

    batches: int = 0
    longest: float = 0.0
    longest_lock: float = 0.0
    size: int = 0
    """The next batch's size; 0 until a batch was timed: BATCH (read when asked, so a test
    can set it)."""

    def next_size(self) -> int:
        return self.size or BATCH

    def add(self, took: float, locked: float) -> None:
        self.batches += 1
        self.longest = max(self.longest, took)
        self.longest_lock = max(self.longest_lock, locked)
        size = self.next_size()
        if took > BATCH_SECONDS:
            self.size = max(1, size // 2)
        elif took < BATCH_SECONDS / 2:
            self.size = min(BATCH, size + max(1, size // 2))

    def summary(self) -> str:
        return (f"{self.batches} batches, longest {self.longest * 1000:.0f} ms, usage and "
                f"event counter held at most {self.longest_lock * 1000:.0f} ms")


def _delete_batch(rt: Runtime, load: Callable[[Connection], list[ArtifactRecord]],
                  deletion: Deletion, times: BatchTimes | None = None) -> list[ArtifactRecord]:
    """One transaction: load records, tombstone them; then remove their blobs."""
    done: list[ArtifactRecord] = []
    variant_uris: list[str] = []
    started = time.monotonic()
    try:
        with write_transaction(rt.engine) as conn:
            done = _tombstone(conn, rt, load(conn), deletion, variant_uris)
            locked = _announce(conn, rt, done, deletion)
        if times is not None:
            finished = time.monotonic()
            times.add(finished - started, finished - locked)
    except CommitOutcomeUnknown as exc:
        # the blobs are kept: a committed tombstone makes them gc's, an uncommitted one
        # leaves the artifacts live; a retry of the request finishes the job either way
        raise ServiceUnavailable("the database connection was lost while committing the "
                                 "delete; retry it", code="metadata.outcome_unknown") from exc
    except ApiError:
        raise
    except Exception as exc:
        log.exception("could not record a deletion")
        raise ServiceUnavailable("metadata write failed; nothing was deleted by this batch",
                                 code="metadata.write_failed") from exc
    for record in done:
        # this process at once; every other one when its events hub reads the event
        rt.caches.drop((record.tenant_id, record.env), record.id)
    # a render-ref (no sha256) points at a blob that is not ours to remove
    _remove_blobs(rt, [r.uri for r in done if r.sha256 is not None] + variant_uris)
    for record in done:
        metrics.record_deleted(record.kind, deletion.reason)
    return done


def _not_found() -> NotFound:
    return NotFound("artifact not found", code="canvas.not_found")


def delete_artifact(rt: Runtime, tenant_id: str, env: str, canvas_id: str, artifact_id: str,
                    deletion: Deletion) -> ArtifactRecord:
    """DELETE one artifact; 404 if it is missing, foreign or already deleted."""
    def load(conn: Connection) -> list[ArtifactRecord]:
        record = repo.get_record(conn, tenant_id, env, canvas_id, artifact_id)
        if record is None:
            raise _not_found()
        return [record]

    done = _delete_batch(rt, load, deletion)
    if not done:
        raise _not_found()  # a concurrent delete won
    return done[0]


def delete_canvas(rt: Runtime, tenant_id: str, env: str, canvas_id: str,
                  deletion: Deletion) -> int:
    """Every live artifact of a canvas, up to BATCH per transaction (paced by
    `BatchTimes`); a retry finishes the job. Logs how many, and how long its batches (and
    their event-counter locks) took.

    Newest first, each batch below the last one's oldest id: a batch that listed from the
    top again would walk every tombstone the earlier ones left (the list index holds
    them too), 100k of them by the end of a 100k-artifact canvas. Once that walk finds
    nothing, one more from the top catches what was created meanwhile; it walks the
    tombstones once."""
    deleted = 0
    times = BatchTimes()
    below: str | None = None
    while True:
        batch = _delete_batch(rt, lambda conn, below=below: repo.list_records(
            conn, tenant_id, env, canvas_id, kind=None, rev=None, before_id=below,
            limit=times.next_size()), deletion, times)
        if batch:
            deleted += len(batch)
            below = min(record.id for record in batch)
        elif below is not None:
            below = None
        else:
            log.info("deleted canvas %s/%s %s: %d artifacts; %s", tenant_id, env, canvas_id,
                     deleted, times.summary())
            return deleted


# ---- retention --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpiryPlan:
    tenant_id: str
    env: str
    kind: str
    cutoff: datetime
    count: int
    """Live artifacts created before the cutoff (`retention.count_candidates`): all of
    them expire, unless the newest of each canvas is kept, when this is an upper bound."""


def expiry_plans(rt: Runtime, now: datetime) -> list[ExpiryPlan]:
    """Per (tenant, env, kind) with a retention in force, how many artifacts are past it."""
    plans = []
    with rt.engine.connect() as conn:
        found = retention.overrides(conn)
        for kind in KINDS:
            for tenant_id, env in retention.scopes_with_artifacts(conn, kind):
                keep = retention.effective_keep(rt.settings, found, tenant_id, env, kind)
                if keep is None:
                    continue
                cutoff = now - keep
                count = retention.count_candidates(conn, tenant_id, env, kind, cutoff)
                if count:
                    plans.append(ExpiryPlan(tenant_id, env, kind, cutoff, count))
    return plans


DRY_RUN_PAGE = 5000
"""Ids a dry run reads per statement, each page on from the last one's end."""


def would_expire(rt: Runtime, plan: ExpiryPlan) -> Iterator[list[str]]:
    """The ids a dry run lists, a page at a time: what `expire` would remove now, oldest
    first."""
    after: tuple[datetime, str] | None = None
    with rt.engine.connect() as conn:
        while page := retention.expired(conn, plan.tenant_id, plan.env, plan.kind,
                                        plan.cutoff, after=after, limit=DRY_RUN_PAGE,
                                        keep_latest=rt.settings.retention_keep_latest):
            yield [artifact_id for _created, artifact_id in page]
            after = page[-1]


def expire(rt: Runtime, plan: ExpiryPlan, times: BatchTimes) -> Iterator[list[str]]:
    """Expire what one plan found, up to BATCH per transaction (paced by `times`);
    yields each batch's ids.

    Each batch reads on from where the last one ended (the expiry index's order),
    so none walks again past what earlier batches kept or removed. Resumable: a
    crash loses nothing that should stay (each batch commits its tombstones and
    events together) and the next run expires the rest.
    """
    deletion = Deletion("expired", SYSTEM_ACTOR, new_id("req"), new_id("cor"))
    after: tuple[datetime, str] | None = None

    def load(conn: Connection) -> list[ArtifactRecord]:
        nonlocal after
        found = retention.expired(conn, plan.tenant_id, plan.env, plan.kind, plan.cutoff,
                                  keep_latest=rt.settings.retention_keep_latest,
                                  limit=times.next_size(), after=after)
        after = found[-1] if found else after
        return repo.records_by_id(conn, plan.tenant_id, plan.env, [i for _c, i in found])

    while batch := _delete_batch(rt, load, deletion, times):
        yield [record.id for record in batch]


SHOWN_IDS = 100
"""Ids printed per tenant, env and kind (then "... and N more") unless all are asked for."""


Listing = Callable[[ExpiryPlan, list[str]], None]
"""Where every id expired (or that a dry run would expire) goes, a batch at a time."""


def expire_all(rt: Runtime, *, apply: bool, progress: Callable[[str], None] = lambda _m: None,
               shown_ids: int | None = SHOWN_IDS, listing: Listing | None = None,
               now: datetime | None = None) -> list[dict[str, object]]:
    """Every retention in force, applied (or, in a dry run, listed): what `engines gc` runs.

    Returns one entry per plan with its count. Every id expired (or that a dry
    run would expire) goes to `listing` as its batch is done, so an operator can
    check them before --apply, and a million of them are never held here;
    `progress` gets the first `shown_ids` of each plan (None: all of them, the
    one case that keeps a plan's ids until its summary line). `now` is when
    retention is judged (the clock seam of the tests; default: now).
    """
    listed = []
    keep_latest = rt.settings.retention_keep_latest
    for plan in expiry_plans(rt, now or datetime.now(UTC)):
        scope = f"retention: {plan.tenant_id}/{plan.env} {plan.kind}:"
        times = BatchTimes()
        tally = _Tally(plan, shown_ids, listing)
        if apply:
            progress(f"{scope} {plan.count} created before {plan.cutoff.isoformat()}"
                     + ("; the newest of each canvas stays" if keep_latest else ""))
            started = shown_at = time.monotonic()
            for batch in expire(rt, plan, times):
                tally.add(batch)
                if (tally.count % PROGRESS_EVERY < len(batch)
                        or time.monotonic() - shown_at >= PROGRESS_SECONDS):
                    shown_at = time.monotonic()
                    rate = tally.count / max(shown_at - started, 1e-9)
                    progress(f"{scope} expired {tally.count} of {plan.count} so far "
                             f"({rate:,.0f}/s; {times.summary()})")
            metrics.record_retention(tally.count)
        else:
            for page in would_expire(rt, plan):
                tally.add(page)
        verb = "expired" if apply else "would expire"
        progress(f"{scope} {verb} {tally.count} (created before {plan.cutoff.isoformat()})"
                 + (f"; {times.summary()}" if apply else ""))
        for artifact_id in tally.shown:
            progress(f"retention:   {artifact_id}")
        if (more := tally.count - len(tally.shown)) > 0:
            progress(f"retention:   ... and {more} more (--verbose prints them all, --output "
                     "lists them all)")
        listed.append({"tenant_id": plan.tenant_id, "env": plan.env, "kind": plan.kind,
                       "created_before": plan.cutoff.isoformat(),
                       "expired" if apply else "would_expire": tally.count})
    return listed


class _Tally:
    """One plan's ids as its batches are done: counted, the first `shown_ids` kept for
    the summary (all of them if None), every one handed to `listing`."""

    def __init__(self, plan: ExpiryPlan, shown_ids: int | None, listing: Listing | None) -> None:
        self.plan, self.shown_ids, self.listing = plan, shown_ids, listing
        self.count = 0
        self.shown: list[str] = []

    def add(self, batch: list[str]) -> None:
        self.count += len(batch)
        room = len(batch) if self.shown_ids is None else self.shown_ids - len(self.shown)
        self.shown.extend(batch[:room])
        if self.listing is not None:
            self.listing(self.plan, batch)
