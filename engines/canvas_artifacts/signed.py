"""Signed content URLs: a header-free, expiring GET of one artifact's content or variant.

`<img src>` sends no Authorization header and none of the routing headers,
so a reader asks for a URL instead:

    /signed/{tenant}/{env}/canvas/{canvas}/artifacts/{artifact}/content?w=256&exp=...&sig=...

`sig` is an HMAC-SHA256 (URL_SIGNING_KEY, or a key derived from the JWT key)
over the tenant, env, canvas, artifact, every variant parameter and the
expiry, exactly as they appear in the URL. Changing any of them, adding a
variant parameter or dropping one breaks the signature, so a holder reaches
that one artifact and variant until `exp`, and nothing else.
"""

from __future__ import annotations

import hmac
import re
import time
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from fastapi import Request
from pydantic import Field, ValidationError

from engines.auth.mac import mac
from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.models import ArtifactRecord, SignedUrl
from engines.canvas_artifacts.variants.query import VariantQuery
from engines.canvas_artifacts.variants.spec import check_request
from engines.config import Settings
from engines.db.engine import retry_on_disconnect
from engines.http.body import read_small_json
from engines.http.errors import (
    BadRequest,
    Forbidden,
    NotFound,
)
from engines.runtime import Runtime

MAX_TTL_SECONDS = 86_400
VARIANT_PARAMS = ("w", "h", "format", "q")
PATH = "/signed/{tenant_id}/{env}/canvas/{canvas_id}/artifacts/{artifact_id}/content"


class SignedUrlRequest(VariantQuery):
    """Body of POST .../signed-url: a lifetime and, optionally, an image variant."""

    ttl_seconds: int = Field(default=300, ge=1, le=MAX_TTL_SECONDS)

    def variant(self) -> VariantQuery | None:
        wanted = self.model_dump(include=set(VARIANT_PARAMS), exclude_none=True)
        return VariantQuery(**wanted) if wanted else None


def _signature(key: bytes, tenant_id: str, env: str, canvas_id: str, artifact_id: str,
               params: dict[str, str], exp: str) -> str:
    return mac(key, ["engines-signed-url-v1", tenant_id, env, canvas_id, artifact_id,
                     *(params.get(name) for name in VARIANT_PARAMS), exp])


def signed_url(settings: Settings, base_url: str, record: ArtifactRecord,
               variant: VariantQuery | None, expires: int) -> str:
    """The URL for one artifact (and variant) until `expires` (unix seconds)."""
    params = variant.params() if variant else {}
    exp = str(expires)
    sig = _signature(settings.url_key(), record.tenant_id, record.env, record.canvas_id,
                     record.id, params, exp)
    path = PATH.format(**{name: quote(value, safe="") for name, value in (
        ("tenant_id", record.tenant_id), ("env", record.env),
        ("canvas_id", record.canvas_id), ("artifact_id", record.id))})
    return f"{base_url}{path}?{urlencode({**params, 'exp': exp, 'sig': sig})}"


_HOST_HEADER = re.compile(r"(?P<name>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])"
                          r"(?::[0-9]{1,5})?")


def origin(settings: Settings, request: Request) -> str:
    """Where signed URLs point: PUBLIC_BASE_URL, else this request's own origin. Either
    way its Host must be one signed URLs may name (`Settings.signed_url_hosts`): a URL
    built from a Host the client chose would send a browser wherever the client likes.
    """
    host = request.headers.get("host", "")
    match = _HOST_HEADER.fullmatch(host)
    if match is None or match["name"].strip("[]").lower() not in settings.signed_url_hosts():
        raise BadRequest(f"signed URLs are not issued for Host {host[:100]!r}: set "
                         "PUBLIC_BASE_URL, or list the host in ALLOWED_HOSTS",
                         code="signed_url.host_not_allowed")
    return (settings.public_base_url or str(request.base_url)).rstrip("/")


def issue(settings: Settings, base_url: str, record: ArtifactRecord,
          body: SignedUrlRequest) -> SignedUrl:
    """Check the variant now (422 at signing, not a broken image later), then sign."""
    variant = body.variant()
    if variant is not None:
        check_request(settings, record, variant)
    expires = int(time.time()) + body.ttl_seconds
    return SignedUrl(url=signed_url(settings, base_url, record, variant, expires),
                     expires_at=datetime.fromtimestamp(expires, UTC))


REQUEST_BYTES = 4096
"""A signed-url request is a handful of numbers: anything longer is not one."""


async def read_request(request: Request) -> SignedUrlRequest:
    """The optional JSON body of POST .../signed-url (empty: a 300 s URL of the content)."""
    return await read_small_json(request, SignedUrlRequest, REQUEST_BYTES)


def invalid() -> Forbidden:
    return Forbidden("the signed URL is invalid", code="signed_url.invalid")


def verify(settings: Settings, tenant_id: str, env: str, canvas_id: str, artifact_id: str,
           query: dict[str, str]) -> VariantQuery | None:
    """The variant a signed URL grants; 403 if it was altered or has expired.

    The signature is checked over the raw strings first, so a tampered value
    is a 403, never a validation error that would tell what was checked.
    """
    params = {name: query[name] for name in VARIANT_PARAMS if name in query}
    exp, sig = query.get("exp", ""), query.get("sig", "")
    expected = _signature(settings.url_key(), tenant_id, env, canvas_id, artifact_id,
                          params, exp)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise invalid()
    if not exp.isdigit() or int(exp) <= time.time():
        raise Forbidden("the signed URL has expired", code="signed_url.expired")
    try:
        return VariantQuery(**params) if params else None  # type: ignore[arg-type]
    except ValidationError as exc:  # only a URL signed with other rules gets here
        raise invalid() from exc


@retry_on_disconnect
def load(rt: Runtime, tenant_id: str, env: str, canvas_id: str,
         artifact_id: str) -> ArtifactRecord:
    """The artifact a verified URL names; 404 if it is gone (deleted since)."""
    with rt.engine.connect() as conn:
        record = repo.get_record(conn, tenant_id, env, canvas_id, artifact_id)
    if record is None:
        raise NotFound("artifact not found", code="canvas.not_found")
    return record
