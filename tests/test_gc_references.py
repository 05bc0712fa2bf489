"""gc never deletes what is referenced, sweeps only what is provably dead, and has an interlock.

Each test is one of the ways `engines gc --apply` destroyed acknowledged data
before the reference model: a URI column it did not read, URI spellings it
compared as raw text, a user file named like a temporary file, a slow upload
taken for an abandoned one, and a store mounted elsewhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PNG, SIGNING_KEY, Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    blob_keys,
    create_preview,
    created,
    url,
)
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.migrate import upgrade
from engines.lifecycle.gc import collect
from engines.storage.tests._support import png_body
from tests.test_crash_gc import ENGINES, service_env
from tests.test_faults import served

MIB = 1024 * 1024


def gc(stack: Stack, *, older_than: float = 0, force: bool = True):
    return collect(stack.runtime.store, stack.runtime.engine,
                   older_than=timedelta(seconds=older_than), apply=True, force=force)


def register(stack: Stack, asset_id: str, uri: str) -> dict[str, Any]:
    response = stack.client.post(f"/media-v2/assets/{asset_id}/artifacts",
                                 json={"kind": "render", "uri": uri}, headers=stack.headers())
    assert response.status_code == 201, response.text
    return response.json()


def json_asset(stack: Stack) -> str:
    response = stack.client.post("/media-v2/assets", headers=stack.headers(),
                                 json={"source_uri": "https://cdn.example.com/a.png",
                                       "kind": "image"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# ---- 2a: every URI column is a reference ----------------------------------------


@pytest.mark.s3
@pytest.mark.postgres
def test_gc_keeps_a_blob_only_a_media_v2_artifact_references(make_stack) -> None:
    stack = make_stack("s3-postgres")
    key = "tenants/t_acme/dev/renders/r1.png"
    stack.runtime.store.put_bytes(key, PNG, "image/png")
    registered = register(stack, json_asset(stack), f"s3://{stack.settings.raw_bucket}/{key}")

    report = gc(stack)

    assert key not in report.orphan_blobs and report.deleted == 0
    assert key in blob_keys(stack)
    assert registered["uri"] == f"s3://{stack.settings.raw_bucket}/{key}"


# ---- 2b: URIs are stored canonical, so gc and serving agree -----------------------


@pytest.mark.s3
@pytest.mark.postgres
def test_render_refs_in_odd_spellings_are_stored_canonical_and_kept(make_stack) -> None:
    stack = make_stack("s3-postgres")
    bucket = stack.settings.raw_bucket
    canvas = new_canvas()
    for index, spelling in enumerate((f"s3://{bucket}//tenants/t_acme/dev/r/{{}}.png",
                                      f"S3://{bucket}/tenants/t_acme/dev/r/{{}}.png")):
        key = f"tenants/t_acme/dev/r/{index}.png"
        stack.runtime.store.put_bytes(key, PNG, "image/png")
        record = created(stack.client.post(
            url(canvas, "/preview?rev=1"), json={"uri": spelling.format(index)},
            headers=stack.headers()))
        assert record["uri"] == f"s3://{bucket}/{key}", "stored in its one canonical form"

    report = gc(stack)

    assert report.deleted == 0 and report.orphan_blobs == []
    assert {"tenants/t_acme/dev/r/0.png", "tenants/t_acme/dev/r/1.png"} <= set(blob_keys(stack))


@pytest.mark.s3
@pytest.mark.postgres
def test_render_refs_that_have_no_canonical_form_are_refused(make_stack) -> None:
    stack = make_stack("s3-postgres")
    prefix = f"s3://{stack.settings.raw_bucket}/tenants/t_acme/dev/r"
    for uri in (f"{prefix}/a.png#x", f"{prefix}/a.png?versionId=3", f"{prefix}//a.png",
                f"{prefix}/./a.png", f"{prefix}/../../../t_other/dev/a.png"):
        response = stack.client.post(url(new_canvas(), "/preview?rev=1"), json={"uri": uri},
                                     headers=stack.headers())
        assert response.status_code == 422, uri
        assert response.json()["error"]["code"] == "request.uri_out_of_scope"


# ---- 2c: unfinished uploads live where no finished object can ----------------------


def test_a_media_v2_upload_named_like_a_temporary_file_is_kept(make_stack) -> None:
    stack = make_stack("local-sqlite")
    response = stack.client.post("/media-v2/assets", headers=stack.headers(),
                                 files={"file": ("quarterly.part", b"figures", "text/plain")})
    assert response.status_code == 201, response.text
    asset = response.json()

    report = gc(stack)

    assert report.deleted == 0 and report.incomplete_uploads == []
    assert stack.runtime.store.read_all(stack.runtime.store.key_for(asset["source_uri"])) == \
        b"figures"


# ---- 3: an upload in progress is provably alive -------------------------------------


def slow_upload_with_gc_midway(stack: Stack, canvas: str,
                               first: int) -> tuple[int, list[str]]:
    """A body whose first bytes reach the store at once, then a trickle for ~2.5 s,
    with gc (1 s grace) running in the middle; returns the status and what gc swept."""
    swept: list[str] = []
    created(create_preview(stack, new_canvas()))  # the store's client is warm: no slow first call

    def body() -> Iterator[bytes]:
        yield png_body(first)
        for index in range(6):
            time.sleep(0.5)
            if index == 4:  # ~2.5 s after the first bytes were written: older than the grace
                swept.extend(gc(stack, older_than=1).incomplete_uploads)
            yield b"t" * 1024

    with served(stack.client.app) as base, httpx.Client(base_url=base, timeout=30) as http:
        response = http.post(url(canvas, "/preview?rev=1"), content=body(),
                             headers={**stack.headers(), "Content-Type": "image/png"})
    return response.status_code, swept


def first_chunk(stack: Stack) -> int:
    """Enough to start a multipart upload on S3, or the temporary file locally."""
    return 6 * MIB + 4096 if stack.settings.raw_bucket else MIB + 4096


@pytest.fixture(params=["local-sqlite", "s3-postgres"])
def stack_name(request: pytest.FixtureRequest) -> str:
    if request.param == "s3-postgres":
        for mark in (pytest.mark.s3, pytest.mark.postgres):
            request.applymarker(mark)
    return str(request.param)


def test_a_slow_upload_holds_a_lease_and_gc_leaves_it_alone(make_stack, stack_name: str) -> None:
    stack = make_stack(stack_name, upload_lease_seconds=0.3, s3_part_size=5 * MIB,
                       max_preview_bytes=64 * MIB)
    canvas = new_canvas()
    status, swept = slow_upload_with_gc_midway(stack, canvas, first_chunk(stack))
    assert swept == []
    assert status == 201
    [record] = stack.client.get(url(canvas), headers=stack.headers()).json()["items"]
    content = stack.client.get(url(canvas, f"/{record['id']}/content"), headers=stack.headers())
    assert content.status_code == 200 and len(content.content) == record["size_bytes"]
    assert record["size_bytes"] == first_chunk(stack) + 6 * 1024


def test_an_upload_gc_did_sweep_fails_cleanly(make_stack, stack_name: str) -> None:
    stack = make_stack(stack_name, upload_lease_seconds=3600, s3_part_size=5 * MIB,
                       max_preview_bytes=64 * MIB)
    canvas = new_canvas()
    status, swept = slow_upload_with_gc_midway(stack, canvas, first_chunk(stack))
    assert len(swept) == 1, "without a lease renewal the upload looks abandoned"
    assert status == 503
    canvas_prefix = f"tenants/t_acme/dev/canvas/{canvas}/"
    assert stack.client.get(url(canvas), headers=stack.headers()).json()["items"] == []
    assert [k for k in blob_keys(stack) if k.startswith(canvas_prefix)] == []


# ---- 4: records do not depend on the mount point; the interlock ---------------------


def test_moving_the_media_root_keeps_every_artifact_readable(make_stack, tmp_path: Path) -> None:
    stack = make_stack("local-sqlite")
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    moved = tmp_path / "moved-media"
    shutil.move(stack.settings.media_local_root, moved)

    elsewhere = make_stack("local-sqlite", media_local_root=moved,
                           database_url=stack.settings.database_url)
    content = elsewhere.client.get(url(canvas, f"/{record['id']}/content"),
                                   headers=elsewhere.headers())
    assert content.status_code == 200 and content.content == PNG
    report = gc(elsewhere, force=False)
    assert (report.orphan_blobs, report.deleted, report.refused) == ([], 0, None)


def run_gc_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ENGINES, "gc", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_gc_refuses_to_delete_a_store_that_looks_all_orphaned(make_stack, tmp_path: Path) -> None:
    """The wrong DATABASE_URL (here: an empty one) makes every blob look orphaned."""
    stack = make_stack("local-sqlite")
    canvas = new_canvas()
    for rev in range(5):
        created(create_preview(stack, canvas, rev=rev))
    kept = sorted(blob_keys(stack))
    empty_db = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = build_engine(Settings(database_url=empty_db))
    upgrade(engine)
    engine.dispose()
    env = service_env(database_url=empty_db, media_local_root=stack.settings.media_local_root,
                      auth_jwt_signing=SIGNING_KEY)
    listing = tmp_path / "would-delete.jsonl"

    dry = run_gc_cli(env, "--older-than", "0s", "--output", str(listing), "--verbose")
    assert dry.returncode == 0, dry.stderr
    planned = [json.loads(line) for line in listing.read_text().splitlines()]
    assert sorted(p["key"] for p in planned) == kept
    assert {p["action"] for p in planned} == {"would delete"}
    assert all(key in dry.stdout for key in kept), "--verbose lists the keys"

    refused = run_gc_cli(env, "--older-than", "0s", "--apply")
    assert refused.returncode == 3 and "--force" in refused.stderr
    assert sorted(blob_keys(stack)) == kept, "nothing deleted"

    forced = run_gc_cli(env, "--older-than", "0s", "--apply", "--force")
    assert forced.returncode == 0, forced.stderr
    assert blob_keys(stack) == []
