"""Signed content URLs: header-free GETs of one artifact (or variant) until they expire."""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from conftest import SVG, new_canvas
from engines.canvas_artifacts import signed
from engines.canvas_artifacts.content import SANDBOX_CSP
from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    create_preview,
    create_replay,
    created,
    url,
)
from engines.canvas_artifacts.tests.images import opened, png
from engines.canvas_artifacts.variants.query import VariantQuery


def _sign(stack, record, tenant: str = "t_acme", role: str = "viewer", **body):
    return stack.client.post(url(record["canvas_id"], f"/{record['id']}/signed-url"),
                             json=body or None, headers=stack.headers(tenant, role=role))


def _signed(stack, record, **body) -> str:
    response = _sign(stack, record, **body)
    assert response.status_code == 200, response.text
    return response.json()["url"]


def _fetch(stack, full_url: str, **headers: str) -> httpx.Response:
    """A browser-like GET: no Authorization, no routing headers."""
    parts = urlsplit(full_url)
    return stack.client.get(f"{parts.path}?{parts.query}", headers=headers,
                            follow_redirects=False)


def _with(full_url: str, path: str | None = None, **params: str | None) -> str:
    parts = urlsplit(full_url)
    query = dict(parse_qsl(parts.query))
    for name, value in params.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return f"{path or parts.path}?{urlencode(query)}"


def _preview(stack, body: bytes | None = None, mime: str = "image/png"):
    return created(create_preview(stack, new_canvas(), body=body or png(300, 150),
                                  content_type=mime))


def test_a_signed_url_serves_content_with_no_headers_like_content(stack):
    record = _preview(stack)
    response = _sign(stack, record, ttl_seconds=120)
    assert response.status_code == 200
    issued = response.json()
    assert set(issued) == {"url", "expires_at"}
    assert issued["url"].startswith("http://testserver/signed/t_acme/dev/canvas/")
    expires = datetime.fromisoformat(issued["expires_at"]).timestamp()
    assert time.time() + 100 < expires <= time.time() + 121

    plain = stack.client.get(url(record["canvas_id"], f"/{record['id']}/content"),
                             headers=stack.headers())
    got = _fetch(stack, issued["url"])
    assert got.status_code == 200
    assert got.content == plain.content
    for header in ("etag", "content-type", "x-content-type-options", "accept-ranges"):
        assert got.headers[header] == plain.headers[header]
    assert _fetch(stack, issued["url"], **{"If-None-Match": got.headers["etag"]}).status_code \
        == 304
    part = _fetch(stack, issued["url"], Range="bytes=0-7")
    assert part.status_code == 206
    assert part.content == plain.content[:8]


def test_a_signed_url_can_name_an_image_variant(stack):
    record = _preview(stack, png(600, 300))
    thumb = _fetch(stack, _signed(stack, record, w=128, format="webp", q=75))
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/webp"
    assert opened(thumb.content).size == (128, 64)
    direct = stack.client.get(url(record["canvas_id"], f"/{record['id']}/content"
                                  "?w=128&format=webp&q=75"), headers=stack.headers())
    assert thumb.content == direct.content
    assert thumb.headers["etag"] == direct.headers["etag"]

    auto = _signed(stack, record, w=64, format="auto")
    assert _fetch(stack, auto, Accept="image/webp").headers["content-type"] == "image/webp"
    as_png = _fetch(stack, auto, Accept="image/png")
    assert as_png.headers["content-type"] == "image/png"
    assert as_png.headers["vary"] == "Accept"


def test_every_signed_field_is_tamper_proof(stack):
    canvas = new_canvas()
    record = created(create_preview(stack, canvas, body=png(600, 300)))
    other = created(create_preview(stack, canvas, body=png(300, 300)))
    foreign = created(create_preview(stack, canvas, body=png(300, 300), tenant="t_other"))
    signed_url = _signed(stack, record, w=128, format="webp", q=75)
    path = urlsplit(signed_url).path
    query = dict(parse_qsl(urlsplit(signed_url).query))
    assert _fetch(stack, signed_url).status_code == 200

    tampered = [
        _with(signed_url, path.replace("/t_acme/", "/t_other/")),
        _with(signed_url, path.replace("/dev/", "/prod/")),
        _with(signed_url, path.replace(f"/canvas/{canvas}/", f"/canvas/{canvas}x/")),
        _with(signed_url, path.replace(record["id"], other["id"])),
        _with(signed_url, path.replace(f"/t_acme/dev/canvas/{canvas}/artifacts/{record['id']}",
                                       f"/t_other/dev/canvas/{canvas}/artifacts/{foreign['id']}")),
        _with(signed_url, w="256"), _with(signed_url, w="0128"), _with(signed_url, w=None),
        _with(signed_url, h="64"), _with(signed_url, format="png"),
        _with(signed_url, format=None), _with(signed_url, q="90"), _with(signed_url, q=None),
        _with(signed_url, exp=str(int(query["exp"]) + 1)), _with(signed_url, exp=None),
        _with(signed_url, sig=query["sig"][:-2] + "AA"), _with(signed_url, sig=None),
        _with(signed_url, sig=""),
    ]
    for attempt in tampered:
        response = stack.client.get(attempt, follow_redirects=False)
        assert_error(response, 403, "signed_url.invalid")
    plain = _signed(stack, record)
    assert_error(stack.client.get(_with(plain, w="64")), 403, "signed_url.invalid")
    assert_error(stack.client.get(_with(plain, format="webp")), 403, "signed_url.invalid")
    assert_error(stack.client.get(_with(plain, w="")), 403, "signed_url.invalid")


