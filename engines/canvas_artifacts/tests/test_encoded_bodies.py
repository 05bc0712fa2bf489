"""Bodies sent with Content-Encoding gzip or zstd: decoded, limited by their decoded size."""

from __future__ import annotations

import gzip
import hashlib

import orjson
import zstandard

from conftest import PNG, Stack
from engines.canvas_artifacts.tests.helpers import (
    assert_error,
    assert_nothing_kept,
    created,
    new_tenant,
    replay_document,
    url,
)

CODECS = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress}


def post(stack: Stack, tenant: str, path: str, body: bytes, content_type: str,
         encoding: str) -> object:
    headers = {**stack.headers(tenant), "Content-Type": content_type,
               "Content-Encoding": encoding}
    return stack.client.post(url("c_enc", path), content=body, headers=headers)


def test_compressed_replays_and_previews_are_stored_as_their_decoded_bytes(
        stack: Stack) -> None:
    tenant = new_tenant()
    document = replay_document()
    for encoding, compress in CODECS.items():
        replay = created(post(stack, tenant, "/replay", compress(orjson.dumps(document)),
                              "application/json", encoding))
        content = stack.client.get(url("c_enc", f"/{replay['id']}/content"),
                                   headers=stack.headers(tenant))
        assert orjson.loads(content.content) == document
        preview = created(post(stack, tenant, "/preview?rev=1", compress(PNG), "image/png",
                               encoding))
        assert preview["sha256"] == hashlib.sha256(PNG).hexdigest()
        assert preview["size_bytes"] == len(PNG)
        assert stack.client.get(url("c_enc", f"/{preview['id']}/content"),
                                headers=stack.headers(tenant)).content == PNG


def test_a_small_bomb_is_413_and_leaves_nothing(make_stack) -> None:
    stack = make_stack(max_replay_bytes=1024 * 1024, max_preview_bytes=1024 * 1024)
    tenant = new_tenant()
    expanding = b"\0" * (8 * 1024 * 1024)  # 8 MiB of zeros: a few KiB compressed
    for encoding, compress in CODECS.items():
        bomb = compress(expanding)
        assert len(bomb) < 64 * 1024
        assert_error(post(stack, tenant, "/replay", bomb, "application/json", encoding), 413,
                     "request.too_large")
        assert_error(post(stack, tenant, "/preview?rev=1", compress(PNG + expanding),
                          "image/png", encoding), 413, "request.too_large")
    assert_nothing_kept(stack, tenant)


def test_unknown_or_corrupt_encodings_are_refused(stack: Stack) -> None:
    tenant = new_tenant()
    body = orjson.dumps(replay_document())
    assert_error(post(stack, tenant, "/replay", body, "application/json", "br"), 415)
    assert_error(post(stack, tenant, "/replay", body, "application/json", "gzip, zstd"), 415)
    assert_error(post(stack, tenant, "/replay", body, "application/json", "gzip"), 400,
                 "request.bad_encoding")
    assert_error(post(stack, tenant, "/replay", gzip.compress(body)[:-12], "application/json",
                      "gzip"), 400, "request.bad_encoding")
    assert_error(post(stack, tenant, "/replay", body, "application/json", "zstd"), 400,
                 "request.bad_encoding")
    assert_nothing_kept(stack, tenant)
