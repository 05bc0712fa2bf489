"""The runner's own HTTP: setup calls to a server (Client) and the load driver (load).

Client times each call (`elapsed`, the last one's wall seconds) so that a scenario can
time one request without timing what a wrapper does around it (bench.ab's Mirror sends
every setup call to REF's service too).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from typing import Any

import orjson

from bench import servers


class Client:
    """Plain requests from the runner for setup (not measured)."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port, self.headers = port, headers
        self.elapsed = 0.0

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            self.elapsed = time.perf_counter() - t0
            conn.close()

    def json(self, method: str, path: str, body: bytes | None = None, expect: int = 200,
             headers: dict[str, str] | None = None) -> Any:
        status, data = self.call(method, path, body, headers)
        if status != expect:
            raise RuntimeError(f"{method} {path}: {status} {data[:500]!r}")
        return orjson.loads(data)


def load(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in a separate load-driver process."""
    proc = subprocess.run([sys.executable, "-m", "bench.load"], input=json.dumps(job).encode(),
                          capture_output=True, cwd=servers.ROOT, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"load driver failed: {proc.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
