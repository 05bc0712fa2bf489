"""A deadline on a stream of events: `EVENTS_STREAM_MAX_SECONDS`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

T = TypeVar("T")


async def bounded(events: AsyncGenerator[T, None], seconds: float | None) -> AsyncIterator[T]:
    """`events` until `seconds` have passed (None: for ever), then the stream ends.

    The wait for the next event is what the deadline cuts short, so a quiet
    stream ends on time too, not at its next heartbeat.
    """
    if seconds is None:
        async for event in events:
            yield event
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(anext(events), left)
            except (TimeoutError, StopAsyncIteration):
                return
            yield event
    finally:
        await events.aclose()
