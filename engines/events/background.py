"""What runs beside the HTTP routes in each process: the webhook worker, the events hub.

Started by the app's lifespan, so `engines serve` (every worker process)
delivers webhooks unless WEBHOOKS_ENABLED=false, and its events hub follows
the feed for the caches from the start (engines/common/cache.py); SSE
subscribers use the same hub. It is stopped here, and the stream slots let go
of their locks. A TestClient that never enters the lifespan gets neither
background task (its caches then rely on their time bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from fastapi import FastAPI

from engines.config import Settings
from engines.db.engine import build_engine
from engines.events.webhooks.delivery import DeliveryWorker


@contextlib.asynccontextmanager
async def events_lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime = app.state.runtime
    await app.state.event_hub.follow_caches()
    worker = None
    if runtime.settings.webhooks_enabled:
        worker = DeliveryWorker(runtime.engine, runtime.settings)
        worker.start()
    try:
        yield
    finally:
        if worker is not None:
            await worker.stop()
        await app.state.event_hub.stop()
        await app.state.stream_slots.close()


async def run_worker(settings: Settings) -> None:
    """`engines worker`: only webhook delivery, until SIGINT/SIGTERM."""
    engine = build_engine(settings)
    worker = DeliveryWorker(engine, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker.start()
    try:
        await stop.wait()
    finally:
        await worker.stop()
        engine.dispose()
