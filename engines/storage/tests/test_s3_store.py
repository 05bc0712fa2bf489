"""S3BlobStore through boto3 against moto's S3 server on loopback (never stubbed).

Store-level tests pin the writer's behaviour (single put below one part,
multipart while receiving above it, abort leaves nothing); API-level tests
run the s3-postgres stack end to end: a 40 MiB preview, ranged and
conditional fetch, presigned redirects a plain HTTP client follows, and the
exact key/URI layout.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import boto3
import httpx
import pytest

from conftest import PNG, new_canvas
from engines.config import Settings
from engines.http.errors import PayloadTooLarge
from engines.storage.base import BlobNotFound, StorageUnavailable
from engines.storage.keys import canvas_key
from engines.storage.s3 import S3BlobStore
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

pytestmark = [pytest.mark.s3]

PART = 5 * MIB
"""S3's minimum part size; the store-level tests use it to stay small."""


@pytest.fixture(scope="module")
def s3(s3_endpoint: str):
    """A plain boto3 client to inspect the bucket independently of the store."""
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3) -> str:
    """A fresh bucket per test, so "the bucket is empty" means this test left nothing."""
    name = f"canvas-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(s3_endpoint: str, bucket: str) -> S3BlobStore:
    return S3BlobStore(Settings(raw_bucket=bucket, aws_endpoint_url_s3=s3_endpoint,
                                s3_part_size=PART, s3_max_attempts=2))


def object_keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def open_uploads(s3, bucket: str) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def assert_bucket_empty(s3, bucket: str) -> None:
    assert object_keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []




# ---- store level ----------------------------------------------------------


def test_small_write_is_a_single_put(store: S3BlobStore, s3, bucket: str) -> None:
    uri = store.put_bytes(KEY, PNG, "image/png")

    assert uri == f"s3://{bucket}/{KEY}"
    head = s3.head_object(Bucket=bucket, Key=KEY)
    assert "-" not in head["ETag"], "a body below one part must not become a multipart upload"
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == len(PNG)
    assert store.read_all(KEY) == PNG
    assert store.exists(KEY)
    assert open_uploads(s3, bucket) == []


def test_writer_buffers_small_writes_into_one_put(store: S3BlobStore, s3, bucket: str) -> None:
    writer = store.open_writer(KEY, "image/png")
    for i in range(0, len(PNG), 100):
        writer.write(PNG[i:i + 100])
    assert object_keys(s3, bucket) == [], "nothing is visible before commit"
    writer.commit()

    assert "-" not in s3.head_object(Bucket=bucket, Key=KEY)["ETag"]
    assert store.read_all(KEY) == PNG


def test_large_write_uploads_parts_while_receiving(store: S3BlobStore, s3, bucket: str) -> None:
    data = png_body(2 * PART + 123)
    writer = store.open_writer(KEY, "image/png")
    writer.write(data[:PART - 10])
    writer.write(data[PART - 10:PART + 10])  # crosses part_size: goes up as one part
    writer.write(data[PART + 10:2 * PART + 20])

    [upload] = open_uploads(s3, bucket)
    parts = s3.list_parts(Bucket=bucket, Key=KEY, UploadId=upload["UploadId"])["Parts"]
    assert [p["Size"] for p in parts] == [PART + 10, PART + 10], \
        "a part goes up as soon as part_size is buffered, before commit"
    assert object_keys(s3, bucket) == [], "no object is visible until commit"

    writer.write(data[2 * PART + 20:])
    writer.commit()

    head = s3.head_object(Bucket=bucket, Key=KEY)
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "image/png"
    assert sha256(store.read_all(KEY)) == sha256(data)
    assert open_uploads(s3, bucket) == []


def test_abort_after_parts_leaves_no_object_and_no_upload(store: S3BlobStore, s3,
                                                          bucket: str) -> None:
    writer = store.open_writer(KEY, "image/png")
    writer.write(png_body(2 * PART + 1))
    assert len(open_uploads(s3, bucket)) == 1

    writer.abort()

    assert_bucket_empty(s3, bucket)
    assert not store.exists(KEY)


def test_abort_before_any_part_leaves_nothing(store: S3BlobStore, s3, bucket: str) -> None:
    writer = store.open_writer(KEY, "image/png")
    writer.write(PNG)
    writer.abort()
    assert_bucket_empty(s3, bucket)


def test_ingest_streams_and_hashes(store: S3BlobStore, s3, bucket: str) -> None:
    data = png_body(3 * PART)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 64 * 1024):
            yield data[i:i + 64 * 1024]

    blob, mime = ingest_png(store, body())

    assert (blob.key, blob.uri, mime) == (KEY, f"s3://{bucket}/{KEY}", "image/png")
    assert (blob.size, blob.sha256) == (len(data), sha256(data))
    assert s3.head_object(Bucket=bucket, Key=KEY)["ETag"].strip('"').endswith("-3")
    assert sha256(store.read_all(KEY)) == blob.sha256


