"""LocalBlobStore, the embedded default: the local equivalents of the S3 tests.

A write is a temporary file in the reserved `_uploads/` directory, renamed
into place on commit, so "nothing visible before commit" and "an abort
leaves nothing" are checked on the directory itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import PNG, new_canvas
from engines.http.errors import PayloadTooLarge
from engines.storage.base import BlobNotFound
from engines.storage.keys import canvas_key
from engines.storage.local import LocalBlobStore
from engines.storage.tests._support import (
    KEY,
    MIB,
    chunks_then_fail,
    ingest_png,
    png_body,
    sha256,
    status_of,
    stream_upload,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "media")


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_read_exists_delete(store: LocalBlobStore) -> None:
    uri = store.put_bytes(KEY, PNG, "image/png")

    assert uri == f"local:{KEY}", "root-relative: the directory can move"
    assert store.read_all(KEY) == PNG
    assert store.exists(KEY)
    store.delete(KEY)
    assert not store.exists(KEY)
    store.delete(KEY)  # missing is fine
    with pytest.raises(BlobNotFound):
        store.read_all(KEY)


def test_nothing_is_visible_before_commit(store: LocalBlobStore) -> None:
    writer = store.open_writer(KEY, "image/png")
    writer.write(PNG[:10])
    writer.write(PNG[10:])
    assert not store.exists(KEY)
    [part] = files_under(store.root)
    assert part.startswith("_uploads/")

    writer.commit()

    assert files_under(store.root) == [KEY]
    assert store.read_all(KEY) == PNG


def test_abort_leaves_no_file(store: LocalBlobStore) -> None:
    writer = store.open_writer(KEY, "image/png")
    writer.write(png_body(2 * MIB))
    writer.abort()
    assert files_under(store.root) == []


def test_ingest_streams_and_hashes(store: LocalBlobStore) -> None:
    data = png_body(3 * MIB + 7)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 64 * 1024):
            yield data[i:i + 64 * 1024]

    blob, mime = ingest_png(store, body())

    assert (blob.key, blob.uri, mime) == (KEY, store.uri_for(KEY), "image/png")
    assert (blob.size, blob.sha256) == (len(data), sha256(data))
    assert sha256(store.read_all(KEY)) == blob.sha256


def test_ingest_body_failing_midstream_leaves_nothing(store: LocalBlobStore) -> None:
    chunks = [png_body(MIB)] + [b"x" * MIB] * 4
    with pytest.raises(ConnectionResetError):
        ingest_png(store, chunks_then_fail(chunks, ConnectionResetError("client went away")))
    assert files_under(store.root) == []


def test_ingest_over_limit_leaves_nothing(store: LocalBlobStore) -> None:
    chunks = [png_body(MIB)] + [b"x" * MIB] * 8
    with pytest.raises(PayloadTooLarge):
        ingest_png(store, chunks_then_fail(chunks, AssertionError("limit not enforced")),
                limit=3 * MIB)
    assert files_under(store.root) == []


def test_unfinished_writes_are_listed_and_discarded_for_gc(store: LocalBlobStore) -> None:
    store.put_bytes(KEY, PNG, "image/png")
    finished_part = "tenants/t_acme/dev/media_v2/ma_1/quarterly.part"
    store.put_bytes(finished_part, b"a finished upload named like a temporary file", "x/y")
    stale = store.open_writer("tenants/t_acme/dev/canvas/c_1/preview/art_2.png", "image/png")
    stale.write(PNG)  # a crashed process: the temporary file stays behind
    stale.fh.close()  # ... and its file handle is gone with it

    finished = list(store.iter_blobs("tenants/"))
    assert sorted((i.key, i.complete) for i in finished) == [(KEY, True), (finished_part, True)]
    [unfinished] = list(store.iter_uploads())
    assert unfinished.key == stale.lease_key and not unfinished.complete

    store.discard_incomplete(unfinished)
    assert files_under(store.root) == sorted([KEY, finished_part])


def test_key_and_uri_layout(store: LocalBlobStore, tmp_path: Path) -> None:
    key = canvas_key("t_acme", "dev", "c_9", "preview", "art_x", "png")
    assert key == "tenants/t_acme/dev/canvas/c_9/preview/art_x.png"
    uri = store.uri_for(key)
    assert uri == "local:tenants/t_acme/dev/canvas/c_9/preview/art_x.png"
    assert store.key_for(uri) == key
    outside = (tmp_path / "elsewhere.png").as_uri()
    for foreign in (outside, f"s3://bucket/{key}", f"https://example.com/{key}",
                    store.root.as_uri(), (store.root / key).as_uri(), "local:../media-evil/x",
                    "local:", f"local:{key}/../../x", f"local:/{key}"):
        assert store.key_for(foreign) is None, foreign
    with pytest.raises(ValueError):
        store.uri_for("../escape")


# ---- through the HTTP API (local-sqlite stack) -----------------------------


def test_redirect_mode_falls_back_to_proxy_without_presigning(make_stack) -> None:
    stack = make_stack("local-sqlite", media_serve_mode="redirect")
    canvas = new_canvas()
    record = stack.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=PNG,
                               headers={**stack.headers(), "Content-Type": "image/png"}).json()
    got = stack.client.get(f"/canvas/{canvas}/artifacts/{record['id']}/content",
                           headers=stack.headers(), follow_redirects=False)
    assert got.status_code == 200 and got.content == PNG


def test_keys_and_uris_follow_the_design(make_stack) -> None:
    stack = make_stack("local-sqlite")
    root = stack.settings.media_local_root.resolve()
    canvas = new_canvas()
    record = stack.client.post(f"/canvas/{canvas}/artifacts/preview?rev=2", content=PNG,
                               headers={**stack.headers(), "Content-Type": "image/png"}).json()
    key = f"tenants/t_acme/dev/canvas/{canvas}/preview/{record['id']}.png"
    assert record["uri"] == f"local:{key}"
    assert (root / key).read_bytes() == PNG


def test_client_leaving_midupload_leaves_no_file(make_stack) -> None:
    stack = make_stack("local-sqlite", max_preview_bytes=64 * MIB)
    root = stack.settings.media_local_root.resolve()
    chunks = [png_body(2 * MIB)] + [b"y" * (2 * MIB)] * 4
    partial: list[list[str]] = []

    def before_chunk(i: int) -> None:
        if i == len(chunks) - 1:
            partial.append(files_under(root))

    canvas = new_canvas()
    messages, raised = stream_upload(
        stack.client.app, f"/canvas/{canvas}/artifacts/preview", "rev=1",
        {**stack.headers(), "Content-Type": "image/png"}, chunks, disconnect=True,
        before_chunk=before_chunk)

    [in_flight] = partial
    assert len(in_flight) == 1 and in_flight[0].startswith("_uploads/"), \
        "bytes go to disk as they come"
    assert status_of(messages) in (None, 400, 499, 500)
    assert raised is None or type(raised).__name__ == "ClientDisconnect"
    assert files_under(root) == []
    listed = stack.client.get(f"/canvas/{canvas}/artifacts", headers=stack.headers())
    assert listed.json() == {"items": [], "next_cursor": None}