def test_expired_url_is_403_and_deleted_artifact_is_404(stack):
    record = _preview(stack)
    model = ArtifactRecord.model_validate(record)
    past = signed.signed_url(stack.settings, "", model, VariantQuery(w=64), int(time.time()) - 1)
    assert_error(_fetch(stack, past), 403, "signed_url.expired")
    assert_error(_fetch(stack, _with(past, exp="soon")), 403, "signed_url.invalid")

    live = _signed(stack, record)
    thumb = _signed(stack, record, w=64)
    assert _fetch(stack, thumb).status_code == 200
    deleted = stack.client.delete(url(record["canvas_id"], f"/{record['id']}"),
                                  headers=stack.headers())
    assert deleted.status_code == 204, deleted.text
    for gone in (live, thumb):
        response = _fetch(stack, gone)
        assert_error(response, 404, "canvas.not_found")
        assert response.headers["content-type"] == "application/json"


def test_issuing_checks_auth_ttl_and_the_variant(stack):
    record = _preview(stack)
    path = url(record["canvas_id"], f"/{record['id']}/signed-url")
    assert_error(stack.client.post(path, json={}), 401)
    assert_error(_sign(stack, record, tenant="t_other"), 404)
    assert_error(stack.client.post(url(record["canvas_id"], "/art_missing/signed-url"),
                                   json={}, headers=stack.headers()), 404, "canvas.not_found")
    assert _sign(stack, record, role="viewer").status_code == 200
    for body in ({"ttl_seconds": 0}, {"ttl_seconds": 86_401}, {"ttl_seconds": "x"},
                 {"w": 0}, {"format": "gif"}, {"q": 101}, {"extra": 1}):
        assert_error(_sign(stack, record, **body), 422, "request.invalid")
    assert _sign(stack, record, ttl_seconds=86_400).status_code == 200
    assert_error(_sign(stack, record, w=300), 422, "image.size_not_allowed")
    assert_error(_sign(stack, record, w=64, q=80), 422, "image.quality_not_allowed")
    svg = _preview(stack, SVG, "image/svg+xml")
    assert_error(_sign(stack, svg, w=64), 422, "image.not_rasterisable")


def test_svg_over_a_signed_url_keeps_the_sandbox(stack):
    svg = _preview(stack, SVG, "image/svg+xml")
    response = _fetch(stack, _signed(stack, svg))
    assert response.status_code == 200
    assert response.content == SVG
    assert response.headers["content-security-policy"] == SANDBOX_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"].startswith("attachment;")


def test_replay_content_over_a_signed_url(stack):
    replay = created(create_replay(stack, new_canvas()))
    response = _fetch(stack, _signed(stack, replay))
    assert response.status_code == 200
    assert response.json()["rev"] == replay["rev"]


def test_signed_urls_are_for_gets_only(stack):
    signed_url = _signed(stack, _preview(stack))
    parts = urlsplit(signed_url)
    response = stack.client.post(f"{parts.path}?{parts.query}", content=b"x")
    assert_error(response, 405)


