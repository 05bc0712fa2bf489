"""Blobs in S3 (or any S3-compatible store) through boto3.

One client per process, with explicit retries and timeouts. Uploads stream:
bytes are buffered up to one part; a body that outgrows it becomes a
multipart upload while it is still being received, and an abort removes the
upload so no object (and no orphaned part) is left.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import io
import itertools
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.response import StreamingBody

from engines.config import Settings
from engines.storage.base import (
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobWriter,
    Observer,
    PartUploads,
    StorageUnavailable,
)
from engines.storage.s3_timestamps import parse_timestamp
from engines.storage.uris import BlobRef, InvalidBlobUri, parse_blob_uri

log = logging.getLogger("engines.storage.s3")
_READ_CHUNK = 256 * 1024
_MISSING = {"NoSuchKey", "404", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden"}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _no_bucket(where: str) -> StorageUnavailable:
    return StorageUnavailable(f"{where}: no such bucket: create it, RAW_BUCKET must name an "
                              "existing bucket", reason="no such bucket")


def _unavailable(exc: ClientError | BotoCoreError, where: str) -> StorageUnavailable:
    """A boto error as the store's outage, saying which of the usual causes it is."""
    if isinstance(exc, NoCredentialsError):
        return StorageUnavailable(
            f"{where}: no credentials ({exc}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE, or run with an IAM role)", reason="no credentials")
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(f"{where} unreachable: {exc}")
    code = _error_code(exc)
    if code in _NO_BUCKET:
        return _no_bucket(where)
    if code in _DENIED:
        return StorageUnavailable(f"{where}: access denied ({exc}): check the credentials and "
                                  "the bucket policy", reason="access denied")
    return StorageUnavailable(f"{where} refused the request: {exc}")


@contextlib.contextmanager
def _translated(key: str) -> Iterator[None]:
    """Turn boto errors into the store's two exceptions."""
    try:
        yield
    except ClientError as exc:
        if _error_code(exc) in _MISSING:
            raise BlobNotFound(key) from exc
        raise _unavailable(exc, "S3") from exc
    except BotoCoreError as exc:
        raise _unavailable(exc, "S3") from exc


_SESSION_LOCK = threading.Lock()


@functools.cache
def _boto_session() -> boto3.session.Session:
    """One boto3 session per process, shared by every client built from it.

    The session caches the parsed S3 service model; a fresh session per
    client would re-parse megabytes of JSON (~0.5 s of CPU) for every
    runtime a process builds (the app, the CLI, each test's stack). Sessions
    are not thread-safe, so client creation holds a lock; clients are.
    Its responses' timestamps are parsed by `s3_timestamps` (a listing's
    LastModified was most of what `engines gc` spent listing).
    """
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp)
    return boto3.session.Session(botocore_session=core)


def build_s3_client(settings: Settings) -> BaseClient:
    """The process's S3 client.

    S3_MAX_ATTEMPTS counts every attempt, as AWS_MAX_ATTEMPTS does, so it maps
    to botocore's `total_max_attempts`; botocore's `max_attempts` key counts
    retries only and would add one attempt to whatever is configured.
    """
    config = Config(
        region_name=settings.aws_region,
        retries={"total_max_attempts": settings.s3_max_attempts, "mode": "standard"},
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        max_pool_connections=64,
        signature_version="s3v4",
    )
    with _SESSION_LOCK:
        return _boto_session().client("s3", endpoint_url=settings.aws_endpoint_url_s3,
                                      config=config)


