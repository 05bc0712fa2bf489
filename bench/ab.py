"""`python -m bench.run --against REF`: the same scenarios on REF's service, in the same run.

REF (a commit) is checked out in a temporary detached git worktree. Its service runs
under this venv's interpreter with `PYTHONPATH=<worktree>`, so the `engines` package
it imports is REF's; it has its own data directory (or scratch PostgreSQL database and
bucket), migrated and seeded by REF's code (`bench/seed.py` run as a script under REF's
path). In every throughput scenario the current service, REF's and the baseline take
turns round by round; the sequential scenarios run REF right after the current service.

Setup calls go through `Mirror`: each is sent to both services, and the ids REF answered
with stand in for the current service's ids in REF's jobs. A scenario REF cannot serve
(its route or feature is missing) leaves the row uncompared, and the table says so.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import servers
from bench.client import Client, load

TOLERANCE = 0.05  # a row is "slower than REF" only past 5%: round-to-round noise here
HIGHER_IS_BETTER = ("req/s", "MiB/s")  # every other metric (ms, CPU, RSS, bytes): lower


@dataclass
class Checkout:
    """REF in a detached worktree, removed again (`git worktree remove`) at the end."""

    ref: str
    path: Path
    commit: str

    @classmethod
    def add(cls, ref: str) -> Checkout:
        commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()
        path = Path(tempfile.mkdtemp(prefix="engines-bench-ref-"))
        _git("worktree", "add", "--detach", str(path), commit)
        return cls(ref, path, commit)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            _git("worktree", "remove", "--force", str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=servers.ROOT, check=True, capture_output=True,
                          text=True).stdout


@dataclass
class Side:
    """REF's service: its environment, process, client and what to clean up."""

    checkout: Checkout
    env: dict[str, str]
    work: Path
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    proc: servers.Proc | None = None

    @property
    def label(self) -> str:
        return self.checkout.ref

    def prepare(self, rows: int, admin_pg_url: str | None,
                create_bucket: Callable[[str], None] | None) -> float:
        """REF's own backends (same kinds as the current service's), migrated and seeded
        by REF's code; returns the seed's seconds."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.env.update({"PYTHONPATH": str(self.checkout.path),
                         "MEDIA_LOCAL_ROOT": str(self.work / "media")})
        if admin_pg_url is not None and create_bucket is not None:
            scratch = servers.ScratchDatabase(admin_pg_url)
            scratch.__enter__()
            self.cleanups.append(lambda: scratch.__exit__(None, None, None))
            self.env["DATABASE_URL"] = scratch.url()
            self.env["RAW_BUCKET"] = "engines-bench-ref"
            create_bucket(self.env["RAW_BUCKET"])
        else:
            self.env["DATABASE_URL"] = f"sqlite:///{self.work / 'engines.db'}"
        where = self._python("import engines; print(engines.__file__)").strip()
        if not where.startswith(str(self.checkout.path)):
            raise RuntimeError(f"REF's interpreter imports engines from {where}")
        seeded = self._python(None, str(servers.ROOT / "bench" / "seed.py"), str(rows))
        return float(seeded.split()[-1])

    def _python(self, code: str | None, *args: str) -> str:
        cmd = [sys.executable, *(("-c", code) if code else ()), *args]
        proc = subprocess.run(cmd, env=self.env, cwd=self.checkout.path, capture_output=True,
                              text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[1:]} under {self.label}: {proc.stderr[-2000:]}")
        return proc.stdout

    def start(self, workers: int) -> servers.Proc:
        self.proc = servers.launch_service(self.env, workers, self.work, name="ref",
                                           cwd=self.checkout.path)
        self.cleanups.append(self.proc.stop)
        self.proc.wait_ready("/healthz")
        self.proc.wait_workers(workers)
        return self.proc

    def upload(self, path: str, size: int, headers: dict[str, str],
               s3: Any = None) -> dict[str, Any] | None:
        """The upload scenario's streamed POST on REF's service: the load driver's result
        plus `server_cpu_s` and `memory` (VmHWM, reset first); None if REF refused it.
        The stored object is deleted again from an S3 bucket (moto keeps it in memory)."""
        assert self.proc is not None
        pid = self.proc.pid
        servers.reset_peaks(pid)
        cpu0 = servers.cpu_seconds(pid)
        result = load({"kind": "stream_upload", "host": "127.0.0.1", "port": self.proc.port,
                       "path": path, "size": size, "headers": headers})
        result["server_cpu_s"] = servers.cpu_seconds(pid) - cpu0
        result["memory"] = servers.memory(pid)
        if result["status"] != 201:
            return None
        uri = orjson.loads(result["body"]).get("uri", "")
        if s3 is not None and uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            s3.delete_object(Bucket=bucket, Key=key)
        return result

    def stop(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                print(f"REF cleanup failed: {exc}", file=sys.stderr)


class Mirror(Client):
    """The current service's setup client that repeats every call on REF's service.

    It answers with the current service's reply (and `elapsed`, that call alone);
    REF's reply sets `ref_elapsed` (None when REF answered another status) and teaches
    `ids` which of REF's ids stands for which of the current service's.
    """

    def __init__(self, head: Client, ref: Client) -> None:
        super().__init__(head.port, head.headers)
        self.head, self.ref = head, ref
        self.ids: dict[str, str] = {}
        self.ref_elapsed: float | None = None

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, bytes]:
        status, data = self.head.call(method, path, body, headers, timeout)
        self.elapsed = self.head.elapsed
        try:
            ref_status, ref_data = self.ref.call(method, self.translate(path), body, headers,
                                                 timeout)
        except (OSError, http.client.HTTPException):
            ref_status, ref_data = 0, b""
        self.ref_elapsed = self.ref.elapsed if ref_status == status else None
        if ref_status == status:
            self._learn(data, ref_data)
        return status, data

    def _learn(self, head: bytes, ref: bytes) -> None:
        try:
            mine, theirs = orjson.loads(head), orjson.loads(ref)
        except orjson.JSONDecodeError:
            return
        if isinstance(mine, dict) and isinstance(theirs, dict) \
                and isinstance(mine.get("id"), str) and isinstance(theirs.get("id"), str):
            self.ids[mine["id"]] = theirs["id"]

    def translate(self, text: str) -> str:
        for mine, theirs in self.ids.items():
            if mine in text:
                text = text.replace(mine, theirs)
        return text

    def job(self, job: dict[str, Any], port: int) -> dict[str, Any]:
        """The current service's load job, aimed at REF's service."""
        out = {**job, "port": port}
        if "path" in job:
            out["path"] = self.translate(job["path"])
        if "paths" in job:
            out["paths"] = [self.translate(p) for p in job["paths"]]
        return out


def start(checkout: Checkout, env: dict[str, str], work: Path, workers: int, rows: int,
          admin_pg_url: str | None, create_bucket: Callable[[str], None] | None) -> Side:
    """Prepare and start REF's service beside the current one (its own backends)."""
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    side = Side(checkout, env, work / "ref")
    try:
        side.prepare(rows, admin_pg_url, create_bucket)
        side.start(workers)
    except BaseException:
        side.stop()
        raise
    return side


