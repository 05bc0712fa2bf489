"""Fault injection on the real backends: every failed create answers 503 and leaves nothing.

Faults are real, not mocked: an S3 server (moto, over loopback) that goes
away before or in the middle of a multipart upload, a PostgreSQL that cannot
be reached, a PostgreSQL connection killed by the server in the middle of
the metadata transaction, and a Nexus write that raises. After each one the
test looks at the backends themselves (rows by tenant, objects and
unfinished uploads in the bucket, files under the media root) rather than
trusting the response, and then shows the same service creating normally
once the fault is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import httpx
import pytest
import sqlalchemy
import uvicorn
from fastapi import FastAPI
from moto.server import ThreadedMotoServer
from sqlalchemy import Connection, Engine, func, select, text

from conftest import PNG, Stack, new_canvas
from engines.canvas_artifacts.repository import canvas_artifacts, replay_indexes
from engines.db.idempotency import idempotency_keys
from engines.lifecycle.gc import collect
from engines.lineage.dataset_events import DatasetEvent
from engines.lineage.nexus.backends.sql import SqlNexusBackend
from engines.lineage.nexus.backends.sql import documents as nexus_documents
from engines.lineage.nexus.backends.sql import events as dataset_events
from engines.lineage.nexus.schemas import NexusDocument
from engines.media_v2.repository import artifacts as media_artifacts
from engines.media_v2.repository import assets as media_assets
from engines.storage.base import BlobInfo

MIB = 1024 * 1024
TABLES = (canvas_artifacts, replay_indexes, idempotency_keys, media_artifacts, media_assets,
          nexus_documents, dataset_events)
FAST_S3 = {"s3_max_attempts": 1, "s3_connect_timeout": 1.0, "s3_read_timeout": 5.0}
PROMPT_SECONDS = 5.0


# ---- looking at the backends ---------------------------------------------


def new_tenant() -> str:
    """A tenant no other test uses, so every row and blob found is this test's."""
    return f"t_fault_{uuid.uuid4().hex[:10]}"


def rows_by_table(engine: Engine, tenant: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t).where(
            t.c.tenant_id == tenant)).scalar_one() for t in TABLES}


def assert_no_rows(engine: Engine, tenant: str) -> None:
    counts = rows_by_table(engine, tenant)
    assert counts == dict.fromkeys(counts, 0), counts


def blobs(stack: Stack, tenant: str) -> list[BlobInfo]:
    """Objects under the tenant's prefix, and every unfinished upload."""
    store = stack.runtime.store
    return [*store.iter_blobs(f"tenants/{tenant}/"), *store.iter_uploads()]


def png(size: int) -> bytes:
    return PNG[:16] + os.urandom(size - 16)


def watch_s3_writes(stack: Stack) -> list[tuple[str, str]]:
    """(operation, key) of every object write and delete the service sends to S3."""
    calls: list[tuple[str, str]] = []
    events = stack.runtime.store.client.meta.events  # type: ignore[attr-defined]
    for operation in ("PutObject", "DeleteObject"):
        events.register(f"before-parameter-build.s3.{operation}",
                        lambda params, model, **_: calls.append((model.name, params["Key"])))
    return calls


def assert_blob_written_then_deleted(stack: Stack, calls: list[tuple[str, str]]) -> None:
    """The blob did exist before metadata failed, and compensation removed it."""
    assert [op for op, _ in calls] == ["PutObject", "DeleteObject"], calls
    assert calls[0][1] == calls[1][1]
    store = stack.runtime.store
    assert [*store.iter_blobs(""), *store.iter_uploads()] == []  # the whole bucket is empty


def post_preview(stack: Stack, tenant: str, body: bytes, *, canvas: str | None = None,
                 **headers: str) -> httpx.Response:
    return stack.client.post(f"/canvas/{canvas or new_canvas()}/artifacts/preview?rev=1",
                             content=body,
                             headers={**stack.headers(tenant), "Content-Type": "image/png",
                                      **headers})