def test_ingest_body_failing_midstream_aborts_the_upload(store: S3BlobStore, s3,
                                                          bucket: str) -> None:
    chunks = [png_body(MIB)] + [b"x" * MIB] * (2 * PART // MIB + 1)
    with pytest.raises(ConnectionResetError):
        ingest_png(store, chunks_then_fail(chunks, ConnectionResetError("client went away")))
    assert_bucket_empty(s3, bucket)


def test_ingest_over_limit_after_parts_aborts_the_upload(store: S3BlobStore, s3,
                                                          bucket: str) -> None:
    chunks = [png_body(MIB)] + [b"x" * MIB] * 20
    with pytest.raises(PayloadTooLarge):
        ingest_png(store, chunks_then_fail(chunks, AssertionError("limit not enforced")),
                limit=2 * PART + MIB)
    assert_bucket_empty(s3, bucket)


def test_missing_key_and_delete(store: S3BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        store.read_all("tenants/t_acme/dev/canvas/c_1/preview/nope.png")
    assert not store.exists("tenants/t_acme/dev/canvas/c_1/preview/nope.png")
    store.delete("tenants/t_acme/dev/canvas/c_1/preview/nope.png")  # missing is fine

    store.put_bytes(KEY, PNG, "image/png")
    store.delete(KEY)
    assert not store.exists(KEY)


def test_presigned_url_serves_the_bytes_to_a_plain_client(store: S3BlobStore) -> None:
    store.put_bytes(KEY, PNG, "image/png")
    url = store.presign(KEY, 60)

    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == PNG


def test_unfinished_uploads_are_listed_and_discarded_for_gc(store: S3BlobStore, s3,
                                                            bucket: str) -> None:
    store.put_bytes(KEY, PNG, "image/png")
    stale = store.open_writer("tenants/t_acme/dev/canvas/c_1/preview/art_2.png", "image/png")
    stale.write(png_body(PART))  # a crashed process: one part up, never completed

    infos = {info.key: info for info in store.iter_blobs("tenants/")}
    assert list(infos) == [KEY] and infos[KEY].complete and infos[KEY].size == len(PNG)
    unfinished = list(store.iter_uploads())
    assert [(i.key, i.complete) for i in unfinished] == [(stale.lease_key, False)]
    assert stale.lease_key == "tenants/t_acme/dev/canvas/c_1/preview/art_2.png"

    store.discard_incomplete(unfinished[0])
    assert open_uploads(s3, bucket) == []
    assert object_keys(s3, bucket) == [KEY]


def test_listed_fields_are_what_a_default_botocore_client_reads(store: S3BlobStore, s3,
                                                                 bucket: str) -> None:
    """The store's client parses timestamps its own way (`s3_timestamps`, for gc's speed):
    what gc and the uploads' last activity compare must be what botocore itself reads."""
    keys = [f"tenants/t_acme/dev/x/{name}" for name in ("a.png", "b c.png", "é.png", "z/d.png")]
    for n, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * (1000 * n + 1))
    stale = store.open_writer("tenants/t_acme/dev/x/part.png", "image/png")
    stale.write(png_body(PART))

    plain = s3.list_objects_v2(Bucket=bucket, Prefix="tenants/")["Contents"]
    listed = list(store.iter_blobs("tenants/"))
    assert [(i.key, i.size, i.modified) for i in listed] == \
        [(o["Key"], o["Size"], o["LastModified"]) for o in plain]
    assert all(i.modified.utcoffset() == timedelta(0) for i in listed)
    assert store.client.head_object(Bucket=bucket, Key=keys[0])["LastModified"] == \
        s3.head_object(Bucket=bucket, Key=keys[0])["LastModified"]  # an RFC 822 header
    [upload] = open_uploads(s3, bucket)
    parts = s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    assert [i.modified for i in store.iter_uploads()] == \
        [max([upload["Initiated"], *(p["LastModified"] for p in parts["Parts"])])]
    stale.abort()


def test_key_and_uri_layout(store: S3BlobStore, bucket: str) -> None:
    key = canvas_key("t_acme", "dev", "c_9", "preview", "art_x", "png")
    assert key == "tenants/t_acme/dev/canvas/c_9/preview/art_x.png"
    assert store.uri_for(key) == f"s3://{bucket}/tenants/t_acme/dev/canvas/c_9/preview/art_x.png"
    assert store.key_for(store.uri_for(key)) == key
    for foreign in (f"s3://other-bucket/{key}", f"file:///{key}", f"https://{bucket}/{key}",
                    f"s3://{bucket}/tenants/../secrets", f"s3://{bucket}/", f"local:{key}",
                    f"s3://{bucket}/{key}#x", f"s3://{bucket}/{key}?versionId=1",
                    f"s3://{bucket}/tenants//t_acme/x"):
        assert store.key_for(foreign) is None, foreign
    # spellings that name the same object resolve to the same key (and so are compared alike)
    for alias in (f"S3://{bucket}/{key}", f"s3://{bucket}//{key}"):
        assert store.key_for(alias) == key, alias


def test_client_retries_and_timeouts_come_from_settings(s3_endpoint: str, bucket: str) -> None:
    store = S3BlobStore(Settings(raw_bucket=bucket, aws_endpoint_url_s3=s3_endpoint,
                                 s3_max_attempts=3, s3_connect_timeout=1.5, s3_read_timeout=7.0,
                                 AWS_DEFAULT_REGION="eu-west-1"))
    config = store.client.meta.config
    assert config.retries == {"total_max_attempts": 3, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (1.5, 7.0)
    assert store.client.meta.region_name == "eu-west-1"
    assert store.client.meta.endpoint_url == s3_endpoint


def test_unreachable_endpoint_is_storage_unavailable_after_max_attempts(bucket: str) -> None:
    store = S3BlobStore(Settings(raw_bucket=bucket, aws_endpoint_url_s3="http://127.0.0.1:1",
                                 s3_max_attempts=2, s3_connect_timeout=1.0))
    sends: list[str] = []
    store.client.meta.events.register("before-send.s3", lambda **kw: sends.append("x"))

    with pytest.raises(StorageUnavailable):
        store.check()
    assert len(sends) == 2, "S3_MAX_ATTEMPTS counts every attempt, the first included"


def test_missing_bucket_is_storage_unavailable(s3_endpoint: str) -> None:
    store = S3BlobStore(Settings(raw_bucket="no-such-bucket-here", aws_endpoint_url_s3=s3_endpoint,
                                 s3_max_attempts=1))
    with pytest.raises(StorageUnavailable):
        store.check()


# ---- through the HTTP API (s3-postgres stack) ------------------------------

def _object_key(uri: str, bucket: str) -> str:
    prefix = f"s3://{bucket}/"
    assert uri.startswith(prefix)
    return uri[len(prefix):]


@pytest.mark.postgres
@pytest.mark.slow
def test_40_mib_preview_is_a_multipart_upload_and_reads_back_identical(make_stack, s3,
                                                                       bucket: str) -> None:
    stack = make_stack("s3-postgres", raw_bucket=bucket, max_preview_bytes=64 * MIB)
    assert stack.settings.s3_part_size == 8 * MIB
    data = png_body(40 * MIB)
    canvas = new_canvas()

    created = stack.client.post(f"/canvas/{canvas}/artifacts/preview?rev=3", content=data,
                                headers={**stack.headers(), "Content-Type": "image/png"})
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["size_bytes"] == len(data)
    assert record["sha256"] == sha256(data)

    head = s3.head_object(Bucket=bucket, Key=_object_key(record["uri"], bucket))
    assert re.fullmatch(r'"[0-9a-f]{32}-5"', head["ETag"]), head["ETag"]
    assert head["ContentLength"] == len(data)
    assert open_uploads(s3, bucket) == []

    fetched = stack.client.get(f"/canvas/{canvas}/artifacts/{record['id']}/content",
                               headers=stack.headers())
    assert fetched.status_code == 200
    assert fetched.headers["content-length"] == str(len(data))
    assert fetched.headers["etag"] == f'"{record["sha256"]}"'
    assert sha256(fetched.content) == sha256(data)


@pytest.mark.postgres
def test_ranged_and_conditional_fetch(make_stack, bucket: str) -> None:
    stack = make_stack("s3-postgres", raw_bucket=bucket)
    data = png_body(100_000)
    canvas = new_canvas()
    record = stack.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=data,
                               headers={**stack.headers(), "Content-Type": "image/png"}).json()
    url = f"/canvas/{canvas}/artifacts/{record['id']}/content"
    etag = f'"{record["sha256"]}"'

    part = stack.client.get(url, headers={**stack.headers(), "Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.headers["content-length"] == "1000"
    assert part.headers["etag"] == etag

    tail = stack.client.get(url, headers={**stack.headers(), "Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    open_ended = stack.client.get(url, headers={**stack.headers(), "Range": "bytes=99990-"})
    assert open_ended.status_code == 206 and open_ended.content == data[99990:]

    beyond = stack.client.get(url, headers={**stack.headers(), "Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert beyond.json()["error"]["code"] == "request.range_not_satisfiable"

    cached = stack.client.get(url, headers={**stack.headers(), "If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag

    stale = stack.client.get(url, headers={**stack.headers(), "If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == data


@pytest.mark.postgres
def test_redirect_mode_answers_307_to_a_presigned_url(make_stack, s3_endpoint: str,
                                                      bucket: str) -> None:
    stack = make_stack("s3-postgres", raw_bucket=bucket, media_serve_mode="redirect")
    data = png_body(300_000)
    canvas = new_canvas()
    record = stack.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=data,
                               headers={**stack.headers(), "Content-Type": "image/png"}).json()
    url = f"/canvas/{canvas}/artifacts/{record['id']}/content"

    redirect = stack.client.get(url, headers=stack.headers(), follow_redirects=False)
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    assert location.startswith(s3_endpoint + "/")
    assert _object_key(record["uri"], stack.settings.raw_bucket) in location
    assert "X-Amz-Signature=" in location
    assert f"X-Amz-Expires={stack.settings.presign_ttl_seconds}" in location
    assert redirect.headers["cache-control"] == "no-store"

    with httpx.Client(follow_redirects=True) as plain:  # no Authorization, no tenant headers
        fetched = plain.get(location)
    assert fetched.status_code == 200
    assert fetched.content == data

    etag = f'"{record["sha256"]}"'
    cached = stack.client.get(url, headers={**stack.headers(), "If-None-Match": etag},
                              follow_redirects=False)
    assert cached.status_code == 304

    denied = stack.client.get(url, follow_redirects=False)
    assert denied.status_code == 401, "the redirect itself still needs a token"


@pytest.mark.postgres
def test_proxy_is_the_default_serve_mode(make_stack, bucket: str) -> None:
    stack = make_stack("s3-postgres", raw_bucket=bucket)
    assert stack.settings.media_serve_mode == "proxy"
    canvas = new_canvas()
    record = stack.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=PNG,
                               headers={**stack.headers(), "Content-Type": "image/png"}).json()
    got = stack.client.get(f"/canvas/{canvas}/artifacts/{record['id']}/content",
                           headers=stack.headers(), follow_redirects=False)
    assert got.status_code == 200 and got.content == PNG


@pytest.mark.postgres
def test_keys_and_uris_follow_the_design(make_stack, s3, bucket: str) -> None:
    stack = make_stack("s3-postgres", raw_bucket=bucket)
    canvas = new_canvas()
    headers = stack.headers(env="stage")  # stored under the canonical env name
    preview = stack.client.post(f"/canvas/{canvas}/artifacts/preview?rev=2", content=PNG,
                                headers={**headers, "Content-Type": "image/png"}).json()
    replay = stack.client.post(f"/canvas/{canvas}/artifacts/replay", headers=headers,
                               json={"rev": 2, "keyframes": [], "summary": {}}).json()
    audit = stack.client.post(f"/canvas/{canvas}/artifacts/audit?rev=2", headers=headers).json()

    base = f"s3://{bucket}/tenants/t_acme/staging/canvas/{canvas}"
    assert preview["uri"] == f"{base}/preview/{preview['id']}.png"
    assert replay["uri"] == f"{base}/replay/{replay['id']}.json"
    assert audit["uri"] == f"{base}/audit/{audit['id']}.json"
    assert sorted(object_keys(s3, bucket)) == sorted(
        _object_key(r["uri"], bucket) for r in (preview, replay, audit))
    head = s3.head_object(Bucket=bucket, Key=_object_key(preview["uri"], bucket))
    assert head["ContentType"] == "image/png"


@pytest.mark.postgres
def test_client_leaving_midupload_leaves_no_object_and_no_upload(make_stack, s3,
                                                                 bucket: str) -> None:
    stack = make_stack("s3-postgres", raw_bucket=bucket, max_preview_bytes=64 * MIB)
    chunks = [png_body(2 * MIB)] + [b"y" * (2 * MIB)] * 9  # 20 MiB > 2 parts, then gone
    seen_uploads: list[int] = []

    def before_chunk(i: int) -> None:
        if i == len(chunks) - 1:
            seen_uploads.append(len(open_uploads(s3, bucket)))

    canvas = new_canvas()
    messages, raised = stream_upload(
        stack.client.app, f"/canvas/{canvas}/artifacts/preview", "rev=1",
        {**stack.headers(), "Content-Type": "image/png"}, chunks, disconnect=True,
        before_chunk=before_chunk)

    assert seen_uploads == [1], "parts must go up while the body is still arriving"
    assert status_of(messages) in (None, 400, 499, 500)
    assert raised is None or type(raised).__name__ == "ClientDisconnect"
    assert_bucket_empty(s3, bucket)
    listed = stack.client.get(f"/canvas/{canvas}/artifacts", headers=stack.headers())
    assert listed.json() == {"items": [], "next_cursor": None}
