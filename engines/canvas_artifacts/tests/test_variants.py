"""Image variants: sizes, formats, orientation, limits, storage and concurrency."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import orjson
import pytest
from PIL import Image

from conftest import HTML, PNG, SVG, new_canvas
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    blob_keys,
    create_preview,
    create_replay,
    created,
    url,
)
from engines.canvas_artifacts.tests.images import (
    BLUE,
    RED,
    encode,
    opened,
    png,
    png_bomb,
    rotated_jpeg,
    two_tone,
    webp,
)
from engines.canvas_artifacts.variants import pool
from engines.canvas_artifacts.variants import service as variant_service
from engines.canvas_artifacts.variants.repository import variants_of
from engines.canvas_artifacts.variants.spec import VariantSpec, variant_bound
from engines.media_v2.repository import artifacts as media_artifacts


def _get(stack, record, query: str = "", **headers: str):
    return stack.client.get(url(record["canvas_id"], f"/{record['id']}/content{query}"),
                            headers={**stack.headers(), **headers}, follow_redirects=False)


def _preview(stack, body: bytes, mime: str, canvas: str | None = None):
    return created(create_preview(stack, canvas or new_canvas(), body=body, content_type=mime))


def _variant_keys(stack, record) -> list[str]:
    return [k for k in blob_keys(stack) if f"/{record['id']}.v/" in k]


def _slots(monkeypatch, n: int) -> None:
    """n concurrent variant makers, whatever the machine's core count."""
    monkeypatch.setattr(pool, "_limiter", anyio.CapacityLimiter(n))
    executor = ThreadPoolExecutor(n)
    monkeypatch.setattr(pool, "_executor", executor)


def _near(pixel: tuple[int, ...], color: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(pixel[:3], color, strict=True))


