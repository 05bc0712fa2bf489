"""Creating previews: raw bodies, multipart, render-refs, and every rejection."""

from __future__ import annotations

import hashlib

import httpx

from conftest import HTML, JPEG, PNG, SVG, WEBP, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    assert_nothing_kept,
    blob_keys,
    create_preview,
    created,
    new_tenant,
    url,
)

BODIES = {
    "image/png": (PNG, "png"),
    "image/jpeg": (JPEG, "jpg"),
    "image/webp": (WEBP, "webp"),
    "image/svg+xml": (SVG, "svg"),
    "text/html": (HTML, "html"),
}


def test_raw_body_of_each_type_is_stored_and_served(stack):
    canvas = new_canvas()
    keys = []
    for mime, (body, extension) in BODIES.items():
        record = created(create_preview(stack, canvas, rev=3, body=body, content_type=mime))
        assert record["kind"] == "preview"
        assert record["canvas_id"] == canvas and record["rev"] == 3
        assert record["mime_type"] == mime
        assert record["size_bytes"] == len(body)
        assert record["sha256"] == hashlib.sha256(body).hexdigest()
        assert record["tenant_id"] == "t_acme" and record["env"] == "dev"
        key = f"tenants/t_acme/dev/canvas/{canvas}/preview/{record['id']}.{extension}"
        assert record["uri"].endswith(key)
        keys.append(key)

        got = stack.client.get(url(canvas, f"/{record['id']}/content"), headers=stack.headers())
        assert got.status_code == 200
        assert got.content == body
        assert got.headers["content-type"].split(";")[0] == mime
    assert sorted(blob_keys(stack)) == sorted(keys)


def test_without_a_declared_type_the_bytes_decide(stack):
    canvas = new_canvas()
    headers = stack.headers()
    for body, mime in ((WEBP, "image/webp"), (SVG, "image/svg+xml")):
        response = stack.client.post(url(canvas, "/preview?rev=1"), content=body,
                                     headers=headers)
        assert created(response)["mime_type"] == mime
        octets = create_preview(stack, canvas, body=body,
                                content_type="application/octet-stream")
        assert created(octets)["mime_type"] == mime
    unknown = create_preview(stack, canvas, body=b"%PDF-1.7" + b"\x00" * 64,
                             content_type="application/octet-stream")
    assert_error(unknown, 415)


def test_content_type_parameters_are_ignored(stack):
    record = created(create_preview(stack, new_canvas(), body=HTML,
                                    content_type="text/html; charset=utf-8"))
    assert record["mime_type"] == "text/html"


def test_multipart_file_field(stack):
    canvas = new_canvas()
    response = stack.client.post(url(canvas, "/preview?rev=2"), headers=stack.headers(),
                                 files={"file": ("shot.jpg", JPEG, "image/jpeg")})
    record = created(response)
    assert record["mime_type"] == "image/jpeg"
    assert record["sha256"] == hashlib.sha256(JPEG).hexdigest()
    got = stack.client.get(url(canvas, f"/{record['id']}/content"), headers=stack.headers())
    assert got.content == JPEG


def test_multipart_rejections(stack):
    no_file = stack.client.post(url(new_canvas(), "/preview?rev=2"), headers=stack.headers(),
                                files={"image": ("shot.png", PNG, "image/png")})
    assert_error(no_file, 422)
    mismatch = stack.client.post(url(new_canvas(), "/preview?rev=2"), headers=stack.headers(),
                                 files={"file": ("shot.png", JPEG, "image/png")})
    assert_error(mismatch, 415)
    unsupported = stack.client.post(url(new_canvas(), "/preview?rev=2"),
                                    headers=stack.headers(),
                                    files={"file": ("shot.gif", b"GIF89a" + PNG, "image/gif")})
    assert_error(unsupported, 415)
    assert blob_keys(stack) == []


def test_https_render_ref_redirects(stack):
    canvas = new_canvas()
    target = "https://renders.example.com/c/1/preview.png?sig=abc"
    response = stack.client.post(url(canvas, "/preview?rev=4"), headers=stack.headers(),
                                 json={"uri": target, "mime_type": "image/png"})
    record = created(response)
    assert record["uri"] == target
    assert record["mime_type"] == "image/png"
    assert record["meta"]["render_ref"] is True
    assert blob_keys(stack) == []

    got = stack.client.get(url(canvas, f"/{record['id']}/content"), headers=stack.headers(),
                           follow_redirects=False)
    assert got.status_code == 307
    assert got.headers["location"] == target


def test_s3_render_ref_inside_own_prefix_is_accepted_on_s3(make_stack):
    stack = make_stack("s3-postgres")
    bucket = stack.runtime.settings.raw_bucket
    target = f"s3://{bucket}/tenants/t_acme/dev/renders/c1.png"
    canvas = new_canvas()
    response = stack.client.post(url(canvas, "/preview?rev=1"), headers=stack.headers(),
                                 json={"uri": target})
    record = created(response)
    assert record["uri"] == target
    stack.runtime.store.client.put_object(Bucket=bucket, Key=target.split("/", 3)[3],
                                          Body=PNG)
    got = stack.client.get(url(canvas, f"/{record['id']}/content"), headers=stack.headers(),
                           follow_redirects=False)
    assert got.status_code == 307
    location = got.headers["location"]
    assert location.startswith(stack.settings.aws_endpoint_url_s3) and "Signature=" in location
    assert httpx.get(location).content == PNG


