"""What the client says to the service and how it reads the answers, with no I/O.

Each call is an *operation*: a generator that yields the steps it needs (a
`Send` or a `Sleep`) and gets back what each step produced (an
`httpx.Response`, or the `httpx.TransportError` that prevented one), and
finally returns the parsed result. The sync and the async client differ only
in how they perform a step (`sync.py`, `aio.py`); the requests, the retries,
the idempotency keys, the error envelope and the parsing are written once,
here. (httpx's own split between Client and AsyncClient is the model; this
keeps the protocol out of both halves.)
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx
import orjson
from pydantic import BaseModel

from engines.canvas_artifacts.models import ArtifactList, ArtifactRecord, Lineage, SignedUrl
from engines.client.errors import ArtifactError, from_response, unreachable
from engines.client.events import Event
from engines.client.retry import Outcome, RetryPolicy
from engines.client.transfer import Destination, Download, Progress, Source, Upload

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
JSON = "application/json"
MAX_REDIRECTS = 3
UPLOAD_THRESHOLD = 64 * 1024 * 1024
"""Above this a preview is sent in parts through an upload session (docs/uploads.md):
straight to the bucket on S3, resumable part by part everywhere."""
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def _user_agent() -> str:
    try:
        return f"engines-client/{version('northstar-engines-canvas')}"
    except PackageNotFoundError:  # a source tree that was never installed
        return "engines-client"


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the service is and who is asking: every request's URL and routing headers."""

    base_url: str
    token: str
    tenant: str
    env: str
    project: str
    workspace: str | None = None
    surface: str | None = None
    app: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    upload_threshold: int | None = UPLOAD_THRESHOLD
    """Previews of at least this many bytes go through an upload session (None: never)."""

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "X-Tenant-Id": self.tenant,
                   "X-Env": self.env, "X-Project-Id": self.project,
                   "User-Agent": _user_agent()}
        for name, value in (("X-Workspace-Id", self.workspace), ("X-Surface-Id", self.surface),
                            ("X-App-Id", self.app)):
            if value is not None:
                headers[name] = value
        return headers

    def url(self, *segments: str) -> str:
        """base_url + the segments, each quoted (ids cannot smuggle a `/` or a `?`)."""
        path = "/".join(quote(segment, safe="") for segment in segments)
        return f"{self.base_url.rstrip('/')}/{path}"

    def canvas_url(self, canvas: str, *segments: str) -> str:
        return self.url("canvas", canvas, "artifacts", *segments)

    def same_origin(self, url: str) -> bool:
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)


@dataclass(slots=True)
class Send:
    """One HTTP request to perform. With `download`, a 2xx body is streamed into it
    (any other answer is read whole, for its error envelope)."""

    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str | int] | None = None
    body: bytes | Upload | None = None
    download: Download | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Op = Generator[Step, Outcome | None, T]
"""An operation: yields steps, is sent each step's outcome, returns its result."""


class Run:
    """Drives one operation: iterating gives its steps; set `outcome` after performing
    each one; `result` once the iteration ends. Closing the operation however the run
    ends lets its clean-up (`finally`) run."""

    def __init__(self, op: Op[T]) -> None:
        self._op = op
        self.outcome: Outcome | None = None
        self.result: T

    def __iter__(self) -> Iterator[Step]:
        with contextlib.closing(self._op):
            while True:
                try:
                    step = self._op.send(self.outcome)
                except StopIteration as done:
                    self.result = done.value
                    return
                yield step


def _replayable(send: Send) -> bool:
    return ((not isinstance(send.body, Upload) or send.body.replayable)
            and (send.download is None or send.download.replayable))


def exchange(conn: Connection, send: Send, *, gone_is_done: bool = False) -> Op[httpx.Response]:
    """Send until the answer is not transient (or retries run out); an error answer or
    no answer raises ArtifactError. With `gone_is_done`, a 404 after an attempt whose
    answer was lost is returned as the answer: that attempt did it (a delete)."""
    lost = False
    for attempt in itertools.count(1):
        outcome = yield send
        assert outcome is not None
        pause = conn.retry.pause(attempt, outcome) if _replayable(send) else None
        if pause is None:
            break
        lost = lost or isinstance(outcome, httpx.TransportError)
        yield Sleep(pause)
    if isinstance(outcome, httpx.TransportError):
        raise unreachable(outcome)
    if outcome.status_code >= 400 and not (gone_is_done and lost and outcome.status_code == 404):
        raise from_response(outcome)
    return outcome


