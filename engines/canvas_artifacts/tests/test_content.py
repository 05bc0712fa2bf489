"""Serving payloads: exact bytes, ETag, conditional and range requests, safe headers."""

from __future__ import annotations

import hashlib

from conftest import HTML, PNG, SVG, new_canvas
from engines.canvas_artifacts.content import SANDBOX_CSP
from engines.canvas_artifacts.tests.helpers import assert_error, create_preview, created, url


def _content(stack, canvas: str, artifact_id: str, query: str = "", **headers: str):
    return stack.client.get(url(canvas, f"/{artifact_id}/content{query}"),
                            headers={**stack.headers(), **headers})


def test_bytes_etag_and_conditional_get(stack):
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    etag = f'"{hashlib.sha256(PNG).hexdigest()}"'

    full = _content(stack, canvas, record["id"])
    assert full.status_code == 200
    assert full.content == PNG
    assert full.headers["content-type"] == "image/png"
    assert full.headers["content-length"] == str(len(PNG))
    assert full.headers["etag"] == etag
    assert full.headers["x-content-type-options"] == "nosniff"
    assert full.headers["accept-ranges"] == "bytes"
    assert "content-security-policy" not in full.headers

    for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = _content(stack, canvas, record["id"], **{"If-None-Match": tag})
        assert cached.status_code == 304, tag
        assert cached.content == b""
        assert cached.headers["etag"] == etag

    stale = _content(stack, canvas, record["id"], **{"If-None-Match": '"0123"'})
    assert stale.status_code == 200
    assert stale.content == PNG


def test_ranges(stack):
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    size = len(PNG)

    head = _content(stack, canvas, record["id"], Range="bytes=0-9")
    assert head.status_code == 206
    assert head.content == PNG[:10]
    assert head.headers["content-range"] == f"bytes 0-9/{size}"
    assert head.headers["content-length"] == "10"
    assert head.headers["etag"] == f'"{record["sha256"]}"'

    middle = _content(stack, canvas, record["id"], Range="bytes=100-355")
    assert middle.status_code == 206
    assert middle.content == PNG[100:356]
    assert middle.headers["content-range"] == f"bytes 100-355/{size}"

    suffix = _content(stack, canvas, record["id"], Range="bytes=-16")
    assert suffix.status_code == 206
    assert suffix.content == PNG[-16:]
    assert suffix.headers["content-range"] == f"bytes {size - 16}-{size - 1}/{size}"

    open_ended = _content(stack, canvas, record["id"], Range=f"bytes={size - 5}-")
    assert open_ended.status_code == 206
    assert open_ended.content == PNG[-5:]

    past_end = _content(stack, canvas, record["id"], Range=f"bytes={size - 3}-{size + 100}")
    assert past_end.status_code == 206
    assert past_end.content == PNG[-3:]
    assert past_end.headers["content-range"] == f"bytes {size - 3}-{size - 1}/{size}"

    longer_suffix = _content(stack, canvas, record["id"], Range=f"bytes=-{size * 2}")
    assert longer_suffix.status_code == 206
    assert longer_suffix.content == PNG


def test_unsatisfiable_range_is_416(stack):
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    size = len(PNG)
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        response = _content(stack, canvas, record["id"], Range=header)
        assert_error(response, 416)
        assert response.headers["content-range"] == f"bytes */{size}", header


def test_svg_and_html_are_sandboxed_and_downloaded_unless_inline(stack):
    canvas = new_canvas()
    for body, mime, extension in ((SVG, "image/svg+xml", "svg"), (HTML, "text/html", "html")):
        record = created(create_preview(stack, canvas, body=body, content_type=mime))
        attached = _content(stack, canvas, record["id"])
        assert attached.status_code == 200
        assert attached.content == body
        assert attached.headers["content-security-policy"] == SANDBOX_CSP
        assert "sandbox" in attached.headers["content-security-policy"]
        assert attached.headers["x-content-type-options"] == "nosniff"
        disposition = attached.headers["content-disposition"]
        assert disposition == f'attachment; filename="{record["id"]}.{extension}"'

        inline = _content(stack, canvas, record["id"], "?disposition=inline")
        assert inline.status_code == 200
        assert inline.content == body
        assert inline.headers["content-security-policy"] == SANDBOX_CSP
        assert "content-disposition" not in inline.headers

    bad = _content(stack, canvas, record["id"], "?disposition=evil")
    assert_error(bad, 422)


