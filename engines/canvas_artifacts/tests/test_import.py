"""Import: an export restored by POST .../import and `engines import`, on both stacks."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from conftest import JPEG, Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    blob_keys,
    create_audit,
    create_preview,
    create_replay,
    created,
    new_tenant,
    row_counts,
    url,
)
from engines.canvas_artifacts.tests.test_export import export, unpack
from engines.events.feed import read_after
from engines.lifecycle.purge import purge
from engines.lineage.nexus.backends.sql import events as dataset_events
from tests.test_retention_purge import cli_env, engines, engines_here

AUDIT = orjson.dumps({"v": 1, "kind": "a11y", "status": "failed", "checks": [{"id": "c"}],
                      "findings": [{"id": "f"}], "summary": {"errors": 1, "warnings": 2},
                      "generated_at": "2026-11-28T10:00:00Z"})


def populate(stack: Stack, tenant: str, canvas: str) -> list[dict[str, Any]]:
    """One of each kind of artifact, render-ref included; returns the records."""
    records = [
        created(create_preview(stack, canvas, rev=3, tenant=tenant)),
        created(create_preview(stack, canvas, rev=4, body=JPEG, content_type="image/jpeg",
                               tenant=tenant)),
        created(create_replay(stack, canvas, tenant=tenant)),
        created(create_audit(stack, canvas, rev=3, tenant=tenant)),
        created(create_audit(stack, canvas, rev=4, body=AUDIT, tenant=tenant)),
        created(stack.client.post(url(canvas, "/preview?rev=5"), headers=stack.headers(tenant),
                                  json={"uri": "https://cdn.example.com/r/5.png"})),
    ]
    return sorted(records, key=lambda record: record["id"], reverse=True)


def listed(stack: Stack, tenant: str, canvas: str) -> list[dict[str, Any]]:
    response = stack.client.get(url(canvas, "?limit=200"), headers=stack.headers(tenant))
    assert response.status_code == 200
    return response.json()["items"]


def contents(stack: Stack, tenant: str, records: list[dict[str, Any]]) -> dict[str, bytes]:
    found = {}
    for record in records:
        if record["sha256"] is None:
            continue
        response = stack.client.get(url(record["canvas_id"], f"/{record['id']}/content"),
                                    headers=stack.headers(tenant))
        assert response.status_code == 200, response.text
        found[record["id"]] = response.content
    return found


def post_import(stack: Stack, canvas: str, archive: bytes, *, tenant: str,
                role: str = "admin", content_type: str = "application/x-tar") -> Any:
    return stack.client.post(url(canvas, "/import"), content=archive,
                             headers={**stack.headers(tenant, role=role),
                                      "Content-Type": content_type})


def imported(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def erase(stack: Stack, tenant: str) -> None:
    purge(stack.runtime.store, stack.runtime.engine, tenant, None, apply=True)
    assert row_counts(stack, tenant)["canvas_artifacts"] == 0


def tar_members(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def tar_of(manifest: list[dict[str, Any]], files: dict[str, bytes]) -> bytes:
    """An archive as export lays it out, from (edited) parts."""
    lines = b"".join(orjson.dumps(line) + b"\n" for line in manifest)
    return tar_members([("manifest.jsonl", lines), *files.items()])


def test_export_purge_import_gives_back_identical_records_and_bytes(stack: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    records = populate(stack, tenant, canvas)
    assert listed(stack, tenant, canvas) == records
    payloads = contents(stack, tenant, records)
    archive = export(stack, canvas, tenant=tenant).content
    erase(stack, tenant)
    assert blob_keys(stack) == [] or not any(tenant in key for key in blob_keys(stack))

    report = imported(post_import(stack, canvas, archive, tenant=tenant))

    assert report == {"imported": len(records), "ids": sorted(r["id"] for r in records),
                      "conflicts": [], "failed": []}
    assert listed(stack, tenant, canvas) == records
    assert contents(stack, tenant, records) == payloads
    replay = next(r for r in records if r["kind"] == "replay")
    window = stack.client.get(url(canvas, f"/{replay['id']}/content?from_ms=300&to_ms=500"),
                              headers=stack.headers(tenant))
    assert [k["t_ms"] for k in window.json()["keyframes"]] == [300, 400, 500]
    latest = stack.client.get(url(canvas, "/latest?kind=preview"),
                              headers=stack.headers(tenant)).json()
    assert latest["id"] == next(r["id"] for r in records if r["meta"].get("render_ref"))

    lineage = stack.client.get(url(canvas, f"/{records[0]['id']}/lineage"),
                               headers=stack.headers(tenant)).json()
    [document] = lineage["documents"]
    assert document["lineage"]["imported"] is True
    assert document["lineage"]["imported_from"]["canvas_id"] == canvas
    assert document["lineage"]["imported_from"]["archive"] == "upload"
    assert document["lineage"]["imported_by"]["actor_id"] == "u_ana"
    assert [e["event_type"] for e in lineage["events"]] == [
        f"canvas.{records[0]['kind']}.imported"]
    with stack.runtime.engine.connect() as conn:
        events, _, _ = read_after(conn, (tenant, "dev"), 0)
    assert [e.type for e in events] == ["artifact_written"] * len(records)
    assert {e.body["data"]["artifact_id"] for e in events} == {r["id"] for r in records}


def test_ids_in_use_are_409_each_and_the_rest_is_imported(stack: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    records = populate(stack, tenant, canvas)
    archive = export(stack, canvas, tenant=tenant).content
    payloads = contents(stack, tenant, records)

    again = imported(post_import(stack, canvas, archive, tenant=tenant))
    assert again["imported"] == 0 and again["failed"] == []
    assert sorted(c["id"] for c in again["conflicts"]) == sorted(r["id"] for r in records)
    assert {(c["status"], c["code"]) for c in again["conflicts"]} == {(409, "import.id_taken")}
    assert contents(stack, tenant, records) == payloads, "the originals' blobs are untouched"

    # into another tenant, while the source still holds the ids: a 409 each, nothing written
    other = new_tenant()
    foreign = imported(post_import(stack, canvas, archive, tenant=other))
    assert len(foreign["conflicts"]) == len(records) and foreign["imported"] == 0
    assert row_counts(stack, other)["canvas_artifacts"] == 0

    manifest, files, _ = unpack(export(stack, canvas, tenant=tenant))
    erase(stack, tenant)
    first = manifest[:2]
    part = tar_of(first, {line["path"]: files[line["path"]] for line in first if line["path"]})
    assert imported(post_import(stack, canvas, part, tenant=tenant))["imported"] == 2
    rest = imported(post_import(stack, canvas, archive, tenant=tenant))
    assert sorted(c["id"] for c in rest["conflicts"]) == sorted(
        line["record"]["id"] for line in first)
    assert rest["imported"] == len(records) - 2
    assert listed(stack, tenant, canvas) == records


def test_a_tampered_payload_fails_that_artifact_only(stack: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    records = populate(stack, tenant, canvas)
    manifest, files, _ = unpack(export(stack, canvas, tenant=tenant))
    erase(stack, tenant)
    preview = next(line for line in manifest if line["path"] and line["path"].endswith(".png"))
    audit = next(line for line in manifest if line["record"]["kind"] == "audit"
                 and line["path"])
    files[preview["path"]] = files[preview["path"]][:-1] + b"\x00"  # same size, other bytes
    audit["record"]["sha256"] = "0" * 64  # the manifest lies instead
    gone = next(line for line in manifest if line["record"]["kind"] == "replay")
    del files[gone["path"]]

    report = imported(post_import(stack, canvas, tar_of(manifest, files), tenant=tenant))

    failed = {f["id"]: (f["status"], f["code"]) for f in report["failed"]}
    assert failed == {preview["record"]["id"]: (422, "import.checksum_mismatch"),
                      audit["record"]["id"]: (422, "import.checksum_mismatch"),
                      gone["record"]["id"]: (422, "import.payload_missing")}
    assert report["imported"] == len(records) - 3 and report["conflicts"] == []
    left = {r["id"] for r in listed(stack, tenant, canvas)}
    assert left == {r["id"] for r in records} - set(failed)
    assert not any(record_id in key for key in blob_keys(stack) for record_id in failed)


@pytest.mark.parametrize("archive", [
    b"", b"not a tar at all" * 100,
    tar_members([("preview/a.png", b"x"), ("manifest.jsonl", b"")]),
    tar_members([("manifest.jsonl", b"{not json\n")]),
    tar_of([{"nope": 1}], {}), tar_of([{"record": {"id": "art_1"}}], {}),
    tar_members([("manifest.jsonl", b'{"record": {}}\n')]),
], ids=["empty", "garbage", "manifest-not-first", "not-json", "no-record", "invalid-record",
        "empty-record"])
def test_an_archive_that_is_not_an_export_is_422_and_writes_nothing(
        stack: Stack, archive: bytes) -> None:
    tenant = new_tenant()
    before = blob_keys(stack)
    assert_error(post_import(stack, new_canvas(), archive, tenant=tenant), 422,
                 "import.malformed")
    assert blob_keys(stack) == before
    assert set(row_counts(stack, tenant).values()) == {0}


def test_one_unsafe_record_makes_the_whole_archive_malformed(stack: Stack) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    populate(stack, tenant, canvas)
    manifest, files, _ = unpack(export(stack, canvas, tenant=tenant))
    erase(stack, tenant)
    for field, value in (("canvas_id", "../../etc"), ("rev", 2**60), ("id", "a/b")):
        edited = [*manifest[:-1], {**manifest[-1],
                                   "record": {**manifest[-1]["record"], field: value}}]
        assert_error(post_import(stack, canvas, tar_of(edited, files), tenant=tenant), 422,
                     "import.malformed")
    twice = tar_of([*manifest, manifest[0]], files)
    assert_error(post_import(stack, canvas, twice, tenant=tenant), 422, "import.malformed")
    assert set(row_counts(stack, tenant).values()) == {0}


def test_import_needs_admin_a_tar_and_stays_under_the_limit(make_stack, stack_name) -> None:
    stack = make_stack(stack_name, max_import_bytes=16_384)
    canvas = new_canvas()
    archive = tar_of([], {})
    for role in ("viewer", "member"):
        assert_error(post_import(stack, canvas, archive, tenant="t_acme", role=role), 403,
                     "auth.role_forbidden")
    assert_error(stack.client.post(url(canvas, "/import"), content=archive), 401)
    other = {**stack.headers("t_acme", role="admin"), "X-Tenant-Id": "t_beta"}
    assert_error(stack.client.post(url(canvas, "/import"), content=archive, headers=other), 403)
    assert_error(post_import(stack, canvas, archive, tenant="t_acme",
                             content_type="application/json"), 415)
    assert_error(post_import(stack, canvas, b"\0" * 20_000, tenant="t_acme"), 413)
    assert imported(post_import(stack, canvas, archive, tenant="t_acme",
                                role="owner"))["imported"] == 0


def test_a_failed_metadata_write_removes_that_artifacts_blob(stack: Stack,
                                                             monkeypatch: Any) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    records = populate(stack, tenant, canvas)
    archive = export(stack, canvas, tenant=tenant).content
    erase(stack, tenant)
    real = stack.runtime.nexus.record
    calls: list[str] = []

    def failing(conn: Any, document: Any, event: Any) -> None:
        calls.append(document.subject_id)
        if len(calls) == 2:
            raise RuntimeError("Nexus is down")
        real(conn, document, event)

    monkeypatch.setattr(stack.runtime.nexus, "record", failing)
    report = imported(post_import(stack, canvas, archive, tenant=tenant))

    [failure] = report["failed"]
    assert (failure["id"], failure["status"], failure["code"]) == (
        calls[1], 503, "metadata.write_failed")
    assert report["imported"] == len(records) - 1
    assert not any(calls[1] in key for key in blob_keys(stack)), "its blob was removed"
    with stack.runtime.engine.connect() as conn:
        assert conn.execute(select(dataset_events.c.id).where(
            dataset_events.c.subject_id == calls[1])).first() is None


def test_engines_import_restores_into_a_tenant_env_and_canvas(stack: Stack, tmp_path) -> None:
    tenant, canvas, target = new_tenant(), new_canvas(), new_canvas()
    records = populate(stack, tenant, canvas)
    payloads = contents(stack, tenant, records)
    path = tmp_path / "export.tar"
    path.write_bytes(export(stack, canvas, tenant=tenant).content)
    erase(stack, tenant)
    env = cli_env(stack)

    report = json.loads(engines(env, "import", str(path), "--tenant", tenant, "--env", "dev",
                                "--canvas", target))

    assert report["imported"] == len(records)
    assert listed(stack, tenant, canvas) == []
    moved = listed(stack, tenant, target)
    assert [r["id"] for r in moved] == [r["id"] for r in records]
    for old, new in zip(records, moved, strict=True):
        assert new["canvas_id"] == target and new["media_asset_id"] != old["media_asset_id"]
        same = {k: v for k, v in new.items() if k not in ("canvas_id", "media_asset_id", "uri")}
        assert same == {k: v for k, v in old.items()
                        if k not in ("canvas_id", "media_asset_id", "uri")}
        if old["sha256"] is not None:
            assert f"/canvas/{target}/" in new["uri"]
    assert contents(stack, tenant, moved) == payloads
    lineage = stack.client.get(url(target, f"/{moved[0]['id']}/lineage"),
                               headers=stack.headers(tenant)).json()
    assert lineage["documents"][0]["lineage"]["imported_from"]["archive"] == str(path)

    again = engines_here(env, "import", str(path), "--tenant", tenant, "--env", "dev",
                         "--canvas", target, expect=1)
    assert len(json.loads(again)["conflicts"]) == len(records)
    (tmp_path / "bad.tar").write_bytes(b"garbage" * 100)
    engines_here(env, "import", str(tmp_path / "bad.tar"), "--tenant", tenant, "--env", "dev",
                 expect=2)
    engines_here(env, "import", str(tmp_path / "missing.tar"), "--tenant", tenant, "--env",
                 "dev", expect=2)
