"""Backends going away: 503 with the error envelope, quickly, and nothing left behind.

"A lost connection is retried once, then a 503, never a hang": with
PostgreSQL refusing connections, or accepting them and never answering,
creates and reads answer 503 within the connect timeout and the bucket
holds nothing; a pooled connection the server dropped is replaced
transparently (pre-ping reconnects once) so the next request succeeds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from sqlalchemy import text

from conftest import PNG, Stack, migrated_pg_database, new_canvas

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

REFUSED_DB = "postgresql+psycopg://postgres@127.0.0.1:1/engines"
FAST = 5.0
"""Seconds within which a refused connection must have become a 503."""


def bucket_contents(stack: Stack) -> tuple[list[str], list[str]]:
    s3 = boto3.client("s3", endpoint_url=stack.settings.aws_endpoint_url_s3,
                      region_name="us-east-1")
    bucket = stack.settings.raw_bucket
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return objects, uploads


def assert_503_envelope(response, request_id: str) -> str:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"].startswith("metadata.")
    assert error["request_id"] == request_id
    assert error["message"]
    return str(error["code"])


def creates(stack: Stack, canvas: str) -> dict[str, tuple[str, dict]]:  # type: ignore[type-arg]
    """One request of each create kind: path and request kwargs."""
    return {
        "preview": (f"/canvas/{canvas}/artifacts/preview?rev=1",
                    {"content": PNG, "headers": {"Content-Type": "image/png"}}),
        "replay": (f"/canvas/{canvas}/artifacts/replay",
                   {"json": {"rev": 1, "keyframes": [{"t_ms": 0, "type": "snapshot",
                                                      "data": {}}], "summary": {}}}),
        "audit": (f"/canvas/{canvas}/artifacts/audit?rev=1", {}),
    }


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_refused_database_gives_503_fast_and_leaves_no_blob(make_stack) -> None:
    stack = make_stack("s3-postgres", database_url=REFUSED_DB)
    canvas = new_canvas()

    for kind, (path, kwargs) in creates(stack, canvas).items():
        headers = {**stack.headers(), **kwargs.pop("headers", {}), "X-Request-Id": f"req-{kind}"}
        response, elapsed = timed(lambda: stack.client.post(path, headers=headers, **kwargs))  # noqa: B023
        assert_503_envelope(response, f"req-{kind}")
        assert response.headers["x-request-id"] == f"req-{kind}"
        assert elapsed < FAST, f"{kind} create took {elapsed:.1f}s"

    assert bucket_contents(stack) == ([], []), "the blob of a failed create is deleted"

    for path in (f"/canvas/{canvas}/artifacts", f"/canvas/{canvas}/artifacts/latest?kind=preview",
                 f"/canvas/{canvas}/artifacts/art_x", f"/canvas/{canvas}/artifacts/art_x/content",
                 f"/canvas/{canvas}/artifacts/art_x/lineage"):
        headers = {**stack.headers(), "X-Request-Id": "req-read"}
        response, elapsed = timed(lambda: stack.client.get(path, headers=headers))  # noqa: B023
        assert assert_503_envelope(response, "req-read") == "metadata.unavailable", path
        assert elapsed < FAST, f"GET {path} took {elapsed:.1f}s"

    ready = stack.client.get("/readyz")
    assert ready.status_code == 503


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word, like a hung server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.slow
def test_silent_database_gives_503_not_a_hang(make_stack, blackhole_port: int) -> None:
    stack = make_stack("s3-postgres",
                       database_url=f"postgresql+psycopg://postgres@127.0.0.1:{blackhole_port}/x")
    canvas = new_canvas()
    path, kwargs = creates(stack, canvas)["preview"]

    response, elapsed = timed(lambda: stack.client.post(
        path, content=PNG, headers={**stack.headers(), "Content-Type": "image/png",
                                    "X-Request-Id": "req-hung"}))
    assert_503_envelope(response, "req-hung")
    assert elapsed < 15, f"create took {elapsed:.1f}s against a silent database"
    assert bucket_contents(stack) == ([], [])

    response, elapsed = timed(lambda: stack.client.get(
        f"/canvas/{canvas}/artifacts", headers={**stack.headers(), "X-Request-Id": "req-hung"}))
    assert assert_503_envelope(response, "req-hung") == "metadata.unavailable"
    assert elapsed < 15, f"list took {elapsed:.1f}s against a silent database"


@pytest.fixture
def own_database(pg_admin_url: str) -> Iterator[str]:
    """A migrated database of this test's own, so killing its connections harms no one else."""
    with migrated_pg_database(pg_admin_url) as url:
        yield url


def kill_connections(admin_url: str, url: str) -> int:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()"),
            {"db": make_url(url).database}).scalar_one()
    admin.dispose()
    return int(killed)


def test_connection_dropped_by_the_server_is_replaced(make_stack, pg_admin_url: str,
                                                     own_database: str) -> None:
    stack = make_stack("s3-postgres", database_url=own_database)
    canvas = new_canvas()
    path = f"/canvas/{canvas}/artifacts/preview?rev=1"
    headers = {**stack.headers(), "Content-Type": "image/png"}
    first = stack.client.post(path, content=PNG, headers=headers)
    assert first.status_code == 201

    assert kill_connections(pg_admin_url, own_database) >= 1, "the pool held a connection"

    second = stack.client.post(path, content=PNG, headers=headers)
    assert second.status_code == 201, second.text
    listed = stack.client.get(f"/canvas/{canvas}/artifacts", headers=stack.headers())
    assert listed.status_code == 200
    assert {item["id"] for item in listed.json()["items"]} == {first.json()["id"],
                                                               second.json()["id"]}


def test_unreachable_bucket_gives_503_and_writes_no_record(make_stack) -> None:
    stack = make_stack("s3-postgres", aws_endpoint_url_s3="http://127.0.0.1:1",
                       s3_max_attempts=1, s3_connect_timeout=1.0)
    canvas = new_canvas()
    response, elapsed = timed(lambda: stack.client.post(
        f"/canvas/{canvas}/artifacts/preview?rev=1", content=PNG,
        headers={**stack.headers(), "Content-Type": "image/png", "X-Request-Id": "req-s3"}))
    assert response.status_code == 503, response.text
    assert response.json()["error"] == {
        "code": "storage.unavailable", "message": response.json()["error"]["message"],
        "request_id": "req-s3"}
    assert elapsed < FAST
    listed = stack.client.get(f"/canvas/{canvas}/artifacts", headers=stack.headers())
    assert listed.json() == {"items": [], "next_cursor": None}