def test_url_key_is_its_own_and_public_base_url_sets_the_origin(stack_name, make_stack):
    stack = make_stack(stack_name, url_signing_key="first-key-" + "a" * 32,
                       public_base_url="https://cdn.example.com/")
    record = _preview(stack)
    signed_url = _signed(stack, record)
    assert signed_url.startswith("https://cdn.example.com/signed/t_acme/dev/")
    assert _fetch(stack, signed_url).status_code == 200

    model = ArtifactRecord.model_validate(record)
    expires = int(time.time()) + 60
    for key in ("second-key-" + "b" * 32, stack.settings.signing_key()):  # rotated; JWT key
        other = stack.settings.model_copy(update={"url_signing_key": key})
        forged = signed.signed_url(other, "", model, None, expires)
        assert_error(_fetch(stack, forged), 403, "signed_url.invalid")
    assert _fetch(stack, signed.signed_url(stack.settings, "", model, None, expires)) \
        .status_code == 200

    derived = make_stack(stack_name).settings
    assert derived.url_key() != derived.signing_key().encode()


@pytest.mark.s3
def test_redirect_mode_on_s3_answers_a_presigned_redirect(make_stack):
    stack = make_stack("s3-postgres", media_serve_mode="redirect")
    record = _preview(stack, png(300, 150))
    response = _fetch(stack, _signed(stack, record, w=64))
    assert response.status_code == 307
    fetched = httpx.get(response.headers["location"])
    assert opened(fetched.content).size == (64, 32)


def _sign_for_host(stack, record, host: str):
    return stack.client.post(url(record["canvas_id"], f"/{record['id']}/signed-url"),
                             headers={**stack.headers(role="viewer"), "Host": host,
                                      "X-Request-Id": "req-host"})


def _refused_host(response) -> None:
    error = assert_error(response, 400, "signed_url.host_not_allowed")
    assert error["request_id"] == "req-host"
    assert "ALLOWED_HOSTS" in error["message"]


def test_a_signed_url_names_only_an_allowed_host(stack_name, make_stack):
    """`Host: evil.example` must not yield `http://evil.example/signed/...`."""
    listed = make_stack(stack_name, allowed_hosts="api.example.com,[::1]")
    record = _preview(listed)
    for host, origin in (("api.example.com", "http://api.example.com"),
                         ("API.Example.com:8443", "http://API.Example.com:8443"),
                         ("[::1]:8010", "http://[::1]:8010")):
        response = _sign_for_host(listed, record, host)
        assert response.status_code == 200, (host, response.text)
        signed_url = response.json()["url"]
        assert signed_url.startswith(f"{origin}/signed/t_acme/dev/"), signed_url
        assert _fetch(listed, signed_url).status_code == 200
    for host in ("evil.example", "evil.example:80", "api.example.com.evil.example",
                 "evil.example@api.example.com", "api.example.com/evil", "api.example.com:x",
                 "testserver", "127.0.0.1", ""):
        _refused_host(_sign_for_host(listed, record, host))

    public = make_stack(stack_name, public_base_url="https://cdn.example.com",
                        allowed_hosts=None)
    record = _preview(public)
    response = _sign_for_host(public, record, "cdn.example.com")
    assert response.json()["url"].startswith("https://cdn.example.com/signed/")
    for host in ("evil.example", "testserver", "localhost"):
        _refused_host(_sign_for_host(public, record, host))

    neither = make_stack(stack_name, allowed_hosts=None)
    record = _preview(neither)
    for host in ("testserver", "localhost", "127.0.0.1", "evil.example"):
        _refused_host(_sign_for_host(neither, record, host))
    unauthenticated = neither.client.post(url(record["canvas_id"], f"/{record['id']}/signed-url"),
                                          headers={"Host": "evil.example"})
    assert_error(unauthenticated, 401)  # the token is checked first


def test_on_the_dev_key_alone_localhost_may_be_named(make_stack):
    """The embedded default (no AUTH_JWT_SIGNING, URL_SIGNING_KEY or ALLOWED_HOSTS): the
    walkthrough on 127.0.0.1 or localhost keeps working, and only there. (A dev key exists
    only on the embedded default: PostgreSQL or S3 refuse to make one.)"""
    dev = make_stack("local-sqlite", auth_jwt_signing=None, allowed_hosts=None)
    assert dev.settings.dev_key_in_use
    record = _preview(dev)
    for host in ("127.0.0.1:8010", "localhost", "localhost:8311", "[::1]:8010"):
        response = _sign_for_host(dev, record, host)
        assert response.status_code == 200, (host, response.text)
        assert response.json()["url"].startswith(f"http://{host}/signed/")
    for host in ("evil.example", "testserver", "10.0.0.5:8010"):
        _refused_host(_sign_for_host(dev, record, host))

    keyed = make_stack("local-sqlite", auth_jwt_signing=None, allowed_hosts=None,
                       url_signing_key="url-key-" + "u" * 32)
    _refused_host(_sign_for_host(keyed, _preview(keyed), "127.0.0.1:8010"))
