"""`/readyz`: is the database reachable and migrated, and the blob store there?

The database is pinged on every call (one `SELECT 1`). Its schema revision
and the store are probed read-only, each answer cached for a few seconds so
that a load balancer polling every replica does not turn into a stream of
S3 requests; nothing is ever written. The checks run on the probe's own
threads, never in the thread pool requests share: a process busy with exports
still answers.

Each component answers "ok" or a short phrase saying what is wrong
("unreachable", "schema at 0003, expected 0004", "no such bucket", "no
credentials", ...): the probe is public, so details (endpoints, bucket names)
stay in the log and `engines doctor`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Connection, text
from starlette.responses import Response

from engines.db.migrate import current_revision, head_revision, schema_problem
from engines.http.jsonutil import OrjsonResponse
from engines.observability import metrics
from engines.runtime import Runtime
from engines.storage.base import StorageUnavailable

CACHE_SECONDS = 5.0
OK = "ok"
UNREACHABLE = "unreachable"
PROBE_THREADS = 2


@dataclass
class _Cached:
    """One probe's last answer, asked again once it is `seconds` old."""

    seconds: float
    answer: str = OK
    checked_at: float = field(default=float("-inf"))

    def get(self, probe: Callable[[], str]) -> str:
        now = time.monotonic()
        if now - self.checked_at >= self.seconds:
            self.answer, self.checked_at = probe(), now
        return self.answer


def storage_state(runtime: Runtime) -> str:
    try:
        runtime.store.probe()
    except StorageUnavailable as exc:
        return exc.reason
    except Exception:  # noqa: BLE001 - any failure means not ready
        return UNREACHABLE
    return OK


def schema_state(conn: Connection) -> str:
    return schema_problem(current_revision(conn), head_revision()) or OK


@dataclass
class ReadinessProbe:
    runtime: Runtime
    cache_seconds: float = CACHE_SECONDS
    _schema: _Cached = field(init=False)
    _storage: _Cached = field(init=False)
    _threads: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        PROBE_THREADS, thread_name_prefix="readyz"))

    def __post_init__(self) -> None:
        self._schema = _Cached(self.cache_seconds)
        self._storage = _Cached(self.cache_seconds)

    def _database(self) -> str:
        try:
            with self.runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                return self._schema.get(lambda: schema_state(conn))
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            return UNREACHABLE

    def check(self) -> dict[str, str]:
        """Each component: "ok" or what is wrong with it."""
        return {"database": self._database(),
                "storage": self._storage.get(lambda: storage_state(self.runtime))}

    async def respond(self) -> Response:
        results = await asyncio.get_running_loop().run_in_executor(self._threads, self.check)
        for component, state in results.items():
            metrics.set_ready(component, state == OK)
        if all(state == OK for state in results.values()):
            return OrjsonResponse({"status": "ready", **results})
        return OrjsonResponse({"status": "unavailable", **results}, status_code=503)
