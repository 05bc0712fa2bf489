"""Export: a streamed tar of manifest.jsonl and every live payload, on both stacks."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any

import orjson

from conftest import JPEG, Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_audit,
    create_preview,
    create_replay,
    created,
    url,
)


def export(stack: Stack, canvas: str, query: str = "", *, role: str = "member",
           tenant: str = "t_acme") -> Any:
    return stack.client.get(url(canvas, f"/export{query}"),
                            headers=stack.headers(tenant, role=role))


def unpack(response: Any) -> tuple[list[dict[str, Any]], dict[str, bytes], list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    assert "attachment" in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:") as tar:
        names = tar.getnames()
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = [orjson.loads(line) for line in files.pop("manifest.jsonl").splitlines()]
    return manifest, files, names


def test_export_holds_every_live_artifact_with_matching_checksums(stack: Stack) -> None:
    canvas = new_canvas()
    preview = created(create_preview(stack, canvas, rev=3, body=JPEG, content_type="image/jpeg"))
    replay = created(create_replay(stack, canvas))
    audit = created(create_audit(stack, canvas, rev=3))
    ref = created(stack.client.post(url(canvas, "/preview?rev=4"), headers=stack.headers(),
                                    json={"uri": "https://cdn.example.com/r/4.png"}))
    gone = created(create_preview(stack, canvas, rev=5))
    assert stack.client.delete(url(canvas, f"/{gone['id']}"),
                               headers=stack.headers()).status_code == 204
    created(create_preview(stack, canvas, tenant="t_beta"))  # same canvas id, other tenant

    manifest, files, names = unpack(export(stack, canvas, role="viewer"))

    assert names[0] == "manifest.jsonl", "the manifest comes first"
    by_id = {line["record"]["id"]: line for line in manifest}
    assert set(by_id) == {preview["id"], replay["id"], audit["id"], ref["id"]}
    for record in (preview, replay, audit, ref):
        line = by_id[record["id"]]
        assert line["record"] == record
        assert [d["subject_id"] for d in line["lineage"]["documents"]] == [record["id"]]
        assert [e["event_type"] for e in line["lineage"]["events"]] == [
            f"canvas.{record['kind']}.created"]
    assert by_id[ref["id"]]["path"] is None, "render-refs are in the manifest only"
    expected = {f"preview/{preview['id']}.jpg": preview, f"replay/{replay['id']}.json": replay,
                f"audit/{audit['id']}.json": audit}
    assert set(files) == set(expected)
    for path, record in expected.items():
        assert by_id[record["id"]]["path"] == path
        assert hashlib.sha256(files[path]).hexdigest() == record["sha256"]
        assert len(files[path]) == record["size_bytes"]


def test_export_kind_filter(stack: Stack) -> None:
    canvas = new_canvas()
    created(create_preview(stack, canvas))
    replay = created(create_replay(stack, canvas))
    manifest, files, _names = unpack(export(stack, canvas, "?kind=replay"))
    assert [line["record"]["id"] for line in manifest] == [replay["id"]]
    assert list(files) == [f"replay/{replay['id']}.json"]
    assert export(stack, canvas, "?kind=video").status_code == 422


def test_export_of_a_canvas_with_nothing_here_is_404_like_any_foreign_resource(
        stack: Stack) -> None:
    canvas = new_canvas()
    created(create_preview(stack, canvas, tenant="t_beta"))
    foreign = assert_error(export(stack, canvas), 404, "canvas.not_found")
    empty = assert_error(export(stack, new_canvas()), 404, "canvas.not_found")
    assert {k: v for k, v in foreign.items() if k != "request_id"} == \
        {k: v for k, v in empty.items() if k != "request_id"}
    other_env = stack.client.get(url(canvas, "/export"), headers=stack.headers("t_beta", "prod"))
    assert_error(other_env, 404)
    unauthenticated = stack.client.get(url(canvas, "/export"))
    assert unauthenticated.status_code in (400, 401)
