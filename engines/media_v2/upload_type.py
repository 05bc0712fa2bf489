"""The stored type of a media_v2 upload comes from its bytes, as for previews.

The client's part Content-Type is a claim: the object's type in the store
(and so what a presigned URL would serve) must never be more active than
the bytes justify. Rules, by what the client declared:

- an image type, SVG or HTML: the bytes must be exactly that (else 415);
- audio/* or video/*: the bytes must start like a known audio/video
  container (else 415); the declared type is kept, containers being shared
  by audio and video and neither being active content;
- anything else (or nothing): the type the bytes show, else
  `application/octet-stream`.
"""

from __future__ import annotations

from collections.abc import Callable

from engines.http.body import media_type
from engines.http.errors import UnsupportedMediaType
from engines.http.sniff import ACTIVE_TYPES, sniff

GENERIC = "application/octet-stream"

_AV_SIGNATURES: tuple[Callable[[bytes], bool], ...] = (
    lambda h: h[4:8] == b"ftyp",                                   # MP4, MOV, M4A, 3GP
    lambda h: h.startswith(b"\x1a\x45\xdf\xa3"),                   # Matroska, WebM
    lambda h: h.startswith((b"OggS", b"fLaC", b"ID3")),            # Ogg, FLAC, MP3 with tags
    lambda h: len(h) > 1 and h[0] == 0xFF and h[1] & 0xE0 == 0xE0,  # MPEG audio / ADTS frame
    lambda h: h[:4] == b"RIFF" and h[8:12] in (b"WAVE", b"AVI "),
)
_EXTRA_IMAGES: dict[str, Callable[[bytes], bool]] = {
    "image/gif": lambda h: h.startswith((b"GIF87a", b"GIF89a")),
}


def _sniff_upload(head: bytes) -> str | None:
    for mime, matches in _EXTRA_IMAGES.items():
        if matches(head):
            return mime
    return sniff(head)


def _mismatch(declared: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(f"content does not look like {declared}",
                                code="request.content_mismatch")


def upload_checker(declared: str | None) -> Callable[[bytes], str]:
    """A head check for `ingest`: the content type to store for these first bytes."""
    declared_type = media_type(declared)

    def check(head: bytes) -> str:
        found = _sniff_upload(head)
        if declared_type.startswith(("audio/", "video/")):
            if found is not None or not any(match(head) for match in _AV_SIGNATURES):
                raise _mismatch(declared_type)
            return declared_type
        if declared_type.startswith("image/") or declared_type in ACTIVE_TYPES:
            if found != declared_type:
                raise _mismatch(declared_type)
            return declared_type
        return found or GENERIC

    return check
