"""Fair share: long-lived work holds a slot, so one caller cannot take a worker.

SSE streams and exports keep a connection (and, for an export, database and
storage work) busy for as long as the client reads. Each kind has its own
limits below MAX_CONNECTIONS (docs/fair-share.md); a request beyond them
answers 429 with `Retry-After` before any of its body is sent, and the slot
is given back when the response ends, however it ends (done, client gone,
error).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from engines.http.errors import TooManyRequests

RETRY_AFTER_SECONDS = 5
"""What a 429 of a fair-share limit tells the client to wait: long enough for a stream
or an export to end, short enough that a waiting client is not kept idle."""

Release = Callable[[], Awaitable[None]]


class ProcessSlots:
    """At most `limit` holders in this process (one event loop: no lock needed)."""

    def __init__(self, limit: int, *, code: str, what: str) -> None:
        self.limit, self.code, self.what = limit, code, what
        self.taken = 0

    def take(self) -> Release:
        """A slot, or 429; the returned callable gives it back (call it once)."""
        if self.taken >= self.limit:
            raise TooManyRequests(f"this server is at its limit of {self.limit} {self.what}; "
                                  f"retry after {RETRY_AFTER_SECONDS} s", code=self.code,
                                  retry_after=RETRY_AFTER_SECONDS)
        self.taken += 1
        return self._give_back

    async def _give_back(self) -> None:
        self.taken -= 1


class HeldStreamingResponse(StreamingResponse):
    """A streamed response that holds a slot until it has ended."""

    def __init__(self, content: object, *, release: Release, **kwargs: object) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.release()
