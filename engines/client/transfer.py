"""Bodies going up and payloads coming down, in chunks, restartable for retries.

An `Upload` is read afresh on every attempt (a path is reopened, a seekable
file is sought back to where it stood, bytes are bytes), so a retried create
sends exactly the bytes of the first attempt, which is what lets the service
match it to its `Idempotency-Key`. A `Download` writes to a temporary file
beside its destination and renames it only once the whole payload arrived:
a failed or interrupted download never leaves a truncated file behind.
Both report progress as (bytes so far, total or None).
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread
import httpx

CHUNK = 256 * 1024
Progress = Callable[[int, "int | None"], None]
"""Called with (bytes done, total bytes or None when unknown) as a transfer advances."""
Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
"""What an upload reads: a path, bytes, or a binary file opened for reading."""
Destination = str | os.PathLike[str] | BinaryIO
"""Where a download goes: a path, or a binary file opened for writing."""


def _seekable(file: BinaryIO) -> bool:
    try:
        return file.seekable()
    except (AttributeError, ValueError):
        return False


def _path_or_file(target: Any) -> tuple[Path | None, BinaryIO | None, int | None]:
    """(path, None, None) for a path; (None, file, where it stands or None when it
    cannot seek) for a file."""
    if isinstance(target, str | os.PathLike):
        return Path(target), None, None
    return None, target, target.tell() if _seekable(target) else None


class Upload:
    """A request body read in chunks; `size` is its length when it can be known up front."""

    def __init__(self, source: Source, progress: Progress | None = None) -> None:
        if isinstance(source, bytes | bytearray | memoryview):
            source = io.BytesIO(bytes(source))
        self._path, self._file, self._start = _path_or_file(source)
        self._progress = progress
        self._sent = 0
        self._opened = 0
        self.size = self._measure()

    def _measure(self) -> int | None:
        if self._path is not None:
            return self._path.stat().st_size
        if self._start is None:
            return None
        assert self._file is not None
        end = self._file.seek(0, io.SEEK_END)
        self._file.seek(self._start)
        return end - self._start

    @property
    def replayable(self) -> bool:
        """Whether another attempt can send the same bytes (not a pipe already read)."""
        return self._opened == 0 or self._path is not None or self._start is not None

    def _open(self) -> tuple[BinaryIO, bool]:
        """The file positioned at the body's start, and whether it is ours to close."""
        self._opened += 1
        self._sent = 0
        if self._path is not None:
            return open(self._path, "rb"), True  # noqa: SIM115 - closed by the chunk loops
        assert self._file is not None
        if self._start is not None:
            self._file.seek(self._start)
        return self._file, False

    def _count(self, chunk: bytes) -> bytes:
        self._sent += len(chunk)
        if self._progress is not None:
            self._progress(self._sent, self.size)
        return chunk

    def head(self, size: int = 16) -> bytes:
        """The first bytes (to tell the type), without counting them as sent."""
        return self.part(0, size, counted=False)

    def part(self, offset: int, size: int, *, counted: bool = True) -> bytes:
        """`size` bytes from `offset`: one part of an upload session, read again on a retry.
        Only for a body whose size is known (a path or a seekable file)."""
        file, owned = self._open()
        try:
            file.seek((self._start or 0) + offset)
            data = file.read(size)
        finally:
            if owned:
                file.close()
        if counted:
            self._sent = offset
            self._count(data)
        return data

    def chunks(self) -> Iterator[bytes]:
        file, owned = self._open()
        try:
            while chunk := file.read(CHUNK):
                yield self._count(chunk)
        finally:
            if owned:
                file.close()

    async def achunks(self) -> AsyncIterator[bytes]:
        """The same chunks for an async client: each read runs off the event loop."""
        file, owned = self._open()
        try:
            while chunk := await anyio.to_thread.run_sync(file.read, CHUNK):
                yield self._count(chunk)
        finally:
            if owned:
                file.close()


class Download:
    """A payload written as it arrives; `begin` starts (or restarts) it, `commit` ends it."""

    def __init__(self, destination: Destination, progress: Progress | None = None) -> None:
        self._path, self._file, self._start = _path_or_file(destination)
        self._progress = progress
        self._part: Path | None = None
        self._out: BinaryIO | None = None
        self._begun = 0
        self._total: int | None = None
        self.written = 0

    @property
    def replayable(self) -> bool:
        """Whether a failed attempt's bytes can be taken back (not a pipe already written)."""
        return self._begun == 0 or self._path is not None or self._start is not None

    def begin(self, response: httpx.Response) -> None:
        self._begun += 1
        self.written = 0
        length = response.headers.get("content-length")
        self._total = int(length) if length and length.isdigit() else None
        if self._path is not None:
            if self._out is None:
                self._part = self._path.with_name(f".{self._path.name}.{uuid.uuid4().hex}.part")
                self._out = open(self._part, "wb")  # noqa: SIM115 - closed by commit/discard
            self._out.seek(0)
            self._out.truncate()
            return
        assert self._file is not None
        self._out = self._file
        if self._start is not None:
            self._file.seek(self._start)
            self._file.truncate()

    def write(self, chunk: bytes) -> None:
        assert self._out is not None
        self._out.write(chunk)
        self.written += len(chunk)
        if self._progress is not None:
            self._progress(self.written, self._total)

    def commit(self) -> int:
        """The payload is complete: move it into place; returns its size."""
        if self._path is not None and self._out is not None and self._part is not None:
            self._out.close()
            os.replace(self._part, self._path)
            self._out = self._part = None
        elif self._out is not None:
            self._out.flush()
        return self.written

    def discard(self) -> None:
        """The download failed for good: remove the partial file, if it is ours."""
        if self._path is not None and self._out is not None and self._part is not None:
            self._out.close()
            self._part.unlink(missing_ok=True)
            self._out = self._part = None