def assert_unavailable(response: httpx.Response, request_id: str) -> dict[str, Any]:
    """503 with exactly the envelope, carrying the caller's request id."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["request_id"] == request_id == response.headers["x-request-id"]
    assert body["error"]["code"] and body["error"]["message"]
    return body["error"]


def assert_create_works(stack: Stack, tenant: str) -> None:
    """The service recovered: a create succeeds and its bytes read back intact."""
    data = png(64 * 1024)
    canvas = new_canvas()
    created = post_preview(stack, tenant, data, canvas=canvas)
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    got = stack.client.get(f"/canvas/{canvas}/artifacts/{record['id']}/content",
                           headers=stack.headers(tenant))
    assert got.status_code == 200 and got.content == data


# ---- an S3 server the test can take down ---------------------------------


class _Link:
    """A loopback TCP forwarder that can be cut (every connection reset) and reopened.

    werkzeug's threaded server keeps serving keep-alive connections after
    shutdown, so stopping moto alone would not look like S3 going away to a
    client with pooled connections; cutting the link does.
    """

    def __init__(self) -> None:
        self.port = 0
        self.upstream: tuple[str, int] = ("127.0.0.1", 0)
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def open(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=2)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(256 * 1024):
                dst.sendall(data)
        self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._conns.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns = list(self._conns)
        self._drop(*conns)


class S3Server:
    """A dedicated moto S3 server behind a link: stop() is a real outage, start() a recovery.

    moto keeps its state per process, so the server started again sees the
    same buckets, objects and unfinished uploads, as a real S3 would.
    """

    def __init__(self) -> None:
        self.link = _Link()
        self.moto: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        self.link.open(self.moto.get_host_and_port())

    def stop(self) -> None:
        self.link.cut()
        if self.moto is not None:
            self.moto.stop()
            self.moto._server.server_close()  # type: ignore[union-attr] - stop() leaves it bound
            self.moto = None

    @property
    def endpoint(self) -> str:
        """What the service is configured with: reachable only while the server is up."""
        return f"http://127.0.0.1:{self.link.port}"

    def direct_client(self):
        """A client straight to moto, for the test to watch the upload happen."""
        assert self.moto is not None
        host, port = self.moto.get_host_and_port()
        return boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")


@pytest.fixture
def s3_server(s3_endpoint: str) -> Iterator[S3Server]:
    """Depends on s3_endpoint only for the fake AWS credentials it sets."""
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_stack(make_stack, s3_server: S3Server) -> Stack:
    """s3-postgres whose S3 is the stoppable server."""
    bucket = f"canvas-{uuid.uuid4().hex[:10]}"
    s3_server.direct_client().create_bucket(Bucket=bucket)
    return make_stack("s3-postgres", aws_endpoint_url_s3=s3_server.endpoint, raw_bucket=bucket,
                      s3_part_size=5 * MIB, **FAST_S3)


@contextlib.contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The app under a real uvicorn on loopback, so a request body truly streams."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# ---- S3 -------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.postgres
def test_s3_stopped_before_upload(s3_stack: Stack, s3_server: S3Server) -> None:
    tenant = new_tenant()
    canvas = new_canvas()
    headers = s3_stack.headers(tenant)
    existing_data = png(8192)
    existing_response = post_preview(s3_stack, tenant, existing_data, canvas=canvas)
    assert existing_response.status_code == 201, existing_response.text
    existing = existing_response.json()
    content_url = f"/canvas/{canvas}/artifacts/{existing['id']}/content"
    s3_server.stop()
    attempts = {
        "preview": lambda rid: post_preview(s3_stack, tenant, png(4096), canvas=canvas,
                                            **{"X-Request-Id": rid}),
        "replay": lambda rid: s3_stack.client.post(
            f"/canvas/{canvas}/artifacts/replay", headers={**headers, "X-Request-Id": rid},
            json={"rev": 1, "keyframes": [{"t_ms": 0, "type": "snapshot", "data": {}}],
                  "summary": {}}),
        "audit": lambda rid: s3_stack.client.post(
            f"/canvas/{canvas}/artifacts/audit?rev=1", headers={**headers, "X-Request-Id": rid}),
    }
    for kind, attempt in attempts.items():
        request_id = f"req-s3-down-{kind}"
        started = time.monotonic()
        error = assert_unavailable(attempt(request_id), request_id)
        assert time.monotonic() - started < PROMPT_SECONDS, kind
        assert error["code"] == "storage.unavailable", kind
    read = s3_stack.client.get(content_url, headers={**headers, "X-Request-Id": "req-s3-read"})
    assert assert_unavailable(read, "req-s3-read")["code"] == "storage.unavailable"
    assert s3_stack.client.get(content_url.removesuffix("/content"),
                               headers=headers).status_code == 200  # metadata still served
    counts = rows_by_table(s3_stack.runtime.engine, tenant)
    assert counts["canvas_artifacts"] == counts["nexus_documents"] == 1  # only `existing`
    assert counts["media_v2_artifacts"] == counts["dataset_events"] == 1

    s3_server.start()
    assert [b.key for b in blobs(s3_stack, tenant)] == [s3_stack.runtime.store.key_for(
        existing["uri"])]
    assert s3_stack.client.get(content_url, headers=headers).content == existing_data
    assert_create_works(s3_stack, tenant)


@pytest.mark.s3
@pytest.mark.postgres
def test_s3_stopped_during_multipart_upload(s3_stack: Stack, s3_server: S3Server) -> None:
    """12 MiB streamed at 5 MiB parts; S3 goes away once part 1 is stored."""
    tenant = new_tenant()
    bucket = s3_stack.settings.raw_bucket
    watcher = s3_server.direct_client()
    chunks = [png(MIB)] + [os.urandom(MIB) for _ in range(11)]
    stopped_after: list[int] = []

    def parts_stored() -> int:
        uploads = watcher.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return sum(len(watcher.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
                       .get("Parts", [])) for u in uploads)

    def body() -> Iterator[bytes]:
        for index, chunk in enumerate(chunks):
            yield chunk
            if index == 5:  # 6 MiB sent: the service is uploading part 1 now
                deadline = time.monotonic() + 15
                while (count := parts_stored()) < 1:
                    assert time.monotonic() < deadline, "part 1 never reached S3"
                    time.sleep(0.02)
                stopped_after.append(count)
                s3_server.stop()

    request_id = "req-s3-mid-upload"
    with served(s3_stack.client.app) as base, httpx.Client(base_url=base, timeout=30) as http:
        response = http.post(f"/canvas/{new_canvas()}/artifacts/preview?rev=1", content=body(),
                             headers={**s3_stack.headers(tenant), "Content-Type": "image/png",
                                      "X-Request-Id": request_id})
    assert stopped_after == [1], "S3 must go down with exactly one part stored"
    assert assert_unavailable(response, request_id)["code"] == "storage.unavailable"
    assert_no_rows(s3_stack.runtime.engine, tenant)

    # Back up: no object was ever completed. The abort the service sent while S3
    # was down could not arrive, so the upload's stored part is still there,
    # invisible to readers; gc is what removes it.
    s3_server.start()
    left = blobs(s3_stack, tenant)
    assert [b for b in left if b.complete] == []
    assert len(left) == 1 and left[0].key.startswith(f"tenants/{tenant}/dev/canvas/")
    report = collect(s3_stack.runtime.store, s3_stack.runtime.engine,
                     older_than=timedelta(0), apply=True)
    assert left[0].key in report.incomplete_uploads
    assert blobs(s3_stack, tenant) == []
    uploads = s3_server.direct_client().list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []
    assert_create_works(s3_stack, tenant)


# ---- PostgreSQL -----------------------------------------------------------


@pytest.mark.postgres
def test_postgres_unreachable(make_stack, pg_url: str) -> None:
    """The database cannot be reached: 503 before any byte is stored (the quota check
    asks it first), and nothing is left anywhere."""
    tenant = new_tenant()
    down = make_stack("s3-postgres", database_url="postgresql+psycopg://postgres@127.0.0.1:1/x",
                      **FAST_S3)
    writes = watch_s3_writes(down)
    request_id = "req-pg-down"
    started = time.monotonic()
    response = post_preview(down, tenant, png(256 * 1024), **{"X-Request-Id": request_id})
    assert time.monotonic() - started < PROMPT_SECONDS
    assert assert_unavailable(response, request_id)["code"] == "metadata.unavailable"
    assert writes == []
    assert [*down.runtime.store.iter_blobs(""), *down.runtime.store.iter_uploads()] == []
    healthy_db = sqlalchemy.create_engine(pg_url)
    try:
        assert_no_rows(healthy_db, tenant)
    finally:
        healthy_db.dispose()

    assert_create_works(make_stack("s3-postgres", raw_bucket=down.settings.raw_bucket), tenant)


class TerminatedMidTransaction(SqlNexusBackend):
    """Kills the transaction's server connection (from another session) before writing Nexus.

    By then the media_v2 asset, the DerivedArtifact and the artifact record
    are written on that transaction; PostgreSQL must discard them all.
    """

    def __init__(self, admin_url: str, times: int) -> None:
        self.admin_url = admin_url
        self.times = times
        self.killed: list[int] = []

    def record(self, tx: Connection, document: NexusDocument, event: DatasetEvent) -> None:
        if len(self.killed) < self.times:
            pid = tx.execute(text("SELECT pg_backend_pid()")).scalar_one()
            admin = sqlalchemy.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    assert conn.execute(text("SELECT pg_terminate_backend(:pid)"),
                                        {"pid": pid}).scalar_one()
            finally:
                admin.dispose()
            self.killed.append(pid)
        super().record(tx, document, event)


@pytest.mark.postgres
def test_postgres_connection_dropped_mid_transaction_is_retried_once(
        make_stack, pg_admin_url: str) -> None:
    """One lost connection costs a retry on a fresh connection, not the request."""
    tenant = new_tenant()
    nexus = TerminatedMidTransaction(pg_admin_url, times=1)
    stack = make_stack("s3-postgres", nexus=nexus)
    response = post_preview(stack, tenant, png(128 * 1024))
    assert len(nexus.killed) == 1
    assert response.status_code == 201, response.text
    artifact = response.json()
    with stack.runtime.engine.connect() as conn:
        assert len(stack.runtime.nexus.documents_for(conn, tenant, "dev", artifact["id"])) == 1


@pytest.mark.postgres
def test_postgres_connection_dropped_twice_is_503_and_keeps_nothing(
        make_stack, pg_admin_url: str) -> None:
    tenant = new_tenant()
    nexus = TerminatedMidTransaction(pg_admin_url, times=2)
    stack = make_stack("s3-postgres", nexus=nexus)
    writes = watch_s3_writes(stack)
    request_id = "req-pg-dropped"
    response = post_preview(stack, tenant, png(128 * 1024), **{"X-Request-Id": request_id})
    assert len(nexus.killed) == 2
    assert assert_unavailable(response, request_id)["code"] == "metadata.write_failed"
    assert_no_rows(stack.runtime.engine, tenant)
    assert_blob_written_then_deleted(stack, writes)
    assert_create_works(stack, tenant)  # the pool replaced the dead connection


# ---- Nexus ----------------------------------------------------------------


class NexusDown(SqlNexusBackend):
    """A Nexus whose writes raise until it is brought back."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def record(self, tx: Connection, document: NexusDocument, event: DatasetEvent) -> None:
        self.calls += 1
        if self.down:
            raise RuntimeError("nexus: write refused")
        super().record(tx, document, event)


