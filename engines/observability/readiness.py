"""`/readyz`: is the database reachable and the blob store there?

The database is pinged on every call (one `SELECT 1`). The store is probed
with a read-only existence check, cached for a few seconds so that a load
balancer polling every replica does not turn into a stream of S3 requests;
nothing is ever written. The checks run on the probe's own threads, never in
the thread pool requests share: a process busy with exports still answers.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import text
from starlette.responses import Response

from engines.common.jsonutil import OrjsonResponse
from engines.common.runtime import Runtime
from engines.observability import metrics
from engines.storage.base import BlobStore
from engines.storage.local import LocalBlobStore
from engines.storage.s3 import S3BlobStore

READY_MARKER = "_readyz/marker"
"""A key that need not exist: asking another store for it proves the store answers."""
STORAGE_CACHE_SECONDS = 5.0
PROBE_THREADS = 2


def probe_storage(store: BlobStore) -> None:
    """Raise if the store cannot answer. Read-only and one request at most: S3 gets a
    HEAD of the bucket (a missing bucket fails it, where a missing key would not); a
    local store's root must be a writable directory."""
    if isinstance(store, S3BlobStore):
        store.client.head_bucket(Bucket=store.bucket)
    elif isinstance(store, LocalBlobStore):
        if not (store.root.is_dir() and os.access(store.root, os.W_OK | os.X_OK)):
            raise OSError(f"{store.root} is not a writable directory")
    else:
        store.exists(READY_MARKER)


@dataclass
class ReadinessProbe:
    runtime: Runtime
    cache_seconds: float = STORAGE_CACHE_SECONDS
    _storage_ok: bool = False
    _checked_at: float = field(default=float("-inf"))
    _threads: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        PROBE_THREADS, thread_name_prefix="readyz"))

    def _database_ok(self) -> bool:
        try:
            with self.runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            return False
        return True

    def _storage(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self.cache_seconds:
            try:
                probe_storage(self.runtime.store)
                self._storage_ok = True
            except Exception:  # noqa: BLE001 - any failure means not ready
                self._storage_ok = False
            self._checked_at = now
        return self._storage_ok

    def check(self) -> dict[str, bool]:
        return {"database": self._database_ok(), "storage": self._storage()}

    async def respond(self) -> Response:
        results = await asyncio.get_running_loop().run_in_executor(self._threads, self.check)
        for component, ok in results.items():
            metrics.set_ready(component, ok)
        body = {name: "ok" if ok else "unreachable" for name, ok in results.items()}
        if all(results.values()):
            return OrjsonResponse({"status": "ready", **body})
        return OrjsonResponse({"status": "unavailable", **body}, status_code=503)