# ---- the "vs REF" column ---------------------------------------------------------------


def ratio(row: dict[str, Any]) -> float | None:
    """HEAD / REF for this row's metric, or None when REF's value is missing."""
    head, ref = row.get("service"), row.get("ref")
    return head / ref if head is not None and ref else None


def slower(row: dict[str, Any], tolerance: float) -> bool:
    """Worse than REF by more than the tolerance, in the direction the metric counts."""
    value = ratio(row)
    if value is None:
        return False
    if row["metric"] in HIGHER_IS_BETTER:
        return value < 1 - tolerance
    return value > 1 + tolerance


def cell(row: dict[str, Any], tolerance: float) -> str:
    value = ratio(row)
    if value is None:
        return "n/c  "
    return f"{value:.2f}x" + (" !" if slower(row, tolerance) else "  ")


def summary(rows: list[dict[str, Any]], label: str, tolerance: float) -> list[str]:
    """The lines under the table: rows slower than REF, and rows not compared."""
    titled, bad, uncompared = "", [], []
    for row in rows:
        titled = row["scenario"].strip() or titled
        name = f"{titled}: {row['metric']}"
        if row.get("ref") is None:
            if titled not in uncompared:
                uncompared.append(titled)
        elif slower(row, tolerance):
            bad.append(f"  {name} {ratio(row):.2f}x")
    direction = (f"{' or '.join(HIGHER_IS_BETTER)} lower, any other metric higher, "
                 f"by more than {tolerance:.0%}")
    lines = [f"rows slower than {label} ({direction}): {len(bad) or 'none'}", *bad]
    if uncompared:
        lines.append(f"rows not compared with {label} (not measured on it, or its service "
                     f"could not serve them): " + "; ".join(uncompared))
    return lines

