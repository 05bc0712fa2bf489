"""A lost reply to COMMIT: the create is resolved by reading, and a 201 means kept.

A TCP proxy sits between the service and a real PostgreSQL. Armed, it
forwards the next `COMMIT` to the server, lets the server apply it, then cuts
the connection so the reply never arrives. The service cannot know whether
its transaction committed. Before the fix it reran the transaction (finding
its own committed idempotency key, it answered a "replayed" 201) or answered
503, and in both cases deleted the blob of the committed record, whose
content then answered 503 `storage.blob_missing`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from conftest import PNG, Stack, new_canvas
from engines.canvas_artifacts.tests.helpers import blob_keys, create_preview, created, url

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


class CommitReplyDropper:
    """A loopback TCP proxy to PostgreSQL that can swallow one COMMIT's reply."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = 0
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            cut = threading.Event()
            for args in ((client, server, cut, True), (server, client, cut, False)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, cut: threading.Event,
              to_server: bool) -> None:
        with contextlib.suppress(OSError):
            while (data := src.recv(65536)) and not cut.is_set():
                if to_server and b"COMMIT" in data and self.armed.is_set():
                    self.armed.clear()
                    cut.set()  # from now on nothing reaches the client
                    self.dropped += 1
                    dst.sendall(data)
                    time.sleep(0.3)  # the server applies the COMMIT; its reply is dropped
                    break
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.closing = True
        self.listener.close()


@pytest.fixture
def proxied(make_stack, pg_url: str) -> Iterator[tuple[Stack, CommitReplyDropper]]:
    target = make_url(pg_url)
    proxy = CommitReplyDropper((target.host or "127.0.0.1", target.port or 5432))
    via_proxy = target.set(host="127.0.0.1", port=proxy.port,
                           query={"sslmode": "disable"}).render_as_string(hide_password=False)
    stack = make_stack("s3-postgres", database_url=via_proxy)
    yield stack, proxy
    proxy.close()


def assert_kept(stack: Stack, canvas: str, record: dict[str, object]) -> None:
    """Listed once, readable byte for byte, its blob in the store."""
    listed = stack.client.get(url(canvas), headers=stack.headers()).json()["items"]
    assert [item["id"] for item in listed] == [record["id"]]
    content = stack.client.get(url(canvas, f"/{record['id']}/content"), headers=stack.headers())
    assert content.status_code == 200, content.text
    assert content.content == PNG
    assert stack.runtime.store.key_for(str(record["uri"])) in blob_keys(stack)


def test_lost_commit_reply_without_a_key_answers_201_and_keeps_the_blob(proxied) -> None:
    stack, proxy = proxied
    canvas = new_canvas()
    proxy.armed.set()
    record = created(create_preview(stack, canvas))
    assert proxy.dropped == 1, "the proxy never saw the COMMIT: the test proved nothing"
    assert_kept(stack, canvas, record)


def test_lost_commit_reply_with_a_key_answers_201_then_replays_it(proxied) -> None:
    stack, proxy = proxied
    canvas = new_canvas()
    proxy.armed.set()
    first = create_preview(stack, canvas, Idempotency_Key="k-lost-commit")
    assert proxy.dropped == 1
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers, "the create itself succeeded"
    record = first.json()
    assert_kept(stack, canvas, record)

    retry = create_preview(stack, canvas, Idempotency_Key="k-lost-commit")
    assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == record
    assert_kept(stack, canvas, record)
