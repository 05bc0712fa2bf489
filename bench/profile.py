"""Where a create's time goes: py-spy on every worker of a real `engines serve` under load.

    make bench-profile                                    # local dir + SQLite, c=16, 10 s
    .venv/bin/python -m bench.profile --combo s3pg        # moto S3 + a scratch PostgreSQL
    .venv/bin/python -m bench.profile --path fetch        # the content GET instead

The service runs as `make bench` runs it (`engines serve --workers W`, default
settings); `bench/load.py` drives it at fixed concurrency; `py-spy record
--gil` samples each worker (only the thread holding the GIL, so a sample is
Python work that keeps every other thread of the process waiting) while the
load runs; then the same for the bare app (`bench/baseline.py`: the same store
and request, as `make bench` compares them). Each report gives the share of
the time each worker held the GIL, then every sample put in one bucket by the
first rule below that a frame of its stack matches (most specific first), then
the functions the samples were in. `--raw DIR` keeps py-spy's stacks for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import servers
from bench.client import load
from bench.run import Client, png_body

TENANT, ENV, PROJECT = "t_bench", "prod", "p_bench"
RATE = 250
"""py-spy samples per second and worker."""

BUCKETS: list[tuple[str, re.Pattern[str]]] = [
    ("metadata transaction (SQL statements, COMMIT)",
     re.compile(r"SqliteWriter\._commit_batch|_in_transaction \(engines/db/writer|"
                r"retry_on_disconnect|sqlalchemy/engine|psycopg/")),
    ("blob write and hash (store, sha256)",
     re.compile(r"engines/storage/(local|s3|ingest)\.py\)|botocore/|boto3/")),
    ("thread hand-offs (anyio, futures)",
     re.compile(r"anyio/|concurrent/futures|SqliteWriter\.submit|wrap_future")),
    ("response send (send wrappers, uvicorn write)",
     re.compile(r"Response\.__call__ \(starlette|RequestResponseCycle\.send ")),
    ("records: pydantic models, lineage, ids, JSON",
     re.compile(r"engines/canvas_artifacts/commit\.py|engines/lineage/|engines/common/ids")),
    ("auth and routing headers", re.compile(r"engines/auth/")),
    ("endpoint: lean dispatch, body, quota check, content",
     re.compile(r"engines/canvas_artifacts/|engines/http/|engines/create\.py")),
    ("metrics and request log", re.compile(r"engines/observability/|prometheus_client/")),
    ("the bare app's own handler", re.compile(r"bench/baseline\.py")),
    ("ASGI middleware and routing (Starlette, FastAPI)",
     re.compile(r"starlette/|fastapi/|engines/")),
    ("HTTP protocol (uvicorn, httptools)", re.compile(r"uvicorn/|httptools")),
    ("event loop (asyncio, uvloop)", re.compile(r"asyncio/|uvloop")),
]


def bucket_of(frames: list[str]) -> str:
    for name, pattern in BUCKETS:
        if any(pattern.search(frame) for frame in frames):
            return name
    return "other"


def report(raw_files: list[Path], seconds: float, requests: int) -> str:
    """The text report from py-spy's raw (collapsed) stacks, one file per worker."""
    buckets: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    lines: list[str] = []
    shares: dict[str, float] = {}
    total = 0
    for path in raw_files:
        samples = 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue  # the blank line py-spy may end with
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            n = int(count)
            samples += n
            buckets[bucket_of(frames)] += n
            own[frames[-1]] += n
        if samples:
            shares[path.stem] = samples / (seconds * RATE)
        total += samples
    if not total:
        return "no samples (is py-spy allowed to attach? run as root or with ptrace rights)"
    per_request_ms = 1000 * total / RATE / max(1, requests)
    if len(shares) < len(raw_files) or min(shares.values()) < max(shares.values()) / 5:
        lines.append("note: py-spy sampled one worker far less than another (it lost that "
                     "process?): the shares hold, the ms/req undercount; run again")
    held = ", ".join(f"{name}: {100 * share:.0f}%" for name, share in shares.items())
    lines.append(f"GIL held, per worker: {held}; {per_request_ms:.2f} ms of "
                 f"GIL-holding work per request ({total} samples, {requests} requests)")
    lines.append("\nwhere it goes (each sample in the first bucket a frame of its stack matches):")
    for name, n in buckets.most_common():
        lines.append(f"  {100 * n / total:5.1f}%  {per_request_ms * n / total:6.3f} ms/req  {name}")
    lines.append("\nfunctions the samples were in (own time, top 25):")
    for frame, n in own.most_common(25):
        lines.append(f"  {100 * n / total:5.1f}%  {frame[:110]}")
    return "\n".join(lines)


