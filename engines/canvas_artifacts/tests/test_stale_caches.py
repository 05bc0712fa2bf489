"""Caches that meet the truth: a stale entry never turns a normal state into an error.

Two apps on one database and blob store (`twin`), as two workers are, neither
running its events hub (a TestClient outside its lifespan): so what is
checked here holds before, or without, the feed's invalidation
(tests/test_caches_multiprocess.py checks that part with real servers). A
cache entry may save work; where it meets the truth (a foreign-key failure, a
missing blob or replay index) it is dropped and the answer is the database's.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from conftest import Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_audit,
    create_preview,
    create_replay,
    created,
    new_tenant,
    url,
)
from engines.canvas_artifacts.tests.images import png
from engines.lifecycle.purge import purge

PATHS = ("", "/content", "/content?w=64")


def _warm(stack: Stack, base: str, paths: tuple[str, ...], tenant: str = "t_acme") -> None:
    for path in paths:
        response = stack.client.get(base + path, headers=stack.headers(tenant))
        assert response.status_code == 200, (path, response.text)


def _warmed_preview(stack: Stack, other: Stack) -> tuple[dict[str, Any], str]:
    """A real PNG preview made through `stack` whose record, content and 64 px variant
    `other` now holds in memory; and the record's path."""
    record = created(create_preview(stack, new_canvas(), body=png(300, 200)))
    base = url(record["canvas_id"], f"/{record['id']}")
    _warm(other, base, PATHS)
    return record, base


def test_creates_after_a_purge_write_the_canvas_asset_again(stack: Stack) -> None:
    """The process remembers the canvas's media_v2 asset and skips its insert; after a
    purge erased it, the skipped insert would fail the artifact's foreign key."""
    tenant, canvas = new_tenant(), new_canvas()
    for rev in range(3):
        created(create_preview(stack, canvas, rev=rev, tenant=tenant))
    purge(stack.runtime.store, stack.runtime.engine, tenant, None, apply=True)

    again = [created(create_preview(stack, canvas, rev=rev, tenant=tenant))
             for rev in range(3, 6)]
    again.append(created(create_replay(stack, canvas, tenant=tenant)))
    again.append(created(create_audit(stack, canvas, tenant=tenant, Idempotency_Key="k1")))
    asset = stack.client.get(f"/media-v2/assets/{again[0]['media_asset_id']}",
                             headers=stack.headers(tenant))
    assert asset.status_code == 200, asset.text
    assert {a["id"] for a in asset.json()["artifacts"]} == {r["media_artifact_id"] for r in again}
    listed = stack.client.get(url(canvas), headers=stack.headers(tenant)).json()["items"]
    assert {r["id"] for r in listed} == {r["id"] for r in again}


def test_a_stale_record_of_a_deleted_preview_answers_404_not_a_missing_blob(
        stack: Stack, twin, caplog: pytest.LogCaptureFixture) -> None:
    other = twin(stack)
    _record, base = _warmed_preview(stack, other)
    assert stack.client.delete(base, headers=stack.headers()).status_code == 204

    with caplog.at_level(logging.ERROR):
        for path in ("/content", "/content?w=64", "/content?w=128"):
            assert_error(other.client.get(base + path, headers=other.headers()), 404,
                         "canvas.not_found")
    assert "missing blob" not in caplog.text
    # the truth it read replaced what it held: the record GET says 404 too, at once
    assert_error(other.client.get(base, headers=other.headers()), 404, "canvas.not_found")


def test_a_stale_record_of_a_deleted_replay_answers_404_not_a_missing_index(
        stack: Stack, twin) -> None:
    other = twin(stack)
    canvas = new_canvas()
    record = created(create_replay(stack, canvas))
    base = url(canvas, f"/{record['id']}")
    window = "/content?from_ms=100&to_ms=300"
    _warm(other, base, ("", "/content", window))
    assert stack.client.delete(base, headers=stack.headers()).status_code == 204
    for path in (window, "/content"):
        assert_error(other.client.get(base + path, headers=other.headers()), 404,
                     "canvas.not_found")


def test_a_live_record_whose_blob_is_missing_is_still_an_outage(
        stack: Stack, twin, caplog: pytest.LogCaptureFixture) -> None:
    """Only a record the database confirms live, with its blob gone, is a 503."""
    other = twin(stack)
    record, base = _warmed_preview(stack, other)
    variant = [k for k in _keys(stack) if f"/{record['id']}.v/" in k]
    stack.runtime.store.delete(stack.runtime.store.key_for(record["uri"]))
    for key in variant:
        stack.runtime.store.delete(key)
    with caplog.at_level(logging.ERROR):
        for path in ("/content", "/content?w=64"):
            assert_error(other.client.get(base + path, headers=other.headers()), 503,
                         "storage.blob_missing")
    assert "missing blob" in caplog.text
    assert other.client.get(base, headers=other.headers()).status_code == 200


def _keys(stack: Stack) -> list[str]:
    return [info.key for info in stack.runtime.store.iter_blobs("tenants/")]
