"""engines.client against a real `engines serve`, on local+SQLite and S3+PostgreSQL.

Every method of ArtifactClient, and of AsyncArtifactClient, is used through
its public API only: the four creates, get, content (to a path and to a
file, a replay window, a render-ref), list over several pages, latest,
lineage, delete, signed_url, export, and events (backlog, then live). Errors
arrive as one ArtifactError with the envelope's code, message and
request_id and the HTTP status. Retries and resumption under faults are in
test_client_faults.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import anyio
import httpx
import orjson
import pytest

from conftest import JPEG, PNG, SVG, new_canvas
from engines.client import ArtifactClient, ArtifactError, ArtifactRecord, Event
from tests._client_stacks import PROJECT, Served, new_tenant, served_fixture, token

served = served_fixture()

REPLAY = {"rev": 42, "rev_from": 30, "summary": {"commits": 2}, "keyframes": [
    {"t_ms": 0, "rev": 30, "type": "snapshot", "data": {"shapes": 3}},
    {"t_ms": 900, "rev": 35, "type": "snapshot", "data": {"shapes": 5}},
    {"t_ms": 1500, "rev": 40, "type": "gesture", "data": {"tool": "pen"}},
    {"t_ms": 2100, "rev": 42, "type": "commit"}]}


def test_importing_the_client_loads_no_server_code() -> None:
    code = ("import sys, engines.client; heavy = {'fastapi', 'starlette', 'sqlalchemy', "
            "'boto3', 'uvicorn', 'alembic'} & set(sys.modules); print(sorted(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_the_python_walkthrough_runs(served: Served) -> None:
    script = Path(__file__).resolve().parents[1] / "examples" / "walkthrough.py"
    env = {**os.environ, "API": served.url, "TOKEN": token(), "CANVAS": new_canvas()}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, check=False, env=env)
    assert result.returncode == 0, result.stderr
    for expected in (">>> preview = client.create_preview", '"mime_type": "image/png"',
                     "read_bytes() == PNG\ntrue", '"keyframes": [{"t_ms": 900',
                     "code='auth.tenant_forbidden', status=403", "walkthrough: done"):
        assert expected in result.stdout, result.stdout


def test_creates_reads_and_content(served: Served, tmp_path: Path) -> None:
    canvas = new_canvas()
    source = tmp_path / "preview.png"
    source.write_bytes(PNG)
    with served.client() as client:
        from_path = client.create_preview(canvas, 7, source)
        from_bytes = client.create_preview(canvas, 8, JPEG, "image/jpeg")
        from_file = client.create_preview(canvas, 9, io.BytesIO(SVG))
        ref = client.create_render_ref(canvas, 10, "https://cdn.example/r/1.png", "image/png")
        replay = client.create_replay(canvas, REPLAY)
        audit = client.create_audit(canvas, 42)

        assert isinstance(from_path, ArtifactRecord)
        assert (from_path.kind, from_path.rev, from_path.mime_type, from_path.size_bytes,
                from_path.project_id) == ("preview", 7, "image/png", len(PNG), PROJECT)
        assert (from_bytes.mime_type, from_file.mime_type) == ("image/jpeg", "image/svg+xml")
        assert ref.uri == "https://cdn.example/r/1.png"
        assert replay.kind == "replay" and replay.rev == 42
        assert replay.meta["keyframe_count"] == 4
        assert audit.meta["placeholder"] is True

        assert client.get(canvas, from_path.id) == from_path
        fetched = tmp_path / "fetched.png"
        assert client.content(canvas, from_path.id, fetched) == len(PNG)
        assert fetched.read_bytes() == PNG
        into = io.BytesIO()
        client.content(canvas, from_bytes.id, into)
        assert into.getvalue() == JPEG

        window = io.BytesIO()
        client.content(canvas, replay.id, window, from_ms=1000, to_ms=2000)
        assert [k["t_ms"] for k in orjson.loads(window.getvalue())["keyframes"]] == [900, 1500]
        report = io.BytesIO()
        client.content(canvas, audit.id, report)
        assert orjson.loads(report.getvalue())["status"] == "pending"

        assert client.latest(canvas, "preview").id == ref.id
        assert client.latest(canvas, "replay").id == replay.id
        lineage = client.lineage(canvas, from_path.id)
        assert lineage.artifact_id == from_path.id
        assert lineage.events[0].event_type == "canvas.preview.created"


def test_render_ref_content_follows_the_redirect_without_our_headers(
        served: Served, tmp_path: Path) -> None:
    seen: list[httpx.Headers] = []

    def render_host(request: httpx.Request) -> httpx.Response:
        if request.url.host != "cdn.example":
            return httpx.Response(599)  # never: only the redirect target is mocked
        seen.append(request.headers)
        return httpx.Response(200, content=PNG)

    real = httpx.HTTPTransport()

    class Split(httpx.BaseTransport):
        """The service for real; the render's host (not on this machine) mocked."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.host == "cdn.example":
                return render_host(request)
            return real.handle_request(request)

        def close(self) -> None:
            real.close()

    canvas = new_canvas()
    with served.client(transport=Split()) as client:
        ref = client.create_render_ref(canvas, 1, "https://cdn.example/r/2.png")
        assert client.content(canvas, ref.id, tmp_path / "r.png") == len(PNG)
    assert (tmp_path / "r.png").read_bytes() == PNG
    assert "authorization" not in seen[0] and "x-tenant-id" not in seen[0]


