"""The per-process wiring routes depend on: settings, DB engine, blob store, Nexus, caches.

Built once by create_app and kept on app.state; nothing here holds request
state, so any number of replicas can run side by side. The caches are
optimisations only (engines/common/cache.py, docs/caches.md): each one is
bounded, time-limited and dropped by the event feed, and a cached entry that
meets the truth is dropped and the work redone from the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy import Engine

from engines.canvas_artifacts.record_cache import RecordCache, record_cache
from engines.common.cache import Cache, CacheGroup
from engines.config import Settings
from engines.media_v2.models import DerivedArtifact
from engines.nexus.backends.base import NexusBackend
from engines.storage.base import BlobStore
from engines.storage.leases import UploadLeases

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
    leases: UploadLeases = field(init=False)
    records: RecordCache = field(init=False)
    """Records this process read or wrote lately, for GETs by id (see record_cache)."""
    assets: Cache[str, bool] = field(init=False)
    """Canvas asset ids this process has seen committed: their insert-if-absent is skipped
    (until a purge erases them: service._write_metadata)."""
    variants: Cache[str, DerivedArtifact] = field(init=False)
    """Stored variant records by their derived id: the second read of a thumbnail GET."""
    caches: CacheGroup = field(init=False)
    """The three above: what the events hub drops entries of (engines/events/hub.py)."""

    def __post_init__(self) -> None:
        self.leases = UploadLeases(self.engine, self.settings.upload_lease_seconds)
        self.records = record_cache(self.settings.record_cache_ms)
        self.assets = Cache(KNOWN_ASSETS_MAX, CHECKED_TTL)
        self.variants = Cache(KNOWN_VARIANTS_MAX, CHECKED_TTL)
        self.caches = CacheGroup(self.records, self.assets, self.variants)


async def get_runtime(request: Request) -> Runtime:
    """Async on purpose: a sync dependency would cost a thread-pool hop per request."""
    return request.app.state.runtime