def _s3_refs(bucket: str | None) -> list[str]:
    own = bucket or "canvas-bucket"
    return [
        f"s3://{own}/tenants/t_beta/dev/renders/c1.png",     # another tenant's prefix
        f"s3://{own}/tenants/t_acme/prod/renders/c1.png",    # another env's prefix
        f"s3://{own}/tenants/t_acmex/dev/renders/c1.png",    # prefix of a longer tenant id
        f"s3://{own}/tenants/t_acme/dev/../../t_beta/dev/x.png",
        f"s3://{own}/elsewhere/c1.png",
        "s3://another-bucket/tenants/t_acme/dev/renders/c1.png",
    ]


OTHER_SCHEMES = ["file:///etc/passwd", "http://renders.example.com/c1.png",
                 "ftp://renders.example.com/c1.png", "https:///no-host.png", "/local/path.png"]


def test_out_of_scope_render_refs_are_422(stack):
    canvas = new_canvas()
    refs = _s3_refs(stack.runtime.settings.raw_bucket) + OTHER_SCHEMES
    for ref in refs:
        response = stack.client.post(url(canvas, "/preview?rev=1"), headers=stack.headers(),
                                     json={"uri": ref})
        assert_error(response, 422)
    listed = stack.client.get(url(canvas), headers=stack.headers()).json()
    assert listed["items"] == []


def test_every_s3_ref_is_422_without_a_bucket(local):
    response = local.client.post(url(new_canvas(), "/preview?rev=1"), headers=local.headers(),
                                 json={"uri": "s3://any/tenants/t_acme/dev/renders/c1.png"})
    assert_error(response, 422)


MALFORMED_REFS = [b'{"mime_type": "image/png"}', b'{"uri": ""}',
                  b'{"uri": "https://x.example/a.png", "extra": 1}',
                  b'["https://x.example/a.png"]', b"{not json"]


def test_malformed_render_ref_is_422(stack):
    headers = {**stack.headers(), "Content-Type": "application/json"}
    for body in MALFORMED_REFS:
        response = stack.client.post(url(new_canvas(), "/preview?rev=1"), headers=headers,
                                     content=body)
        assert_error(response, 422)


def test_missing_or_invalid_rev_is_422(stack):
    headers = {**stack.headers(), "Content-Type": "image/png"}
    for query in ["", "?rev=", "?rev=-1", "?rev=abc", "?rev=1.5"]:
        response = stack.client.post(url(new_canvas(), f"/preview{query}"), headers=headers,
                                     content=PNG)
        assert_error(response, 422)
    assert blob_keys(stack) == []


def test_unsupported_content_type_is_415(stack):
    for mime in ["image/gif", "application/pdf", "text/plain", "application/x-sh"]:
        assert_error(create_preview(stack, new_canvas(), body=PNG, content_type=mime), 415)
    assert blob_keys(stack) == []


MISMATCHES = [
    ("image/png", JPEG), ("image/jpeg", PNG), ("image/webp", PNG), ("image/svg+xml", PNG),
    ("text/html", PNG), ("image/png", b"GIF89a" + b"\x00" * 64), ("image/svg+xml", HTML),
]


def test_bytes_that_do_not_match_the_declared_type_are_415(stack):
    for mime, body in MISMATCHES:
        response = create_preview(stack, new_canvas(), body=body, content_type=mime)
        assert_error(response, 415)
    assert blob_keys(stack) == []


def test_empty_body_is_415(stack):
    assert_error(create_preview(stack, new_canvas(), body=b""), 415)


def test_over_max_preview_bytes_is_413_and_nothing_is_kept(make_stack, stack_name):
    stack = make_stack(stack_name, max_preview_bytes=1000)
    tenant = new_tenant()
    assert len(PNG) > 1000
    headers = stack.headers(tenant)
    raw_headers = {**headers, "Content-Type": "image/png"}
    attempts = {
        "raw": {"content": PNG, "headers": raw_headers},
        # No Content-Length: the limit must hold while the body streams in.
        "chunked": {"content": iter([PNG[:600], PNG[600:]]), "headers": raw_headers},
        "multipart": {"files": {"file": ("big.png", PNG, "image/png")}, "headers": headers},
    }
    for how, kwargs in attempts.items():
        response = stack.client.post(url(new_canvas(), "/preview?rev=1"), **kwargs)
        assert response.status_code == 413, how
        assert_error(response, 413)
    assert_nothing_kept(stack, tenant)


def test_at_max_preview_bytes_is_accepted(make_stack, stack_name):
    stack = make_stack(stack_name, max_preview_bytes=len(PNG))
    record = created(create_preview(stack, new_canvas()))
    assert record["size_bytes"] == len(PNG)
