"""Body limits and stalls against the real server: cut off while streaming, memory flat."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from conftest import PNG, SIGNING_KEY
from engines.auth.tokens import issue_token
from engines.config import Settings
from tests._server import Server, running_server

pytestmark = pytest.mark.slow
LIMIT = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    workdir = tmp_path_factory.mktemp("limits")
    env = {"DATABASE_URL": f"sqlite:///{workdir}/engines.db",
           "MEDIA_LOCAL_ROOT": str(workdir / "media"), "AUTH_JWT_SIGNING": SIGNING_KEY,
           "MAX_PREVIEW_BYTES": str(LIMIT), "BODY_IDLE_TIMEOUT": "1"}
    with running_server(env, workdir) as srv:
        srv.workdir = workdir  # type: ignore[attr-defined]
        yield srv


def _request_head(server: Server, extra: str) -> bytes:
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana",
                        tenants=["t_acme"], role="member")
    return (f"POST /canvas/c_limits/artifacts/preview?rev=1 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {token}\r\n"
            "X-Tenant-Id: t_acme\r\nX-Env: dev\r\nX-Project-Id: p_main\r\n"
            f"Content-Type: image/png\r\n{extra}\r\n").encode()


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def _stored_files(server: Server) -> list[Path]:
    root = server.workdir / "media"  # type: ignore[attr-defined]
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_chunked_body_without_length_is_cut_at_the_limit_with_flat_memory(server: Server) -> None:
    """Up to 2 GiB offered with no Content-Length: 413 once the limit passes, nothing kept."""
    chunk = PNG + b"\0" * (1024 * 1024 - len(PNG))
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_request_head(server, "Transfer-Encoding: chunked\r\n"))
        try:
            while sent < 2 * 1024**3:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status = _status(sock)
    assert status == 413
    assert sent < 2 * 1024**3, "server kept reading past the limit"
    assert _stored_files(server) == []
    assert server.peak_rss_kib() < 150 * 1024


def test_declared_oversize_is_refused_before_reading(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_request_head(server, f"Content-Length: {2 * 1024**3}\r\n"))
        sock.sendall(PNG)
        assert _status(sock) == 413
    assert _stored_files(server) == []


def test_stalled_body_times_out_and_keeps_nothing(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_request_head(server, "Content-Length: 100000\r\n"))
        sock.sendall(PNG)
        started = time.monotonic()
        sock.settimeout(10)
        status = _status(sock)
    assert status == 408
    assert time.monotonic() - started < 5
    assert _stored_files(server) == []