def test_sizes_and_formats_fit_inside_and_never_upscale(stack):
    record = _preview(stack, png(600, 300), "image/png")
    cases = [("?w=256", "image/png", (256, 128)), ("?h=64", "image/png", (128, 64)),
             ("?w=256&h=64", "image/png", (128, 64)), ("?w=2048", "image/png", (600, 300)),
             ("?w=128&format=webp", "image/webp", (128, 64)),
             ("?w=128&format=jpeg&q=50", "image/jpeg", (128, 64)),
             ("?format=webp", "image/webp", (600, 300))]
    for query, mime, size in cases:
        response = _get(stack, record, query)
        assert response.status_code == 200, (query, response.text)
        assert response.headers["content-type"] == mime, query
        image = opened(response.content)
        assert image.size == size, query
        assert image.format == {"image/png": "PNG", "image/webp": "WEBP",
                                "image/jpeg": "JPEG"}[mime]
        assert response.headers["etag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
        if size != (600, 300):
            assert response.headers["etag"] != f'"{record["sha256"]}"'
        assert response.headers["x-content-type-options"] == "nosniff"
    low = _get(stack, record, "?w=512&format=jpeg&q=50").content
    high = _get(stack, record, "?w=512&format=jpeg&q=90").content
    assert len(low) < len(high)


def test_the_binding_side_is_exactly_the_size_asked_for(stack):
    """Fit inside, aspect kept: the binding side exactly, the other rounded to nearest."""
    cases = [(png(300, 200), "image/png", "?w=128", (128, 85)),
             (png(768, 512), "image/png", "?w=512", (512, 341)),
             (encode(two_tone(768, 512), "JPEG"), "image/jpeg", "?w=512", (512, 341)),
             (encode(two_tone(768, 512), "JPEG"), "image/jpeg", "?w=128&format=webp", (128, 85)),
             (webp(200, 300), "image/webp", "?h=128", (85, 128)),
             (png(300, 200), "image/png", "?w=128&h=128", (128, 85)),
             (png(200, 300), "image/png", "?w=128&h=128&format=jpeg", (85, 128)),
             (png(999, 1), "image/png", "?w=64", (64, 1)),
             (png(100, 100), "image/png", "?w=128", (100, 100))]
    for body, mime, query, size in cases:
        record = _preview(stack, body, mime)
        response = _get(stack, record, query)
        assert response.status_code == 200, (query, response.text)
        assert opened(response.content).size == size, (mime, query)
        with stack.runtime.engine.connect() as conn:
            [variant] = variants_of(conn, "t_acme", "dev", record["id"])
        assert (variant.meta["width"], variant.meta["height"]) == size


def test_q_takes_only_the_configured_qualities(stack_name, make_stack):
    """Any q of 1..100 would multiply the variants a viewer can make the server store."""
    stack = make_stack(stack_name)
    record = _preview(stack, png(300, 150), "image/png")
    viewer = stack.headers(role="viewer")
    answers = {q: stack.client.get(url(record["canvas_id"], f"/{record['id']}/content"
                                       f"?w=64&format=jpeg&q={q}"), headers=viewer)
               for q in range(1, 101)}
    assert sorted(q for q, r in answers.items() if r.status_code == 200) == [50, 75, 90]
    for q in (1, 49, 80, 100):
        assert_error(answers[q], 422, "image.quality_not_allowed")
        assert "50, 75, 90" in answers[q].json()["error"]["message"]
    assert _get(stack, record, "?w=64&format=webp").status_code == 200  # no q: the middle one
    assert_error(_get(stack, record, "?w=64&format=png&q=80"), 422, "image.quality_not_allowed")
    with stack.runtime.engine.connect() as conn:
        stored = variants_of(conn, "t_acme", "dev", record["id"])
    assert sorted((v.meta["format"], v.meta["q"]) for v in stored) == [
        ("jpeg", 50), ("jpeg", 75), ("jpeg", 90), ("webp", 75)]
    assert len(_variant_keys(stack, record)) == 4
    assert variant_bound(stack.settings) == 7 * 7 * (1 + 2 * 3) == 343

    custom = make_stack(stack_name, image_qualities="60,85")
    record = _preview(custom, png(300, 150), "image/png")
    assert _get(custom, record, "?w=64&format=jpeg&q=85").status_code == 200
    assert_error(_get(custom, record, "?w=64&format=jpeg&q=75"), 422, "image.quality_not_allowed")
    assert _get(custom, record, "?w=64&format=webp").status_code == 200
    with custom.runtime.engine.connect() as conn:
        assert sorted(v.meta["q"] for v in variants_of(
            conn, "t_acme", "dev", record["id"])) == [60, 85]


def test_jpeg_exif_orientation_is_applied_and_metadata_stripped(stack):
    source = rotated_jpeg(400, 200)
    assert opened(source).getexif().get(0x0112) == 6
    record = _preview(stack, source, "image/jpeg")
    for query in ("?w=128", "?w=128&format=webp", "?w=128&format=png"):
        image = opened(_get(stack, record, query).content)
        assert image.size == (128, 256), query  # upright: portrait
        assert _near(image.getpixel((64, 40)), RED), query  # red on top, as displayed
        assert _near(image.getpixel((64, 216)), BLUE), query
        assert not image.getexif(), query
        assert "comment" not in image.info and "exif" not in image.info, query


def test_variant_is_stored_once_beside_its_source_and_recorded(stack):
    record = _preview(stack, webp(512, 512), "image/webp")
    first = _get(stack, record, "?w=64")
    second = _get(stack, record, "?w=64")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.headers["etag"] == second.headers["etag"]
    keys = _variant_keys(stack, record)
    assert len(keys) == 1
    assert keys[0].startswith(f"tenants/t_acme/dev/canvas/{record['canvas_id']}/preview/")

    with stack.runtime.engine.connect() as conn:
        found = variants_of(conn, "t_acme", "dev", record["id"])
        assert variants_of(conn, "t_other", "dev", record["id"]) == []
        assert variants_of(conn, "t_acme", "prod", record["id"]) == []
    assert len(found) == 1
    variant = found[0]
    assert variant.kind == "canvas_preview_variant"
    assert variant.parent_asset_id == record["media_asset_id"]
    assert stack.runtime.store.key_for(variant.uri) == keys[0]
    assert variant.meta["source_artifact_id"] == record["id"]
    assert variant.meta["sha256"] == hashlib.sha256(first.content).hexdigest()
    assert variant.meta["size_bytes"] == len(first.content)
    assert (variant.meta["w"], variant.meta["format"], variant.meta["q"]) == (64, "webp", 75)

    asset = stack.client.get(f"/media-v2/assets/{record['media_asset_id']}",
                             headers=stack.headers()).json()
    assert variant.id in {a["id"] for a in asset["artifacts"]}


def test_deleting_the_preview_deletes_its_variants(stack):
    canvas = new_canvas()
    record = _preview(stack, png(400, 200), "image/png", canvas)
    other = _preview(stack, png(400, 200), "image/png", canvas)
    for query in ("?w=64", "?w=128&format=webp", "?h=64&format=jpeg"):
        assert _get(stack, record, query).status_code == 200
    assert _get(stack, other, "?w=64").status_code == 200
    assert len(_variant_keys(stack, record)) == 3

    deleted = stack.client.delete(url(canvas, f"/{record['id']}"), headers=stack.headers())
    assert deleted.status_code == 204, deleted.text
    assert _variant_keys(stack, record) == []
    assert len(_variant_keys(stack, other)) == 1
    with stack.runtime.engine.connect() as conn:
        assert variants_of(conn, "t_acme", "dev", record["id"]) == []
        assert len(variants_of(conn, "t_acme", "dev", other["id"])) == 1
        rows = conn.execute(media_artifacts.select().where(
            media_artifacts.c.kind == "canvas_preview_variant",
            media_artifacts.c.parent_asset_id == record["media_asset_id"])).mappings().all()
    tombstones = [r for r in rows if r["meta"]["source_artifact_id"] == record["id"]]
    assert len(tombstones) == 3 and all(r["deleted_at"] is not None for r in tombstones)
    assert_error(_get(stack, record, "?w=64"), 404, "canvas.not_found")
    assert _get(stack, other, "?w=64").status_code == 200


def test_a_render_racing_a_delete_leaves_no_live_variant(stack, monkeypatch):
    """The preview is deleted while its variant renders: the request is a 404 and neither
    a live variant record nor its blob is left behind."""
    record = _preview(stack, png(400, 200), "image/png")
    real = variant_service.render

    def delete_meanwhile(data, spec, max_pixels):
        response = stack.client.delete(url(record["canvas_id"], f"/{record['id']}"),
                                       headers=stack.headers())
        assert response.status_code == 204, response.text
        return real(data, spec, max_pixels)

    monkeypatch.setattr(variant_service, "render", delete_meanwhile)
    _slots(monkeypatch, 1)
    with stack.client as client:
        response = client.get(url(record["canvas_id"], f"/{record['id']}/content?w=64"),
                              headers=stack.headers())
    assert_error(response, 404, "canvas.not_found")
    assert _variant_keys(stack, record) == []
    with stack.runtime.engine.connect() as conn:
        assert variants_of(conn, "t_acme", "dev", record["id"]) == []


def test_stored_variant_honours_conditional_and_range_requests(stack):
    record = _preview(stack, png(300, 300), "image/png")
    full = _get(stack, record, "?w=128&format=webp")
    etag = full.headers["etag"]
    assert _get(stack, record, "?w=128&format=webp", **{"If-None-Match": etag}).status_code == 304
    part = _get(stack, record, "?w=128&format=webp", Range="bytes=0-11")
    assert part.status_code == 206
    assert part.content == full.content[:12]
    assert part.headers["content-range"] == f"bytes 0-11/{len(full.content)}"


def test_format_auto_follows_accept_and_varies_on_it(stack):
    record = _preview(stack, png(300, 150), "image/png")
    chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
    for accept, mime in ((chrome, "image/webp"), ("image/png,image/*;q=0.8", "image/png"),
                         ("*/*", "image/png"), ("image/webp;q=0", "image/png")):
        response = _get(stack, record, "?w=64&format=auto", Accept=accept)
        assert response.status_code == 200
        assert response.headers["content-type"] == mime, accept
        assert response.headers["vary"] == "Accept"
    assert "vary" not in _get(stack, record, "?w=64&format=webp").headers


def test_sizes_outside_the_setting_and_bad_parameters_are_422(stack):
    record = _preview(stack, png(300, 150), "image/png")
    assert_error(_get(stack, record, "?w=300"), 422, "image.size_not_allowed")
    assert_error(_get(stack, record, "?h=100"), 422, "image.size_not_allowed")
    for query in ("?w=0", "?w=abc", "?q=0", "?q=101", "?format=gif"):
        assert_error(_get(stack, record, query), 422, "request.invalid")
    assert _variant_keys(stack, record) == []


def test_image_sizes_setting_and_transforms_switch(stack_name, make_stack):
    custom = make_stack(stack_name, image_sizes="100,300")
    record = _preview(custom, png(600, 300), "image/png")
    assert opened(_get(custom, record, "?w=300").content).size == (300, 150)
    assert_error(_get(custom, record, "?w=256"), 422, "image.size_not_allowed")

    off = make_stack(stack_name, image_transforms=False)
    record = _preview(off, png(600, 300), "image/png")
    for query in ("?w=256", "?format=webp", "?q=50", "?format=auto"):
        assert_error(_get(off, record, query), 422, "image.transforms_disabled")
    assert _get(off, record).status_code == 200
    assert _variant_keys(off, record) == []


def test_svg_html_render_refs_and_json_artifacts_have_no_variants(stack):
    canvas = new_canvas()
    refs = [_preview(stack, SVG, "image/svg+xml", canvas),
            _preview(stack, HTML, "text/html", canvas),
            created(stack.client.post(url(canvas, "/preview?rev=1"),
                                      content=orjson.dumps({"uri": "https://cdn.example/x.png"}),
                                      headers={**stack.headers(),
                                               "Content-Type": "application/json"})),
            created(create_replay(stack, canvas))]
    for record in refs:
        assert_error(_get(stack, record, "?w=64"), 422, "image.not_rasterisable")


def test_pixel_limit_and_corrupt_images_are_422(stack_name, make_stack):
    stack = make_stack(stack_name, max_image_pixels=40_000)
    small = _preview(stack, png(200, 200), "image/png")
    assert _get(stack, small, "?w=64").status_code == 200
    big = _preview(stack, png(201, 200), "image/png")
    assert_error(_get(stack, big, "?w=64"), 422, "image.too_many_pixels")

    default = make_stack(stack_name)
    bomb = _preview(default, png_bomb(100_000), "image/png")  # 10 gigapixels declared
    assert_error(_get(default, bomb, "?w=64"), 422, "image.too_many_pixels")
    corrupt = _preview(default, PNG, "image/png")
    assert_error(_get(default, corrupt, "?w=64"), 422, "image.corrupt")
    truncated = _preview(default, png(300, 300)[:300], "image/png")
    assert_error(_get(default, truncated, "?w=64"), 422, "image.corrupt")
    for record in (big, bomb, corrupt, truncated):
        assert _variant_keys(default, record) == []


def test_variants_need_the_same_auth_as_content(stack):
    record = _preview(stack, png(300, 150), "image/png")
    path = url(record["canvas_id"], f"/{record['id']}/content?w=64")
    assert_error(stack.client.get(path), 401)
    assert_error(stack.client.get(path, headers=stack.headers("t_other")), 404)
    viewer = stack.client.get(path, headers=stack.headers(role="viewer"))
    assert viewer.status_code == 200


def _concurrently(stack, record, query: str, n: int) -> list[httpx.Response]:
    with stack.client as client, ThreadPoolExecutor(n) as pool:
        path = url(record["canvas_id"], f"/{record['id']}/content{query}")
        return list(pool.map(lambda _: client.get(path, headers=stack.headers()), range(n)))


def test_concurrent_first_requests_store_one_good_variant(stack):
    record = _preview(stack, png(800, 400), "image/png")
    responses = _concurrently(stack, record, "?w=256&format=webp", 8)
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert opened(responses[0].content).size == (256, 128)
    with stack.runtime.engine.connect() as conn:
        assert len(variants_of(conn, "t_acme", "dev", record["id"])) == 1
    assert len(_variant_keys(stack, record)) == 1


def test_requests_waiting_for_a_render_slot_reuse_the_variant_rendered_meanwhile(
        stack, monkeypatch):
    record = _preview(stack, png(400, 200), "image/png")
    calls = []
    real = variant_service.render

    def counted(data, spec, max_pixels):
        calls.append(spec)
        return real(data, spec, max_pixels)

    monkeypatch.setattr(variant_service, "render", counted)
    _slots(monkeypatch, 1)
    responses = _concurrently(stack, record, "?w=64", 6)
    assert {r.status_code for r in responses} == {200}
    assert len(calls) == 1


def test_racing_renders_with_different_bytes_keep_one_consistent_variant(stack, monkeypatch):
    """Both requests miss the record and render; the loser's blob is removed, and what
    is served matches the record (size, ETag) whichever won."""
    record = _preview(stack, png(400, 200), "image/png")
    both_rendering = threading.Barrier(2, timeout=30)
    calls = iter(range(2))
    real = variant_service.render

    def racing(data, spec, max_pixels):
        quality = 30 + 60 * next(calls)  # different bytes per render
        both_rendering.wait()
        return real(data, VariantSpec(spec.w, spec.h, spec.format, quality), max_pixels)

    monkeypatch.setattr(variant_service, "render", racing)
    _slots(monkeypatch, 2)
    responses = _concurrently(stack, record, "?w=128&format=jpeg", 2)
    assert [r.status_code for r in responses] == [200, 200]
    assert len(_variant_keys(stack, record)) == 1
    with stack.runtime.engine.connect() as conn:
        [variant] = variants_of(conn, "t_acme", "dev", record["id"])
    again = _get(stack, record, "?w=128&format=jpeg")
    assert hashlib.sha256(again.content).hexdigest() == variant.meta["sha256"]
    assert again.headers["content-length"] == str(variant.meta["size_bytes"])


def test_renders_are_bounded_per_process(local, monkeypatch):
    """Many first requests at once: never more renders at a time than the limiter allows,
    and every request is answered."""
    active, peak, lock = 0, 0, threading.Lock()
    real = variant_service.render

    def counting(data, spec, max_pixels):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return real(data, spec, max_pixels)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(variant_service, "render", counting)
    _slots(monkeypatch, 2)
    canvas = new_canvas()
    records = [_preview(local, png(400 + i, 200), "image/png", canvas) for i in range(12)]
    with local.client as client, ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(
            lambda r: client.get(url(canvas, f"/{r['id']}/content?w=64"),
                                 headers=local.headers()), records))
    assert {r.status_code for r in responses} == {200}
    assert 1 <= peak <= 2


