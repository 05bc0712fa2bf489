"""The per-process wiring routes depend on: settings, DB engine, blob store, Nexus.

Built once by create_app and kept on app.state; nothing here holds request
state, so any number of replicas can run side by side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from engines.canvas_artifacts.record_cache import RecordCache
from engines.config import Settings
from engines.lineage.nexus.backends.base import NexusBackend
from engines.storage.base import BlobStore
from engines.storage.leases import UploadLeases


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
    known_assets: set[str] = field(default_factory=set)
    """Canvas asset ids this process has seen committed: their insert-if-absent is skipped."""
    leases: UploadLeases = field(init=False)
    records: RecordCache = field(init=False)
    """Records this process read or wrote lately, for GETs by id (see record_cache)."""

    def __post_init__(self) -> None:
        self.leases = UploadLeases(self.engine, self.settings.upload_lease_seconds)
        self.records = RecordCache(self.settings.record_cache_ms)


    async def discard_fresh_blob(self, key: str) -> None:
        """Compensation for a create whose transaction did not commit."""
        await self.discard(self.engine, self.store, key)


async def get_runtime(request: Request) -> Runtime:
    """Async on purpose: a sync dependency would cost a thread-pool hop per request."""
    return request.app.state.runtime


Rt = Annotated[Runtime, Depends(get_runtime)]
"""A route parameter: the process's runtime."""
