"""Blobs in a local directory: the embedded default.

A write goes to a temporary file in the reserved `_uploads/` directory of
the root and is renamed into place on commit, so a reader never sees half an
object and a crash leaves only files in `_uploads/`, which `engines gc`
removes. Finished objects live under `tenants/`, so no name a user picks can
make a finished object look unfinished (or the reverse). URIs are
`local:{key}`, relative to the root: the directory can move.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from engines.common.ids import random_hex
from engines.storage.base import (
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobWriter,
    Observer,
    PartUploads,
    StorageUnavailable,
)
from engines.storage.uris import LOCAL_SCHEME, BlobRef, InvalidBlobUri, parse_blob_uri

_READ_CHUNK = 256 * 1024
UPLOADS_DIR = "_uploads"
"""Reserved for unfinished writes; every finished key starts with `tenants/`."""


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """A full or read-only disk is an outage (503), not a bug (500)."""
    try:
        yield
    except OSError as exc:
        raise StorageUnavailable(f"local storage failed: {exc}") from exc


class LocalBlobWriter(BlobWriter):
    def __init__(self, root: Path, target: Path) -> None:
        self.target = target
        self.lease_key = f"{UPLOADS_DIR}/{random_hex(16)}"
        self.tmp = root / self.lease_key
        with _disk_errors():
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort

    def write(self, data: bytes) -> None:
        with _disk_errors():
            self.fh.write(data)

    def commit(self) -> None:
        with _disk_errors():
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            self.target.parent.mkdir(parents=True, exist_ok=True)
            # a temporary file swept by gc mid-upload fails here: a clean 503, nothing kept
            os.replace(self.tmp, self.target)

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.tmp.unlink(missing_ok=True)


class LocalPartWriter(LocalBlobWriter):
    """One part of a session upload: renamed into the upload's directory on commit."""

    def commit(self) -> None:
        with _disk_errors():
            self.fh.flush()
            self.fh.close()
            os.replace(self.tmp, self.target)


class LocalParts(PartUploads):
    """Parts sent through the service (PUT part URLs), one file each in the upload's
    directory under `_uploads/`, concatenated under the key by `finish`."""

    direct = False

    def __init__(self, store: LocalBlobStore) -> None:
        self.store = store

    def _dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise ValueError("not an upload id")
        return self.store.root / UPLOADS_DIR / upload_id

    def begin(self, key: str, content_type: str) -> str:
        self.store._path(key)  # the key must be a valid one before anything is made
        upload_id = f"parts{random_hex(16)}"
        with _disk_errors():
            self._dir(upload_id).mkdir(parents=True)
        return upload_id

    def lease_key(self, key: str, upload_id: str) -> str:
        return f"{UPLOADS_DIR}/{upload_id}"

    def open_part(self, upload_id: str, number: int) -> BlobWriter:
        directory = self._dir(upload_id)
        if not directory.is_dir():
            raise BlobNotFound(upload_id)
        return LocalPartWriter(self.store.root, directory / str(number))

    def sizes(self, key: str, upload_id: str) -> dict[int, int]:
        directory = self._dir(upload_id)
        if not directory.is_dir():
            return {}
        found = {}
        for entry in os.scandir(directory):
            if entry.name.isdigit():
                with contextlib.suppress(FileNotFoundError):
                    found[int(entry.name)] = entry.stat().st_size
        return found

    def finish(self, key: str, upload_id: str, numbers: list[int], observe: Observer) -> None:
        directory = self._dir(upload_id)
        if not directory.is_dir():  # assembled by an earlier attempt
            for chunk in self.store.read(key):
                observe(chunk)
            return
        writer = self.store.open_writer(key, "application/octet-stream")
        try:
            for number in numbers:
                with _disk_errors(), open(directory / str(number), "rb") as part:
                    while chunk := part.read(_READ_CHUNK * 4):
                        observe(chunk)
                        writer.write(chunk)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        shutil.rmtree(directory, ignore_errors=True)

    def abort(self, key: str, upload_id: str) -> None:
        shutil.rmtree(self._dir(upload_id), ignore_errors=True)


