"""Logging a background loop's outage: once when it starts, a count now and then, once at the end.

A loop that retries every second (the webhook worker, the events reader)
would otherwise write a traceback per round for as long as the database is
down: 36 KB in 5 s, burying the one line that says what happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPEAT_SECONDS = 60.0


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`; a database error is named by its driver's error
    (SQLAlchemy's own message adds the SQL and a link on further lines)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}".rstrip(": ")


class OutageLog:
    """Counts consecutive failures of one loop and logs them sparingly.

    `failed` logs the first failure (with its traceback), then at most once
    every `repeat_seconds` a line with how many rounds failed so far;
    `succeeded` logs once that the outage is over, and how long it lasted.
    """

    def __init__(self, log: logging.Logger, what: str, *,
                 repeat_seconds: float = REPEAT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.what, self.repeat_seconds, self.clock = log, what, repeat_seconds, clock
        self.failures = 0
        self.started = self.reported = 0.0

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        self.failures += 1
        if self.failures == 1:
            self.started = self.reported = now
            self.log.error("%s failed (%s); retrying quietly, a count follows every %g s",
                           self.what, one_line(exc), self.repeat_seconds, exc_info=exc)
        elif now - self.reported >= self.repeat_seconds:
            self.reported = now
            self.log.error("%s still failing: %d rounds in %.0f s (%s)", self.what,
                           self.failures, now - self.started, one_line(exc))

    def succeeded(self) -> None:
        if self.failures:
            self.log.warning("%s recovered after %d failed rounds in %.0f s", self.what,
                             self.failures, self.clock() - self.started)
            self.failures = 0
