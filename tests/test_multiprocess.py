"""Two real API processes sharing one PostgreSQL and one S3, as behind a load balancer.

Each process is `engines serve` configured only by env vars (AUTO_MIGRATE=0:
the database is migrated once, beforehand, as in production). 200 concurrent
creates on one canvas are spread over both; afterwards every artifact is
listed exactly once, has its lineage and its media_v2 record, and can be read
through either process. Idempotent retries racing across the two processes
create exactly one artifact.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import (
    JPEG,
    PNG,
    SIGNING_KEY,
    create_pg_database,
    drop_pg_database,
    make_bucket,
    new_canvas,
)
from engines.auth.tokens import issue_token
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.migrate import upgrade

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

ENGINES = Path(sys.executable).with_name("engines")
CREATES = 200
IDEMPOTENT_PAIRS = 20
THREADS = 16


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n"
                        f"{server.log.read_text()}", pytrace=False)
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{server.base_url} not ready in time:\n{server.log.read_text()}",
                pytrace=False)


@pytest.fixture
def servers(tmp_path: Path, pg_admin_url: str, s3_endpoint: str) -> Iterator[list[Server]]:
    db_url = create_pg_database(pg_admin_url)
    engine = build_engine(Settings(database_url=db_url))
    upgrade(engine)
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({
        "DATABASE_URL": db_url, "RAW_BUCKET": make_bucket(s3_endpoint),
        "AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AUTH_JWT_SIGNING": SIGNING_KEY,
        "AUTO_MIGRATE": "0",
    })
    started: list[Server] = []
    try:
        for n in range(2):
            port = free_port()
            log = tmp_path / f"server-{n}.log"
            with open(log, "wb") as sink:
                process = subprocess.Popen(
                    [str(ENGINES), "serve", "--host", "127.0.0.1", "--port", str(port),
                     "--no-access-log", "--log-level", "warning"],
                    cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
            started.append(Server(f"http://127.0.0.1:{port}", process, log))
        deadline = time.monotonic() + 60
        for server in started:
            wait_ready(server, deadline)
        yield started
    finally:
        for server in started:
            server.process.terminate()
        for server in started:
            try:
                server.process.wait(10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(5)
        drop_pg_database(pg_admin_url, db_url)


def test_two_processes_share_one_database_and_bucket(servers: list[Server]) -> None:
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana", tenants=["t_acme"],
                        role="member", ttl=600)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": "t_acme", "X-Env": "dev",
               "X-Project-Id": "p_main"}
    canvas = new_canvas()
    base = f"/canvas/{canvas}/artifacts"
    limits = httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)
    clients = [httpx.Client(base_url=s.base_url, headers=headers, timeout=30, limits=limits)
               for s in servers]

    def create(i: int) -> httpx.Response:
        client = clients[i % 2]
        rid = {"X-Request-Id": f"mp-{i}"}
        if i % 3 == 0:
            return client.post(f"{base}/preview?rev={i}", content=PNG,
                               headers={**rid, "Content-Type": "image/png"})
        if i % 3 == 1:
            return client.post(f"{base}/replay", headers=rid, json={
                "rev": i, "keyframes": [{"t_ms": 0, "type": "snapshot", "data": {"i": i}}],
                "summary": {}})
        return client.post(f"{base}/audit?rev={i}", headers=rid)

    def idempotent(i: int) -> httpx.Response:
        """Both halves of a pair carry one key and one body, each to a different process."""
        return clients[i % 2].post(f"{base}/preview?rev=9999", content=JPEG,
                                   headers={"Content-Type": "image/jpeg",
                                            "Idempotency-Key": f"retry-{i // 2}"})

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        created = list(pool.map(create, range(CREATES)))
        retried = list(pool.map(idempotent, range(2 * IDEMPOTENT_PAIRS)))
    elapsed = time.monotonic() - started

    assert [r.status_code for r in created] == [201] * CREATES, [
        r.text for r in created if r.status_code != 201][:3]
    records = {r.json()["id"]: r.json() for r in created}
    assert len(records) == CREATES
    assert {r.json()["request_id"] for r in created} == {f"mp-{i}" for i in range(CREATES)}

    assert [r.status_code for r in retried] == [201] * (2 * IDEMPOTENT_PAIRS), [
        r.text for r in retried if r.status_code != 201][:3]
    for first, second in zip(retried[::2], retried[1::2], strict=True):
        assert first.content == second.content, "a retry replays the first response exactly"
    replayed = {r.json()["id"]: r.json() for r in retried}
    assert len(replayed) == IDEMPOTENT_PAIRS
    records.update(replayed)

    listed: list[str] = []
    cursor: str | None = None
    for page_number in range(100):
        params = {"limit": 37, **({"cursor": cursor} if cursor else {})}
        page = clients[page_number % 2].get(base, params=params)
        assert page.status_code == 200, page.text
        listed += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(listed) == len(set(listed)), "an artifact was listed twice"
    assert set(listed) == set(records), "listing lost or invented artifacts"
    assert listed == sorted(listed, reverse=True), "newest first, across pages"

    def lineage(n_and_id: tuple[int, str]) -> tuple[str, httpx.Response]:
        n, artifact_id = n_and_id
        return artifact_id, clients[n % 2].get(f"{base}/{artifact_id}/lineage")

    with ThreadPoolExecutor(THREADS) as pool:
        lineages = list(pool.map(lineage, enumerate(records)))
    for artifact_id, response in lineages:
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["documents"]) == 1 and len(body["events"]) == 1, artifact_id
        recorded = body["documents"][0]["lineage"]
        assert recorded["artifact_id"] == artifact_id
        assert recorded["canvas_id"] == canvas
        assert recorded["rev"] == records[artifact_id]["rev"]
        assert recorded["uri"] == records[artifact_id]["uri"]
        assert body["events"][0]["document_id"] == body["documents"][0]["id"]

    [asset_id] = {record["media_asset_id"] for record in records.values()}
    asset = clients[0].get(f"/media-v2/assets/{asset_id}")
    assert asset.status_code == 200, asset.text
    assert {a["meta"]["artifact_id"] for a in asset.json()["artifacts"]} == set(records)

    previews = [r for r in records.values() if r["kind"] == "preview" and r["rev"] != 9999]
    for record in previews[:10]:  # written by one process, read through the other
        writer = int(record["request_id"].removeprefix("mp-")) % 2
        content = clients[1 - writer].get(f"{base}/{record['id']}/content")
        assert content.status_code == 200 and content.content == PNG

    for client in clients:
        client.close()
    assert elapsed < 60, f"{CREATES} creates took {elapsed:.1f}s"
