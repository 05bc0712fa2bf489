"""Deleting artifacts, one or a whole canvas, on both stacks.

A delete answers 204 and from then on the artifact is gone from every read
(record, content, lineage, media_v2 artifact, list, latest), its deletion
event stays in Nexus, and its blob is removed unless something live still
references it; a blob that could not be removed is swept by gc.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conftest import JPEG, PNG, Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    blob_keys,
    create_audit,
    create_preview,
    create_replay,
    created,
    fail_third_deletion_in_batches_of_two,
    url,
)
from engines.lifecycle.gc import collect
from engines.lineage.nexus.backends.sql import events as dataset_events
from engines.storage.base import StorageUnavailable


def delete(stack: Stack, canvas: str, artifact_id: str = "", *, role: str = "member",
           tenant: str = "t_acme", sub: str = "u_ana") -> Any:
    return stack.client.delete(url(canvas, f"/{artifact_id}" if artifact_id else ""),
                               headers=stack.headers(tenant, role=role, sub=sub))


def get(stack: Stack, path: str) -> Any:
    return stack.client.get(path, headers=stack.headers())


def key_of(stack: Stack, record: dict[str, Any]) -> str:
    key = stack.runtime.store.key_for(record["uri"])
    assert key is not None
    return key


def deletion_events(stack: Stack, artifact_id: str) -> list[dict[str, Any]]:
    with stack.runtime.engine.connect() as conn:
        rows = conn.execute(select(dataset_events).where(
            dataset_events.c.subject_id == artifact_id,
            dataset_events.c.event_type.like("%.deleted"))).mappings()
        return [dict(r) for r in rows]


def test_delete_removes_the_artifact_from_every_read(stack: Stack) -> None:
    canvas = new_canvas()
    older = created(create_preview(stack, canvas, rev=1, body=JPEG, content_type="image/jpeg"))
    newest = created(create_preview(stack, canvas, rev=2))
    media_id = newest["media_artifact_id"]

    response = delete(stack, canvas, newest["id"], sub="u_bo")

    assert response.status_code == 204 and response.content == b""
    for suffix in ("", "/content", "/lineage"):
        assert_error(get(stack, url(canvas, f"/{newest['id']}{suffix}")), 404, "canvas.not_found")
    assert get(stack, f"/media-v2/artifacts/{media_id}").status_code == 404
    listed = get(stack, url(canvas)).json()["items"]
    assert [item["id"] for item in listed] == [older["id"]]
    assert get(stack, url(canvas, "/latest?kind=preview")).json()["id"] == older["id"]
    assert key_of(stack, newest) not in blob_keys(stack)
    assert key_of(stack, older) in blob_keys(stack)
    [event] = deletion_events(stack, newest["id"])
    assert event["event_type"] == "canvas.preview.deleted"
    assert event["lineage"]["actor_id"] == "u_bo"
    assert event["lineage"]["request_id"] == response.headers["x-request-id"]
    assert event["lineage"]["correlation_id"] == response.headers["x-correlation-id"]
    assert event["lineage"]["reason"] == "deleted" and event["lineage"]["deleted_at"]
    assert event["lineage"]["sha256"] == newest["sha256"]

    again = delete(stack, canvas, newest["id"])
    assert_error(again, 404, "canvas.not_found")


@pytest.mark.parametrize("role,status", [("viewer", 403), ("member", 204), ("admin", 204),
                                         ("owner", 204)])
def test_delete_one_role_matrix(stack: Stack, role: str, status: int) -> None:
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    assert delete(stack, canvas, record["id"], role=role).status_code == status
    assert (get(stack, url(canvas, f"/{record['id']}")).status_code == 200) == (status == 403)


def test_delete_of_a_foreign_or_missing_id_is_the_same_404(stack: Stack) -> None:
    canvas = new_canvas()
    record = created(create_preview(stack, canvas, tenant="t_beta"))
    foreign = delete(stack, canvas, record["id"])
    missing = delete(stack, canvas, "art_doesnotexist")
    other_env = stack.client.delete(url(canvas, f"/{record['id']}"),
                                    headers=stack.headers("t_beta", "prod"))
    for response in (foreign, missing, other_env):
        error = assert_error(response, 404, "canvas.not_found")
        error.pop("request_id")
        assert error == {"code": "canvas.not_found", "message": "artifact not found"}
    beta = stack.client.get(url(canvas, f"/{record['id']}/content"),
                            headers=stack.headers("t_beta"))
    assert beta.status_code == 200 and beta.content == PNG
    assert delete(stack, canvas, record["id"], tenant="t_acme", role="owner").status_code == 404


def test_unauthenticated_delete_is_401(stack: Stack) -> None:
    record = created(create_preview(stack, canvas := new_canvas()))
    response = stack.client.delete(url(canvas, f"/{record['id']}"),
                                   headers={"X-Tenant-Id": "t_acme", "X-Env": "dev",
                                            "X-Project-Id": "p_main"})
    assert_error(response, 401)


def test_replay_and_audit_deletes_drop_their_documents(stack: Stack) -> None:
    canvas = new_canvas()
    replay = created(create_replay(stack, canvas))
    audit = created(create_audit(stack, canvas))
    for record in (replay, audit):
        assert delete(stack, canvas, record["id"]).status_code == 204
        assert key_of(stack, record) not in blob_keys(stack)
        [event] = deletion_events(stack, record["id"])
        assert event["event_type"] == f"canvas.{record['kind']}.deleted"
    assert get(stack, url(canvas)).json()["items"] == []
    assert get(stack, url(canvas, "/latest?kind=replay")).status_code == 404


def test_a_failing_blob_delete_still_answers_204_and_gc_sweeps_it(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    key = key_of(stack, record)

    def store_down(_key: str) -> None:
        raise StorageUnavailable("store down")

    with monkeypatch.context() as patched:
        patched.setattr(stack.runtime.store, "delete", store_down)
        assert delete(stack, canvas, record["id"]).status_code == 204
    assert key in blob_keys(stack), "the blob outlived the failed removal"
    assert get(stack, url(canvas, f"/{record['id']}")).status_code == 404

    report = collect(stack.runtime.store, stack.runtime.engine, older_than=timedelta(hours=1),
                     apply=True)
    assert report.deleted_record_blobs == [key] and report.refused is None, \
        "a deleted record's blob needs no grace period and no --force"
    assert key not in blob_keys(stack)


@pytest.mark.s3
@pytest.mark.postgres
def test_a_blob_something_else_references_survives_the_delete(make_stack) -> None:
    stack = make_stack("s3-postgres")
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    asset = stack.client.post("/media-v2/assets", headers=stack.headers(), json={
        "source_uri": "https://cdn.example.com/a.png", "kind": "image"}).json()
    linked = stack.client.post(f"/media-v2/assets/{asset['id']}/artifacts",
                               headers=stack.headers(),
                               json={"kind": "thumbnail", "uri": record["uri"]})
    assert linked.status_code == 201, linked.text

    assert delete(stack, canvas, record["id"]).status_code == 204
    assert key_of(stack, record) in blob_keys(stack), "a live media_v2 artifact references it"
    report = collect(stack.runtime.store, stack.runtime.engine, older_than=timedelta(0),
                     apply=True, force=True)
    assert report.deleted == 0 and key_of(stack, record) in blob_keys(stack)


@pytest.mark.s3
@pytest.mark.postgres
def test_a_render_ref_target_is_never_deleted(make_stack) -> None:
    stack = make_stack("s3-postgres")
    canvas = new_canvas()
    target = "tenants/t_acme/dev/renders/board.png"
    stack.runtime.store.put_bytes(target, PNG, "image/png")
    record = created(stack.client.post(
        url(canvas, "/preview?rev=1"), headers=stack.headers(),
        json={"uri": f"s3://{stack.settings.raw_bucket}/{target}"}))

    assert delete(stack, canvas, record["id"]).status_code == 204
    report = collect(stack.runtime.store, stack.runtime.engine, older_than=timedelta(0),
                     apply=True, force=True)
    assert target in blob_keys(stack) and target not in report.deleted_record_blobs


# ---- a whole canvas ------------------------------------------------------------


@pytest.mark.parametrize("role,status", [("viewer", 403), ("member", 403), ("admin", 200),
                                         ("owner", 200)])
def test_delete_canvas_role_matrix(stack: Stack, role: str, status: int) -> None:
    canvas = new_canvas()
    created(create_preview(stack, canvas))
    response = delete(stack, canvas, role=role)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json() == {"deleted": 1}
    else:
        assert_error(response, 403)


def test_delete_canvas_removes_only_that_canvas_in_that_scope(stack: Stack) -> None:
    canvas, other = new_canvas(), new_canvas()
    mine = [created(create_preview(stack, canvas, rev=r)) for r in range(3)]
    mine.append(created(create_replay(stack, canvas)))
    kept = [created(create_preview(stack, other)),
            created(create_preview(stack, canvas, tenant="t_beta")),
            created(create_preview(stack, canvas, env="prod"))]

    response = delete(stack, canvas, role="admin")

    assert response.json() == {"deleted": 4}
    assert get(stack, url(canvas)).json()["items"] == []
    keys = blob_keys(stack)
    assert all(key_of(stack, r) not in keys for r in mine)
    assert all(key_of(stack, r) in keys for r in kept)
    assert delete(stack, canvas, role="admin").json() == {"deleted": 0}
    assert stack.client.get(url(canvas), headers=stack.headers("t_beta")).json()["items"]


def test_delete_canvas_resumes_after_a_failure_midway(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches commit one by one: a failure keeps what was done, a retry finishes."""
    canvas = new_canvas()
    records = [created(create_preview(stack, canvas, rev=r)) for r in range(5)]
    fail_third_deletion_in_batches_of_two(stack, monkeypatch)
    failed = delete(stack, canvas, role="admin")
    assert_error(failed, 503, "metadata.write_failed")
    left = get(stack, url(canvas)).json()["items"]
    assert len(left) == 3, "the first batch of 2 committed, the second rolled back whole"

    retried = delete(stack, canvas, role="admin")
    assert retried.json() == {"deleted": 3}
    assert get(stack, url(canvas)).json()["items"] == []
    assert all(key_of(stack, r) not in blob_keys(stack) for r in records)
