"""Fair share of SSE streams, against real `engines serve` processes on one database.

PostgreSQL and one SQLite file, each with two worker processes: a tenant
holding SSE_MAX_STREAMS_PER_TENANT streams gets 429 (Retry-After, the error
envelope, no `: connected`) for the next one, on whichever worker it lands,
while other tenants, its own requests and /healthz keep working; a process
at SSE_MAX_STREAMS refuses more streams likewise; a slot comes back when its
stream ends, and when the process holding it is killed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from conftest import new_canvas
from engines.canvas_artifacts.tests.helpers import new_tenant
from engines.config import Settings
from engines.events.tests.sse_client import SseReader, readers
from tests._server import Server, running_server
from tests.test_events_multiprocess import database, headers  # noqa: F401 - a fixture

pytestmark = [pytest.mark.slow]

PER_TENANT = 3


@pytest.fixture
def opened() -> Iterator[list[SseReader]]:
    with readers() as streams:
        yield streams


@pytest.fixture
def stream(opened: list[SseReader]) -> Callable[[Server, str], SseReader]:
    """Open a tenant's SSE stream on a server; closed at the end of the test."""

    def start(server: Server, tenant: str) -> SseReader:
        reader = SseReader(f"{server.url}/artifacts/events", headers(tenant, "viewer")).start()
        opened.append(reader)
        return reader

    return start


@contextlib.contextmanager
def closing_streams(opened: list[SseReader]) -> Iterator[None]:
    """Close the test's streams before its servers stop: a server stopping with streams
    open waits out GRACEFUL_SHUTDOWN_SECONDS (10 s) before it closes them itself."""
    try:
        yield
    finally:
        for reader in opened:
            reader.close()


def assert_too_many(reader: SseReader) -> None:
    """Refused before the stream started: 429, Retry-After, the error envelope."""
    assert not reader.admitted(), "the stream was opened"
    refusal = reader.refusal
    assert refusal is not None and refusal.status_code == 429, refusal
    assert int(refusal.headers["retry-after"]) > 0
    assert refusal.headers["content-type"] == "application/json"
    error = refusal.json()["error"]
    assert error["code"] == "events.too_many_streams"
    assert error["request_id"] and error["message"]


def assert_requests_still_served(server: Server, tenant: str) -> None:
    """Request/response traffic keeps its slots: health, and the tenant's own reads."""
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    listed = httpx.get(f"{server.url}/canvas/{new_canvas()}/artifacts",
                       headers=headers(tenant, "viewer"), timeout=10)
    assert listed.status_code == 200, listed.text


def admitted_within(start: Callable[[], SseReader], seconds: float = 10.0) -> SseReader:
    """A stream opened by retrying while a released slot makes its way back."""
    deadline = time.monotonic() + seconds
    while True:
        reader = start()
        if reader.admitted():
            return reader
        assert time.monotonic() < deadline, "the slot never came back"
        time.sleep(0.2)


def test_a_tenant_at_its_stream_limit_gets_429_and_others_keep_working(
        database: dict[str, str], tmp_path: Path,  # noqa: F811 - the fixture
        stream: Callable[[Server, str], SseReader], opened: list[SseReader]) -> None:
    env = {**database, "SSE_MAX_STREAMS_PER_TENANT": str(PER_TENANT)}
    busy, other = new_tenant(), new_tenant()
    with running_server(env, tmp_path, workers=2) as server, closing_streams(opened):
        held = [stream(server, busy) for _ in range(PER_TENANT)]
        assert all(reader.admitted() for reader in held)

        for _ in range(4):  # whichever of the two workers each one reaches
            assert_too_many(stream(server, busy))
        assert stream(server, other).admitted(), "another tenant is not held back"
        assert_requests_still_served(server, busy)

        held[0].close()
        admitted_within(lambda: stream(server, busy))
        assert_too_many(stream(server, busy))


def test_a_process_at_its_stream_cap_gets_429_and_requests_keep_working(
        database: dict[str, str], tmp_path: Path,  # noqa: F811 - the fixture
        stream: Callable[[Server, str], SseReader], opened: list[SseReader]) -> None:
    """Two workers of SSE_MAX_STREAMS=2 hold at most 4 streams: of 5 from 5 tenants,
    at least one is refused, and requests (even of a refused tenant) still pass."""
    env = {**database, "SSE_MAX_STREAMS": "2"}
    tenants = [new_tenant() for _ in range(5)]
    with running_server(env, tmp_path, workers=2) as server, closing_streams(opened):
        attempts = [stream(server, tenant) for tenant in tenants]
        admitted = [reader.admitted() for reader in attempts]
        assert admitted.count(True) <= 4 and False in admitted, admitted
        for reader, ok in zip(attempts, admitted, strict=True):
            if not ok:
                assert_too_many(reader)
        refused_tenant = tenants[admitted.index(False)]
        assert_requests_still_served(server, refused_tenant)


def test_a_tenants_slots_are_shared_by_processes_and_freed_when_one_dies(
        database: dict[str, str], tmp_path: Path,  # noqa: F811 - the fixture
        stream: Callable[[Server, str], SseReader], opened: list[SseReader]) -> None:
    """Two servers on one database count a tenant's streams together; SIGKILL of the
    holder gives its slots back (the locks die with it)."""
    env = {**database, "SSE_MAX_STREAMS_PER_TENANT": str(PER_TENANT)}
    tenant = new_tenant()
    with (running_server(env, tmp_path) as holder, running_server(env, tmp_path) as other,
          closing_streams(opened)):
        assert all(stream(holder, tenant).admitted() for _ in range(PER_TENANT))
        assert_too_many(stream(other, tenant))
        holder.kill()
        admitted_within(lambda: stream(other, tenant))


def test_stream_limits_defaults_and_bounds() -> None:
    settings = Settings(max_connections=100)
    assert (settings.sse_max_streams_per_tenant, settings.sse_max_streams,
            settings.export_concurrency) == (32, 50, 2)
    with pytest.raises(ValidationError, match="below MAX_CONNECTIONS"):
        Settings(max_connections=10, sse_max_streams=10)