@pytest.mark.parametrize("name", ["local-sqlite", pytest.param(
    "s3-postgres", marks=[pytest.mark.s3, pytest.mark.postgres])])
def test_nexus_write_raises(make_stack, name: str) -> None:
    tenant = new_tenant()
    nexus = NexusDown()
    stack = make_stack(name, nexus=nexus)
    writes = watch_s3_writes(stack) if name == "s3-postgres" else None
    canvas = new_canvas()
    data = png(300 * 1024)
    key = f"nexus-{uuid.uuid4().hex}"
    request_id = "req-nexus-down"
    response = post_preview(stack, tenant, data, canvas=canvas,
                            **{"X-Request-Id": request_id, "Idempotency-Key": key})
    assert nexus.calls == 1
    assert assert_unavailable(response, request_id)["code"] == "metadata.write_failed"
    assert_no_rows(stack.runtime.engine, tenant)
    if writes is not None:
        assert_blob_written_then_deleted(stack, writes)
    else:  # the blob's directory was made when it was written; the blob itself is gone
        written_to = stack.settings.media_local_root / f"tenants/{tenant}/dev/canvas/{canvas}"
        assert written_to.is_dir() and blobs(stack, tenant) == []

    # Nexus back: the retry with the same key creates (the failed attempt did
    # not burn the key), and the artifact carries its lineage.
    nexus.down = False
    retried = post_preview(stack, tenant, data, canvas=canvas, **{"Idempotency-Key": key})
    assert retried.status_code == 201, retried.text
    artifact_id = retried.json()["id"]
    lineage = stack.client.get(f"/canvas/{canvas}/artifacts/{artifact_id}/lineage",
                               headers=stack.headers(tenant)).json()
    assert len(lineage["documents"]) == 1 and len(lineage["events"]) == 1
    assert rows_by_table(stack.runtime.engine, tenant)["canvas_artifacts"] == 1
    assert len(blobs(stack, tenant)) == 1
    assert_create_works(stack, tenant)
