"""CORS for front ends on other origins: Starlette's middleware, configured from one list.

With `CORS_ORIGINS` empty (the default) nothing is installed, so no response
carries a CORS header and a cross-origin preflight is refused as before. With
it set, every route (the lean fast paths included: they run inside the
middleware) answers preflights from those exact origins and tags its
responses so a browser lets the page read them.

The allowed request headers are the ones the API documents (the routing and
trace headers, `Idempotency-Key`), taken from the OpenAPI declarations so a
header added there is allowed here too, plus the conditional and resume
headers a browser sends itself.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from engines.config import Settings
from engines.http.openapi import IDEMPOTENCY_HEADER, ROUTING_HEADERS

METHODS = ("GET", "HEAD", "POST", "DELETE", "OPTIONS")
REQUEST_HEADERS = ("Authorization", "Content-Type", "Range", "If-Range", "If-None-Match",
                   "Last-Event-ID", "X-Mode")
"""Sent by browsers or clients beside the declared ones (X-Mode: the tenancy mode header)."""
EXPOSED_HEADERS = ("ETag", "X-Request-Id", "X-Correlation-Id", "Content-Length",
                   "Content-Range", "Accept-Ranges", "Content-Disposition", "Retry-After",
                   "Idempotent-Replayed", "Location", "WWW-Authenticate")
"""Response headers a page's script may read (beyond the CORS-safelisted few)."""
PREFLIGHT_MAX_AGE = 600


def allowed_headers() -> list[str]:
    declared = [header["name"] for header in (*ROUTING_HEADERS, IDEMPOTENCY_HEADER)]
    return list({name.lower(): name for name in (*REQUEST_HEADERS, *declared)}.values())


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Outermost middleware: a preflight is answered before any other layer runs."""
    if not settings.cors_origins:
        return
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                       allow_methods=list(METHODS), allow_headers=allowed_headers(),
                       expose_headers=list(EXPOSED_HEADERS), allow_credentials=False,
                       max_age=PREFLIGHT_MAX_AGE)
