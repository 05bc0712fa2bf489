"""Test-side helpers: an SSE reader on its own thread, and the app served in-process.

The app runs under real uvicorn (a TestClient cannot hold an endless stream
open), in this process so a test can count the queries its engine makes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI

from tests._server import free_port


@dataclass
class Message:
    id: int | None = None
    event: str | None = None
    data: dict[str, Any] | None = None
    comment: str | None = None


@dataclass
class SseReader:
    """Reads one SSE stream on a thread; messages (comments too) land in a queue."""

    url: str
    headers: dict[str, str]
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    status: int | None = None
    refusal: httpx.Response | None = None
    """The whole answer when the server refused the stream (any status but 200)."""
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> SseReader:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream(
                "GET", self.url, headers=self.headers, timeout=httpx.Timeout(5, read=60)) as resp:
            self.status = resp.status_code
            self._response = resp
            if resp.status_code != 200:
                resp.read()
                self.refusal = resp
                return
            current = Message()
            for line in resp.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith(":"):
                    self.messages.put(Message(comment=line[1:].strip()))
                elif line.startswith("id: "):
                    current.id = int(line[4:])
                elif line.startswith("event: "):
                    current.event = line[7:]
                elif line.startswith("data: "):
                    current.data = orjson.loads(line[6:])
                elif line == "" and current.event:
                    self.messages.put(current)
                    current = Message()

    def admitted(self, timeout: float = 10.0) -> bool:
        """True once the stream is open (`: connected`), False if the server refused it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.refusal is not None:
                return False
            with contextlib.suppress(queue.Empty):
                if self.messages.get(timeout=0.05).comment == "connected":
                    return True
        raise TimeoutError(f"{self.url}: neither connected nor refused within {timeout} s")

    def next_event(self, timeout: float = 10.0) -> Message:
        """The next event, skipping comments."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if message.event:
                return message

    def next_comment(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if message.comment is not None:
                return message.comment

    def events_so_far(self, settle: float = 0.5) -> list[Message]:
        """Events that arrive until none came for `settle` seconds (comments ignored)."""
        found = []
        quiet_until = time.monotonic() + settle
        while (left := quiet_until - time.monotonic()) > 0:
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if message.event:
                found.append(message)
                quiet_until = time.monotonic() + settle
        return found

    def close(self) -> None:
        """Stop reading and drop the connection, so the server sees the client go."""
        self._stop.set()
        response = getattr(self, "_response", None)
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()


@contextlib.contextmanager
def readers() -> Iterator[list[SseReader]]:
    opened: list[SseReader] = []
    try:
        yield opened
    finally:
        for reader in opened:
            reader.close()
        for reader in opened:
            reader._thread.join(timeout=5)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Run the app under uvicorn (lifespan on) on a loopback port; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("in-process server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
