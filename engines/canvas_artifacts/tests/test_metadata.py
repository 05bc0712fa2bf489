"""After a create, media_v2 and Nexus hold the artifact and its full lineage.

Read straight from the repositories and the Nexus backend, not through the API,
so a create that answers 201 without persisting would fail here.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from conftest import new_canvas
from engines.canvas_artifacts.commit import canvas_asset_id
from engines.canvas_artifacts.tests.helpers import (
    create_audit,
    create_preview,
    create_replay,
    created,
    replay_document,
    url,
)
from engines.media_v2 import repository as media_repo

TRACE = {"X_Workspace_Id": "ws_studio", "X_Surface_Id": "surf_board", "X_App_Id": "app_web",
         "X_Correlation_Id": "corr-7f3a", "X_Request_Id": "req-0001"}
LINEAGE_FIELDS = {"tenant_id", "env", "workspace_id", "project_id", "canvas_id", "rev",
                  "correlation_id", "actor_id", "artifact_id", "uri", "kind", "created_at"}


def _when(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _create_each_kind(stack, canvas: str) -> dict[str, object]:
    trace = dict(TRACE)
    return {
        "canvas_preview": create_preview(stack, canvas, rev=5, sub="u_bo", **trace),
        "canvas_replay": create_replay(stack, canvas, replay_document([], rev=5, rev_from=0),
                                       sub="u_bo", **trace),
        "canvas_audit": create_audit(stack, canvas, rev=5, sub="u_bo", **trace),
    }


def test_media_v2_and_nexus_hold_every_lineage_field(stack):
    canvas = new_canvas()
    rt = stack.runtime
    for media_kind, response in _create_each_kind(stack, canvas).items():
        assert response.headers["x-request-id"] == "req-0001"
        assert response.headers["x-correlation-id"] == "corr-7f3a"
        record = created(response)
        assert record["workspace_id"] == "ws_studio"
        assert record["surface_id"] == "surf_board" and record["app_id"] == "app_web"
        assert record["project_id"] == "p_main"
        assert record["correlation_id"] == "corr-7f3a"
        assert record["request_id"] == "req-0001"
        assert record["actor_id"] == "u_bo"
        assert record["media_asset_id"] == canvas_asset_id("t_acme", "dev", canvas)

        with rt.engine.connect() as conn:
            derived = media_repo.get_artifact(conn, "t_acme", "dev", record["media_artifact_id"])
            asset = media_repo.get_asset(conn, "t_acme", "dev", record["media_asset_id"])
            documents = rt.nexus.documents_for(conn, "t_acme", "dev", record["id"])
            events = rt.nexus.events_for(conn, "t_acme", "dev", record["id"])
            hidden = media_repo.get_artifact(conn, "t_acme", "prod", record["media_artifact_id"])

        assert hidden is None
        assert derived is not None, media_kind
        assert derived.kind == media_kind
        assert derived.parent_asset_id == record["media_asset_id"]
        assert (derived.tenant_id, derived.env) == ("t_acme", "dev")
        assert derived.uri == record["uri"]
        assert derived.created_at == _when(record["created_at"])
        assert derived.meta["artifact_id"] == record["id"]
        assert derived.meta["canvas_id"] == canvas and derived.meta["rev"] == 5

        assert asset is not None
        assert (asset.tenant_id, asset.env) == ("t_acme", "dev")
        assert asset.meta["canvas_id"] == canvas

        assert len(documents) == 1 and len(events) == 1
        document, event = documents[0], events[0]
        assert document.kind == media_kind
        assert document.subject_id == record["id"]
        assert (document.tenant_id, document.env) == ("t_acme", "dev")
        assert event.document_id == document.id
        assert event.subject_id == record["id"]
        assert event.event_type == f"canvas.{record['kind']}.created"
        assert (event.tenant_id, event.env) == ("t_acme", "dev")

        for lineage in (document.lineage, event.lineage):
            assert set(lineage) >= LINEAGE_FIELDS
            assert lineage["tenant_id"] == "t_acme"
            assert lineage["env"] == "dev"
            assert lineage["workspace_id"] == "ws_studio"
            assert lineage["project_id"] == "p_main"
            assert lineage["canvas_id"] == canvas
            assert lineage["rev"] == 5
            assert lineage["correlation_id"] == "corr-7f3a"
            assert lineage["actor_id"] == "u_bo"
            assert lineage["artifact_id"] == record["id"]
            assert lineage["uri"] == record["uri"]
            assert lineage["kind"] == record["kind"]
            assert _when(lineage["created_at"]) == _when(record["created_at"])
            assert _when(lineage["recorded_at"]) >= _when(lineage["created_at"])
            assert lineage["surface_id"] == "surf_board" and lineage["app_id"] == "app_web"
            assert lineage["request_id"] == "req-0001"
            assert lineage["media_artifact_id"] == record["media_artifact_id"]
        assert document.created_at == _when(record["created_at"])

        via_api = stack.client.get(url(canvas, f"/{record['id']}/lineage"),
                                   headers=stack.headers())
        assert via_api.status_code == 200
        body = via_api.json()
        assert body["artifact_id"] == record["id"]
        assert body["documents"] == [orjson.loads(document.model_dump_json())]
        assert body["events"] == [orjson.loads(event.model_dump_json())]

    # one canvas, one media_v2 asset, three derived artifacts under it
    with rt.engine.connect() as conn:
        asset = media_repo.get_asset(conn, "t_acme", "dev", canvas_asset_id("t_acme", "dev",
                                                                              canvas))
        assert asset is not None
        children = media_repo.artifacts_of(conn, asset)
    assert sorted(child.kind for child in children) == ["canvas_audit", "canvas_preview",
                                                         "canvas_replay"]


def test_generated_trace_ids_are_echoed_and_recorded(stack):
    canvas = new_canvas()
    response = create_preview(stack, canvas)
    record = created(response)
    request_id = response.headers["x-request-id"]
    assert request_id and response.headers["x-correlation-id"] == request_id
    assert record["request_id"] == request_id
    assert record["correlation_id"] == request_id
    assert record["workspace_id"] is None
    with stack.runtime.engine.connect() as conn:
        (document,) = stack.runtime.nexus.documents_for(conn, "t_acme", "dev", record["id"])
    assert document.lineage["correlation_id"] == request_id
    assert document.lineage["workspace_id"] is None


def test_the_canvas_asset_is_created_once(stack):
    canvas = new_canvas()
    first = created(create_preview(stack, canvas, rev=1))
    second = created(create_preview(stack, canvas, rev=2))
    assert first["media_asset_id"] == second["media_asset_id"]
    assert first["media_artifact_id"] != second["media_artifact_id"]
    prod = created(create_preview(stack, canvas, rev=1, env="prod"))
    assert prod["media_asset_id"] != first["media_asset_id"]