class LocalBlobStore(BlobStore):
    scheme = "file"
    reads_block_briefly = True

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._prefix = f"{self.root}{os.sep}"

    def probe(self) -> None:
        """The root must be a writable directory: an unmounted volume or a read-only
        one fails here rather than on the first create."""
        if not (self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)):
            raise StorageUnavailable(f"{self.root} is not a writable directory")

    def _inside(self, path: str) -> str | None:
        """The key of an absolute path under the root, or None if it escapes.

        normpath folds `..` textually, without the per-component lstat calls of
        resolve(): keys are built by us from validated ids, so no symlink in the
        tree is ours to follow, and this runs on every request.
        """
        normal = os.path.normpath(path)
        return normal[len(self._prefix):] if normal.startswith(self._prefix) else None

    def _path(self, key: str) -> Path:
        if self._inside(os.path.join(self._prefix, key)) is None:
            raise ValueError("key escapes the storage root")
        return Path(os.path.normpath(os.path.join(self._prefix, key)))

    def uri_for(self, key: str) -> str:
        self._path(key)
        return BlobRef(LOCAL_SCHEME, "", key).uri

    def key_for(self, uri: str) -> str | None:
        try:
            ref = parse_blob_uri(uri)
        except InvalidBlobUri:
            return None
        if ref is None or ref.scheme != LOCAL_SCHEME:
            return None
        return self._inside(os.path.join(self._prefix, ref.key))

    def open_writer(self, key: str, content_type: str) -> BlobWriter:
        return LocalBlobWriter(self.root, self._path(key))

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            fh = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc
        return self._iter_file(fh, start, end)

    def read_all(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """One open and one read: a small body costs no chunk loop."""
        try:
            with open(self._path(key), "rb") as fh:
                fh.seek(start)
                return fh.read(-1 if end is None else end - start + 1)
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    @staticmethod
    def _iter_file(fh: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
        with fh:
            fh.seek(start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                chunk = fh.read(_READ_CHUNK if remaining is None else min(_READ_CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _walk(self, directory: Path | str, *, complete: bool) -> Iterator[BlobInfo]:
        """Files under `directory` (a prefix at first) in key order, byte by byte, as an
        object store lists them (gc walks a listing and the database side by side): a
        directory sorts as `name/`, so its subtree comes exactly where its keys do."""
        try:
            entries = list(os.scandir(self.root / directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), complete=complete)
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue  # a write committed (renamed) or aborted since the listing
            yield BlobInfo(
                key=Path(entry.path).relative_to(self.root).as_posix(),
                size=stat.st_size,
                modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                complete=complete,
            )

    def iter_blobs(self, prefix: str) -> Iterator[BlobInfo]:
        return self._walk(prefix, complete=True)

    def iter_uploads(self) -> Iterator[BlobInfo]:
        """Temporary files of writes in flight, and each session upload's directory of
        parts as one upload (its newest part is its last activity)."""
        base = self.root / UPLOADS_DIR
        if not base.is_dir():
            return
        for entry in os.scandir(base):
            try:
                own = entry.stat()
                parts = [part.stat() for part in os.scandir(entry.path)] \
                    if entry.is_dir() else [own]
            except FileNotFoundError:
                continue  # committed, aborted or finished since the listing
            yield BlobInfo(key=f"{UPLOADS_DIR}/{entry.name}", complete=False,
                           size=sum(st.st_size for st in parts),
                           modified=datetime.fromtimestamp(
                               max(st.st_mtime for st in [own, *parts]), tz=UTC))

    def discard_incomplete(self, info: BlobInfo) -> None:
        path = self._path(info.key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def parts(self) -> PartUploads:
        return LocalParts(self)

    def describe(self) -> str:
        return f"local directory {self.root}"