def test_list_iterates_every_page(served: Served) -> None:
    canvas = new_canvas()
    with served.client() as client:
        made = [client.create_audit(canvas, rev).id for rev in range(7)]
        listed = [record.id for record in client.list(canvas, page_size=2)]
        assert sorted(listed) == sorted(made) and len(listed) == 7
        assert [r.rev for r in client.list(canvas, rev=3, page_size=1)] == [3]
        assert list(client.list(canvas, kind="preview")) == []


def test_delete_signed_url_and_export(served: Served, tmp_path: Path) -> None:
    canvas = new_canvas()
    with served.client() as client:
        keep = client.create_preview(canvas, 1, PNG)
        gone = client.create_replay(canvas, REPLAY)
        client.delete(canvas, gone.id)
        with pytest.raises(ArtifactError) as missing:
            client.get(canvas, gone.id)
        assert (missing.value.status, missing.value.code) == (404, "canvas.not_found")

        signed = client.signed_url(canvas, keep.id, ttl_seconds=60)
        assert httpx.get(signed.url, timeout=10).content == PNG  # no headers at all
        thumb = client.signed_url(canvas, keep.id, w=64, format="png")
        assert "w=64" in thumb.url and thumb.expires_at > keep.created_at

        size = client.export(canvas, tmp_path / "board.tar")
        assert size == (tmp_path / "board.tar").stat().st_size
        with tarfile.open(tmp_path / "board.tar") as tar:
            manifest = [orjson.loads(line) for line in
                        tar.extractfile("manifest.jsonl").read().splitlines()]  # type: ignore[union-attr]
        assert [entry["record"]["id"] for entry in manifest] == [keep.id]


def test_errors_carry_the_envelope_and_the_status(served: Served, tmp_path: Path) -> None:
    canvas = new_canvas()
    with served.client() as client:
        record = client.create_audit(canvas, 1)
        with pytest.raises(ArtifactError) as bad_type:
            client.create_preview(canvas, 1, b"not an image at all", "image/png")
        with pytest.raises(ArtifactError) as bad_replay:
            client.create_replay(canvas, {"rev": 1})
        with pytest.raises(ArtifactError) as reused:
            client.create_audit(canvas, 1, idempotency_key="k-reused")
            client.create_audit(canvas, 2, idempotency_key="k-reused")
    assert bad_type.value.status == 415 and bad_type.value.code.startswith("request.")
    assert bad_replay.value.status == 422
    assert (reused.value.status, reused.value.code) == (409, "idempotency.key_reused")

    with served.client(tenant="t_other") as other, pytest.raises(ArtifactError) as foreign:
        other.get(canvas, record.id)
    with (ArtifactClient(served.url, "not-a-token", "t_acme", "dev", PROJECT) as anonymous,
          pytest.raises(ArtifactError) as unauthenticated):
        anonymous.get(canvas, record.id)
    with served.client(role="viewer") as viewer:
        with pytest.raises(ArtifactError) as read_only:
            viewer.create_audit(canvas, 3)
        assert viewer.get(canvas, record.id) == record
    with (ArtifactClient(served.url, token("t_acme"), "t_other", "dev", PROJECT) as mismatched,
          pytest.raises(ArtifactError) as wrong_tenant):
        mismatched.get(canvas, record.id)

    assert (foreign.value.status, foreign.value.code) == (404, "canvas.not_found")
    assert unauthenticated.value.status == 401
    assert read_only.value.status == 403
    assert (wrong_tenant.value.status, wrong_tenant.value.code) == (403,
                                                                    "auth.tenant_forbidden")
    for error in (foreign, unauthenticated, read_only, wrong_tenant, bad_type):
        assert len(error.value.request_id or "") == 32, error.value
        assert error.value.message and error.value.code in str(error.value)
    assert not list(tmp_path.iterdir())  # nothing was downloaded anywhere


