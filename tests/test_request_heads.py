"""Request heads, connections and slow downloads against the real server, on raw sockets.

No login is needed to open a socket, so these limits protect everyone:
a request head is bounded in size (431, never buffered whole) and in time
(a connection that has not sent its head within HEADER_TIMEOUT is closed),
a process holds at most MAX_CONNECTIONS connections, and the body-idle
deadline applies to request bodies, never to a client reading slowly.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from conftest import PNG, SIGNING_KEY
from engines.auth.tokens import issue_token
from engines.config import Settings
from tests._server import Server, running_server

pytestmark = pytest.mark.slow
HEAD_LIMIT = Settings().max_header_bytes
HEADER_TIMEOUT = 1


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{workdir}/engines.db",
            "MEDIA_LOCAL_ROOT": str(workdir / "media"), "AUTH_JWT_SIGNING": SIGNING_KEY, **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("heads")
    with running_server(_env(workdir, BODY_IDLE_TIMEOUT="1",
                             HEADER_TIMEOUT=str(HEADER_TIMEOUT)), workdir) as srv:
        yield srv


@contextlib.contextmanager
def _connect(server: Server, timeout: float = 15) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        yield sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers and the Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response head: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split(" ", 2)[1]), headers, body


def _closed(sock: socket.socket) -> bool:
    """The server hung up (EOF or reset) rather than leaving the socket open."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}".encode()


# ---- size ------------------------------------------------------------------------------------


def test_a_head_over_the_limit_is_431_and_the_connection_closes(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(_get("/healthz", "X-Big: ") + b"a" * (HEAD_LIMIT + 4096))
        status, headers, body = _read_response(sock)
        assert status == 431
        assert headers["connection"] == "close"
        assert orjson.loads(body)["error"]["code"] == "request.header_too_large"
        assert _closed(sock)


def test_many_headers_adding_up_past_the_limit_are_431(server: Server) -> None:
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(HEAD_LIMIT // 1000 + 2))
    with _connect(server) as sock:
        sock.sendall(_get("/healthz") + many + b"Content-Length: 4\r\n\r\nbody")
        assert _read_response(sock)[0] == 431
        assert _closed(sock), "one answer, then the connection closes"


def test_a_head_under_the_limit_is_served(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(_get("/healthz", f"X-Big: {'a' * (HEAD_LIMIT - 1024)}\r\n\r\n"))
        assert _read_response(sock)[0] == 200


def test_an_endless_header_is_cut_off_and_never_buffered(server: Server) -> None:
    """100 MB of one header line used to be read whole (300 MB of RSS)."""
    offered, sent = 256 * 1024 * 1024, 0
    chunk = b"a" * (1024 * 1024)
    with _connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.sendall(_get("/healthz", "X-Big: "))
        try:
            while sent < offered:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 32 * 1024 * 1024, "the server kept reading the header"
    assert server.peak_rss_kib() < 150 * 1024
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# ---- time ------------------------------------------------------------------------------------


def test_a_partial_head_is_answered_408_and_closed(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(_get("/healthz", "X-Slow: 1\r\n"))
        status, _headers, body = _read_response(sock)
        assert status == 408
        assert orjson.loads(body)["error"]["code"] == "request.timeout"
        assert _closed(sock)


def test_a_silent_connection_is_closed(server: Server) -> None:
    with _connect(server) as sock:
        assert _closed(sock)


def test_dribbling_a_head_does_not_extend_the_deadline(server: Server) -> None:
    """One byte at a time keeps a socket busy but never completes: the clock is per head."""
    with _connect(server) as sock:
        sock.sendall(_get("/healthz"))
        deadline = time.monotonic() + HEADER_TIMEOUT * 10
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() < deadline:
                sock.sendall(b"X")
                time.sleep(0.05)
        assert time.monotonic() < deadline, "still accepting header bytes"


def test_an_idle_kept_alive_connection_is_not_cut_by_the_head_timeout(server: Server) -> None:
    """Between requests the keep-alive timeout (30 s) applies; each new head gets its clock."""
    with _connect(server) as sock:
        for _ in range(2):
            sock.sendall(_get("/healthz", "\r\n"))
            assert _read_response(sock)[0] == 200
            time.sleep(HEADER_TIMEOUT * 1.5)
        sock.sendall(_get("/healthz", "Connection: close\r\n\r\n"))
        assert _read_response(sock)[0] == 200


# ---- slow downloads (body idle timeout) ------------------------------------------------------


def test_a_slow_download_gets_every_byte_with_a_short_body_idle_timeout(server: Server) -> None:
    """BODY_IDLE_TIMEOUT=1 used to cut a download once it ran past one second."""
    data = PNG + bytes(range(256)) * (8 * 4096)
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana", tenants=["t_acme"],
                        role="member")
    auth = (f"Authorization: Bearer {token}\r\nX-Tenant-Id: t_acme\r\nX-Env: dev\r\n"
            "X-Project-Id: p_main\r\n")
    created = httpx.post(f"{server.url}/canvas/c_slow/artifacts/preview?rev=1", content=data,
                         headers={"Authorization": f"Bearer {token}", "X-Tenant-Id": "t_acme",
                                  "X-Env": "dev", "X-Project-Id": "p_main",
                                  "Content-Type": "image/png"}, timeout=30)
    assert created.status_code == 201, created.text
    path = f"/canvas/c_slow/artifacts/{created.json()['id']}/content"

    received = bytearray()
    started = time.monotonic()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(15)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(_get(path, auth + "Connection: close\r\n\r\n"))
        while chunk := sock.recv(64 * 1024):  # about 1.6 MiB/s: some 5 s for 8 MiB
            received += chunk
            time.sleep(0.04)
    assert time.monotonic() - started > 3, "the download was not slow: the test proves nothing"
    head, body = bytes(received).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == len(data)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()

    with _connect(server) as sock:  # HEAD on the wire: the length, no body, framing intact
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
        sock.sendall(_get("/healthz", "Connection: close\r\n\r\n"))
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    first, second = reply.split(b"HTTP/1.1 ", 2)[1:]
    assert first.startswith(b"200") and f"content-length: {len(data)}".encode() in first
    assert first.endswith(b"\r\n\r\n"), "no body after a HEAD's headers"
    assert second.startswith(b"200") and second.endswith(b'{"status":"ok"}')


# ---- connections -----------------------------------------------------------------------------


def test_connections_beyond_max_connections_are_refused(tmp_path: Path) -> None:
    with (running_server(_env(tmp_path, MAX_CONNECTIONS="3"), tmp_path) as srv,
          contextlib.ExitStack() as open_sockets):
        held = [open_sockets.enter_context(_connect(srv)) for _ in range(3)]
        for sock in held:  # each one served, then kept alive
            sock.sendall(_get("/healthz", "\r\n"))
            assert _read_response(sock)[0] == 200
        with _connect(srv) as extra:
            extra.sendall(_get("/healthz", "\r\n"))
            status, headers, _body = _read_response(extra)
            assert status == 503
            assert headers["connection"] == "close"
            assert _closed(extra)
        held[0].close()
        # the freed slot is reused once the server has seen the close
        deadline = time.monotonic() + 10
        while httpx.get(f"{srv.url}/healthz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
