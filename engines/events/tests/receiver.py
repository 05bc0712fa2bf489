"""A webhook receiver on 127.0.0.1 for tests: records each POST, answers as scripted."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests._http import serving


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """`script` is consumed one entry per request: a status code, or "hang" (no answer
    until released); when it is empty every request gets 204."""

    url: str = ""
    script: list[int | str] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} requests, wanted {count}")
            time.sleep(0.02)
        return list(self.requests)


@contextlib.contextmanager
def receiver(script: list[int | str] | None = None) -> Iterator[Receiver]:
    state = Receiver(script=list(script or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with state.lock:
                state.requests.append(Received(dict(self.headers.items()), body))
                action = state.script.pop(0) if state.script else 204
            if action == "hang":
                state.hanging.set()
                state.release.wait(30)
                return
            self.send_response(int(action))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    with serving(Handler) as url:
        state.url = f"{url}/hook"
        try:
            yield state
        finally:
            state.release.set()
