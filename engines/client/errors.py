"""ArtifactError: the one exception the client raises, whatever went wrong.

An answer from the service carries its error envelope
(`{"error": {"code", "message", "request_id"}}`) and the HTTP status; a
request that never got an answer (the server unreachable after every retry)
has no status and the code `client.unreachable`. Callers catch one type and
branch on `code`, and `request_id` is what the service's logs are searched by.
"""

from __future__ import annotations

import contextlib

import httpx
import orjson

UNREACHABLE = "client.unreachable"
"""The code of a request that got no answer: connection refused or lost, timed out."""


class ArtifactError(Exception):
    """A failed call: the envelope's `code`, `message` and `request_id`, and the HTTP status
    (None when no answer came)."""

    def __init__(self, message: str, *, code: str, status: int | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id

    @property
    def status_code(self) -> int | None:
        """`status`, under httpx's name for it."""
        return self.status

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no answer"
        request = f", request {self.request_id}" if self.request_id else ""
        return f"{self.code}: {self.message} ({where}{request})"

    def __repr__(self) -> str:
        return (f"ArtifactError(code={self.code!r}, status={self.status!r}, "
                f"message={self.message!r}, request_id={self.request_id!r})")

    def to_dict(self) -> dict[str, object]:
        """The envelope's fields and the status, for `--json` output and logs."""
        return {"code": self.code, "message": self.message, "request_id": self.request_id,
                "status": self.status}


def envelope(response: httpx.Response) -> tuple[str, str, str | None]:
    """(code, message, request_id) of an error answer.

    A body that is not the service's envelope (a proxy's HTML 502, say) still
    gives a code (`http.<status>`) and the start of its text; the request id
    then comes from `X-Request-Id` if anything in front of the service kept it.
    """
    request_id = response.headers.get("x-request-id")
    try:
        error = orjson.loads(response.content)["error"]
        return str(error["code"]), str(error["message"]), error.get("request_id") or request_id
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return f"http.{response.status_code}", text, request_id


def from_response(response: httpx.Response) -> ArtifactError:
    code, message, request_id = envelope(response)
    return ArtifactError(message, code=code, status=response.status_code, request_id=request_id)


def unreachable(exc: httpx.TransportError) -> ArtifactError:
    detail = str(exc) or type(exc).__name__
    with contextlib.suppress(RuntimeError):  # raised before httpx attached the request
        detail = f"{exc.request.method} {exc.request.url}: {detail}"
    return ArtifactError(detail, code=UNREACHABLE)
