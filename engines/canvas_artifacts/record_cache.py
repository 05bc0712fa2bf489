"""A process-local cache of artifact records, for the GETs that fetch one by id.

Records are immutable once written, except that a delete (or an expiry, or a
tenant purge) tombstones them. A hit skips the database and the thread hop
that reaching it costs. What keeps it safe:

- the key is (tenant, env, canvas, artifact id): exactly the scope of the SQL
  lookup it replaces, so a hit can never be another tenant's or canvas's record;
- a delete in this process drops the entry when it commits;
- a delete in another process (another worker, `engines retention`, `engines
  purge`) is seen once the entry expires: every entry lives at most
  `RECORD_CACHE_MS` milliseconds (default 1000) from the moment the read that
  filled it began, so no GET that starts later than `RECORD_CACHE_MS` after
  the delete committed is answered from the cache. `RECORD_CACHE_MS=0` turns
  the cache off.

Only hits of live records are kept; a miss (404) is never cached.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from engines.canvas_artifacts.models import ArtifactRecord

RecordKey = tuple[str, str, str, str]
MAX_ENTRIES = 4096
"""A bound on memory (a record is ~1-2 KiB): the oldest entry makes room for a new one."""


class RecordCache:
    """Entries expire `ttl_ms` after the read that filled them began; thread-safe enough:
    every operation is one dict call under the GIL."""

    def __init__(self, ttl_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_ms / 1000
        self.clock = clock
        self._entries: dict[RecordKey, tuple[float, ArtifactRecord]] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def now(self) -> float:
        """Take this before reading the database: the entry's life counts from it."""
        return self.clock()

    def get(self, key: RecordKey) -> ArtifactRecord | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, record = entry
        if self.clock() >= expires:
            self._entries.pop(key, None)
            return None
        return record

    def put(self, key: RecordKey, record: ArtifactRecord, read_started: float) -> None:
        if not self.enabled:
            return
        if len(self._entries) >= MAX_ENTRIES:
            # another thread may have emptied or changed it: room enough then
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (read_started + self.ttl, record)

    def discard(self, record: ArtifactRecord) -> None:
        self._entries.pop(key_of(record), None)


def key_of(record: ArtifactRecord) -> RecordKey:
    return (record.tenant_id, record.env, record.canvas_id, record.id)