@contextlib.contextmanager
def backends(combo: str, work: Path, admin_url: str) -> Iterator[dict[str, str]]:
    """The service's environment for `combo`, its backends up and migrated."""
    from engines.config import Settings
    from engines.db.engine import build_engine
    from engines.db.migrate import upgrade

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "RAW_BUCKET",
                                                            "AWS_ENDPOINT_URL_S3", "PYTHONPATH")}
    env.update({"AUTH_JWT_SIGNING": "profile-signing-key-" + "p" * 32,
                "MEDIA_LOCAL_ROOT": str(work / "media"), "AUTO_MIGRATE": "false"})
    with contextlib.ExitStack() as stack:
        if combo == "s3pg":
            credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1"}
            env.update(credentials, RAW_BUCKET="engines-profile")
            os.environ.update(credentials)  # for this process's own client (the bucket)
            moto = servers.start_moto(env, work)
            stack.callback(moto.stop)
            env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{moto.port}"
            scratch = stack.enter_context(servers.ScratchDatabase(admin_url))
            env["DATABASE_URL"] = scratch.url()
        else:
            env["DATABASE_URL"] = f"sqlite:///{work / 'engines.db'}"
        settings = Settings(database_url=env["DATABASE_URL"], raw_bucket=env.get("RAW_BUCKET"),
                            aws_endpoint_url_s3=env.get("AWS_ENDPOINT_URL_S3"),
                            media_local_root=work / "media")
        if combo == "s3pg":
            from engines.storage.factory import build_blob_store

            build_blob_store(settings).client.create_bucket(  # type: ignore[attr-defined]
                Bucket="engines-profile")
        engine = build_engine(settings)
        upgrade(engine)
        engine.dispose()
        yield env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combo", choices=("local", "s3pg"), default="local")
    parser.add_argument("--path", choices=("create", "fetch"), default="create")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks in this directory")
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed: `make bench-profile` installs it into .venv")
        return 2
    work = Path(tempfile.mkdtemp(prefix="engines-profile-"))
    try:
        with backends(args.combo, work, args.pg_admin_url) as env:
            return profile(args, env, work, spy)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def profile(args: argparse.Namespace, env: dict[str, str], work: Path, spy: str) -> int:
    """The service's report, then the bare app's (`bench/baseline.py`) doing the same
    request on the same store: what is left when the service's own logic is gone."""
    from engines.auth.tokens import issue_token
    from engines.config import Settings

    body = work / "preview-64k.png"
    body.write_bytes(png_body(64 * 1024))
    with running(servers.launch_service(env, args.workers, work), args.workers) as service:
        token = issue_token(Settings(auth_jwt_signing=env["AUTH_JWT_SIGNING"]), sub="u_profile",
                            tenants=[TENANT], role="owner", ttl=3600)
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": TENANT, "X-Env": ENV,
                   "X-Project-Id": PROJECT}
        job = {"kind": "fixed", "host": "127.0.0.1", "port": service.port,
               "concurrency": args.concurrency, "method": "POST", "expect": 201,
               "path": "/canvas/c_profile/artifacts/preview?rev=1", "body_file": str(body),
               "headers": {**headers, "Content-Type": "image/png"}}
        if args.path == "fetch":
            record = Client(service.port, headers).json(
                "POST", job["path"], body.read_bytes(), 201, {"Content-Type": "image/png"})
            job = {**job, "method": "GET", "expect": 200, "headers": headers,
                   "path": f"/canvas/c_profile/artifacts/{record['id']}/content"}
            job.pop("body_file")
        print(measure(args, spy, service, job, work / "raw-service", "service"))
    with running(servers.launch_baseline(env, args.workers, work), args.workers) as bare:
        job = {"kind": "fixed", "host": "127.0.0.1", "port": bare.port,
               "concurrency": args.concurrency, "method": "POST", "expect": 201,
               "path": "/blobs", "body_file": str(body), "headers": {"Content-Type": "image/png"}}
        if args.path == "fetch":
            key = Client(bare.port, {}).json("POST", "/blobs", body.read_bytes(), 201,
                                             {"Content-Type": "image/png"})["key"]
            job = {**job, "method": "GET", "expect": 200, "path": f"/blobs?key={key}",
                   "headers": {}}
            job.pop("body_file")
        print("\n" + measure(args, spy, bare, job, work / "raw-bare", "bare app"))
    return 0


@contextlib.contextmanager
def running(proc: servers.Proc, workers: int) -> Iterator[servers.Proc]:
    try:
        proc.wait_ready("/healthz")
        proc.wait_workers(workers)
        yield proc
    finally:
        proc.stop()


def measure(args: argparse.Namespace, spy: str, server: servers.Proc, job: dict[str, object],
            raw_dir: Path, name: str) -> str:
    """Warm up, then `args.seconds` of load with py-spy on every worker: the report."""
    load({**job, "duration": 2.0})  # warm-up: pools, caches, the first batch
    if args.raw:
        raw_dir = args.raw / raw_dir.name
    raw_dir.mkdir(parents=True, exist_ok=True)
    spies = [subprocess.Popen(
        [spy, "record", "--gil", "--nonblocking", "-r", str(RATE), "-d", str(args.seconds),
         "-f", "raw", "-o", str(raw_dir / f"worker-{pid}.txt"), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid in servers.descendants(server.pid)]
    time.sleep(0.5)  # py-spy attached
    cpu_before = servers.cpu_seconds(server.pid)
    result = load({**job, "duration": args.seconds})
    cpu = servers.cpu_seconds(server.pid) - cpu_before
    for proc in spies:
        proc.wait(timeout=args.seconds + 30)
    files = [p for p in sorted(raw_dir.glob("worker-*.txt")) if p.stat().st_size]
    done = max(1, result["ok"])
    return (f"== {name}: {args.path} 64 KiB, {args.combo}, c={args.concurrency}, "
            f"{args.workers} workers, {args.seconds} s: {result['rps']:,.0f} req/s, "
            f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, server CPU "
            f"{1000 * cpu / done:.2f} ms/req (user+sys of all server processes)\n"
            + report(files, args.seconds, done))


if __name__ == "__main__":
    raise SystemExit(main())
