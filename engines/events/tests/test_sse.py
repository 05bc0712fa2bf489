"""SSE: shape, order, resume without gap or duplicate, isolation, heartbeats, auth.

Every test runs on both stacks (local+SQLite polled, S3+PostgreSQL with
LISTEN/NOTIFY), against the app served by real uvicorn.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_audit,
    create_preview,
    create_replay,
    created,
    new_tenant,
)
from engines.events.tests.conftest import Live
from engines.lifecycle import delete as lifecycle

pytestmark = [pytest.mark.slow]


def test_event_shape_and_order(live: Live) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    reader = live.subscribe(tenant=tenant)
    assert reader.next_comment() == "connected"
    stack = live.stack
    records = [
        created(create_preview(stack, canvas, rev=7, tenant=tenant, X_Workspace_Id="w_1",
                               X_Surface_Id="s_1", X_App_Id="a_1", X_Request_Id="req_1",
                               X_Correlation_Id="corr_1")),
        created(create_replay(stack, canvas, tenant=tenant)),
        created(create_audit(stack, canvas, rev=3, tenant=tenant)),
    ]
    messages = [reader.next_event() for _ in records]

    assert [m.data["data"]["artifact_id"] for m in messages] == [r["id"] for r in records]
    assert [m.event for m in messages] == ["artifact_written"] * 3
    assert [m.id for m in messages] == [1, 2, 3]  # a fresh tenant's feed starts at 1
    first, record = messages[0].data, records[0]
    assert first == {
        "v": 1, "type": "artifact_written", "event_id": first["event_id"], "seq": 1,
        "ts": record["created_at"],
        "routing": {"tenant_id": tenant, "env": "dev", "project_id": "p_main",
                    "workspace_id": "w_1", "surface_id": "s_1", "app_id": "a_1",
                    "canvas_id": canvas, "actor_id": "u_ana"},
        "ids": {"request_id": "req_1", "correlation_id": "corr_1"},
        "data": {"artifact_id": record["id"], "kind": "preview", "rev": 7,
                 "mime_type": "image/png", "size_bytes": record["size_bytes"],
                 "sha256": record["sha256"], "uri": record["uri"],
                 "media_artifact_id": record["media_artifact_id"]},
    }
    assert first["event_id"].startswith("dse_")
    lineage = stack.client.get(f"/canvas/{canvas}/artifacts/{record['id']}/lineage",
                               headers=stack.headers(tenant)).json()
    assert lineage["events"][0]["id"] == first["event_id"]


def test_deletion_is_artifact_deleted_with_reason(live: Live) -> None:
    """A DELETE and a retention expiry, as the lifecycle writes them."""
    tenant, canvas = new_tenant(), new_canvas()
    reader = live.subscribe(tenant=tenant)
    reader.next_comment()
    stack = live.stack
    record = created(create_preview(stack, canvas, rev=2, tenant=tenant))
    kept = created(create_preview(stack, canvas, rev=1, tenant=tenant))
    response = stack.client.delete(
        f"/canvas/{canvas}/artifacts/{record['id']}",
        headers=stack.headers(tenant, sub="u_deleter", X_Request_Id="req_delete",
                              X_Correlation_Id="corr_delete"))
    assert response.status_code == 204
    stack.runtime.settings.retention_preview = timedelta(0)
    stack.runtime.settings.retention_keep_latest = False
    lifecycle.expire_all(stack.runtime, apply=True)

    written, _second, deleted, expired = (reader.next_event() for _ in range(4))
    assert written.event == "artifact_written"
    assert (deleted.event, deleted.id, deleted.data["data"]["reason"]) == (
        "artifact_deleted", 3, "deleted")
    assert deleted.data["data"]["artifact_id"] == record["id"]
    assert expired.data["data"]["artifact_id"] == kept["id"]
    assert (expired.data["type"], expired.data["data"]["reason"]) == ("artifact_deleted",
                                                                      "expired")
    assert deleted.data["routing"]["actor_id"] == "u_deleter"
    assert expired.data["routing"]["actor_id"] == "system"
    assert deleted.data["ids"] == {"request_id": "req_delete", "correlation_id": "corr_delete"}
    assert deleted.data["data"]["sha256"] == record["sha256"]
    assert deleted.data["routing"]["canvas_id"] == canvas


def test_resume_with_last_event_id_and_after(live: Live) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    ids = [created(create_audit(live.stack, canvas, rev=i, tenant=tenant))["id"]
           for i in range(5)]

    resumed = live.subscribe(tenant=tenant, **{"Last-Event-ID": "2"})
    by_query = live.subscribe("/artifacts/events?after=3", tenant=tenant)
    fresh = live.subscribe(tenant=tenant)
    backlog = [resumed.next_event() for _ in range(3)]
    assert [m.id for m in backlog] == [3, 4, 5]
    assert [m.data["data"]["artifact_id"] for m in backlog] == ids[2:]
    assert by_query.next_event().id == 4
    assert fresh.next_comment() == "connected"

    created(create_audit(live.stack, canvas, rev=9, tenant=tenant))
    for reader, expected in ((resumed, [6]), (by_query, [5, 6]), (fresh, [6])):
        got = [reader.next_event().id for _ in expected]
        assert got == expected
        assert reader.events_so_far() == []  # nothing twice at the seam


def test_resume_across_the_seam_while_writing(live: Live) -> None:
    """Events written while the backlog is being read arrive once each, in order."""
    tenant, canvas = new_tenant(), new_canvas()
    for rev in range(30):
        created(create_audit(live.stack, canvas, rev=rev, tenant=tenant))
    reader = live.subscribe(tenant=tenant, **{"Last-Event-ID": "0"})
    for rev in range(30, 60):
        created(create_audit(live.stack, canvas, rev=rev, tenant=tenant))
    seqs = [reader.next_event().id for _ in range(60)]
    assert seqs == list(range(1, 61))
    assert reader.events_so_far() == []


def test_isolation_by_tenant_env_and_canvas(live: Live) -> None:
    tenant, other_tenant = new_tenant(), new_tenant()
    canvas, other_canvas = new_canvas(), new_canvas()
    everything = live.subscribe(tenant=tenant)
    one_canvas = live.subscribe(f"/canvas/{canvas}/artifacts/events", tenant=tenant)
    prod = live.subscribe(tenant=tenant, env="prod")
    for reader in (everything, one_canvas, prod):
        reader.next_comment()

    created(create_audit(live.stack, other_canvas, tenant=tenant))
    created(create_audit(live.stack, canvas, tenant=other_tenant))
    created(create_audit(live.stack, canvas, tenant=tenant, env="staging"))
    mine = created(create_audit(live.stack, canvas, tenant=tenant))

    assert [m.data["routing"]["canvas_id"] for m in everything.events_so_far(1.0)] == [
        other_canvas, canvas]
    only = one_canvas.events_so_far()
    assert [(m.data["data"]["artifact_id"], m.id) for m in only] == [(mine["id"], 2)]
    assert prod.events_so_far() == []


def test_heartbeat_comment_when_idle(make_live) -> None:
    live = make_live(events_heartbeat_seconds=0.2)
    reader = live.subscribe(tenant=new_tenant())
    assert reader.next_comment() == "connected"
    assert reader.next_comment(timeout=5) == "heartbeat"
    assert reader.next_comment(timeout=5) == "heartbeat"


def test_stream_headers(live: Live) -> None:
    import httpx

    headers = live.stack.headers(new_tenant(), role="viewer")
    with httpx.stream("GET", f"{live.url}/artifacts/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-request-id"]


def test_auth_and_bad_input(live: Live) -> None:
    client, stack = live.stack.client, live.stack
    assert_error(client.get("/artifacts/events"), 401)
    headers = stack.headers("t_acme")
    assert_error(client.get("/artifacts/events", headers={**headers, "X-Tenant-Id": "t_other"}),
                 403, "auth.tenant_forbidden")
    no_env = {k: v for k, v in headers.items() if k != "X-Env"}
    assert_error(client.get("/canvas/c_1/artifacts/events", headers=no_env), 400)
    assert_error(client.get("/artifacts/events", headers={**headers, "Last-Event-ID": "x1"}),
                 422, "events.bad_last_event_id")
    assert_error(client.get("/artifacts/events?after=-1", headers=headers), 422)
    assert_error(client.get("/canvas/..bad/artifacts/events", headers=headers), 422)


def test_idle_stream_outlives_the_body_idle_timeout(make_live) -> None:
    """A stream stays open past BODY_IDLE_TIMEOUT: that limit is for request bodies."""
    live = make_live(body_idle_timeout=0.3, events_heartbeat_seconds=0.4)
    tenant = new_tenant()
    reader = live.subscribe(tenant=tenant)
    for _ in range(3):
        assert reader.next_comment(timeout=5) in ("connected", "heartbeat")
    record = created(create_audit(live.stack, new_canvas(), tenant=tenant))
    assert reader.next_event().data["data"]["artifact_id"] == record["id"]


@pytest.mark.parametrize("make_live", ["s3-postgres"], indirect=True)
def test_listener_survives_a_dropped_listen_connection(live: Live) -> None:
    """PostgreSQL: the LISTEN connection killed under the hub; it reconnects and rereads
    the rows, so an event committed meanwhile still arrives, once."""
    from sqlalchemy import text

    tenant, canvas = new_tenant(), new_canvas()
    reader = live.subscribe(tenant=tenant)
    assert reader.next_comment() == "connected"
    with live.stack.runtime.engine.begin() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'")).scalar()
    assert killed == 1
    record = created(create_audit(live.stack, canvas, tenant=tenant))
    assert reader.next_event().data["data"]["artifact_id"] == record["id"]
    assert reader.events_so_far() == []


def test_a_resume_point_beyond_the_feed_bound_is_422_before_the_stream_starts(
        live: Live) -> None:
    """Last-Event-ID is held to ?after='s bound (2**63 - 1): a larger or malformed one is
    a 422 envelope, never a 200 whose stream then dies."""
    import httpx

    headers = live.stack.headers(new_tenant(), role="viewer")
    path = f"{live.url}/artifacts/events"

    def opened(**extra: str | bytes) -> httpx.Response:
        with httpx.stream("GET", path, headers={**headers, **extra}, timeout=10) as response:
            if response.status_code != 200:
                response.read()
                return response
            lines = response.iter_lines()
            assert next(lines).startswith("id: ") and next(lines) == ": connected"
            return response

    for bad in (str(2**63), "9" * 19, "1" + "0" * 40, "²".encode("latin-1"), "-1", "1e3"):
        assert_error(opened(**{"Last-Event-ID": bad}), 422, "events.bad_last_event_id")
    assert_error(httpx.get(f"{path}?after={2**63}", headers=headers, timeout=10), 422)
    assert opened(**{"Last-Event-ID": str(2**63 - 1)}).status_code == 200


def test_head_answers_the_stream_headers_without_holding_a_stream(make_live) -> None:
    """HEAD (as of every GET route) gets the headers at once; it takes no stream slot, so
    it answers even when the tenant holds its SSE_MAX_STREAMS_PER_TENANT streams."""
    import httpx

    live = make_live(sse_max_streams_per_tenant=1)
    tenant = new_tenant()
    assert live.subscribe(tenant=tenant).admitted()
    headers = live.stack.headers(tenant, role="viewer")
    head = httpx.head(f"{live.url}/artifacts/events", headers=headers, timeout=5)
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.content == b""
    assert not live.subscribe(tenant=tenant).admitted(), "the tenant's one slot is taken"
