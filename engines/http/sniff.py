"""Preview content types: what we accept and how bytes prove what they are.

The stored type always comes from the bytes. A declared type must agree
with them (else 415); with no useful declaration the bytes decide alone.
"""

from __future__ import annotations

from collections.abc import Callable

from engines.http.body import media_type
from engines.http.errors import UnsupportedMediaType

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/svg+xml": "svg",
    "text/html": "html",
}
ACTIVE_TYPES = frozenset({"image/svg+xml", "text/html"})
"""Types a browser would execute scripts in; served sandboxed."""
RASTER_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
"""The only types ever redirected to the bucket, which serves them without our headers."""


def _text_head(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    return head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n").lower()


def _is_svg(head: bytes) -> bool:
    text = _text_head(head)
    return text is not None and text.startswith("<") and "<svg" in text


def _is_html(head: bytes) -> bool:
    text = _text_head(head)
    return text is not None and text.startswith("<") and "<svg" not in text[:64]


MAGIC: dict[str, Callable[[bytes], bool]] = {
    "image/png": lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda h: h.startswith(b"\xff\xd8\xff"),
    "image/webp": lambda h: len(h) >= 12 and h[:4] == b"RIFF" and h[8:12] == b"WEBP",
    "image/svg+xml": _is_svg,
    "text/html": _is_html,
}


def sniff(head: bytes) -> str | None:
    for mime, matches in MAGIC.items():
        if matches(head):
            return mime
    return None


def head_checker(declared: str | None) -> Callable[[bytes], str]:
    """A check for `ingest`: the declared type, confirmed by the first bytes."""
    declared_type = media_type(declared)
    generic = declared_type in ("", "application/octet-stream")
    if not generic and declared_type not in MAGIC:
        raise UnsupportedMediaType(f"unsupported preview type {declared_type!r}; use one of "
                                   + ", ".join(MAGIC))

    def check(head: bytes) -> str:
        if not head:
            raise UnsupportedMediaType("empty preview body")
        if generic:
            found = sniff(head)
            if found is None:
                raise UnsupportedMediaType("content is not a supported preview type")
            return found
        if not MAGIC[declared_type](head):
            raise UnsupportedMediaType(f"content does not look like {declared_type}",
                                       code="request.content_mismatch")
        return declared_type

    return check
