"""Run the real service as a subprocess (`engines serve`), for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ENGINES = Path(sys.executable).with_name("engines")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_kib(self) -> int:
        """VmHWM: the most resident memory the server process ever had."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc status")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path,
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()}")


@contextlib.contextmanager
def running_server(env: dict[str, str], workdir: Path, *, port: int | None = None,
                   workers: int = 1,
                   serve_args: Sequence[str] = ("--no-access-log", "--log-level", "warning"),
                   ) -> Iterator[Server]:
    """`engines serve` with env (on top of os.environ), ready when yielded."""
    port = port or free_port()
    log = workdir / f"server-{port}.log"
    full_env = {**os.environ, **env}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(ENGINES), "serve", "--port", str(port), "--workers", str(workers),
             *serve_args],
            cwd=workdir, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process=process, port=port, log=log)
    try:
        wait_ready(server.url, process, log)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, ten seconds to exit gracefully, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
