"""Blob URIs in one canonical form, and which external URIs a tenant may point at.

Records keep URIs, and the reference model (`references`) compares them by
exact text, so every URI is stored in exactly one spelling:

- `s3://{bucket}/{key}`: lower-case scheme, no leading or doubled slashes in
  the key, no `.`/`..` segments, no query or fragment;
- `local:{key}`: a blob of the local store, relative to its root, so moving
  the directory (`MEDIA_LOCAL_ROOT`) keeps every record valid.

Other spellings the API receives are normalised (scheme case, leading
slashes) or refused (422): a record can never hold a URI that serving reads
one way and `engines gc` another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from engines.auth.routing import RequestContext
from engines.http.errors import Unprocessable
from engines.storage.keys import tenant_prefix

LOCAL_SCHEME = "local"


class InvalidBlobUri(ValueError):
    """A URI that names a blob in a form we refuse to store."""


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Where a blob URI points: scheme, bucket ('' for local) and key."""

    scheme: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        if self.scheme == LOCAL_SCHEME:
            return f"{LOCAL_SCHEME}:{self.key}"
        return f"s3://{self.bucket}/{self.key}"


_CONTROL = re.compile("[\x00-\x1f\x7f]")
"""Control characters: one regex scan, not a Python loop over each character (every GET)."""


def _checked_key(key: str) -> str:
    segments = key.split("/")
    if not key or any(s in ("", ".", "..") for s in segments):
        raise InvalidBlobUri("the key must be non-empty segments without '.' or '..'")
    if _CONTROL.search(key):
        raise InvalidBlobUri("the key must not contain control characters")
    return key


def parse_blob_uri(uri: str) -> BlobRef | None:
    """The canonical BlobRef of an s3:// or local: URI; None for any other scheme.

    Raises InvalidBlobUri for a blob URI that has no safe canonical form.
    """
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == LOCAL_SCHEME:
        return BlobRef(LOCAL_SCHEME, "", _checked_key(rest))
    if scheme != "s3":
        return None
    if "?" in uri or "#" in uri:
        raise InvalidBlobUri("s3 URIs must not carry a query or a fragment")
    parts = urlsplit(uri)
    if not parts.netloc:
        raise InvalidBlobUri("s3 URIs need a bucket")
    return BlobRef("s3", parts.netloc, _checked_key(parts.path.lstrip("/")))


def canonical_uri(uri: str) -> str:
    """The one spelling a record stores; URIs that are not blob URIs pass unchanged."""
    ref = parse_blob_uri(uri)
    return uri if ref is None else ref.uri


def check_uri_in_scope(raw_bucket: str | None, ctx: RequestContext, uri: str) -> str:
    """https anywhere, or s3://RAW_BUCKET inside the caller's own tenant/env prefix.

    Returns the URI to store (canonical). Anything else (another scheme,
    bucket or tenant's prefix, `..` segments, control characters, a query or
    fragment on an s3 URI) is 422, so a record can never point into someone
    else's data nor hide a blob from `engines gc`.
    """
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri):
        # a NUL cannot be stored by PostgreSQL, and CR/LF would split a 307 Location header
        raise Unprocessable("URI must not contain control characters", code="request.invalid_uri")
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.netloc:
        return uri
    if parts.scheme.lower() == "s3":
        try:
            ref = parse_blob_uri(uri)
        except InvalidBlobUri as exc:
            raise Unprocessable(f"s3 URI is not valid: {exc}",
                                code="request.uri_out_of_scope") from exc
        assert ref is not None
        if raw_bucket and ref.bucket == raw_bucket and \
                ref.key.startswith(tenant_prefix(ctx.tenant_id, ctx.env)):
            return ref.uri
        raise Unprocessable("s3:// URIs must point inside this tenant/env's own prefix of "
                            "the configured bucket", code="request.uri_out_of_scope")
    raise Unprocessable("URI must be https:// or s3:// inside this tenant/env's prefix",
                        code="request.uri_out_of_scope")
