"""When to try a request again, and after how long.

Every request the client sends may be repeated: reads are safe, creates
carry an `Idempotency-Key` that stays the same across their retries (the
service answers the first artifact again instead of making a second one),
a delete of what is already gone is still "gone", and a signed URL writes
nothing. So the only question is whether a failure is transient: a
connection that failed or dropped, a timeout, or an answer that says "not
now" (429, 503, a proxy's 502/504, a 408 for a stalled body, 409
`idempotency.in_progress` while the first attempt with the same key still
runs). `Retry-After` is honoured; otherwise the pause doubles, with jitter
so that many clients do not come back in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from engines.client.errors import envelope

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
RETRY_CODES = frozenset({"idempotency.in_progress"})
"""Error codes that are transient whatever their status."""
TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""Transport failures worth another try (an unsupported scheme or a malformed request is not)."""

Outcome = httpx.Response | httpx.TransportError
"""What one attempt ended with: an answer, or the failure that prevented one."""


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def is_transient(outcome: Outcome) -> bool:
    if isinstance(outcome, httpx.TransportError):
        return isinstance(outcome, TRANSIENT_ERRORS)
    if outcome.status_code in RETRY_STATUSES:
        return True
    return outcome.status_code == 409 and envelope(outcome)[0] in RETRY_CODES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` tries in all; pauses start at `backoff` seconds and double up to
    `max_backoff`; a `Retry-After` longer than `max_retry_after` is not waited for
    (the error is raised at once)."""

    attempts: int = 5
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 120.0

    def pause(self, attempt: int, outcome: Outcome) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None: do not retry."""
        if attempt >= self.attempts or not is_transient(outcome):
            return None
        asked = (retry_after(outcome.headers.get("retry-after"))
                 if isinstance(outcome, httpx.Response) else None)
        if asked is None:
            ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            return random.uniform(ceiling / 2, ceiling)
        return asked if asked <= self.max_retry_after else None