def _parsed(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValueError as exc:  # a proxy's page, or a server of another version
        raise ArtifactError(f"unexpected answer ({exc.__class__.__name__}): "
                            f"{response.text[:200]}", code="client.bad_response",
                            status=response.status_code,
                            request_id=response.headers.get("x-request-id")) from exc


def _json(value: Mapping[str, Any]) -> bytes:
    return orjson.dumps(value)


# ---- creates ----------------------------------------------------------------


def _create(conn: Connection, url: str, body: bytes | Upload, content_type: str,
            key: str | None, params: dict[str, str | int] | None = None) -> Op[ArtifactRecord]:
    """POST a create with an Idempotency-Key that every retry repeats: however many
    attempts it takes, the service makes one artifact and answers it to each."""
    headers = {**conn.headers(), "Content-Type": content_type,
               "Idempotency-Key": key or f"engines-client-{uuid.uuid4().hex}"}
    if isinstance(body, Upload) and body.size is not None:
        headers["Content-Length"] = str(body.size)
    response = yield from exchange(conn, Send("POST", url, headers, params, body))
    return _parsed(ArtifactRecord, response)


def create_preview(conn: Connection, canvas: str, rev: int, source: Source,
                   mime_type: str | None, key: str | None,
                   progress: Progress | None) -> Op[ArtifactRecord]:
    """Raw bytes; without a declared type the service reads the type from the bytes.
    A body of a known size at or above the connection's `upload_threshold` goes
    through an upload session instead (its type declared or told from its bytes)."""
    body = Upload(source, progress)
    if (conn.upload_threshold is not None and body.size is not None
            and body.size >= conn.upload_threshold):
        mime = mime_type or _sniffed(body.head())
        if mime is not None:
            return _create_in_parts(conn, canvas, rev, body, mime)
    return _create(conn, conn.canvas_url(canvas, "preview"), body,
                   mime_type or "application/octet-stream", key, {"rev": rev})


def _sniffed(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in _MAGIC if head.startswith(magic)), None)


def _create_in_parts(conn: Connection, canvas: str, rev: int, body: Upload,
                     mime_type: str) -> Op[ArtifactRecord]:
    """Open a session, PUT each part (retried alone: a part URL may be sent again),
    complete it; completing twice makes one artifact, so its retries are safe too."""
    url = conn.canvas_url(canvas, "preview", "uploads")
    opened = yield from exchange(conn, Send(
        "POST", url, {**conn.headers(), "Content-Type": JSON}, {"rev": rev},
        _json({"size_bytes": body.size, "mime_type": mime_type})))
    session = orjson.loads(opened.content)
    offset = 0
    for part in session["parts"]:
        data = body.part(offset, part["size"])
        offset += part["size"]
        target = part["url"]
        if not target.startswith(("http://", "https://")):
            target = conn.base_url.rstrip("/") + target
        yield from exchange(conn, Send("PUT", target, {}, None, data))
    done = yield from exchange(conn, Send("POST", f"{url}/{quote(session['id'], safe='')}/complete",
                                          conn.headers()))
    return _parsed(ArtifactRecord, done)


def create_render_ref(conn: Connection, canvas: str, rev: int, uri: str,
                      mime_type: str | None, key: str | None) -> Op[ArtifactRecord]:
    ref = {"uri": uri} if mime_type is None else {"uri": uri, "mime_type": mime_type}
    return _create(conn, conn.canvas_url(canvas, "preview"), _json(ref), JSON, key,
                   {"rev": rev})


def create_replay(conn: Connection, canvas: str, replay: Mapping[str, Any] | Source,
                  key: str | None, progress: Progress | None) -> Op[ArtifactRecord]:
    """A replay document as a mapping, or its JSON as bytes, a path or a file (streamed)."""
    body = _json(replay) if isinstance(replay, Mapping) else Upload(replay, progress)
    return _create(conn, conn.canvas_url(canvas, "replay"), body, JSON, key)


def create_audit(conn: Connection, canvas: str, rev: int, report: Mapping[str, Any] | None,
                 key: str | None) -> Op[ArtifactRecord]:
    """No report: the service writes its pending placeholder."""
    body = b"" if report is None else _json(report)
    return _create(conn, conn.canvas_url(canvas, "audit"), body, JSON, key, {"rev": rev})


# ---- reads ------------------------------------------------------------------


def _read(conn: Connection, model: type[M], url: str,
          params: dict[str, str | int] | None = None) -> Op[M]:
    response = yield from exchange(conn, Send("GET", url, conn.headers(), params))
    return _parsed(model, response)


def get(conn: Connection, canvas: str, artifact_id: str) -> Op[ArtifactRecord]:
    return _read(conn, ArtifactRecord, conn.canvas_url(canvas, artifact_id))


def latest(conn: Connection, canvas: str, kind: str) -> Op[ArtifactRecord]:
    return _read(conn, ArtifactRecord, conn.canvas_url(canvas, "latest"), {"kind": kind})


def lineage(conn: Connection, canvas: str, artifact_id: str) -> Op[Lineage]:
    return _read(conn, Lineage, conn.canvas_url(canvas, artifact_id, "lineage"))


def _options(**values: str | int | None) -> dict[str, str | int]:
    return {name: value for name, value in values.items() if value is not None}