class _PartBody(io.RawIOBase):
    """A part's buffered chunks read as one seekable stream, so a part goes out
    without first being joined into one more copy of its 8 MiB (boto reads it
    through once for the checksum, seeks back, then sends it)."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._starts = list(itertools.accumulate((len(c) for c in chunks), initial=0))
        self._size = self._starts[-1]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        index = bisect.bisect_right(self._starts, self._pos) - 1
        chunk = self._chunks[index]
        start = self._pos - self._starts[index]
        count = min(len(buffer), len(chunk) - start)
        buffer[:count] = memoryview(chunk)[start:start + count]
        self._pos += count
        return count


class S3BlobWriter(BlobWriter):
    def __init__(self, client: BaseClient, bucket: str, key: str, content_type: str,
                 part_size: int) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        # unfinished multipart uploads are listed apart from objects, under their key
        self.lease_key = key
        self.content_type = content_type
        self.part_size = part_size
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, object]] = []

    def _upload_part(self, data: bytes | io.RawIOBase) -> None:
        with _translated(self.key):
            if self.upload_id is None:
                self.upload_id = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self.content_type)["UploadId"]
            number = len(self.parts) + 1
            etag = self.client.upload_part(Bucket=self.bucket, Key=self.key, PartNumber=number,
                                           UploadId=self.upload_id, Body=data)["ETag"]
        self.parts.append({"PartNumber": number, "ETag": etag})

    def _take_chunks(self) -> list[bytes]:
        """The buffered chunks, handed over: the writer starts a new buffer."""
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        return chunks

    def _take(self) -> bytes:
        """The buffered chunks as one body: a single copy of the bytes."""
        return b"".join(self._take_chunks())

    def write(self, data: bytes) -> None:
        # parts may differ in size (all but the last >= 5 MiB), so a part is
        # whatever has arrived once part_size is reached: no slicing, no extra copy
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered < self.part_size:
            return
        if self.buffered < 2 * self.part_size:
            self._upload_part(_PartBody(self._take_chunks()))
            return
        joined = self._take()
        # one very large write (an in-process client): cut it into part_size parts
        view = memoryview(joined)
        whole = len(joined) - len(joined) % self.part_size
        for start in range(0, whole, self.part_size):
            self._upload_part(bytes(view[start:start + self.part_size]))
        if whole < len(joined):
            self.chunks.append(bytes(view[whole:]))
            self.buffered = len(joined) - whole

    def commit(self) -> None:
        if self.upload_id is None:
            with _translated(self.key):
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._take(),
                                       ContentType=self.content_type)
            return
        if self.buffered:
            self._upload_part(_PartBody(self._take_chunks()))
        with _translated(self.key):
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts})

    def abort(self) -> None:
        self.chunks.clear()
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                   UploadId=self.upload_id)
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not abort multipart upload %s of %s (engines gc will): %s",
                            self.upload_id, self.key, exc)


class S3Parts(PartUploads):
    """An S3 multipart upload whose parts the client PUTs to presigned URLs: the bytes
    go from the client to the bucket, never through the service."""

    direct = True

    def __init__(self, store: S3BlobStore) -> None:
        self.store = store
        self.client, self.bucket = store.client, store.bucket

    def begin(self, key: str, content_type: str) -> str:
        with _translated(key):
            return str(self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type)["UploadId"])

    def lease_key(self, key: str, upload_id: str) -> str:
        return key  # how iter_uploads names an unfinished multipart upload

    def part_url(self, key: str, upload_id: str, number: int, ttl_seconds: int) -> str | None:
        with _translated(key):
            return str(self.client.generate_presigned_url(
                "upload_part", Params={"Bucket": self.bucket, "Key": key,
                                       "UploadId": upload_id, "PartNumber": number},
                ExpiresIn=ttl_seconds))

    def _listed(self, key: str, upload_id: str) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        try:
            for page in self.client.get_paginator("list_parts").paginate(
                    Bucket=self.bucket, Key=key, UploadId=upload_id):
                parts.extend(page.get("Parts", []))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return []  # finished or aborted
            raise
        return parts

    def sizes(self, key: str, upload_id: str) -> dict[int, int]:
        with _translated(key):
            return {part["PartNumber"]: part["Size"] for part in self._listed(key, upload_id)}

    def finish(self, key: str, upload_id: str, numbers: list[int], observe: Observer) -> None:
        with _translated(key):
            etags = {part["PartNumber"]: part["ETag"] for part in self._listed(key, upload_id)}
            if etags:
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={
                        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in numbers]})
        for chunk in self.store.read(key):  # BlobNotFound: neither parts nor object
            observe(chunk)

    def abort(self, key: str, upload_id: str) -> None:
        with _translated(key):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                   UploadId=upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise  # NoSuchUpload: already finished or aborted


class S3BlobStore(BlobStore):
    scheme = "s3"

    def __init__(self, settings: Settings, client: BaseClient | None = None) -> None:
        assert settings.raw_bucket
        self.bucket = settings.raw_bucket
        self.part_size = settings.s3_part_size
        self.endpoint = settings.aws_endpoint_url_s3
        self.client = client or build_s3_client(settings)

    def uri_for(self, key: str) -> str:
        return BlobRef("s3", self.bucket, key).uri

    def key_for(self, uri: str) -> str | None:
        try:
            ref = parse_blob_uri(uri)
        except InvalidBlobUri:
            return None
        if ref is None or ref.scheme != "s3" or ref.bucket != self.bucket:
            return None
        return ref.key

    def open_writer(self, key: str, content_type: str) -> BlobWriter:
        return S3BlobWriter(self.client, self.bucket, key, content_type, self.part_size)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        params: dict[str, object] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end}"
        with _translated(key):
            body = self.client.get_object(**params)["Body"]
        return self._iter_body(body, key)

    @staticmethod
    def _iter_body(body: StreamingBody, key: str) -> Iterator[bytes]:
        with contextlib.closing(body), _translated(key):
            yield from body.iter_chunks(_READ_CHUNK)

    def delete(self, key: str) -> None:
        with _translated(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def exists(self, key: str) -> bool:
        try:
            with _translated(key):
                self.client.head_object(Bucket=self.bucket, Key=key)
        except BlobNotFound:
            return False
        return True

    def iter_blobs(self, prefix: str) -> Iterator[BlobInfo]:
        with _translated(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield BlobInfo(key=obj["Key"], size=obj["Size"], modified=obj["LastModified"])

    def iter_uploads(self) -> Iterator[BlobInfo]:
        with _translated("multipart uploads"):
            for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket):
                for up in page.get("Uploads", []):
                    active = self._last_activity(up)
                    if active is not None:
                        yield BlobInfo(key=up["Key"], size=0, modified=active,
                                       complete=False, upload_id=up["UploadId"])

    def _last_activity(self, upload: dict[str, Any]) -> datetime | None:
        """When an unfinished upload last received a part (None if it is gone).

        `Initiated` alone would make a slow upload that is still sending parts
        look abandoned once it is older than gc's grace period; a part's
        LastModified is the S3 counterpart of a local `.part` file's mtime.
        """
        newest: datetime = upload["Initiated"]
        try:
            for page in self.client.get_paginator("list_parts").paginate(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]):
                for part in page.get("Parts", []):
                    newest = max(newest, part["LastModified"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return None  # completed or aborted since it was listed
            raise
        return newest

    def discard_incomplete(self, info: BlobInfo) -> None:
        with _translated(info.key):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=info.key,
                                               UploadId=info.upload_id)

    def presign(self, key: str, ttl_seconds: int) -> str | None:
        with _translated(key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=ttl_seconds)

    def probe(self) -> None:
        """HEAD the bucket: a missing bucket fails it, where a missing key would not."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            # HEAD has no body: a missing bucket is a bare 404
            where = self.describe()
            raise (_no_bucket(where) if _error_code(exc) in _MISSING
                   else _unavailable(exc, where)) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc, self.describe()) from exc
    def parts(self) -> PartUploads:
        return S3Parts(self)

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"S3 bucket s3://{self.bucket}{where}"
