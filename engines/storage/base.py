"""The one small interface every blob store implements (local dir, S3).

Stores are synchronous and byte-oriented; streaming, hashing and size limits
live in `ingest`, once, for all backends. Keys are relative, '/'-separated
and already validated (see `keys`); URIs are what records keep.
"""

from __future__ import annotations

import abc
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from engines.http.errors import BackendFailure


class BlobNotFound(BackendFailure):
    """The key has no object (deleted, never written, or lost).

    Callers that expect a miss catch it; one that escapes to a client means a
    record points at lost bytes: a 503 and an error-level log line.
    """

    code = "storage.blob_missing"
    public_message = "the artifact's bytes are missing from the blob store"
    log_text, log_level = "record points to a missing blob", logging.ERROR


class StorageUnavailable(BackendFailure):
    """The store could not be reached or refused the operation.

    `reason` is a short fixed phrase for `/readyz` ("unreachable", "no such bucket",
    "no credentials", "access denied"); the detail says the rest, for logs and doctor.
    """

    code = "storage.unavailable"
    public_message = "the blob store is unavailable; retry later"
    log_text = "blob store error"

    def __init__(self, detail: str = "", reason: str = "unreachable") -> None:
        super().__init__(detail)
        self.reason = reason


READY_MARKER = "_readyz/marker"
"""A key that need not exist: asking a store for it proves the store answers."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    uri: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    modified: datetime
    complete: bool = True
    upload_id: str | None = None


class BlobWriter(abc.ABC):
    """A write in progress: nothing is visible under the key until `commit`.

    `lease_key` names the unfinished upload as `iter_uploads` reports it, so
    a lease taken on it keeps gc away while bytes are still arriving.
    """

    lease_key: str

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...


Observer = Callable[[bytes], None]
"""Sees every byte of an assembled object, in order; raising stops the assembly."""


class PartUploads(abc.ABC):
    """An object sent in numbered parts, in any order and any number of times, then
    assembled under its key (upload sessions). Until `finish`, nothing is visible
    under the key; the unfinished upload is what `iter_uploads` lists under
    `lease_key(...)`, so a lease keeps gc away from it."""

    direct: bool
    """True when clients send parts to the store itself (presigned URLs)."""

    @abc.abstractmethod
    def begin(self, key: str, content_type: str) -> str:
        """Start an upload of the object at key; returns its upload id."""

    @abc.abstractmethod
    def lease_key(self, key: str, upload_id: str) -> str: ...

    def part_url(self, key: str, upload_id: str, number: int, ttl_seconds: int) -> str | None:
        """A URL the client PUTs the part to directly, where the store has one."""
        return None

    def open_part(self, upload_id: str, number: int) -> BlobWriter:
        """A writer for one part sent through the service (stores without part URLs);
        a part written again replaces the earlier one on commit. A store whose parts go
        to its own URLs (`direct`) never receives one: the service answers 404 first."""
        raise TypeError(f"{type(self).__name__} takes parts at their own URLs, not here")

    @abc.abstractmethod
    def sizes(self, key: str, upload_id: str) -> dict[int, int]:
        """Part number -> size of every part the upload holds (empty once finished)."""

    @abc.abstractmethod
    def finish(self, key: str, upload_id: str, numbers: list[int], observe: Observer) -> None:
        """Assemble the parts in order under key, showing every byte to `observe`. An
        upload already assembled (a retry after a crash) shows the object instead."""

    @abc.abstractmethod
    def abort(self, key: str, upload_id: str) -> None:
        """Remove the unfinished upload and its parts; never a finished object."""


class BlobStore(abc.ABC):
    """Object storage behind the artifact service."""

    scheme: str
    reads_block_briefly = False
    """True where a read of a small object is a page-cache copy (a local disk), cheaper
    on the event loop than the thread hop that would otherwise carry it."""

    @abc.abstractmethod
    def uri_for(self, key: str) -> str: ...

    @abc.abstractmethod
    def key_for(self, uri: str) -> str | None:
        """The key of one of our URIs, or None if the URI is not in this store."""

    @abc.abstractmethod
    def open_writer(self, key: str, content_type: str) -> BlobWriter: ...

    @abc.abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes [start, end] (inclusive end, like HTTP ranges)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def iter_blobs(self, prefix: str) -> Iterator[BlobInfo]:
        """Every finished object under prefix, for `engines gc`."""

    @abc.abstractmethod
    def iter_uploads(self) -> Iterator[BlobInfo]:
        """Every unfinished upload: they live where no finished object can."""

    @abc.abstractmethod
    def discard_incomplete(self, info: BlobInfo) -> None:
        """Remove an unfinished upload reported by `iter_uploads`."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where blobs live, for humans (startup banner, doctor)."""

    def presign(self, key: str, ttl_seconds: int) -> str | None:
        """A short-lived direct URL, where the backend has one."""
        return None

    @abc.abstractmethod
    def parts(self) -> PartUploads:
        """Uploads in parts (upload sessions) on this store."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        writer = self.open_writer(key, content_type)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return self.uri_for(key)

    def read_all(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(self.read(key, start, end))

    def probe(self) -> None:
        """Raise StorageUnavailable (with its reason) if the store cannot answer.

        Read-only and one request at most, so `/readyz` and `engines serve` can
        ask it often: a key that need not exist, asked for, proves the store answers.
        """
        self.exists(READY_MARKER)

    def check(self) -> None:
        """Write, read back and delete a probe object; raises on any failure."""
        key = f"_doctor/probe-{uuid.uuid4().hex}"
        payload = b"engines doctor probe"
        self.put_bytes(key, payload, "application/octet-stream")
        try:
            if self.read_all(key) != payload:
                raise StorageUnavailable("probe object read back different bytes")
        finally:
            self.delete(key)