def _download(conn: Connection, url: str, params: dict[str, str | int],
              download: Download) -> Op[int]:
    """GET into `download`, following redirects (a render-ref's URI, a presigned URL)
    without our credentials unless they stay on our origin; returns the bytes written."""
    try:
        send = Send("GET", url, conn.headers(), params, download=download)
        for _ in range(MAX_REDIRECTS + 1):
            response = yield from exchange(conn, send)
            if not response.is_redirect:
                return download.commit()
            target = urljoin(str(response.url), response.headers["location"])
            headers = conn.headers() if conn.same_origin(target) else {}
            send = Send("GET", target, headers, download=download)
        raise ArtifactError(f"more than {MAX_REDIRECTS} redirects from {url}",
                            code="client.too_many_redirects", status=response.status_code)
    finally:
        download.discard()


def content(conn: Connection, canvas: str, artifact_id: str, destination: Destination,
            from_ms: int | None, to_ms: int | None, progress: Progress | None) -> Op[int]:
    return _download(conn, conn.canvas_url(canvas, artifact_id, "content"),
                     _options(from_ms=from_ms, to_ms=to_ms), Download(destination, progress))


def export(conn: Connection, canvas: str, destination: Destination, kind: str | None,
           progress: Progress | None) -> Op[int]:
    """The canvas's tar (manifest.jsonl + payloads), streamed to `destination`."""
    return _download(conn, conn.canvas_url(canvas, "export"), _options(kind=kind),
                     Download(destination, progress))


@dataclass
class Pager:
    """Every page of a listing, one operation per page, following `next_cursor`."""

    conn: Connection
    canvas: str
    params: dict[str, str | int]
    cursor: str | None = None
    done: bool = False

    def next_page(self) -> Op[list[ArtifactRecord]] | None:
        """The operation that reads the next page, or None after the last one."""
        return None if self.done else self._page()

    def _page(self) -> Op[list[ArtifactRecord]]:
        params = {**self.params, **_options(cursor=self.cursor)}
        page = yield from _read(self.conn, ArtifactList, self.conn.canvas_url(self.canvas),
                                params)
        self.cursor, self.done = page.next_cursor, page.next_cursor is None
        return page.items


def pages(conn: Connection, canvas: str, kind: str | None, rev: int | None,
          page_size: int) -> Pager:
    return Pager(conn, canvas, _options(kind=kind, rev=rev, limit=page_size))


# ---- writes that make no artifact -------------------------------------------


def delete(conn: Connection, canvas: str, artifact_id: str) -> Op[None]:
    """Retried like the rest: a 404 after an attempt whose answer was lost is success."""
    yield from exchange(conn, Send("DELETE", conn.canvas_url(canvas, artifact_id),
                                   conn.headers()), gone_is_done=True)


def signed_url(conn: Connection, canvas: str, artifact_id: str, ttl_seconds: int,
               variant: dict[str, str | int | None]) -> Op[SignedUrl]:
    body = _json({"ttl_seconds": ttl_seconds, **_options(**variant)})
    send = Send("POST", conn.canvas_url(canvas, artifact_id, "signed-url"),
                {**conn.headers(), "Content-Type": JSON}, body=body)
    response = yield from exchange(conn, send)
    return _parsed(SignedUrl, response)


# ---- the event feed ---------------------------------------------------------


class EventFeed:
    """An SSE subscription that resumes by itself: the request for the next connection
    (with `Last-Event-ID` = the last seq seen), the parser for its lines, and the pause
    before reconnecting. Consecutive failed connections are bounded by the retry
    policy; a connection that opened resets the count."""

    def __init__(self, conn: Connection, canvas: str | None, after: int | None) -> None:
        self.conn = conn
        self.url = conn.url("artifacts", "events") if canvas is None else conn.canvas_url(
            canvas, "events")
        self.last = after
        self._failures = 0
        self._fields: dict[str, str] = {}

    def request(self) -> Send:
        headers = {**self.conn.headers(), "Accept": "text/event-stream"}
        if self.last is not None:
            headers["Last-Event-ID"] = str(self.last)
        self._fields = {}
        return Send("GET", self.url, headers)

    def opened(self, response: httpx.Response) -> bool:
        """Whether the answer is the stream (else its body is to be read, then `pause`)."""
        if response.status_code != 200:
            return False
        self._failures = 0
        return True

    def line(self, line: str) -> Event | None:
        """Feed one line of the stream; the event it completes, if any."""
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                self._fields[name] = value.removeprefix(" ")
            return None
        fields, self._fields = self._fields, {}
        if fields.get("id", "").isdigit():
            self.last = int(fields["id"])
        if "data" not in fields:
            return None
        return Event.model_validate_json(fields["data"])

    def pause(self, outcome: Outcome | None) -> float:
        """Seconds before reconnecting after the stream ended with `outcome` (None: it
        ended cleanly); raises ArtifactError when there is no point (401, 403, 404, 422,
        or retries exhausted)."""
        if outcome is None:
            return self.conn.retry.backoff
        self._failures += 1
        pause = self.conn.retry.pause(self._failures, outcome)
        if pause is not None:
            return pause
        if isinstance(outcome, httpx.TransportError):
            raise unreachable(outcome)
        raise from_response(outcome)
