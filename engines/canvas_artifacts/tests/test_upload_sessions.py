"""Upload sessions on both stacks: presigned S3 part URLs PUT with plain httpx straight to
the (moto) bucket, signed part URLs on the service for the local store.

What was kept is read from the backends (blob listing, rows), never from a response.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from conftest import JPEG, PNG, Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    assert_nothing_kept,
    blob_keys,
    created,
    new_tenant,
    row_counts,
    url,
)
from engines.canvas_artifacts.uploads import upload_sessions
from engines.config import MIB
from engines.lifecycle.gc import collect

PART = 5 * MIB
BIG = PNG + bytes(range(256)) * (PART // 256) + b"tail" * 250
"""A PNG of two parts: 5 MiB, then 1 KiB and a bit."""


@pytest.fixture
def parted(stack_name: str, make_stack) -> Stack:
    """A stack whose sessions cut objects into 5 MiB parts (S3's smallest)."""
    return make_stack(stack_name, upload_part_bytes=PART)


def uploads_url(canvas: str, suffix: str = "") -> str:
    return url(canvas, f"/preview/uploads{suffix}")


def open_session(stack: Stack, canvas: str, data: bytes, *, tenant: str, rev: int = 1,
                 mime: str = "image/png", **declared: Any) -> httpx.Response:
    body = {"size_bytes": len(data), "mime_type": mime,
            "sha256": hashlib.sha256(data).hexdigest(), **declared}
    return stack.client.post(uploads_url(canvas, f"?rev={rev}"), json={
        k: v for k, v in body.items() if v is not None}, headers=stack.headers(tenant))


def put(stack: Stack, part_url: str, data: bytes) -> httpx.Response:
    """A part PUT with no header at all: to the bucket itself, or to the service."""
    if part_url.startswith(str(stack.client.base_url)):
        return stack.client.put(part_url, content=data)
    return httpx.put(part_url, content=data, timeout=30)


def send_parts(stack: Stack, session: dict[str, Any], data: bytes,
               numbers: list[int] | None = None) -> None:
    for part in session["parts"]:
        if numbers is None or part["part_number"] in numbers:
            start = (part["part_number"] - 1) * session["part_size"]
            response = put(stack, part["url"], data[start:start + part["size"]])
            assert response.status_code == 200, response.text


def complete(stack: Stack, canvas: str, session_id: str, tenant: str) -> httpx.Response:
    return stack.client.post(uploads_url(canvas, f"/{session_id}/complete"),
                             headers=stack.headers(tenant))


def get_session(stack: Stack, canvas: str, session_id: str, tenant: str) -> httpx.Response:
    return stack.client.get(uploads_url(canvas, f"/{session_id}"), headers=stack.headers(tenant))


def test_session_round_trip_in_parts(parted: Stack) -> None:
    stack, tenant, canvas = parted, new_tenant(), new_canvas()
    session = created(open_session(stack, canvas, BIG, tenant=tenant, rev=7))
    assert session["status"] == "open" and session["part_count"] == 2
    assert session["part_size"] == PART and session["size_bytes"] == len(BIG)
    assert [p["size"] for p in session["parts"]] == [PART, len(BIG) - PART]
    if stack.settings.raw_bucket:  # presigned: the bytes go to the bucket, not the API
        assert session["direct"] and session["parts"][0]["url"].startswith(
            str(stack.settings.aws_endpoint_url_s3))
    else:
        assert not session["direct"] and "/uploads/" in session["parts"][0]["url"]
    send_parts(stack, session, BIG, [2])  # any order
    send_parts(stack, session, BIG, [1])
    listed = get_session(stack, canvas, session["id"], tenant).json()
    assert [(p["uploaded"], p["uploaded_size"]) for p in listed["parts"]] == [
        (True, PART), (True, len(BIG) - PART)]
    assert row_counts(stack, tenant)["canvas_artifacts"] == 0  # nothing before complete
    done = complete(stack, canvas, session["id"], tenant)
    record = created(done)
    assert record["id"] == session["artifact_id"] and record["rev"] == 7
    assert record["size_bytes"] == len(BIG) and record["mime_type"] == "image/png"
    assert record["sha256"] == hashlib.sha256(BIG).hexdigest()
    headers = stack.headers(tenant)
    content = stack.client.get(url(canvas, f"/{record['id']}/content"), headers=headers)
    assert content.status_code == 200 and content.content == BIG
    lineage = stack.client.get(url(canvas, f"/{record['id']}/lineage"), headers=headers).json()
    assert lineage["events"][0]["event_type"] == "canvas.preview.created"
    assert lineage["documents"][0]["lineage"]["artifact_id"] == record["id"]
    assert row_counts(stack, tenant)["media_v2_artifacts"] == 1
    again = complete(stack, canvas, session["id"], tenant)  # idempotent
    assert again.status_code == 201 and again.json() == record
    assert row_counts(stack, tenant)["canvas_artifacts"] == 1
    usage = stack.client.get("/usage", headers=headers).json()
    assert usage["kinds"]["preview"] == {"bytes": len(BIG), "count": 1}
    closed = get_session(stack, canvas, session["id"], tenant).json()
    assert closed["status"] == "completed" and closed["parts"][0]["url"] is None
    keys = [k for k in blob_keys(stack) if tenant in k]
    assert len(keys) == 1 and keys[0].endswith(f"{record['id']}.png")


def test_parts_retried_and_resumed(parted: Stack) -> None:
    stack, tenant, canvas = parted, new_tenant(), new_canvas()
    session = created(open_session(stack, canvas, BIG, tenant=tenant))
    wrong = bytes(len(BIG))
    send_parts(stack, session, wrong, [1])  # a part sent again replaces the first
    send_parts(stack, session, BIG, [1])
    early = complete(stack, canvas, session["id"], tenant)
    assert "2" in assert_error(early, 422, "upload.incomplete")["message"]
    assert row_counts(stack, tenant)["canvas_artifacts"] == 0
    resumed = get_session(stack, canvas, session["id"], tenant).json()  # after a disconnect
    assert resumed["status"] == "open"
    missing = [p["part_number"] for p in resumed["parts"] if not p["uploaded"]]
    assert missing == [2]
    send_parts(stack, resumed, BIG, missing)
    record = created(complete(stack, canvas, session["id"], tenant))
    got = stack.client.get(url(canvas, f"/{record['id']}/content"),
                           headers=stack.headers(tenant))
    assert got.content == BIG


@pytest.mark.parametrize("case", ["size", "sha256", "magic", "part_size"])
def test_mismatch_on_complete_is_422_and_nothing_is_stored(stack: Stack, case: str) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    data, sent, declared = PNG, PNG, {}
    if case == "size":
        data = PNG + b"x"  # declares one byte more than it sends
    elif case == "sha256":
        declared = {"sha256": "0" * 64}
    elif case == "magic":
        data = sent = JPEG  # declared image/png
    session = created(open_session(stack, canvas, data, tenant=tenant, **declared))
    if case == "part_size":
        sent = PNG + b"more"  # the part is bigger than declared: refused as it arrives
        response = put(stack, session["parts"][0]["url"], sent)
        if not stack.settings.raw_bucket:
            assert_error(response, 413)
    else:
        assert put(stack, session["parts"][0]["url"], sent[:len(data)] if case == "size"
                   else sent).status_code == 200
    code = {"size": "upload.size_mismatch", "sha256": "upload.sha256_mismatch",
            "magic": "upload.content_mismatch",
            "part_size": "upload.size_mismatch" if stack.settings.raw_bucket
            else "upload.incomplete"}[case]
    assert_error(complete(stack, canvas, session["id"], tenant), 422, code)
    if code != "upload.incomplete":
        assert get_session(stack, canvas, session["id"], tenant).json()["status"] == "failed"
        assert_error(complete(stack, canvas, session["id"], tenant), 409, "upload.closed")
    else:  # the local service refused the part: the session waits for a right one
        assert get_session(stack, canvas, session["id"], tenant).json()["status"] == "open"
        aborted = stack.client.delete(uploads_url(canvas, f"/{session['id']}"),
                                      headers=stack.headers(tenant))
        assert aborted.status_code == 204
    assert [k for k in blob_keys(stack) if not k.startswith("_uploads")] == []
    assert row_counts(stack, tenant)["canvas_artifacts"] == 0


def test_foreign_sessions_are_404(stack: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    session = created(open_session(stack, canvas, PNG, tenant=tenant))
    send_parts(stack, session, PNG)
    other = new_tenant()
    for path, method in ((f"/{session['id']}", "GET"), (f"/{session['id']}/complete", "POST"),
                         (f"/{session['id']}", "DELETE")):
        for headers, where in ((stack.headers(other), canvas),
                               (stack.headers(tenant, "prod"), canvas),
                               (stack.headers(tenant), new_canvas())):
            foreign = stack.client.request(method, uploads_url(where, path), headers=headers)
            missing = stack.client.request(method, uploads_url(where, "/ups_nope" + path[
                len(session["id"]) + 1:]), headers=headers)
            assert_error(foreign, 404, "upload.not_found")
            assert foreign.json()["error"]["message"] == missing.json()["error"]["message"]
    assert row_counts(stack, other)["canvas_artifacts"] == 0
    created(complete(stack, canvas, session["id"], tenant))


def test_open_checks_type_size_body_and_auth(stack: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    assert_error(open_session(stack, canvas, PNG, tenant=tenant, mime="application/pdf"), 415)
    assert_error(open_session(stack, canvas, PNG, tenant=tenant,
                              mime="application/octet-stream"), 415)
    big = {"size_bytes": stack.settings.max_preview_bytes + 1, "mime_type": "image/png"}
    assert_error(stack.client.post(uploads_url(canvas, "?rev=1"), json=big,
                                   headers=stack.headers(tenant)), 413)
    for body in ({"size_bytes": 0, "mime_type": "image/png"}, {"mime_type": "image/png"},
                 {"size_bytes": 10, "mime_type": "image/png", "sha256": "xyz"},
                 {"size_bytes": 10, "mime_type": "image/png", "extra": 1}):
        assert_error(stack.client.post(uploads_url(canvas, "?rev=1"), json=body,
                                       headers=stack.headers(tenant)), 422)
    assert_error(stack.client.post(uploads_url(canvas), json={"size_bytes": 1,
                 "mime_type": "image/png"}, headers=stack.headers(tenant)), 422)  # no rev
    assert_error(stack.client.post(uploads_url(canvas, "?rev=1"), json=big), 401)
    assert_error(stack.client.post(uploads_url(canvas, "?rev=1"), json=big,
                                   headers=stack.headers(tenant, role="viewer")), 403)
    assert_error(stack.client.post(uploads_url(canvas, "?rev=1"), json=big, headers={
        **stack.headers(tenant), "X-Mode": "prod"}), 400)
    assert_nothing_kept(stack, tenant)


def test_quota_is_checked_on_open_and_on_complete(stack: Stack) -> None:
    from engines.canvas_artifacts import quotas
    from engines.db.writer import write_transaction

    tenant, canvas = new_tenant(), new_canvas()
    with write_transaction(stack.runtime.engine) as conn:
        quotas.set_quota(conn, tenant, "dev", max_bytes=len(PNG) + 10, max_artifacts=None)
    too_big = open_session(stack, canvas, PNG * 2, tenant=tenant)
    assert_error(too_big, 413, "quota.exceeded")
    first = created(open_session(stack, canvas, PNG, tenant=tenant))
    second = created(open_session(stack, canvas, PNG, tenant=tenant))
    send_parts(stack, first, PNG)
    send_parts(stack, second, PNG)
    created(complete(stack, canvas, first["id"], tenant))
    quotas._limits_cache.drop((tenant, "dev"))  # as a quota change seen at once would
    refused = complete(stack, canvas, second["id"], tenant)
    assert str(len(PNG) + 10) in assert_error(refused, 413, "quota.exceeded")["message"]
    keys = [k for k in blob_keys(stack) if tenant in k]
    assert keys == [k for k in keys if first["artifact_id"] in k] and len(keys) == 1
    assert row_counts(stack, tenant)["canvas_artifacts"] == 1


def test_local_part_urls_are_signed_and_bounded(local: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    session = created(open_session(local, canvas, PNG, tenant=tenant))
    part_url = session["parts"][0]["url"]
    assert_error(local.client.put(part_url.replace("sig=", "sig=x"), content=PNG), 403,
                 "upload.url_invalid")
    assert_error(local.client.put(part_url.replace("/parts/1", "/parts/2"), content=PNG), 403)
    assert_error(local.client.put(part_url, content=PNG + b"!"), 413)
    assert local.client.put(part_url, content=PNG).json() == {"part_number": 1,
                                                               "size": len(PNG)}
    created(complete(local, canvas, session["id"], tenant))
    assert_error(local.client.put(part_url, content=PNG), 409, "upload.closed")


def test_gc_keeps_live_sessions_and_aborts_expired_ones(stack: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    live = created(open_session(stack, canvas, PNG, tenant=tenant))
    stale = created(open_session(stack, canvas, PNG, tenant=tenant))
    send_parts(stack, live, PNG)
    send_parts(stack, stale, PNG)
    engine, store = stack.runtime.engine, stack.runtime.store
    with engine.begin() as conn:
        conn.execute(update(upload_sessions).where(upload_sessions.c.id == stale["id"])
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    dry = collect(store, engine, older_than=timedelta(0), apply=False)
    assert len(dry.expired_sessions) == 1
    report = collect(store, engine, older_than=timedelta(0), apply=True, force=True)
    assert report.summary()["expired_upload_sessions"] == 1
    assert get_session(stack, canvas, stale["id"], tenant).json()["status"] == "expired"
    assert_error(complete(stack, canvas, stale["id"], tenant), 409)
    # the live session's parts held their lease through gc's sweep of abandoned uploads
    record = created(complete(stack, canvas, live["id"], tenant))
    assert [k for k in blob_keys(stack) if tenant in k or k.startswith("_uploads")] == [
        k for k in blob_keys(stack) if record["id"] in k]


def test_purge_removes_the_tenants_sessions(stack: Stack) -> None:
    from engines.lifecycle.purge import purge

    tenant, canvas = new_tenant(), new_canvas()
    session = created(open_session(stack, canvas, PNG, tenant=tenant))
    report = purge(stack.runtime.store, stack.runtime.engine, tenant, None, apply=True)
    assert report.rows["upload_sessions"] == 1
    assert_error(get_session(stack, canvas, session["id"], tenant), 404, "upload.not_found")
