"""The per-process wiring routes depend on: settings, DB engine, blob store, Nexus, caches.

Built once by create_app and kept on app.state; nothing here holds request
state, so any number of replicas can run side by side. The caches are
optimisations only (engines/common/cache.py, docs/caches.md): each one is
bounded, time-limited and dropped by the event feed, and a cached entry that
meets the truth is dropped and the work redone from the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Engine

from engines.common.cache import Cache, CacheGroup
from engines.config import Settings
from engines.lineage.nexus.backends.base import NexusBackend
from engines.storage.base import BlobStore
from engines.storage.leases import UploadLeases

RECORDS_MAX = 4096
"""A bound on memory (a record is ~1-2 KiB): the oldest entry makes room for a new one."""
KNOWN_ASSETS_MAX = 100_000
KNOWN_VARIANTS_MAX = 10_000
CHECKED_TTL = 600.0
"""Life of the asset and variant entries. Longer than the record cache's: a stale one
is caught where it meets the truth (a foreign-key failure, a missing variant blob)."""


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    store: BlobStore
    nexus: NexusBackend
    discard: Callable[[Engine, BlobStore, str], Awaitable[None]]
    """How a create that did not commit removes its fresh blob: the reference model's
    `discard_fresh_blob`, wired in by `app.build_runtime` (lifecycle sits above the domains,
    so they reach it through here)."""
    leases: UploadLeases = field(init=False)
    records: Cache[tuple[str, str, str, str], Any] = field(init=False)
    """Artifact records this process read or wrote lately, for GETs by id
    (canvas_artifacts/record_cache.py)."""
    assets: Cache[str, bool] = field(init=False)
    """Canvas asset ids this process has seen committed: their insert-if-absent is skipped
    (until a purge erases them: canvas_artifacts/commit.py, _write_metadata)."""
    variants: Cache[str, Any] = field(init=False)
    """Stored variant records by their derived id: the second read of a thumbnail GET."""
    caches: CacheGroup = field(init=False)
    """The three above: what the events hub drops entries of (engines/events/hub.py)."""

    def __post_init__(self) -> None:
        self.leases = UploadLeases(self.engine, self.settings.upload_lease_seconds)
        self.records = Cache(RECORDS_MAX, self.settings.record_cache_ms / 1000)
        self.assets = Cache(KNOWN_ASSETS_MAX, CHECKED_TTL)
        self.variants = Cache(KNOWN_VARIANTS_MAX, CHECKED_TTL)
        self.caches = CacheGroup(self.records, self.assets, self.variants)

    async def discard_fresh_blob(self, key: str) -> None:
        """Compensation for a create whose transaction did not commit."""
        await self.discard(self.engine, self.store, key)


async def get_runtime(request: Request) -> Runtime:
    """Async on purpose: a sync dependency would cost a thread-pool hop per request."""
    return request.app.state.runtime


Rt = Annotated[Runtime, Depends(get_runtime)]
"""A route parameter: the process's runtime."""
