"""One error envelope for every failure, and the exception -> response mapping.

`{"error": {"code": "...", "message": "...", "request_id": "..."}}` is the
only error shape clients ever see, whether the failure came from our code,
from FastAPI's validation, or from a backend that went away.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

log = logging.getLogger("engines.errors")


class ApiError(Exception):
    """An error with an HTTP status and a stable, dotted machine code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code = 400, "request.bad_headers"


class Unauthorized(ApiError):
    status, code = 401, "auth.unauthorized"

    def __init__(self, message: str = "missing or invalid bearer token", *,
                 code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code = 403, "auth.forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "request.too_large"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)


def too_large(limit: int) -> PayloadTooLarge:
    """413 that also closes the connection, so the server stops draining the body."""
    return PayloadTooLarge(f"body exceeds the limit of {limit} bytes",
                           headers={"Connection": "close"})


class UnsupportedMediaType(ApiError):
    status, code = 415, "request.unsupported_media_type"


class Unprocessable(ApiError):
    status, code = 422, "request.invalid"


class TooManyRequests(ApiError):
    """Over a fair-share limit (docs/fair-share.md): come back after `retry_after` seconds."""

    status, code = 429, "request.too_many"

    def __init__(self, message: str, *, code: str, retry_after: int) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(ApiError):
    status, code = 503, "backend.unavailable"


class BackendFailure(ServiceUnavailable):
    """A backend's own exception: its text is for the log, clients get `public_message`.

    Subclasses (the blob stores' errors) set `code`, `public_message`, `log_text` and
    `log_level`, so this module maps them without knowing the backends.
    """

    public_message = "a backend is unavailable; retry later"
    log_text = "backend error"
    log_level = logging.WARNING

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.public_message)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail or self.public_message


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorEnvelope(BaseModel):
    """The envelope as a model, so the OpenAPI schema documents every error body."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "missing or malformed routing headers", 401: "missing or invalid bearer token",
    403: "tenant not in the token, or role too low", 404: "not found (or another scope's)",
    408: "request body stalled longer than BODY_IDLE_TIMEOUT",
    409: "Idempotency-Key reused with a different request", 413: "body over the size limit",
    415: "unsupported or mismatched media type", 416: "range not satisfiable",
    422: "invalid request", 429: "over a fair-share limit; retry after Retry-After seconds",
    503: "storage or metadata backend unavailable",
}
AUTHENTICATED_ERRORS = (400, 401, 403, 422, 503)
"""What any authenticated route can answer: routing headers, token, role, validation, outage."""
BODY_ERRORS = (408, 409, 413, 415)
"""What a route that reads a body can add: stalled, idempotency conflict, too large, wrong type."""


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each documented with the envelope.

    A client generated from the schema (and schemathesis) then knows the
    shape of every error it can get, not only of the success body.
    """
    return {status: {"model": ErrorEnvelope, "description": _ERROR_DESCRIPTIONS[status]}
            for status in statuses}


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", "") or ""


def error_response(request: Request, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "request_id": request_id_of(request)}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def first_error_message(exc: ValidationError) -> str:
    """A body model's first problem as `path: message`, list indices as `keyframes[3]`.

    Field errors and model-level checks then name the offending item the same
    way, so a client can point at it without parsing two styles.
    """
    err = exc.errors()[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.get("loc", ()))
    message = str(err.get("msg")).removeprefix("Value error, ")
    return f"{where.lstrip('.')}: {message}" if where else message


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


_HTTP_CODES = {400: "request.bad", 401: "auth.unauthorized", 403: "auth.forbidden",
               404: "not_found", 405: "request.method_not_allowed", 413: "request.too_large",
               415: "request.unsupported_media_type", 422: "request.invalid"}


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception family onto the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 422, "request.invalid", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http.error")
        return error_response(request, exc.status_code, code, str(exc.detail),
                              dict(exc.headers or {}))

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _db_down(request: Request, exc: Exception) -> Response:
        log.warning("metadata backend error: %s", exc)
        return error_response(request, 503, "metadata.unavailable",
                              "the metadata store is unavailable; retry later")

    @app.exception_handler(BackendFailure)
    async def _backend_failure(request: Request, exc: BackendFailure) -> Response:
        log.log(exc.log_level, "%s: %s", exc.log_text, exc.detail)
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # nobody is left to read this; the upload code already aborted its write
        log.info("client disconnected mid-request %s", request_id_of(request))
        return error_response(request, 400, "request.client_disconnected",
                              "client disconnected before the body was complete")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(request, 500, "internal", "internal error")