def test_default_limits_allow_one_render_per_core_at_low_priority(monkeypatch):
    monkeypatch.setattr(pool, "_limiter", None)
    monkeypatch.setattr(pool, "_executor", None)
    monkeypatch.setattr(pool.os, "cpu_count", lambda: 3)
    assert pool.render_limiter().total_tokens == 3
    executor = pool.render_executor()
    try:
        assert executor._max_workers == 3
        nice = executor.submit(lambda: os.getpriority(os.PRIO_PROCESS,
                                                      threading.get_native_id())).result()
        assert nice == os.getpriority(os.PRIO_PROCESS, 0) + pool.RENDER_NICE or nice == 19
    finally:
        executor.shutdown()


@pytest.mark.s3
def test_redirect_mode_on_s3_presigns_the_variant(make_stack):
    stack = make_stack("s3-postgres", media_serve_mode="redirect")
    record = _preview(stack, png(300, 150), "image/png")
    response = _get(stack, record, "?w=64&format=webp")
    assert response.status_code == 307
    fetched = httpx.get(response.headers["location"])
    assert fetched.status_code == 200
    assert opened(fetched.content).size == (64, 32)


def test_records_and_blobs_of_a_variant_stay_in_scope(stack):
    record = _preview(stack, png(300, 150), "image/png")
    _get(stack, record, "?w=64")
    with stack.runtime.engine.connect() as conn:
        rows = conn.execute(media_artifacts.select().where(
            media_artifacts.c.kind == "canvas_preview_variant",
            media_artifacts.c.parent_asset_id == record["media_asset_id"])).mappings().all()
    assert [(r["tenant_id"], r["env"]) for r in rows] == [("t_acme", "dev")]


