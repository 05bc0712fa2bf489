"""The process's cache of artifact records, for the GETs that fetch one by id.

Records are immutable once written, except that a delete (or an expiry, or a
tenant purge) tombstones them. A hit skips the database and the thread hop
that reaching it costs. It is one `engines.common.cache.Cache`; what keeps it
honest:

- the key is (tenant, env, canvas, artifact id): exactly the scope of the SQL
  lookup it replaces, so a hit can never be another tenant's or canvas's record;
- a delete in this process drops the entry when it commits; a delete, expiry
  or purge in any other process (another worker, `engines gc`, `engines
  purge`) drops it when the events hub reads its event, within the hub's
  wake-up latency; `RECORD_CACHE_MS` (default 1000) bounds an entry's life
  if the hub is not running or has lost its link to the database;
- a cached record whose blob (or replay index) turns out missing is checked
  against the database before anything is answered (`reads.confirm_live`):
  deleted means 404, as a fresh read answers.

Only live records are kept; a miss (404) is never cached. `RECORD_CACHE_MS=0`
turns the cache off.
"""

from __future__ import annotations

from engines.canvas_artifacts.models import ArtifactRecord
from engines.common.cache import Cache
from engines.runtime import RECORDS_MAX

RecordKey = tuple[str, str, str, str]
MAX_ENTRIES = RECORDS_MAX

RecordCache = Cache[RecordKey, ArtifactRecord]


def record_cache(ttl_ms: int) -> RecordCache:
    """The cache `Runtime.records` is: RECORDS_MAX entries, each living `ttl_ms` at most."""
    return Cache(MAX_ENTRIES, ttl_ms / 1000)


def key_of(record: ArtifactRecord) -> RecordKey:
    return (record.tenant_id, record.env, record.canvas_id, record.id)


def remember(cache: RecordCache, record: ArtifactRecord, read_started: float) -> None:
    """Cache a live record under its key, named by its scope and id for invalidation."""
    cache.put(key_of(record), record, read_started, scope=(record.tenant_id, record.env),
              subject=record.id)
