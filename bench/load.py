"""The load driver: run in its own process, speaks HTTP/1.1 over keep-alive sockets.

`python -m bench.load` reads one job as JSON on stdin and prints the result as
JSON on stdout. A small asyncio client (uvloop when installed) is used rather
than httpx so that the client costs as little CPU as possible: on a 2-core
machine the driver shares the cores with the server it measures.

Job kinds:
- "fixed": `concurrency` connections, each sending requests back to back for
  `duration` seconds (after `warmup` seconds that are not counted), or for
  `count` requests in total. Bodies come from `body_file` (read once). With
  `numbered`, each request's path has its `{n}` replaced by a number no other
  request (of any driver process) gets: a new artifact path per upload.
- "stream_upload": one POST whose body (`size` bytes, PNG magic first) is
  produced chunk by chunk, never held in memory; reports wall time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

CHUNK = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class HttpError(Exception):
    pass


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    bytes_in: int = 0
    completed: int = 0  # every reply, warm-up included (for CPU per request)


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port,
                                                                 limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    def head(self, method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(self, method: str, path: str, headers: dict[str, str],
                   body: bytes | None) -> Reply:
        if self.writer is None:
            await self.open()
        assert self.writer is not None
        length = len(body) if body is not None else (0 if method in ("POST", "PUT") else None)
        self.writer.write(self.head(method, path, headers, length))
        if body:
            self.writer.write(body)
        await self.writer.drain()
        return await self.read_reply()

    async def send_stream(self, method: str, path: str, headers: dict[str, str], size: int,
                          chunks) -> Reply:
        if self.writer is None:
            await self.open()
        assert self.writer is not None
        self.writer.write(self.head(method, path, headers, size))
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()
        return await self.read_reply()

    async def read_reply(self) -> Reply:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            pieces = []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                pieces.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(pieces)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await self.reader.read()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Reply(status, headers, body)


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(stats: Stats, elapsed: float, expect: int) -> dict[str, Any]:
    lat = sorted(stats.latencies)
    ok = stats.statuses.get(expect, 0)
    return {
        "requests": len(lat), "ok": ok, "statuses": {str(k): v for k, v in stats.statuses.items()},
        "errors": stats.errors[:5], "error_count": len(lat) - ok + len(stats.errors),
        "elapsed_s": elapsed, "rps": ok / elapsed if elapsed > 0 else None,
        "p50_ms": _ms(percentile(lat, 50)), "p90_ms": _ms(percentile(lat, 90)),
        "p99_ms": _ms(percentile(lat, 99)), "max_ms": _ms(lat[-1] if lat else None),
        "mean_ms": _ms(sum(lat) / len(lat) if lat else None),
        "bytes_in": stats.bytes_in, "completed": stats.completed,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def run_fixed(job: dict[str, Any]) -> dict[str, Any]:
    host, port = job["host"], job["port"]
    method, headers, expect = job["method"], job.get("headers", {}), job.get("expect", 200)
    paths: list[str] = job["paths"] if "paths" in job else [job["path"]]
    body = None
    if job.get("body_file"):
        with open(job["body_file"], "rb") as fh:
            body = fh.read()
    concurrency = int(job.get("concurrency", 1))
    duration, warmup = float(job.get("duration", 0)), float(job.get("warmup", 0))
    count = job.get("count")
    stats = Stats()
    issued = 0
    numbered = f"{os.getpid()}-" if job.get("numbered") else None
    sequence = itertools.count()
    counting = False
    start_at = stop_at = 0.0

    async def worker(index: int) -> None:
        nonlocal issued
        conn = Connection(host, port)
        await conn.open()
        n = index
        try:
            while True:
                now = time.perf_counter()
                if count is None and now >= stop_at:
                    return
                if count is not None:
                    if issued >= count:
                        return
                    issued += 1
                path = paths[n % len(paths)]
                if numbered is not None:
                    path = path.replace("{n}", f"{numbered}{next(sequence)}")
                n += concurrency
                t0 = time.perf_counter()
                try:
                    reply = await conn.send(method, path, headers, body)
                except (OSError, asyncio.IncompleteReadError, HttpError) as exc:
                    if counting:
                        stats.errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    continue
                t1 = time.perf_counter()
                stats.completed += 1
                if not counting or (count is None and t1 > stop_at):
                    continue
                stats.latencies.append(t1 - t0)
                stats.statuses[reply.status] = stats.statuses.get(reply.status, 0) + 1
                stats.bytes_in += len(reply.body)
                if reply.status != expect and len(stats.errors) < 5:
                    stats.errors.append(f"{reply.status}: {reply.body[:300]!r}")
        finally:
            conn.close()

    if warmup > 0 and count is None:
        stop_at = time.perf_counter() + warmup
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    counting = True
    start_at = time.perf_counter()
    stop_at = start_at + duration
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = (min(time.perf_counter(), stop_at) if count is None else time.perf_counter()) \
        - start_at
    result = summarize(stats, elapsed, expect)
    if job.get("return_latencies"):
        result["latencies"] = stats.latencies
    return result


def upload_chunks(size: int):
    """size bytes starting with the PNG magic, produced lazily from one reused buffer."""
    first = PNG_MAGIC + bytes(range(256)) * (CHUNK // 256)
    first = first[:CHUNK]
    filler = memoryview(bytes(range(256)) * (CHUNK // 256))
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        yield first[:n] if sent == 0 else filler[:n]
        sent += n


async def run_stream_upload(job: dict[str, Any]) -> dict[str, Any]:
    conn = Connection(job["host"], job["port"])
    await conn.open()
    size = int(job["size"])
    t0 = time.perf_counter()
    reply = await conn.send_stream("POST", job["path"], job.get("headers", {}), size,
                                   upload_chunks(size))
    elapsed = time.perf_counter() - t0
    conn.close()
    return {"status": reply.status, "elapsed_s": elapsed, "size": size,
            "mib_per_s": size / elapsed / (1 << 20),
            "body": reply.body[:2000].decode("utf-8", "replace")}


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    if job["kind"] == "fixed":
        return await run_fixed(job)
    if job["kind"] == "stream_upload":
        return await run_stream_upload(job)
    raise SystemExit(f"unknown job kind {job['kind']!r}")


def main() -> None:
    job = json.load(sys.stdin)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    result = runner(run_job(job))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