def test_content_of_a_missing_artifact_is_404(stack):
    response = _content(stack, new_canvas(), "art_missing")
    assert_error(response, 404, "canvas.not_found")


def test_range_positions_of_thousands_of_digits_are_never_a_5xx(stack):
    """Python's int() refuses over 4300 digits: such a Range was a 500."""
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    huge = "9" * 5000
    for header in (f"bytes=0-{huge}", f"bytes=-{huge}"):
        whole = _content(stack, canvas, record["id"], Range=header)
        assert whole.status_code in (200, 206), header
        assert whole.content == PNG, header
    assert_error(_content(stack, canvas, record["id"], Range=f"bytes={huge}-"), 416)
    assert_error(_content(stack, canvas, record["id"], Range=f"bytes={huge}-{huge}"), 416)
    padded = _content(stack, canvas, record["id"], Range=f"bytes={'0' * 5000}1-{'0' * 5000}2")
    assert padded.status_code == 206 and padded.content == PNG[1:3]


def test_if_range_honours_the_range_only_for_the_current_etag(stack):
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    etag = f'"{record["sha256"]}"'
    same = _content(stack, canvas, record["id"], Range="bytes=0-9", **{"If-Range": etag})
    assert same.status_code == 206 and same.content == PNG[:10]
    for validator in ('"0123abcd"', f"W/{etag}", "Sat, 28 Nov 2026 10:00:00 GMT"):
        full = _content(stack, canvas, record["id"], Range="bytes=0-9",
                        **{"If-Range": validator})
        assert full.status_code == 200, validator
        assert full.content == PNG
        assert "content-range" not in full.headers


_SAME_HEADERS = ("content-type", "content-length", "etag", "accept-ranges", "cache-control",
                 "x-content-type-options", "content-range", "content-security-policy",
                 "content-disposition")


def _assert_head_matches_get(stack, path: str, **headers: str) -> None:
    all_headers = {**stack.headers(), **headers}
    got = stack.client.get(path, headers=all_headers, follow_redirects=False)
    head = stack.client.head(path, headers=all_headers, follow_redirects=False)
    assert head.status_code == got.status_code, path
    assert head.content == b"", path
    for name in _SAME_HEADERS:
        assert head.headers.get(name) == got.headers.get(name), (path, name)
    if got.status_code == 200:
        assert int(head.headers["content-length"]) == len(got.content), path


def test_head_answers_every_read_with_the_gets_headers_and_no_body(stack):
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    big = created(create_preview(stack, canvas, rev=2, body=PNG + b"\0" * (3 * 1024 * 1024)))
    svg = created(create_preview(stack, canvas, rev=3, body=SVG, content_type="image/svg+xml"))
    asset = record["media_asset_id"]
    for path, extra in [
        (url(canvas, f"/{record['id']}/content"), {}),
        (url(canvas, f"/{record['id']}/content"), {"Range": "bytes=5-20"}),
        (url(canvas, f"/{record['id']}/content"), {"If-None-Match": f'"{record["sha256"]}"'}),
        (url(canvas, f"/{big['id']}/content"), {}),
        (url(canvas, f"/{svg['id']}/content"), {}),
        (url(canvas, f"/{record['id']}"), {}),
        (url(canvas, f"/{record['id']}/lineage"), {}),
        (url(canvas), {}),
        (url(canvas, "/latest?kind=preview"), {}),
        ("/media-v2/assets", {}),
        (f"/media-v2/assets/{asset}", {}),
        (f"/media-v2/artifacts/{record['media_artifact_id']}", {}),
    ]:
        _assert_head_matches_get(stack, path, **extra)


def test_head_keeps_the_gets_errors(stack):
    canvas = new_canvas()
    record = created(create_preview(stack, canvas))
    path = url(canvas, f"/{record['id']}/content")
    assert stack.client.head(path).status_code == 401
    wrong_tenant = {**stack.headers(), "X-Tenant-Id": "t_other"}
    assert stack.client.head(path, headers=wrong_tenant).status_code == 403
    assert stack.client.head(path, headers=stack.headers("t_other")).status_code == 404
    missing = stack.client.head(url(canvas, "/art_missing/content"), headers=stack.headers())
    assert missing.status_code == 404 and missing.content == b""
    post_only = stack.client.head(f"/media-v2/assets/{record['media_asset_id']}/artifacts",
                                  headers=stack.headers())
    assert post_only.status_code == 405
