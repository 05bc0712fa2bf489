"""Listing: newest first, filters, cursor pagination, and `latest`."""

from __future__ import annotations

from conftest import new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_audit,
    create_preview,
    create_replay,
    created,
    replay_document,
    url,
)


def _list(stack, canvas: str, query: str = ""):
    response = stack.client.get(url(canvas, query), headers=stack.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "next_cursor"}
    return body


def _seed(stack, canvas: str) -> list[dict]:  # type: ignore[type-arg]
    """Seven artifacts of all kinds and a few revs, in creation order."""
    records = [
        created(create_preview(stack, canvas, rev=1)),
        created(create_audit(stack, canvas, rev=1)),
        created(create_replay(stack, canvas, replay_document([], rev=2, rev_from=0))),
        created(create_preview(stack, canvas, rev=2)),
        created(create_preview(stack, canvas, rev=3)),
        created(create_audit(stack, canvas, rev=3)),
        created(create_preview(stack, canvas, rev=1)),
    ]
    return records


def test_list_newest_first_with_filters_and_pages(stack):
    canvas = new_canvas()
    records = _seed(stack, canvas)
    newest_first = [r["id"] for r in reversed(records)]
    by_id = {r["id"]: r for r in records}

    everything = _list(stack, canvas)
    assert [item["id"] for item in everything["items"]] == newest_first
    assert everything["next_cursor"] is None
    assert everything["items"] == [by_id[i] for i in newest_first]

    previews = _list(stack, canvas, "?kind=preview")["items"]
    assert [p["id"] for p in previews] == [r["id"] for r in reversed(records)
                                           if r["kind"] == "preview"]
    rev1 = _list(stack, canvas, "?rev=1")["items"]
    assert [p["id"] for p in rev1] == [r["id"] for r in reversed(records) if r["rev"] == 1]
    both = _list(stack, canvas, "?kind=audit&rev=3")["items"]
    assert [p["id"] for p in both] == [records[5]["id"]]
    assert _list(stack, canvas, "?rev=99")["items"] == []
    assert _list(stack, new_canvas())["items"] == []

    seen: list[str] = []
    sizes = []
    cursor = None
    for _ in range(10):
        page = _list(stack, canvas, "?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        sizes.append(len(page["items"]))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == newest_first

    first = _list(stack, canvas, "?kind=preview&limit=2")
    second = _list(stack, canvas, f"?kind=preview&limit=2&cursor={first['next_cursor']}")
    assert [p["id"] for p in first["items"] + second["items"]] == [p["id"] for p in previews]
    assert second["next_cursor"] is None


def test_exact_page_boundary_has_no_next_cursor(stack):
    canvas = new_canvas()
    ids = [created(create_audit(stack, canvas, rev=r))["id"] for r in range(3)]
    page = _list(stack, canvas, "?limit=3")
    assert [i["id"] for i in page["items"]] == ids[::-1]
    assert page["next_cursor"] is None


def test_bad_list_parameters_are_422(stack):
    canvas = new_canvas()
    for query in ("?cursor=!!!", "?cursor=zzzz", "?cursor=" + "A" * 300, "?limit=0",
                  "?limit=201", "?limit=x", "?kind=video", "?rev=-1"):
        assert_error(stack.client.get(url(canvas, query), headers=stack.headers()), 422)


def test_latest_picks_highest_rev_then_newest(stack):
    canvas = new_canvas()
    created(create_preview(stack, canvas, rev=5))
    created(create_preview(stack, canvas, rev=7))
    newest_of_rev_7 = created(create_preview(stack, canvas, rev=7))
    created(create_preview(stack, canvas, rev=6))
    audit = created(create_audit(stack, canvas, rev=2))

    latest = stack.client.get(url(canvas, "/latest?kind=preview"), headers=stack.headers())
    assert latest.status_code == 200
    assert latest.json() == newest_of_rev_7
    latest_audit = stack.client.get(url(canvas, "/latest?kind=audit"), headers=stack.headers())
    assert latest_audit.json() == audit

    none = stack.client.get(url(canvas, "/latest?kind=replay"), headers=stack.headers())
    assert_error(none, 404, "canvas.not_found")
    other = stack.client.get(url(new_canvas(), "/latest?kind=preview"), headers=stack.headers())
    assert_error(other, 404, "canvas.not_found")
    for query in ("", "?kind=thumbnail"):
        assert_error(stack.client.get(url(canvas, f"/latest{query}"), headers=stack.headers()),
                     422)


def test_get_record_equals_create_response(stack):
    canvas = new_canvas()
    record = created(create_preview(stack, canvas, rev=2))
    got = stack.client.get(url(canvas, f"/{record['id']}"), headers=stack.headers())
    assert got.status_code == 200
    assert got.json() == record
    # the artifact belongs to its canvas: the same id under another canvas is not found
    elsewhere = stack.client.get(url(new_canvas(), f"/{record['id']}"), headers=stack.headers())
    assert_error(elsewhere, 404, "canvas.not_found")
