"""Where renders run: a per-process limit and low-priority threads of their own."""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import anyio

RENDER_NICE = 10
"""Render threads run at this nice value: request handling (nice 0) gets the CPU first."""


_limiter: anyio.CapacityLimiter | None = None


_executor: ThreadPoolExecutor | None = None


def render_limiter() -> anyio.CapacityLimiter:
    """Process-wide: at most one variant made per core, whatever the request concurrency.

    A slot covers the whole miss (source read, render, store, record), so the
    requests waiting for one wait on the event loop and hold no worker thread
    or database connection that other requests need.
    """
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
    return _limiter


def _lower_priority() -> None:
    """Linux keeps a nice value per thread: only the render threads are lowered."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_NICE)


def render_executor() -> ThreadPoolExecutor:
    """The threads that decode and encode (one per core), apart from the request threads,
    so a burst of first renders slows other requests as little as possible."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="render",
                                       initializer=_lower_priority)
    return _executor
