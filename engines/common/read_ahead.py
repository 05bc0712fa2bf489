"""An iterator produced one item ahead in a thread, so making the next item overlaps
using this one.

`engines gc` alternates two waits: a listing page from the store (the request, then
botocore parsing its XML) and that page's queries to the database. Run one after the
other, each waits for the other; with the next page listed in a thread while this one
is checked, a page costs about the longer of the two, not their sum. Items are handed
over in order; an exception of the producer is raised to the consumer where its item
would have come, and a consumer that stops early stops the producer at its next item.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.1
"""How often a producer waiting to hand over an item checks whether the consumer left."""


class _End:
    """The producer's last message: the iterator is exhausted (error None) or raised."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def read_ahead(items: Iterator[T], name: str) -> Generator[T, None, None]:
    """The items of `items`, the next one produced in thread `name` meanwhile.

    At most two items wait beyond the one being used (one handed over, one being made),
    so memory stays a few items whatever the length. The thread runs in a copy of the
    caller's context (log and trace context carry over).
    """
    handoff: queue.Queue[T | _End] = queue.Queue(maxsize=1)
    left = threading.Event()

    def put(message: T | _End) -> bool:
        while not left.is_set():
            try:
                handoff.put(message, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_End(exc))
            return
        put(_End(None))

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(produce,), name=name, daemon=True).start()
    try:
        while True:
            message = handoff.get()
            if isinstance(message, _End):
                if message.error is not None:
                    raise message.error
                return
            yield message
    finally:
        left.set()
