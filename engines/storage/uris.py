"""Which external URIs a tenant may point its records at."""

from __future__ import annotations

from urllib.parse import urlparse

from engines.common.errors import Unprocessable
from engines.common.identity import RequestContext
from engines.storage.keys import tenant_prefix


def check_uri_in_scope(raw_bucket: str | None, ctx: RequestContext, uri: str) -> None:
    """https anywhere, or s3://RAW_BUCKET inside the caller's own tenant/env prefix.

    Anything else (another scheme, bucket or tenant's prefix, `..` segments,
    control characters) is 422, so a record can never point into someone
    else's data.
    """
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri):
        # a NUL cannot be stored by PostgreSQL, and CR/LF would split a 307 Location header
        raise Unprocessable("URI must not contain control characters", code="request.invalid_uri")
    parsed = urlparse(uri)
    if parsed.scheme == "https" and parsed.netloc:
        return
    if parsed.scheme == "s3":
        key = parsed.path.lstrip("/")
        if (raw_bucket and parsed.netloc == raw_bucket
                and key.startswith(tenant_prefix(ctx.tenant_id, ctx.env))
                and ".." not in key.split("/")):
            return
        raise Unprocessable("s3:// URIs must point inside this tenant/env's own prefix of "
                            "the configured bucket", code="request.uri_out_of_scope")
    raise Unprocessable("URI must be https:// or s3:// inside this tenant/env's prefix",
                        code="request.uri_out_of_scope")
