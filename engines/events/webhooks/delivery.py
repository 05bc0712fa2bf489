"""The delivery worker: fan events out to delivery rows, claim due ones, POST them signed.

One worker runs per process (inside `engines serve` unless WEBHOOKS_ENABLED
is false, or alone as `engines worker`); any number may share a database.
Every step is a row change, so a process killed at any point leaves work
another finishes: an event not yet fanned out is found again past the
subscription's cursor, a delivery claimed but never finished is claimed
again once its lease runs out. At least once, never twice per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine

from engines.common.ids import new_id
from engines.common.outage import OutageLog
from engines.config import Settings
from engines.db.writer import write_transaction
from engines.events.feed import read_after, read_event
from engines.events.webhooks import repository as repo
from engines.events.webhooks.destinations import DestinationRefused, resolve
from engines.events.webhooks.signing import signed_headers

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("engines.webhooks")
T = TypeVar("T")
USER_AGENT = "northstar-engines-webhooks/1"


def _now() -> datetime:
    return datetime.now(UTC)


class DeliveryWorker:
    def __init__(self, engine: Engine, settings: Settings,
                 client: httpx.AsyncClient | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self._client = client
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def client(self) -> httpx.AsyncClient:
        """Made on first delivery: building one (TLS context) costs ~0.1 s, and an app
        started only to answer a few requests (a test client) never delivers. httpx is
        imported here too: a worker that never delivers keeps its 6 MiB out."""
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                             headers={"user-agent": USER_AGENT})
        return self._client

    async def _tx(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with write_transaction(self.engine) as conn:
                return work(conn)

        return await asyncio.to_thread(run)

    # ---- lifecycle --------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run_forever())

    async def stop(self) -> None:
        """Let the round in flight finish, so a delivery that reached its receiver is
        recorded rather than sent again by the next worker; cancel only past its timeout."""
        if self._task is not None:
            self._stopping.set()
            grace = 2 * self.settings.webhook_timeout_seconds + 1
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, grace)
        if self._client is not None:
            await self._client.aclose()

    async def run_forever(self) -> None:
        outage = OutageLog(log, "webhooks: delivery round")
        while not self._stopping.is_set():
            try:
                busy = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the worker outlives DB and network hiccups
                outage.failed(exc)
                busy = 0
            else:
                outage.succeeded()
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(),
                                           self.settings.webhook_poll_seconds)

    async def run_once(self) -> int:
        """One round: fan out, then attempt what is due. Returns deliveries attempted."""
        for subscription in await self._tx(repo.subscriptions_behind):
            await self._tx(lambda conn, s=subscription: self._fan_out(conn, s))
        timeout = self.settings.webhook_timeout_seconds
        now = _now()
        claimed = await self._tx(lambda conn: repo.claim(
            conn, now, now + timedelta(seconds=2 * timeout + 1),
            self.settings.webhook_concurrency))
        await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return len(claimed)

    # ---- fan-out ----------------------------------------------------------

    @staticmethod
    def _fan_out(conn: Connection, subscription: dict[str, Any]) -> None:
        """Delivery rows for the subscription's new matching events; moves its cursor."""
        cursor = repo.lock_cursor(conn, subscription["id"])
        if cursor is None:
            return
        key = (subscription["tenant_id"], subscription["env"])
        found, last, _more = read_after(conn, key, cursor)
        now = _now()
        repo.add_deliveries(conn, [
            {"id": new_id("whd"), "subscription_id": subscription["id"], "tenant_id": key[0],
             "env": key[1], "event_id": event.body["event_id"], "seq": event.seq,
             "status": repo.PENDING, "attempts": 0, "next_attempt_at": now,
             "lease_until": None, "created_at": now}
            for event in found
            if event.type in subscription["events"]
            and subscription["canvas_id"] in (None, event.canvas_id)])
        repo.move_cursor(conn, subscription["id"], cursor, last)

    # ---- one attempt --------------------------------------------------------

    async def _attempt(self, delivery: dict[str, Any]) -> None:
        event = await asyncio.to_thread(self._read_event, delivery["event_id"])
        if event is None:  # purged with its tenant: nothing left to announce
            await self._tx(lambda conn: repo.finish(conn, delivery, status=repo.DROPPED))
            return
        started = _now()
        clock = time.monotonic()
        status_code, error = await self._post(delivery, event)
        duration_ms = int((time.monotonic() - clock) * 1000)
        await self._tx(lambda conn: self._record(conn, delivery, started, duration_ms,
                                                 status_code, error))

    def _read_event(self, event_id: str) -> bytes | None:
        with self.engine.connect() as conn:
            event = read_event(conn, event_id)
        return event.json() if event is not None else None

    async def _post(self, delivery: dict[str, Any], body: bytes) -> tuple[int | None, str | None]:
        import httpx

        try:
            target = await asyncio.to_thread(resolve, delivery["url"], self.settings)
        except DestinationRefused as exc:
            return None, f"destination refused: {exc}"
        headers = signed_headers(delivery["secret"], delivery["event_id"], int(time.time()),
                                 body)
        headers["host"] = target.netloc
        timeout = self.settings.webhook_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                async with self.client.stream(
                        "POST", target.url, content=body, headers=headers, timeout=timeout,
                        extensions={"sni_hostname": target.host}) as response:
                    code = response.status_code
        except TimeoutError:
            return None, f"timed out after {timeout:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:1024]
        return code, None if 200 <= code < 300 else f"HTTP {code}"

    def _record(self, conn: Connection, delivery: dict[str, Any], started: datetime,
                duration_ms: int, status_code: int | None, error: str | None) -> None:
        schedule = self.settings.webhook_retry_schedule
        attempt = delivery["attempts"]
        if error is None:
            outcome, status, retry_at = "succeeded", repo.SUCCEEDED, None
        elif attempt <= len(schedule):
            outcome, status = "retrying", repo.PENDING
            retry_at = _now() + timedelta(seconds=schedule[attempt - 1])
        else:
            outcome, status, retry_at = "failed", repo.FAILED, None
        if not repo.finish(conn, delivery, status=status, next_attempt_at=retry_at):
            log.warning("webhooks: lease on %s ran out before its result was recorded",
                        delivery["id"])
            return
        repo.add_attempt(conn, {
            "id": new_id("wha"), "delivery_id": delivery["id"],
            "subscription_id": delivery["subscription_id"], "event_id": delivery["event_id"],
            "seq": delivery["seq"], "attempt": attempt, "outcome": outcome,
            "status_code": status_code, "duration_ms": duration_ms, "error": error,
            "started_at": started})
        if status == repo.SUCCEEDED:
            repo.record_success(conn, delivery["subscription_id"])
        elif status == repo.FAILED:
            repo.record_failure(conn, delivery["subscription_id"],
                                self.settings.webhook_disable_after, error or "")