def test_transparency_is_kept_where_the_format_has_it_and_flattened_on_white_in_jpeg(local):
    clear = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    record = _preview(local, encode(clear, "PNG"), "image/png")
    for query, mode, pixel in (("?w=64", "RGBA", (0, 0, 0, 0)),
                               ("?w=64&format=webp", "RGBA", (0, 0, 0, 0)),
                               ("?w=64&format=jpeg", "RGB", (255, 255, 255))):
        image = opened(_get(local, record, query).content)
        assert image.mode == mode, query
        assert _near(image.getpixel((10, 10)), pixel[:3]), query
        if mode == "RGBA":
            assert image.getpixel((10, 10))[3] == 0, query


def test_lean_and_full_paths_serve_the_same_variant(stack):
    """`?w=128&format=webp` takes the lean path; the same ask spelled in ways only FastAPI
    parses (a leading zero, an extra parameter) takes the full one: same bytes, same ETag."""
    record = _preview(stack, png(300, 300), "image/png")
    lean = _get(stack, record, "?w=128&format=webp")
    for query in ("?w=0128&format=webp", "?format=webp&w=128&disposition=attachment"):
        full = _get(stack, record, query)
        assert full.status_code == lean.status_code == 200
        assert full.content == lean.content
        assert full.headers["etag"] == lean.headers["etag"]
    twice = _get(stack, record, "?w=128&w=256")  # not lean; FastAPI takes the last one
    assert twice.headers["etag"] == _get(stack, record, "?w=256").headers["etag"]
    assert_error(_get(stack, record, "?w=1073741824"), 422, "image.size_not_allowed")
    assert_error(_get(stack, record, "?w=1073741825"), 422, "request.invalid")
    assert_error(_get(stack, record, "?w=128", **{"X-Tenant-Id": "t_other"}), 403)
    assert len(_variant_keys(stack, record)) == 2  # 128 px WebP, 256 px PNG
