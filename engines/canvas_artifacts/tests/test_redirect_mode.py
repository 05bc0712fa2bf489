"""MEDIA_SERVE_MODE=redirect: only raster images go to the bucket.

The bucket serves an object inline, on its own origin, with none of our
headers (no CSP, no nosniff, no attachment): SVG, HTML or anything a
browser might run there would be stored XSS. Those are proxied with the
protections instead, whether a preview, a replay or a render-ref into our
bucket (whose object may be any media_v2 upload). moto serves the presigned
URLs, so a redirect's Location is fetched and its headers checked.
"""

from __future__ import annotations

import httpx
import pytest

from conftest import HTML, PNG, SVG, Stack, new_canvas
from engines.canvas_artifacts.content import SANDBOX_CSP
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_preview,
    create_replay,
    created,
    url,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def redirecting(make_stack) -> Stack:
    return make_stack("s3-postgres", media_serve_mode="redirect")


def _content(stack: Stack, canvas: str, artifact_id: str, query: str = "") -> httpx.Response:
    return stack.client.get(url(canvas, f"/{artifact_id}/content{query}"),
                            headers=stack.headers(), follow_redirects=False)


def _assert_protected(response: httpx.Response, body: bytes, mime: str) -> None:
    assert response.status_code == 200, response.headers
    assert response.content == body
    assert response.headers["content-type"].split(";")[0] == mime
    assert response.headers["content-security-policy"] == SANDBOX_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"].startswith("attachment;")


def test_raster_previews_redirect_with_their_checked_type(redirecting: Stack) -> None:
    canvas = new_canvas()
    record = created(create_preview(redirecting, canvas))
    redirect = _content(redirecting, canvas, record["id"])
    assert redirect.status_code == 307
    fetched = httpx.get(redirect.headers["location"])
    assert fetched.status_code == 200 and fetched.content == PNG
    assert fetched.headers["content-type"] == "image/png"


def test_active_previews_are_proxied_with_their_protections(redirecting: Stack) -> None:
    canvas = new_canvas()
    for body, mime in ((SVG, "image/svg+xml"), (HTML, "text/html")):
        record = created(create_preview(redirecting, canvas, body=body, content_type=mime))
        _assert_protected(_content(redirecting, canvas, record["id"]), body, mime)


def test_json_payloads_are_proxied_too(redirecting: Stack) -> None:
    canvas = new_canvas()
    record = created(create_replay(redirecting, canvas))
    got = _content(redirecting, canvas, record["id"])
    assert got.status_code == 200
    assert got.json()["rev"] == 42
    assert got.headers["x-content-type-options"] == "nosniff"


def _upload(stack: Stack, data: bytes, content_type: str) -> httpx.Response:
    return stack.client.post("/media-v2/assets", headers=stack.headers(),
                             files={"file": ("page.bin", data, content_type)})


@pytest.mark.parametrize("mode", ["redirect", "proxy"])
def test_render_ref_to_an_uploaded_html_object_is_proxied(make_stack, mode: str) -> None:
    """HTML uploaded through media_v2, then named by a render-ref declaring image/png."""
    stack = make_stack("s3-postgres", media_serve_mode=mode)
    assert _upload(stack, HTML, "image/png").status_code == 415, "declared type is checked"
    asset = _upload(stack, HTML, "application/octet-stream").json()
    assert asset["meta"]["content_type"] == "text/html"
    canvas = new_canvas()
    record = created(stack.client.post(
        url(canvas, "/preview?rev=1"), headers=stack.headers(),
        json={"uri": asset["source_uri"], "mime_type": "image/png"}))
    got = _content(stack, canvas, record["id"])
    _assert_protected(got, HTML, "text/html")

    inline = _content(stack, canvas, record["id"], "?disposition=inline")
    assert inline.status_code == 200
    assert inline.headers["content-security-policy"] == SANDBOX_CSP
    assert "content-disposition" not in inline.headers

    head = stack.client.head(url(canvas, f"/{record['id']}/content"), headers=stack.headers())
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-security-policy"] == SANDBOX_CSP


def test_render_ref_to_unknown_bytes_is_an_octet_stream_attachment(redirecting: Stack) -> None:
    bucket = redirecting.settings.raw_bucket
    key = "tenants/t_acme/dev/renders/blob.png"
    redirecting.runtime.store.client.put_object(  # type: ignore[attr-defined]
        Bucket=bucket, Key=key, Body=b"\x00\x01 not an image", ContentType="text/html")
    canvas = new_canvas()
    record = created(redirecting.client.post(url(canvas, "/preview?rev=1"),
                                             headers=redirecting.headers(),
                                             json={"uri": f"s3://{bucket}/{key}"}))
    got = _content(redirecting, canvas, record["id"])
    _assert_protected(got, b"\x00\x01 not an image", "application/octet-stream")


def test_render_ref_to_a_raster_upload_still_redirects(redirecting: Stack) -> None:
    asset = _upload(redirecting, PNG, "image/png").json()
    canvas = new_canvas()
    record = created(redirecting.client.post(url(canvas, "/preview?rev=1"),
                                             headers=redirecting.headers(),
                                             json={"uri": asset["source_uri"]}))
    redirect = _content(redirecting, canvas, record["id"])
    assert redirect.status_code == 307
    fetched = httpx.get(redirect.headers["location"])
    assert fetched.content == PNG and fetched.headers["content-type"] == "image/png"


def test_render_ref_to_a_missing_object_is_404(redirecting: Stack) -> None:
    bucket = redirecting.settings.raw_bucket
    canvas = new_canvas()
    record = created(redirecting.client.post(
        url(canvas, "/preview?rev=1"), headers=redirecting.headers(),
        json={"uri": f"s3://{bucket}/tenants/t_acme/dev/renders/not-yet.png"}))
    assert_error(_content(redirecting, canvas, record["id"]), 404, "canvas.render_ref_missing")
