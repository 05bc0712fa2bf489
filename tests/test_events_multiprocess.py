"""Events across real `engines serve` processes sharing one database.

PostgreSQL (LISTEN/NOTIFY) and one SQLite file (polled): an event committed
by one process reaches an SSE subscriber of the other within 1 s; a stream
resumes across a server restart with no gap and no duplicate. Webhooks: a
process SIGKILLed mid-delivery leaves the delivery to another process, and
two processes delivering at once send each event once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from conftest import SIGNING_KEY, create_pg_database, drop_pg_database, new_canvas
from engines.auth.tokens import issue_token
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.migrate import upgrade
from engines.events.tests.receiver import receiver
from engines.events.tests.sse_client import SseReader
from tests._server import ENGINES, Server, running_server

pytestmark = [pytest.mark.slow]

SERVE_ENV = {
    "AUTH_JWT_SIGNING": SIGNING_KEY, "EVENTS_HEARTBEAT_SECONDS": "1",
    "WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_PRIVATE": "true",
    "WEBHOOK_RETRY_SCHEDULE": "[0.2, 0.2, 0.2]", "WEBHOOK_TIMEOUT_SECONDS": "1",
    "WEBHOOK_POLL_SECONDS": "0.1", "WEBHOOKS_ENABLED": "false",
}


def headers(tenant: str, role: str = "admin") -> dict[str, str]:
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana", tenants=[tenant],
                        role=role, ttl=600)
    return {"Authorization": f"Bearer {token}", "X-Tenant-Id": tenant, "X-Env": "dev",
            "X-Project-Id": "p_main"}


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Env vars for servers sharing one migrated database and one media directory."""
    env = {**SERVE_ENV, "MEDIA_LOCAL_ROOT": str(tmp_path / "media")}
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        upgrade(build_engine(Settings(database_url=url)))
        yield {**env, "DATABASE_URL": url}
        return
    admin_url = request.getfixturevalue("pg_admin_url")
    url = create_pg_database(admin_url)
    engine = build_engine(Settings(database_url=url))
    upgrade(engine)
    engine.dispose()
    try:
        yield {**env, "DATABASE_URL": url, "AUTO_MIGRATE": "0"}
    finally:
        drop_pg_database(admin_url, url)


@pytest.fixture
def serve(database: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `engines serve` processes on the shared database (extra env per call)."""
    with contextlib.ExitStack() as stack:

        def start(**env: str) -> Server:
            return stack.enter_context(running_server({**database, **env}, tmp_path))

        yield start


def create(server: Server, tenant: str, canvas: str, rev: int = 1) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/canvas/{canvas}/artifacts/audit?rev={rev}",
                          headers=headers(tenant, "member"), timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def subscribe(server: Server, tenant: str, **extra: str) -> SseReader:
    reader = SseReader(f"{server.url}/artifacts/events", {**headers(tenant, "viewer"),
                                                           **extra}).start()
    assert reader.next_comment() == "connected"
    return reader


def test_event_reaches_the_other_process_within_a_second(serve) -> None:
    writer, listener = serve(), serve()
    tenant, canvas = "t_cross", new_canvas()
    reader = subscribe(listener, tenant)
    try:
        for rev in range(5):
            record = create(writer, tenant, canvas, rev)
            committed = time.monotonic()  # the writer answers 201 after its commit
            message = reader.next_event(timeout=5)
            latency = time.monotonic() - committed
            assert message.data["data"]["artifact_id"] == record["id"]
            assert latency < 1.0, f"{latency:.3f} s"
    finally:
        reader.close()


def test_resume_across_a_server_restart(serve, database, tmp_path) -> None:
    writer = serve()
    tenant, canvas = "t_restart", new_canvas()
    first = running_server(database, tmp_path)
    listener = first.__enter__()
    reader = subscribe(listener, tenant)
    seen = [create(writer, tenant, canvas, rev)["id"] for rev in range(3)]
    got = [reader.next_event() for _ in seen]
    reader.close()
    first.__exit__(None, None, None)  # the subscriber's server goes away

    missed = [create(writer, tenant, canvas, rev)["id"] for rev in range(3, 6)]
    restarted = serve()
    resumed = subscribe(restarted, tenant, **{"Last-Event-ID": str(got[-1].id)})
    try:
        backlog = [resumed.next_event() for _ in missed]
        live = create(writer, tenant, canvas, 9)["id"]
        after = resumed.next_event()
        assert [m.data["data"]["artifact_id"] for m in got] == seen
        assert [m.data["data"]["artifact_id"] for m in backlog] == missed
        assert [m.id for m in [*got, *backlog, after]] == list(range(1, 8))
        assert after.data["data"]["artifact_id"] == live
        assert resumed.events_so_far() == []
    finally:
        resumed.close()


def _subscribe_webhook(server: Server, tenant: str, url: str) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/webhooks", headers=headers(tenant), timeout=10,
                          json={"url": url, "events": ["artifact_written"]})
    assert response.status_code == 201, response.text
    return response.json()


@contextlib.contextmanager
def worker(env: dict[str, str], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`engines worker`: delivery without HTTP, as a separate deployment runs it."""
    with open(workdir / "worker.log", "ab") as log:
        process = subprocess.Popen([str(ENGINES), "worker"], cwd=workdir, env={
            **os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_sigkill_mid_delivery_then_another_process_redelivers(
        serve, database, tmp_path) -> None:
    tenant = "t_killed"
    with receiver(["hang"]) as hook:
        doomed = serve(WEBHOOKS_ENABLED="true")
        hook_sub = _subscribe_webhook(doomed, tenant, hook.url)
        record = create(doomed, tenant, new_canvas())
        assert hook.hanging.wait(20), "the first delivery never arrived"
        doomed.kill()  # SIGKILL while the POST is in flight

        with worker(database, tmp_path):
            first, again = hook.wait_for(2, timeout=30)
    survivor = serve()
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    payload = Webhook(hook_sub["secret"]).verify(again.body, again.headers)
    assert payload["data"]["artifact_id"] == record["id"]
    log = httpx.get(f"{survivor.url}/webhooks/{hook_sub['id']}/deliveries",
                    headers=headers(tenant), timeout=10).json()["items"]
    assert [(a["attempt"], a["outcome"]) for a in log] == [(2, "succeeded")]


def test_two_processes_deliver_each_event_once(serve) -> None:
    tenant, canvas = "t_twice", new_canvas()
    with receiver() as hook:
        one, two = serve(WEBHOOKS_ENABLED="true"), serve(WEBHOOKS_ENABLED="true")
        _subscribe_webhook(one, tenant, hook.url)
        ids = [create((one, two)[i % 2], tenant, canvas, i)["id"] for i in range(20)]
        hook.wait_for(20, timeout=30)
        time.sleep(1.0)  # a duplicate would arrive within a few delivery rounds
    delivered = [orjson.loads(r.body) for r in hook.requests]
    assert [e["data"]["artifact_id"] for e in delivered] == ids
    assert len({r.headers["webhook-id"] for r in hook.requests}) == 20
