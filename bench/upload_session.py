"""One preview sent through an upload session, as a client sends it: open, PUT parts, complete.

    python -m bench.upload_session --url http://127.0.0.1:8010 --token TOKEN \
        --tenant t_demo --size 1GiB [--parallel 4]

Parts go where the session says: presigned S3 URLs (straight to the bucket) or the
service's own part URLs (local store), `--parallel` at a time, each produced in
memory (PNG magic first, then a fixed pattern) so the client reads no disk. Prints
one JSON line: status, wall seconds, MiB/s, the record. `bench.run` wires it into
the table next to the same preview as one raw-body POST to the API.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from bench.load import PNG_MAGIC

MIB = 1 << 20
_PATTERN = bytes(range(256)) * (MIB // 256)


def part_body(number: int, size: int) -> bytes:
    """Part `number`'s bytes: the first part starts with the PNG magic."""
    body = (_PATTERN * (size // len(_PATTERN) + 1))[:size]
    return PNG_MAGIC + body[len(PNG_MAGIC):] if number == 1 else body


def _request(method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _json(method: str, url: str, headers: dict[str, str], body: dict[str, Any] | None = None,
          expect: int = 201) -> dict[str, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    status, reply = _request(method, url, raw, {**headers, "Content-Type": "application/json"})
    if status != expect:
        raise RuntimeError(f"{method} {url}: {status} {reply[:500]!r}")
    return dict(json.loads(reply))


def upload(base_url: str, headers: dict[str, str], canvas: str, size: int, *,
           parallel: int = 4, rev: int = 1) -> dict[str, Any]:
    """Open a session for `size` bytes, send its parts, complete it; timed end to end."""
    base = f"{base_url.rstrip('/')}/canvas/{canvas}/artifacts/preview/uploads"
    t0 = time.perf_counter()
    session = _json("POST", f"{base}?rev={rev}", headers,
                    {"size_bytes": size, "mime_type": "image/png"})

    def send(part: dict[str, Any]) -> None:
        status, reply = _request("PUT", part["url"], part_body(part["part_number"],
                                                               part["size"]))
        if status != 200:
            raise RuntimeError(f"part {part['part_number']}: {status} {reply[:300]!r}")

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(send, session["parts"]))
    record = _json("POST", f"{base}/{session['id']}/complete", headers)
    elapsed = time.perf_counter() - t0
    return {"status": 201, "elapsed_s": elapsed, "size": size,
            "mib_per_s": size / elapsed / MIB, "parts": session["part_count"],
            "direct": session["direct"], "record": record}


def main() -> None:
    from engines.canvas_artifacts.quotas import parse_size

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--env", default="dev")
    parser.add_argument("--project", default="p_bench")
    parser.add_argument("--canvas", default="c_bench_session")
    parser.add_argument("--size", default="1GiB", type=parse_size)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}", "X-Tenant-Id": args.tenant,
               "X-Env": args.env, "X-Project-Id": args.project}
    print(json.dumps(upload(args.url, headers, args.canvas, args.size,
                            parallel=args.parallel)))


if __name__ == "__main__":
    main()
