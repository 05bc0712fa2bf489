"""Request bodies sent with `Content-Encoding: gzip` or `zstd`, decoded as they arrive.

rrweb and PostHog clients compress before upload. The body limit applies to
the decoded bytes, and the decoders never produce more than the limit plus
one output block before the request fails with 413: a few KiB that expand
to gigabytes (a "zip bomb") cost the server one block of memory, not the
expansion. Bytes that are not what the header says are a 400, and so is a
gzip stream that ends early (python-zstandard's bounded streaming decoder
cannot tell a cut zstd stream from a whole one: a JSON body cut short then
fails to parse, a 422).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import zstandard

from engines.http.errors import ApiError, UnsupportedMediaType

ENCODINGS = ("gzip", "zstd")
BLOCK = 256 * 1024
"""Most decoded bytes produced per step; the limit is checked after each."""


def _corrupt(encoding: str) -> ApiError:
    return ApiError(f"body is not a valid {encoding} stream", code="request.bad_encoding",
                    status=400)


def content_encoding(header: str | None) -> str | None:
    """The one coding we decode, None for identity; 415 for any other or a chain."""
    value = (header or "").strip().lower()
    if value in ("", "identity"):
        return None
    if value in ENCODINGS:
        return value
    raise UnsupportedMediaType(f"Content-Encoding {value!r} is not supported; "
                               "send gzip, zstd or identity")


class BodyDecoder:
    """Feed encoded chunks, get decoded chunks; `over` is called the moment the
    decoded total passes `limit` (it raises the 413)."""

    def __init__(self, encoding: str, limit: int, over: Callable[[], Exception]) -> None:
        self.encoding = encoding
        self.limit = limit
        self.over = over
        self.total = 0
        self.out: list[bytes] = []
        if encoding == "gzip":
            self.gzip = zlib.decompressobj(wbits=31)
        else:
            self.zstd = zstandard.ZstdDecompressor().stream_writer(
                self, write_size=BLOCK, closefd=False)

    def write(self, data: bytes) -> int:
        """The zstd writer's sink: every block it decodes comes here."""
        self._emit(bytes(data))
        return len(data)

    def _emit(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > self.limit:
            raise self.over()
        if data:
            self.out.append(data)

    def feed(self, chunk: bytes) -> bytes:
        try:
            if self.encoding == "gzip":
                data = chunk
                while data:
                    self._emit(self.gzip.decompress(data, BLOCK))
                    data = self.gzip.unconsumed_tail
            else:
                self.zstd.write(chunk)
        except (zlib.error, zstandard.ZstdError) as exc:
            raise _corrupt(self.encoding) from exc
        out, self.out = b"".join(self.out), []
        return out

    def finish(self) -> bytes:
        """The decoded rest; 400 if the stream stopped before its end."""
        if self.encoding == "gzip":
            try:
                self._emit(self.gzip.flush())
            except zlib.error as exc:
                raise _corrupt(self.encoding) from exc
            if not self.gzip.eof:
                raise _corrupt(self.encoding)
        else:
            try:
                self.zstd.flush()
            except zstandard.ZstdError as exc:
                raise _corrupt(self.encoding) from exc
        out, self.out = b"".join(self.out), []
        return out
