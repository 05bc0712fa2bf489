"""Export under load, on both stacks: paged manifest, bounded concurrency, HEAD, probes.

The manifest reads lineage once per page (not twice per artifact) and the
first bytes leave after one page's work; EXPORT_CONCURRENCY exports stream at
once and the next gets 429 while /healthz, /readyz and other tenants keep
answering; HEAD answers the headers without building the archive; the
health probes answer with the shared thread pool exhausted.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import socket
import tarfile
import time
from collections.abc import Callable, Iterator

import anyio.to_thread
import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from conftest import PNG, Stack, new_canvas
from engines.app import create_app
from engines.auth.routing import RequestContext
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_audit,
    create_preview,
    created,
    new_tenant,
    url,
)
from engines.events.tests.sse_client import serve_in_thread
from engines.lifecycle import export

BIG = PNG + b"\0" * (8 * 1024 * 1024)
"""A payload far larger than what a 16 KiB receive buffer and the server's send buffer
hold: an export of it that the client stops reading stays in flight."""


@contextlib.contextmanager
def lineage_queries(stack: Stack) -> Iterator[list[str]]:
    """Every statement that reads lineage (Nexus documents or dataset events)."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "nexus_documents" in statement or "dataset_events" in statement:
            seen.append(statement)

    event.listen(stack.runtime.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(stack.runtime.engine, "before_cursor_execute", record)


def test_manifest_reads_lineage_once_per_page_and_starts_after_one_page(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "PAGE", 3)
    tenant, canvas = new_tenant(), new_canvas()
    records = [created(create_audit(stack, canvas, rev=rev, tenant=tenant)) for rev in range(7)]
    ctx = RequestContext(tenant_id=tenant, env="dev", project_id="p_main", request_id="r_1",
                         correlation_id="c_1")

    with lineage_queries(stack) as queries:
        chunks = export.stream_export(stack.runtime, ctx, canvas, None)
        first = next(chunks)
        assert len(queries) == 1, "the first bytes wait for one page, not the whole manifest"
        archive = first + b"".join(chunks)
    assert len(queries) == 3, "one lineage query per page of 3, not two per artifact"

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        assert tar.getnames()[0] == "manifest.jsonl"
        manifest = [orjson.loads(line) for line in
                    tar.extractfile("manifest.jsonl").read().splitlines()]  # type: ignore[union-attr]
    assert [line["record"]["id"] for line in manifest] == sorted(r["id"] for r in records)
    for line in manifest:
        assert [d["subject_id"] for d in line["lineage"]["documents"]] == [line["record"]["id"]]
        assert [e["subject_id"] for e in line["lineage"]["events"]] == [line["record"]["id"]]


def test_head_export_answers_the_headers_without_building_the_archive(stack: Stack) -> None:
    canvas = new_canvas()
    created(create_preview(stack, canvas))
    with lineage_queries(stack) as queries:
        head = stack.client.head(url(canvas, "/export"), headers=stack.headers(role="viewer"))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "application/x-tar"
    assert head.headers["content-disposition"] == \
        f'attachment; filename="{canvas}-artifacts.tar"'
    assert "content-length" not in head.headers, "the GET's length is not known up front"
    assert queries == [], "HEAD read no lineage: no manifest was built"
    missing = stack.client.head(url(new_canvas(), "/export"), headers=stack.headers())
    assert missing.status_code == 404


def _slow_reader() -> httpx.Client:
    """A client whose sockets take 16 KiB at a time: an unread export stays in flight."""
    options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)]
    return httpx.Client(transport=httpx.HTTPTransport(socket_options=options), timeout=30)


def _eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.1)


def test_exports_beyond_the_concurrency_limit_get_429_and_the_rest_keep_answering(
        stack: Stack) -> None:
    canvas = new_canvas()
    created(create_preview(stack, canvas, body=BIG))
    app = create_app(runtime=stack.runtime)
    headers = stack.headers(role="viewer")
    path = url(canvas, "/export")
    with serve_in_thread(app) as base, _slow_reader() as http:
        with contextlib.ExitStack() as held:
            started = []
            for _ in range(stack.settings.export_concurrency):  # 2 by default
                response = held.enter_context(http.stream("GET", base + path, headers=headers))
                assert response.status_code == 200
                started.append(response.iter_raw())
                next(started[-1])  # started, then left unread: the slot stays taken

            refused = httpx.get(base + path, headers=headers, timeout=10)
            error = assert_error(refused, 429, "export.too_many")
            assert int(refused.headers["retry-after"]) > 0
            assert "2 concurrent exports" in error["message"]

            assert httpx.get(base + "/healthz", timeout=10).status_code == 200
            assert httpx.get(base + "/readyz", timeout=10).status_code == 200
            other = httpx.get(base + url(new_canvas()), headers=stack.headers("t_beta"),
                              timeout=10)
            assert other.status_code == 200, other.text
        # the clients went away: their slots come back
        _eventually(lambda: app.state.export_slots.taken == 0)
        again = httpx.get(base + path, headers=headers, timeout=30)
        assert again.status_code == 200 and len(again.content) > len(BIG)


def test_health_probes_answer_with_the_thread_pool_exhausted(stack: Stack) -> None:
    """Every thread-pool token taken (as by long exports): /healthz and /readyz still answer."""
    with TestClient(create_app(runtime=stack.runtime)) as client, \
            concurrent.futures.ThreadPoolExecutor(1) as prober:
        limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)
        hogs = [object() for _ in range(int(limiter.total_tokens))]
        for hog in hogs:
            client.portal.call(limiter.acquire_on_behalf_of_nowait, hog)
        try:
            health = prober.submit(client.get, "/healthz").result(timeout=10)
            ready = prober.submit(client.get, "/readyz").result(timeout=10)
        finally:
            for hog in hogs:
                client.portal.call(limiter.release_on_behalf_of, hog)
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
