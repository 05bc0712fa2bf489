"""Shared helpers for the canvas artifact contract tests.

They talk to the service over HTTP and look at the backends directly (blob
listing, row counts), so a test can assert what was kept, not just what the
response said.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import orjson
from httpx import Response
from sqlalchemy import func, select

from conftest import PNG, SIGNING_KEY, Stack
from engines.canvas_artifacts.repository import canvas_artifacts, replay_indexes
from engines.db.idempotency import idempotency_keys
from engines.lineage.dataset_events import SCOPE_PURGED
from engines.lineage.nexus.backends.sql import documents as nexus_documents
from engines.lineage.nexus.backends.sql import events as dataset_events
from engines.media_v2.repository import artifacts as media_artifacts
from engines.media_v2.repository import assets as media_assets

BASE = "/canvas/{canvas}/artifacts"
METADATA_TABLES = {
    "canvas_artifacts": canvas_artifacts,
    "replay_indexes": replay_indexes,
    "idempotency_keys": idempotency_keys,
    "media_v2_artifacts": media_artifacts,
    "media_v2_assets": media_assets,
    "nexus_documents": nexus_documents,
    "dataset_events": dataset_events,
}


def new_tenant() -> str:
    """A tenant no other test uses, so row counts are about this test only."""
    return f"t_{uuid.uuid4().hex[:12]}"


def url(canvas: str, suffix: str = "") -> str:
    return BASE.format(canvas=canvas) + suffix


def create_preview(stack: Stack, canvas: str, *, rev: int = 1, body: bytes = PNG,
                   content_type: str = "image/png", tenant: str = "t_acme", env: str = "dev",
                   **extra: str) -> Response:
    headers = {**stack.headers(tenant, env, **extra), "Content-Type": content_type}
    return stack.client.post(url(canvas, f"/preview?rev={rev}"), content=body, headers=headers)


def create_replay(stack: Stack, canvas: str, document: dict[str, Any] | None = None, *,
                  tenant: str = "t_acme", env: str = "dev", **extra: str) -> Response:
    raw = orjson.dumps(document if document is not None else replay_document())
    headers = {**stack.headers(tenant, env, **extra), "Content-Type": "application/json"}
    return stack.client.post(url(canvas, "/replay"), content=raw, headers=headers)


def create_audit(stack: Stack, canvas: str, *, rev: int = 1, body: bytes = b"",
                 tenant: str = "t_acme", env: str = "dev", **extra: str) -> Response:
    headers = stack.headers(tenant, env, **extra)
    if body:
        headers["Content-Type"] = "application/json"
    return stack.client.post(url(canvas, f"/audit?rev={rev}"), content=body, headers=headers)


def created(response: Response) -> dict[str, Any]:
    """The record of a create that must have succeeded."""
    assert response.status_code == 201, response.text
    return response.json()


FRAMES: list[dict[str, Any]] = [
    {"t_ms": 0, "rev": 30, "type": "snapshot", "data": {"n": 0}},
    {"t_ms": 100, "rev": 31, "type": "commit", "data": {"n": 1}},
    {"t_ms": 200, "rev": 32, "type": "gesture", "data": {"n": 2}},
    {"t_ms": 300, "rev": 33, "type": "snapshot", "data": {"n": 3}},
    {"t_ms": 400, "rev": 34, "type": "commit", "data": {"n": 4}},
    {"t_ms": 500, "rev": 35, "type": "gesture", "data": {"n": 5}},
    {"t_ms": 600, "rev": 36, "type": "snapshot", "data": {"n": 6}},
    {"t_ms": 700, "rev": 37, "type": "commit", "data": {"n": 7}},
]


def replay_document(frames: list[dict[str, Any]] | None = None, *, rev: int = 42,
                    rev_from: int = 30) -> dict[str, Any]:
    return {"rev": rev, "rev_from": rev_from, "mode": "keyframes",
            "keyframes": FRAMES if frames is None else frames,
            "summary": {"commits": 2, "authors": ["u_ana"], "note": "ünïcode ok"}}


def assert_error(response: Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error envelope, with the request id echoed in the headers."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["message"] and error["code"]
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, error
    return error


def blob_keys(stack: Stack) -> list[str]:
    """Every object the store holds (finished or not), straight from the backend."""
    settings = stack.runtime.settings
    if settings.raw_bucket:
        client = stack.runtime.store.client  # type: ignore[attr-defined]
        listed = client.list_objects_v2(Bucket=settings.raw_bucket)
        uploads = client.list_multipart_uploads(Bucket=settings.raw_bucket)
        return ([o["Key"] for o in listed.get("Contents", [])]
                + [u["Key"] for u in uploads.get("Uploads", [])])
    root = settings.media_local_root
    if not root.exists():
        return []
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _dirs, files in os.walk(root) for f in files)


def row_counts(stack: Stack, tenant: str) -> dict[str, int]:
    """Rows of one tenant in every metadata table an artifact touches (a purge's own
    `tenant.purged` marker is the purge's, not an artifact's)."""
    with stack.runtime.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(table).where(
                    table.c.tenant_id == tenant,
                    *([table.c.event_type != SCOPE_PURGED] if table is dataset_events else []),
                )).scalar_one()
                for name, table in METADATA_TABLES.items()}


def assert_nothing_kept(stack: Stack, tenant: str) -> None:
    assert blob_keys(stack) == []
    assert row_counts(stack, tenant) == dict.fromkeys(METADATA_TABLES, 0)


def fail_third_deletion_in_batches_of_two(stack: Stack, monkeypatch: Any) -> None:
    """Deletions run two per transaction, and the third deletion event fails: the first
    batch commits, the second rolls back whole (a crash or an outage midway)."""
    from engines.lifecycle import delete as lifecycle

    monkeypatch.setattr(lifecycle, "BATCH", 2)
    real = stack.runtime.nexus.record_events
    calls: list[int] = []

    def failing(conn: Any, events: Any) -> None:
        before = len(calls)
        calls.extend(1 for _event in events)
        if before < 3 <= len(calls):  # the batch that holds the third event
            raise RuntimeError("Nexus is down")
        real(conn, events)

    monkeypatch.setattr(stack.runtime.nexus, "record_events", failing)


def server_env(stack: Stack) -> dict[str, str]:
    """Env vars for `engines serve` on the stack's own database and blob store."""
    settings = stack.settings
    env = {"DATABASE_URL": settings.database_url, "AUTH_JWT_SIGNING": SIGNING_KEY,
           "MEDIA_LOCAL_ROOT": str(settings.media_local_root), "AUTO_MIGRATE": "0",
           "WEBHOOKS_ENABLED": "false"}
    if settings.raw_bucket:
        env.update(RAW_BUCKET=settings.raw_bucket,
                   AWS_ENDPOINT_URL_S3=str(settings.aws_endpoint_url_s3))
    return env