def test_failed_download_leaves_no_file(served: Served, tmp_path: Path) -> None:
    with served.client() as client, pytest.raises(ArtifactError):
        client.content(new_canvas(), "art_missing", tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def _collect(client: ArtifactClient, canvas: str | None, after: int | None, count: int,
             into: list[Event]) -> threading.Thread:
    def run() -> None:
        for event in client.events(canvas, after=after):
            into.append(event)
            if len(into) == count:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_events_backlog_then_live(served: Served) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    with served.client(tenant) as client:
        first = client.create_audit(canvas, 1)
        client.create_audit(new_canvas(), 1)  # another canvas: not in this canvas's feed
        got: list[Event] = []
        thread = _collect(client, canvas, 0, 3, got)
        second = client.create_preview(canvas, 2, PNG)
        client.delete(canvas, first.id)
        thread.join(timeout=20)
    assert [(e.type, e.artifact_id) for e in got] == [
        ("artifact_written", first.id), ("artifact_written", second.id),
        ("artifact_deleted", first.id)]
    assert [e.seq for e in got] == [1, 3, 4]


def test_async_client_does_what_the_sync_one_does(served: Served, tmp_path: Path) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    (tmp_path / "p.png").write_bytes(PNG)

    async def main() -> None:
        async with served.aclient(tenant) as client:
            preview = await client.create_preview(canvas, 1, tmp_path / "p.png")
            ref = await client.create_render_ref(canvas, 2, "https://cdn.example/x.png")
            replay = await client.create_replay(canvas, orjson.dumps(REPLAY))
            audit = await client.create_audit(canvas, 3, {
                "v": 1, "kind": "render", "status": "passed", "checks": [], "findings": [],
                "summary": {"errors": 0, "warnings": 0},
                "generated_at": "2026-11-28T10:00:00Z"})
            assert audit.meta["status"] == "passed"
            assert await client.get(canvas, preview.id) == preview
            assert (await client.latest(canvas, "preview")).id == ref.id
            assert (await client.lineage(canvas, replay.id)).artifact_id == replay.id
            listed = [r.id async for r in client.list(canvas, page_size=1)]
            assert sorted(listed) == sorted([preview.id, ref.id, replay.id, audit.id])
            assert await client.content(canvas, preview.id, tmp_path / "a.png") == len(PNG)
            assert (tmp_path / "a.png").read_bytes() == PNG
            assert (await client.signed_url(canvas, preview.id)).url.startswith("http")
            assert await client.export(canvas, tmp_path / "a.tar") > 0
            await client.delete(canvas, ref.id)
            with pytest.raises(ArtifactError) as missing:
                await client.get(canvas, ref.id)
            assert missing.value.status == 404 and missing.value.request_id
            events = []
            async with contextlib.aclosing(client.events(canvas, after=0)) as feed:
                async for event in feed:
                    events.append(event)
                    if len(events) == 5:
                        break
            assert [e.type for e in events] == ["artifact_written"] * 4 + ["artifact_deleted"]

    anyio.run(main)


class _Recording(httpx.HTTPTransport):
    """The default transport, noting each request's method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        return super().handle_request(request)


def test_a_preview_above_the_threshold_goes_through_an_upload_session(served: Served) -> None:
    """The client switches to an upload session by itself above `upload_threshold`:
    parts PUT (to the bucket on S3), then complete; the artifact is the same bytes."""
    canvas, tenant = new_canvas(), new_tenant()
    payload = PNG + os.urandom(9 * 1024 * 1024)  # a PNG, then enough for two 8 MiB parts
    recording = _Recording()
    with served.client(tenant, upload_threshold=1024 * 1024, transport=recording) as api:
        record = api.create_preview(canvas, 4, payload)
        assert record.size_bytes == len(payload) and record.mime_type == "image/png"
        out = io.BytesIO()
        api.content(canvas, record.id, out)
        assert out.getvalue() == payload
    methods = [method for method, _path in recording.seen]
    assert ("POST", f"/canvas/{canvas}/artifacts/preview/uploads") in recording.seen
    assert methods.count("PUT") == 2
    assert any(path.endswith("/complete") for _m, path in recording.seen)
    assert ("POST", f"/canvas/{canvas}/artifacts/preview") not in recording.seen


def test_a_small_preview_is_one_request(served: Served) -> None:
    canvas, tenant = new_canvas(), new_tenant()
    recording = _Recording()
    with served.client(tenant, transport=recording) as api:
        api.create_preview(canvas, 1, PNG)
    assert [path for _m, path in recording.seen] == [f"/canvas/{canvas}/artifacts/preview"]
