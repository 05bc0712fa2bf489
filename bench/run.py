"""`make bench`: the service against a bare baseline, on both backend combinations.

    python -m bench.run                 # both combos, full durations
    python -m bench.run --quick         # shorter runs, smaller upload (smoke test)
    python -m bench.run --combo local   # local dir + SQLite only (or: s3pg)

For each combo it prepares the backends (a temp directory and SQLite file;
or a moto S3 server subprocess and a throwaway PostgreSQL database), migrates
and seeds them, starts the service (`engines serve`, workers = cores) and the
baseline (bench.baseline, same uvicorn stack and worker count) as
subprocesses, drives both from a separate load process (bench.load), prints
the table and writes bench/results/<date>-<combo>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bench import ab, mlflow_side, seed, servers
from bench.client import Client, load
from bench.load import percentile, upload_chunks

MIB = 1 << 20
GIB = 1 << 30
RESULTS = Path(__file__).resolve().parent / "results"
TENANT, ENV, PROJECT = seed.TENANT, seed.ENV, seed.PROJECT
COMBOS = {"local": "local dir + SQLite", "s3pg": "S3 (moto server) + PostgreSQL"}


@dataclass
class Options:
    quick: bool
    duration: float       # seconds measured per throughput scenario (split over rounds)
    warmup: float
    rounds: int           # service and baseline alternate this many times (noise)
    concurrency: int
    iterations: int       # timed repetitions for the big-body scenarios
    list_rows: int
    list_concurrency: int
    upload_local: int
    upload_s3: int
    workers: int
    admin_pg_url: str
    only: list[str]
    against: ab.Checkout | None = None  # --against REF: its worktree
    tolerance: float = ab.TOLERANCE


def options_from(args: argparse.Namespace) -> Options:
    quick = args.quick
    return Options(
        quick=quick,
        duration=args.duration or (2.0 if quick else 5.0),
        warmup=0.5,
        # --against: three servers take turns, more often (noise from other jobs here)
        rounds=args.rounds or (1 if quick else 4 if args.against else 2),
        concurrency=16,
        iterations=3 if quick else 4,
        list_rows=args.list_rows,
        list_concurrency=1,
        upload_local=256 * MIB if quick else GIB,
        upload_s3=64 * MIB if quick else 256 * MIB,
        workers=args.workers or os.cpu_count() or 1,
        admin_pg_url=args.pg_admin_url,
        only=args.only.split(",") if args.only else [],
    )


# ---- payloads ----------------------------------------------------------------


def png_body(size: int) -> bytes:
    """size bytes that start with the PNG signature (the service checks the magic only)."""
    head = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    return (head + secrets.token_bytes(size))[:size]


def replay_body(target: int, keyframes: int) -> tuple[bytes, int]:
    """A replay document of about `target` bytes with `keyframes` keyframes (t_ms step 20).

    A snapshot every 100 frames, a commit every 10th, gestures in between.
    """
    def frame(i: int, pad: str) -> dict[str, Any]:
        kind = "snapshot" if i % 100 == 0 else "commit" if i % 10 == 0 else "gesture"
        return {"t_ms": i * 20, "rev": i // 10, "type": kind,
                "data": {"node": f"n{i % 997}", "op": "move", "x": i % 1024, "y": (i * 7) % 768,
                         "pad": pad}}

    def document(pad: str) -> bytes:
        frames = [frame(i, pad) for i in range(keyframes)]
        return orjson.dumps({"rev": (keyframes - 1) // 10, "rev_from": 0, "mode": "keyframes",
                             "keyframes": frames,
                             "summary": {"keyframes": keyframes, "generator": "bench"}})

    base = len(document(""))
    pad = max(0, (target - base) // keyframes)
    body = document("x" * pad)
    return body, keyframes


def gradient_png(side: int, seed: int = 0) -> bytes:
    """A real side x side PNG (a smooth gradient, so it is small like a canvas snapshot)."""
    import io

    from PIL import Image

    x = Image.linear_gradient("L").resize((side, side))
    image = Image.merge("RGB", (x, x.transpose(Image.Transpose.ROTATE_90),
                                Image.new("L", (side, side), seed % 256)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class CountingStore:
    """A blob store's reads, counted (for the replay window's bytes-read row)."""

    def __init__(self, store: Any) -> None:
        self.store, self.bytes = store, 0

    def read_all(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data: bytes = self.store.read_all(key, start, end)
        self.bytes += len(data)
        return data


# ---- HTTP helpers ----------------------------------------------------------------


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine rounds: totals over total time, percentiles over all latencies."""
    lat = sorted(x for p in parts for x in p.pop("latencies", []))
    ok = sum(p["ok"] for p in parts)
    elapsed = sum(p["elapsed_s"] for p in parts)
    errors = [e for p in parts for e in p["errors"]]
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    return {"requests": len(lat), "ok": ok, "error_count": sum(p["error_count"] for p in parts),
            "errors": errors[:5], "elapsed_s": elapsed, "rps": ok / elapsed if elapsed else None,
            "p50_ms": ms(percentile(lat, 50)), "p90_ms": ms(percentile(lat, 90)),
            "p99_ms": ms(percentile(lat, 99)), "max_ms": ms(lat[-1] if lat else None),
            "mean_ms": ms(sum(lat) / len(lat) if lat else None), "rounds": len(parts),
            "cpu_ms_per_req": 1000 * sum(p["server_cpu_s"] for p in parts)
            / max(1, sum(p["completed"] for p in parts))}


# ---- one combo -----------------------------------------------------------------------


def size_label(size: int) -> str:
    return f"{size // GIB} GiB" if size >= GIB else f"{size // MIB} MiB"


class Bench:
    def __init__(self, combo: str, opts: Options) -> None:
        self.combo, self.opts = combo, opts
        self.rows: list[dict[str, Any]] = []
        self.raw: dict[str, Any] = {}
        self.notes: list[str] = []
        self.memory: dict[str, Any] = {}
        self.cleanups: list[Any] = []
        self.group = 0
        self.procs: dict[int, servers.Proc] = {}  # port -> server, for its CPU
        self.ref: ab.Side | None = None           # --against REF: REF's service

    # -- table rows
    def row(self, scenario: str, metric: str, service: float | None,
            baseline: float | None = None, note: str = "", ref: float | None = None) -> None:
        """One table row; `ref` is REF's value of the service column (--against)."""
        ratio = service / baseline if service is not None and baseline else None
        self.rows.append({"scenario": scenario, "metric": metric, "service": service,
                          "baseline": baseline, "ratio": ratio, "note": note,
                          "group": self.group} | ({"ref": ref} if self.ref else {}))

    def vs(self, name: str, key: str) -> float | None:
        """REF's value of `key` in scenario `name` (None: not run, or REF failed it)."""
        ref = (self.raw.get(name) or {}).get("ref") or {}
        return ref.get(key) if ref.get("ok", 1) else None

    def say(self, text: str) -> None:
        print(f"  [{self.combo} {time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- setup
    def prepare(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix=f"engines-bench-{self.combo}-"))
        self.cleanups.append(lambda: shutil.rmtree(self.work, ignore_errors=True))
        signing = secrets.token_urlsafe(32)
        upload = self.opts.upload_s3 if self.combo == "s3pg" else self.opts.upload_local
        self.upload_size = upload
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "RAW_BUCKET", "AWS_ENDPOINT_URL_S3",
                            "MEDIA_LOCAL_ROOT", "AUTO_MIGRATE", "MEDIA_SERVE_MODE",
                            "PYTHONPATH")}
        self.notes.append(f"settings: defaults, except MAX_PREVIEW_BYTES={upload + MIB} "
                          "(the upload scenario) and a random AUTH_JWT_SIGNING")
        env.update({
            "AUTH_JWT_SIGNING": signing,
            "MEDIA_LOCAL_ROOT": str(self.work / "media"),
            # The one limit raised above its default: the 1 GiB upload scenario.
            "MAX_PREVIEW_BYTES": str(upload + MIB),
            "AUTO_MIGRATE": "false",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        if self.combo == "s3pg":
            env.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": "us-east-1"})
            self.moto = servers.start_moto(env, self.work)
            self.cleanups.append(self.moto.stop)
            env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{self.moto.port}"
            env["RAW_BUCKET"] = "engines-bench"
            scratch = servers.ScratchDatabase(self.opts.admin_pg_url)
            scratch.__enter__()
            self.cleanups.append(lambda: scratch.__exit__(None, None, None))
            env["DATABASE_URL"] = scratch.url()
            self.say(f"moto on :{self.moto.port}, database {scratch.name}")
        else:
            env["DATABASE_URL"] = f"sqlite:///{self.work / 'engines.db'}"
        self.env = env
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                "AWS_DEFAULT_REGION") if k in env})
        from engines.config import Settings

        self.settings = Settings(
            database_url=env["DATABASE_URL"], raw_bucket=env.get("RAW_BUCKET"),
            aws_endpoint_url_s3=env.get("AWS_ENDPOINT_URL_S3"),
            media_local_root=Path(env["MEDIA_LOCAL_ROOT"]), auth_jwt_signing=signing,
            max_preview_bytes=int(env["MAX_PREVIEW_BYTES"]))
        from engines.storage.factory import build_blob_store

        self.store = build_blob_store(self.settings)
        if self.combo == "s3pg":
            self.store.client.create_bucket(Bucket="engines-bench")  # type: ignore[attr-defined]
        self.raw["list_seed_s"] = seed.prepare(self.settings, self.opts.list_rows)
        self.say(f"seeded {self.opts.list_rows} records in {self.raw['list_seed_s']:.1f}s")

    def start_servers(self) -> None:
        w = self.opts.workers
        self.service = servers.launch_service(self.env, w, self.work)
        self.cleanups.append(self.service.stop)
        self.baseline = servers.launch_baseline(self.env, w, self.work)
        self.cleanups.append(self.baseline.stop)
        for proc in (self.service, self.baseline):
            proc.wait_ready("/healthz")
            proc.wait_workers(w)
            self.procs[proc.port] = proc
        from engines.auth.tokens import issue_token

        token = issue_token(self.settings, sub="u_bench", tenants=[TENANT], role="owner",
                            ttl=3600)
        self.headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": TENANT,
                        "X-Env": ENV, "X-Project-Id": PROJECT}
        self.svc = Client(self.service.port, self.headers)
        if self.opts.against:
            self.start_ref()
        self.say(f"service :{self.service.port} (pid {self.service.pid}), baseline "
                 f":{self.baseline.port}, {w} workers each; idle service RSS "
                 f"{servers.memory(self.service.pid)['sum_rss_mib']:.0f} MiB")

    def start_ref(self) -> None:
        """REF's service beside the current one; setup calls go to both from now on."""
        checkout = self.opts.against
        assert checkout is not None
        s3 = self.combo == "s3pg"
        self.ref = ab.start(checkout, self.env, self.work, self.opts.workers,
                            self.opts.list_rows, self.opts.admin_pg_url if s3 else None,
                            (lambda b: self.store.client.create_bucket(Bucket=b))  # type: ignore[attr-defined]
                            if s3 else None)
        self.cleanups.append(self.ref.stop)
        assert self.ref.proc is not None
        self.procs[self.ref.proc.port] = self.ref.proc
        self.svc = ab.Mirror(self.svc, Client(self.ref.proc.port, self.headers))
        self.say(f"REF {checkout.ref} ({checkout.commit[:10]}) :{self.ref.proc.port} "
                 f"(pid {self.ref.proc.pid}), its own backends, from {checkout.path}")

    def ref_elapsed(self) -> float | None:
        """Seconds REF took for the last setup call (None: no REF, or it failed)."""
        return self.svc.ref_elapsed if isinstance(self.svc, ab.Mirror) else None

    def ref_job(self, job: dict[str, Any] | None) -> dict[str, Any] | None:
        """The current service's job aimed at REF's service (None without --against)."""
        if job is None or self.ref is None or job.get("port") != self.service.port:
            return None
        assert isinstance(self.svc, ab.Mirror) and self.ref.proc is not None
        return self.svc.job(job, self.ref.proc.port)

    # -- measuring
    def job(self, target: str, **kw: Any) -> dict[str, Any]:
        port = self.service.port if target == "service" else self.baseline.port
        headers = dict(self.headers) if target == "service" else {}
        headers.update(kw.pop("headers", {}))
        return {"kind": "fixed", "host": "127.0.0.1", "port": port, "headers": headers, **kw}

    def measured(self, job: dict[str, Any]) -> dict[str, Any]:
        """load(job), plus the CPU the target server spent on it (all its processes)."""
        proc = self.procs[job["port"]]
        before = servers.cpu_seconds(proc.pid)
        result = load(job)
        result["server_cpu_s"] = servers.cpu_seconds(proc.pid) - before
        return result

    def alternate(self, name: str, service_job: dict[str, Any],
                  baseline_job: dict[str, Any] | None,
                  **others: dict[str, Any]) -> tuple[dict, dict | None]:
        """Throughput: service, REF's service (--against), baseline and any others take
        turns over opts.rounds rounds, every other round in reverse order (ABBA: a drift
        in the machine's load favours none); all merged results land in raw[name]."""
        o = self.opts
        per = o.duration / o.rounds
        jobs = {"service": service_job, "ref": self.ref_job(service_job),
                "baseline": baseline_job, **others}
        parts: dict[str, list[dict[str, Any]]] = {k: [] for k, j in jobs.items() if j}
        for turn in range(o.rounds):
            for label in (list(parts) if turn % 2 == 0 else list(parts)[::-1]):
                parts[label].append(self.measured({**jobs[label], "duration": per,
                                                   "warmup": o.warmup,
                                                   "return_latencies": True}))
        self.raw[name] = {"baseline": None} | {k: merge(v) for k, v in parts.items()}
        self.error_notes(name)
        return self.raw[name]["service"], self.raw[name]["baseline"]

    def error_notes(self, name: str) -> None:
        for label, res in self.raw[name].items():
            if res and res["error_count"]:
                who = f"REF {self.ref.label}" if label == "ref" and self.ref else label
                self.notes.append(f"{name}: {who} had {res['error_count']} errors, e.g. "
                                  f"{res['errors'][:1]}")

    def repeat(self, name: str, service_job: dict[str, Any],
               baseline_job: dict[str, Any], *, count: int | None = None) -> tuple[dict, dict]:
        """Big bodies: one untimed warm-up request, then opts.iterations sequential ones.

        `count` replaces opts.iterations for the service and REF jobs when their requests
        are short: server CPU is read in 10 ms clock ticks, so four 6 ms requests would
        measure 5.0 or 7.5 ms by rounding alone."""
        jobs = {"service": service_job, "ref": self.ref_job(service_job),
                "baseline": baseline_job}
        self.raw[name] = {}
        for label, job in jobs.items():
            if job is None:
                continue
            load({**job, "count": 1, "concurrency": 1})
            times = self.opts.iterations if label == "baseline" or count is None else count
            res = self.measured({**job, "count": times, "concurrency": 1})
            res["cpu_ms_per_req"] = 1000 * res["server_cpu_s"] / max(1, res["completed"])
            self.raw[name][label] = res
        self.error_notes(name)
        return self.raw[name]["service"], self.raw[name]["baseline"]

    def scenario_preview(self) -> None:
        c = self.opts.concurrency
        body = self.work / "preview-64k.png"
        body.write_bytes(png_body(64 * 1024))
        title = f"create preview 64 KiB (c={c})"
        self.say(title)
        self.alternate(
            "create_preview",
            self.job("service", method="POST",
                     path="/canvas/c_bench_preview/artifacts/preview?rev=1",
                     body_file=str(body), headers={"Content-Type": "image/png"},
                     concurrency=c, expect=201),
            self.job("baseline", method="POST", path="/blobs", body_file=str(body),
                     headers={"Content-Type": "image/png"}, concurrency=c, expect=201))
        self.throughput_rows(title, "create_preview")

        title = f"fetch preview 64 KiB (c={c})"
        self.say(title)
        record = self.svc.json("POST", "/canvas/c_bench_fetch/artifacts/preview?rev=1",
                               body.read_bytes(), 201, {"Content-Type": "image/png"})
        key = self.store.key_for(record["uri"])
        self.alternate(
            "fetch_preview",
            self.job("service", method="GET",
                     path=f"/canvas/c_bench_fetch/artifacts/{record['id']}/content",
                     concurrency=c, expect=200),
            self.job("baseline", method="GET", path=f"/blobs?key={key}", concurrency=c,
                     expect=200))
        self.throughput_rows(title, "fetch_preview")

    def throughput_rows(self, title: str, name: str, note: str = "") -> None:
        s, b = self.raw[name]["service"], self.raw[name]["baseline"]
        self.row(title, "req/s", s["rps"], b["rps"], note, ref=self.vs(name, "rps"))
        for key, metric in (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")):
            self.row("", metric, s[key], b[key], ref=self.vs(name, key))
        self.row("", "server CPU ms/req", s["cpu_ms_per_req"], b["cpu_ms_per_req"],
                 "user+sys of all server processes / requests",
                 ref=self.vs(name, "cpu_ms_per_req"))

    def scenario_replay(self) -> None:
        body, frames = replay_body(5 * MIB, 20_000)
        path = self.work / "replay-5m.json"
        path.write_bytes(body)
        title = f"create replay {len(body) / MIB:.1f} MiB ({frames // 1000}k kf)"
        self.say(title)
        s, b = self.repeat(
            "create_replay",
            self.job("service", method="POST", path="/canvas/c_bench_replay/artifacts/replay",
                     body_file=str(path), headers={"Content-Type": "application/json"},
                     expect=201),
            self.job("baseline", method="POST", path="/blobs", body_file=str(path),
                     headers={"Content-Type": "application/json"}, expect=201))
        ref_s, ref_cpu = (self.vs("create_replay", k) for k in ("mean_ms", "cpu_ms_per_req"))
        self.row(title, "s/create", s["mean_ms"] / 1000, b["mean_ms"] / 1000,
                 "baseline: same bytes to the blob store", ref=ref_s and ref_s / 1000)
        self.row("", "server CPU s/create", s["cpu_ms_per_req"] / 1000,
                 b["cpu_ms_per_req"] / 1000, ref=ref_cpu and ref_cpu / 1000)

        # 1% window of a 50 MiB replay (just under the default MAX_REPLAY_BYTES = 50 MiB)
        body, frames = replay_body(50 * MIB - 64 * 1024, 200_000)
        path = self.work / "replay-50m.json"
        path.write_bytes(body)
        del body
        status, data, created, create_mem = self.create_big_replay(self.svc, path)
        ref_created = self.ref_elapsed()
        if status != 201:
            self.notes.append(
                f"creating the 50 MiB replay failed: {status or 'no response'} after "
                f"{created:.1f}s ({data[:120]!r}). With --workers N, a call that holds the "
                "GIL > 5 s (parse + validate of 200k keyframes) starves uvicorn's healthcheck "
                "thread and the supervisor kills the worker ('Child process [N] died' at "
                "log level info). Created it instead with a 1-worker service (no supervisor)"
                " on the same backends, to measure the window fetch.")
            self.raw["create_replay_50m_failed"] = {"status": status, "after_s": created}
            self.service.wait_workers(self.opts.workers)
            single = servers.launch_service(self.env, 1, self.work, name="service-1worker")
            try:
                single.wait_ready("/healthz")
                status, data, created, create_mem = self.create_big_replay(
                    Client(single.port, self.headers), path, single.pid)
            finally:
                single.stop()
            if status != 201:
                raise RuntimeError(f"creating the 50 MiB replay: {status} {data[:300]!r}")
        record = orjson.loads(data)
        self.raw["create_replay_50m_s"] = created
        duration = (frames - 1) * 20
        low = (frames // 2) * 20 + 10       # between two frames, mid-document
        high = low + duration // 100        # 1% of the replay's time span
        window_path = (f"/canvas/c_bench_window/artifacts/{record['id']}/content"
                       f"?from_ms={low}&to_ms={high}")
        full_path = f"/canvas/c_bench_window/artifacts/{record['id']}/content"
        got = self.svc.json("GET", window_path)
        expected = sum(1 for i in range(frames) if low <= i * 20 <= high) + 1  # + snapshot
        if len(got["keyframes"]) != expected or got["keyframes"][0]["type"] != "snapshot":
            self.notes.append(f"replay window returned {len(got['keyframes'])} keyframes, "
                              f"expected {expected} (snapshot first)")
        size_mib = path.stat().st_size / MIB
        title = f"replay window 1% of {size_mib:.0f} MiB"
        self.say(f"{title} (50 MiB create took {created:.2f}s)")
        s, b = self.repeat("replay_window",
                           self.job("service", method="GET", path=window_path, expect=200),
                           self.job("service", method="GET", path=full_path, expect=200),
                           count=50 * self.opts.iterations)
        self.row(title, "ms", s["mean_ms"], b["mean_ms"],
                 f"baseline: full fetch; window = {expected} of {frames} kf, "
                 f"{s['bytes_in'] / max(1, s['ok']) / 1024:.0f} KiB",
                 ref=self.vs("replay_window", "mean_ms"))
        self.row("", "server CPU ms", s["cpu_ms_per_req"], b["cpu_ms_per_req"],
                 ref=self.vs("replay_window", "cpu_ms_per_req"))
        self.replay_storage(record, path.stat().st_size, low, high)
        how = ("FAILED on the multi-worker service (see note); this is the 1-worker retry"
               if "create_replay_50m_failed" in self.raw else "one request")
        self.row(f"create that {size_mib:.0f} MiB replay", "s", created,
                 note=f"{how}; busiest server process peaked at "
                      f"{create_mem['max_hwm_mib']:.0f} MiB RSS", ref=ref_created)
        self.raw["create_replay_50m_memory"] = create_mem

    def replay_storage(self, record: dict[str, Any], submitted: int, low: int,
                       high: int) -> None:
        """Stored size of the replay, and the bytes a window reads from the store.

        The window is computed here with the service's own code (`read_window`
        over `json_reader`) against the same store and index, counting every
        byte the store hands back: what the service reads for that request.
        """
        from engines.canvas_artifacts import repository as repo
        from engines.canvas_artifacts.replay import read_window
        from engines.canvas_artifacts.replay_store import json_reader
        from engines.db.engine import build_engine

        engine = build_engine(self.settings)
        try:
            with engine.connect() as conn:
                index = repo.replay_index(conn, TENANT, ENV, record["id"])
        finally:
            engine.dispose()
        key = self.store.key_for(record["uri"])
        stored = len(self.store.read_all(key))
        counting = CountingStore(self.store)
        reader = json_reader(counting, index)
        window = read_window(index, lambda start, end: reader.read_all(key, start, end - 1),
                             low, high)
        index_bytes = len(orjson.dumps(index))
        self.raw["replay_storage"] = {"submitted": submitted, "stored": stored,
                                      "window": len(window), "read": counting.bytes,
                                      "index": index_bytes}
        self.row("stored size of that replay", "MiB", stored / MIB, submitted / MIB,
                 "baseline: the submitted JSON")
        self.row("", "window: store bytes read KiB", counting.bytes / 1024,
                 (2 * len(window) + index_bytes) / 1024,
                 "baseline: 2x the window's JSON + the index")

    def create_big_replay(self, client: Client, path: Path,
                          pid: int | None = None) -> tuple[int, bytes, float, dict[str, Any]]:
        pid = pid or self.service.pid
        servers.reset_peaks(pid)
        try:
            status, data = client.call("POST", "/canvas/c_bench_window/artifacts/replay",
                                       path.read_bytes(), {"Content-Type": "application/json"})
        except (ConnectionError, http.client.HTTPException) as exc:
            status, data = 0, f"{type(exc).__name__}: {exc}".encode()
        return status, data, client.elapsed, servers.memory(pid)

    def scenario_list(self) -> None:
        c = self.opts.list_concurrency
        page = self.svc.json("GET", "/canvas/c_bench_list/artifacts?limit=50")
        if len(page["items"]) != 50 or not page["next_cursor"]:
            self.notes.append(f"list returned {len(page['items'])} items")
        title = f"list 50 newest of {self.opts.list_rows // 1000}k (c={c})"
        self.say(title)
        s, _ = self.alternate("list", self.job("service", method="GET",
                                               path="/canvas/c_bench_list/artifacts?limit=50",
                                               concurrency=c, expect=200), None)
        self.row(title, "p50 ms", s["p50_ms"], note="absolute", ref=self.vs("list", "p50_ms"))
        self.row("", "p99 ms", s["p99_ms"], note=f"{s['rps']:.0f} req/s",
                 ref=self.vs("list", "p99_ms"))
        self.row("", "server CPU ms/req", s["cpu_ms_per_req"],
                 ref=self.vs("list", "cpu_ms_per_req"))

    def scenario_thumbnails(self) -> None:
        """Issue 11: first render, stored-variant GETs, and a render burst beside reads."""
        canvas, query = "c_bench_thumbs", "w=256&format=webp"

        def preview(body: bytes, mime: str = "image/png") -> dict[str, Any]:
            return self.svc.json("POST", f"/canvas/{canvas}/artifacts/preview?rev=1", body, 201,
                                 {"Content-Type": mime})

        def content(record: dict[str, Any], q: str = "") -> str:
            return f"/canvas/{canvas}/artifacts/{record['id']}/content" + (f"?{q}" if q else "")

        title = "first render: 256 px WebP of a 2048 px PNG"
        self.say(title)
        times, ref_times = [], []
        for i in range(2 * self.opts.iterations):
            source = gradient_png(2048, i)
            record = preview(source)
            status, thumb = self.svc.call("GET", content(record, query))
            times.append(self.svc.elapsed)
            ref_times.append(self.ref_elapsed())
            if status != 200:
                raise RuntimeError(f"first render: {status} {thumb[:300]!r}")
        self.raw["first_render_s"] = times
        # the median: each worker's first render also imports Pillow (~100 ms, once per
        # process), which a mean of a few GETs counts as often as the workers it hit
        ref_ms = None if None in ref_times else 1000 * statistics.median(ref_times)
        self.row(title, "ms", 1000 * statistics.median(times), ref=ref_ms,
                 note=f"absolute; median of {len(times)} sequential first GETs (slowest "
                      f"{1000 * max(times):.0f} ms), PNG {len(source) // 1024} KiB -> WebP "
                      f"{len(thumb)} B")

        c = self.opts.concurrency
        title = f"thumbnail GET, stored variant (c={c})"
        self.say(title)
        same_size = preview(thumb, "image/webp")  # the variant's bytes as a plain preview
        s, b = self.alternate(
            "thumbnail_get",
            self.job("service", method="GET", path=content(record, query), concurrency=c,
                     expect=200),
            self.job("service", method="GET", path=content(same_size), concurrency=c,
                     expect=200))
        self.row(title, "req/s", s["rps"], b["rps"],
                 f"baseline: plain /content GET of a {len(thumb)} B preview (same bytes)",
                 ref=self.vs("thumbnail_get", "rps"))
        self.row("", "p99 ms", s["p99_ms"], b["p99_ms"], ref=self.vs("thumbnail_get", "p99_ms"))
        self.row("", "server CPU ms/req", s["cpu_ms_per_req"], b["cpu_ms_per_req"],
                 ref=self.vs("thumbnail_get", "cpu_ms_per_req"))

        burst = 200
        title = f"record GET p99 during a {burst}-thumbnail burst"
        self.say(title)
        sources = [preview(gradient_png(1024, i)) for i in range(burst)]
        reader = self.job("service", method="GET",
                          path=f"/canvas/{canvas}/artifacts/{same_size['id']}", concurrency=1,
                          expect=200)
        quiet = self.measured({**reader, "duration": 2.0, "return_latencies": True})
        renders = self.job("service", method="GET", paths=[content(r, query) for r in sources],
                           concurrency=burst, count=burst, expect=200)
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(ThreadPoolExecutor(1))
            started = time.perf_counter()
            storm = pool.submit(load, renders)
            during = load({**reader, "duration": 2.0, "return_latencies": True})
            stormed = storm.result()
            storm_s = time.perf_counter() - started
        self.raw["thumbnail_burst"] = {"burst": stormed, "during": during, "quiet": quiet,
                                       "burst_s": storm_s}
        if stormed["error_count"]:
            self.notes.append(f"thumbnail burst: {stormed['error_count']} errors, e.g. "
                              f"{stormed['errors'][:1]}")
        self.row(title, "p99 ms", during["p99_ms"], quiet["p99_ms"],
                 f"baseline: same GET, no burst; {burst} first renders of 1024 px PNGs "
                 f"took {storm_s:.1f}s, {stormed['ok']} ok")

    def scenario_upload(self) -> None:
        size = self.upload_size
        label = size_label(size)
        title = f"upload {label} preview (raw body)"
        self.say(title)
        pid = self.service.pid
        before = servers.memory(pid)
        resettable = servers.reset_peaks(pid)
        samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(servers.memory(pid)["sum_rss_mib"])  # type: ignore[arg-type]
                done.wait(0.1)

        def upload() -> tuple[dict[str, Any], float]:
            os.sync()  # untimed: no upload pays for the writeback of the one before it
            cpu0 = servers.cpu_seconds(pid)
            result = load({"kind": "stream_upload", "host": "127.0.0.1",
                           "port": self.service.port,
                           "path": "/canvas/c_bench_upload/artifacts/preview?rev=1",
                           "size": size, "headers": {**self.headers, "Content-Type": "image/png"}})
            cpu = servers.cpu_seconds(pid) - cpu0
            if result["status"] != 201:
                raise RuntimeError(f"upload failed: {result['status']} {result['body'][:500]}")
            record = json.loads(result["body"])
            if record["size_bytes"] != size:
                self.notes.append(f"upload stored {record['size_bytes']} bytes, sent {size}")
            up_key = self.store.key_for(record["uri"])
            if up_key:
                self.store.delete(up_key)  # free the space (moto keeps objects in memory)
            return result, cpu

        def ref_upload() -> dict[str, Any] | None:
            assert self.ref is not None
            os.sync()
            return self.ref.upload("/canvas/c_bench_upload/artifacts/preview?rev=1", size,
                                   {**self.headers, "Content-Type": "image/png"},
                                   getattr(self.store, "client", None))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result, svc_cpu = upload()
        done.set()
        sampler.join()
        after = servers.memory(pid)
        ref = None
        if self.ref:
            # one upload each is a single sample: with REF, ABBA (this, REF, REF, this) and
            # the mean of each pair, so neither side always follows the other's writeback
            first = ref_upload()
            second = ref_upload() if first else None
            again, again_cpu = upload()
            result = {**result, "mib_per_s": (result["mib_per_s"] + again["mib_per_s"]) / 2}
            svc_cpu = (svc_cpu + again_cpu) / 2
            if first and second:
                ref = {**first, "mib_per_s": (first["mib_per_s"] + second["mib_per_s"]) / 2,
                       "server_cpu_s": (first["server_cpu_s"] + second["server_cpu_s"]) / 2}
        self.raw["upload_ref"] = ref

        # the same upload into the bare ASGI app, streamed to the same store
        bpid = self.baseline.pid
        servers.reset_peaks(bpid)
        os.sync()
        cpu0 = servers.cpu_seconds(bpid)
        bare = load({"kind": "stream_upload", "host": "127.0.0.1", "port": self.baseline.port,
                     "path": "/blobs/stream", "size": size,
                     "headers": {"Content-Type": "application/octet-stream"}})
        bare_cpu = servers.cpu_seconds(bpid) - cpu0
        bare_mem = servers.memory(bpid)
        if bare["status"] != 201:
            raise RuntimeError(f"bare upload failed: {bare['status']} {bare['body'][:500]}")
        self.store.delete(json.loads(bare["body"])["key"])

        # cp-style: the same bytes written straight into the same blob store, no HTTP
        os.sync()
        t0 = time.perf_counter()
        c0 = time.process_time()
        key = "bench-baseline/raw-upload.bin"
        writer = self.store.open_writer(key, "application/octet-stream")
        for chunk in upload_chunks(size):
            writer.write(chunk)
        writer.commit()
        raw_s = time.perf_counter() - t0
        raw_cpu = time.process_time() - c0
        raw_mibs = size / raw_s / MIB
        self.store.delete(key)

        peak = after["sum_hwm_mib"] if resettable else max(samples or [0.0])
        self.memory = {"before": before, "after": after, "sampled_max_sum_rss_mib":
                       max(samples or [0.0]), "peaks_reset": resettable, "size": size}
        self.raw["upload"] = {"service": result, "service_cpu_s": svc_cpu, "bare": bare,
                              "bare_cpu_s": bare_cpu, "bare_memory": bare_mem,
                              "raw_s": raw_s, "raw_cpu_s": raw_cpu}
        note = "baseline: cp-style write to the store"
        if self.combo == "s3pg" and size < GIB:
            note += f"; {label}, not 1 GiB: moto keeps objects in memory"
        ref_mibs = ref and ref["mib_per_s"]
        ref_cpu = ref and ref["server_cpu_s"] / size * GIB
        self.row(title, "MiB/s", result["mib_per_s"], raw_mibs, note, ref=ref_mibs)
        self.row("", "CPU s/GiB", svc_cpu / size * GIB, raw_cpu / size * GIB,
                 "baseline: the cp-style writer process", ref=ref_cpu)
        self.row("", "peak RSS MiB", peak, bare_mem["sum_hwm_mib"],  # type: ignore[arg-type]
                 f"all {len(after['processes'])} server processes summed (VmHWM); "
                 f"service idle {before['sum_rss_mib']:.0f}, busiest process "
                 f"{after['max_hwm_mib']:.0f}; baseline: the bare app",
                 ref=ref and ref["memory"]["sum_hwm_mib"])
        self.row("  same upload, bare ASGI app", "MiB/s", result["mib_per_s"],
                 bare["mib_per_s"], "baseline: bench.baseline streaming to the same store",
                 ref=ref_mibs)
        self.row("", "server CPU s/GiB", svc_cpu / size * GIB, bare_cpu / size * GIB,
                 ref=ref_cpu)

    def scenario_upload_session(self) -> None:
        """The upload scenario's preview through an upload session (bench.upload_session)
        against the same bytes as one raw-body POST: what the API process spends."""
        from bench.upload_session import upload

        size = self.upload_size
        label = size_label(size)
        title = f"upload {label} preview via session (4 parts at a time)"
        self.say(title)
        pid = self.service.pid
        cpu0 = servers.cpu_seconds(pid)
        api = load({"kind": "stream_upload", "host": "127.0.0.1", "port": self.service.port,
                    "path": "/canvas/c_bench_session/artifacts/preview?rev=1", "size": size,
                    "headers": {**self.headers, "Content-Type": "image/png"}})
        api_cpu = servers.cpu_seconds(pid) - cpu0
        if api["status"] != 201:
            raise RuntimeError(f"API upload failed: {api['status']} {api['body'][:500]}")
        self.store.delete(self.store.key_for(json.loads(api["body"])["uri"]))
        cpu0 = servers.cpu_seconds(pid)
        session = upload(f"http://127.0.0.1:{self.service.port}", self.headers,
                         "c_bench_session", size, rev=2)
        session_cpu = servers.cpu_seconds(pid) - cpu0
        self.store.delete(self.store.key_for(session["record"]["uri"]))
        self.raw["upload_session"] = {"session": {k: v for k, v in session.items()
                                                  if k != "record"},
                                      "session_cpu_s": session_cpu, "api": api,
                                      "api_cpu_s": api_cpu}
        where = ("parts PUT to presigned URLs of the bucket (moto's CPU not counted)"
                 if session["direct"] else "parts PUT to the service's own part URLs")
        self.row(title, "MiB/s", session["mib_per_s"], api["mib_per_s"],
                 f"baseline: the same preview as one raw-body POST; {session['parts']} "
                 f"parts, {where}")
        self.row("", "server CPU s/GiB", session_cpu / size * GIB, api_cpu / size * GIB,
                 "service processes; complete reads the object back to hash and check it")

    def scenario_mlflow(self) -> None:
        mlflow_side.scenario(self)

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            self.prepare()
            self.start_servers()
            # The upload runs before the replay scenarios so that its peak RSS is not
            # inflated by what a worker kept after parsing a 50 MiB replay; rows are
            # printed in the issue's order all the same.
            plan = ((0, self.scenario_preview), (2, self.scenario_list),
                    (3, self.scenario_upload), (3, self.scenario_upload_session),
                    (1, self.scenario_replay),
                    (4, self.scenario_thumbnails), (5, self.scenario_mlflow))
            plan = tuple(p for p in plan if not self.opts.only
                         or p[1].__name__.removeprefix("scenario_") in self.opts.only)
            for group, scenario in plan:
                self.group = group
                try:
                    scenario()
                except Exception as exc:  # noqa: BLE001 - report it, run the other scenarios
                    self.notes.append(f"{scenario.__name__} FAILED: {type(exc).__name__}: "
                                      f"{str(exc)[:300]}")
                    print(f"--- {scenario.__name__} failed; service log tail ---\n"
                          f"{self.service.tail()}", file=sys.stderr)
                    self.service.wait_workers(self.opts.workers)
        except Exception:
            for proc in ("service", "baseline", "moto"):
                p = getattr(self, proc, None)
                if p is not None:
                    print(f"--- {proc} log tail ---\n{p.tail()}", file=sys.stderr)
            raise
        finally:
            for cleanup in reversed(self.cleanups):
                try:
                    cleanup()
                except Exception as exc:  # noqa: BLE001 - keep cleaning up
                    print(f"cleanup failed: {exc}", file=sys.stderr)
        self.rows.sort(key=lambda r: r["group"])  # stable: the issue's order
        return {"combo": self.combo, "label": COMBOS[self.combo], "rows": self.rows,
                "notes": self.notes, "memory": self.memory, "raw": self.raw,
                "wall_s": time.perf_counter() - t0}


# ---- output ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_mib": mem,
            "python": platform.python_version(), "platform": platform.platform()}


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def table(result: dict[str, Any]) -> str:
    """The printed table; with --against, a "vs REF" column (HEAD/REF, "!" when slower)."""
    against = result.get("against")
    head = ("scenario", "metric", "service", "baseline", "svc/base") + (
        (f"vs {against['ref']}",) if against else ()) + ("note",)
    rows = [head] + [(r["scenario"], r["metric"], fmt(r["service"]), fmt(r["baseline"]),
                      f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-")
                     + ((ab.cell(r, against["tolerance"]),) if against else ()) + (r["note"],)
                     for r in result["rows"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = []
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [r[j].rjust(widths[j]) for j in range(2, len(head) - 1)]
        lines.append("  ".join(cells) + ("  " + r[-1] if r[-1] else ""))
        if i == 0:
            lines.append("-" * len(lines[0]))
    if against:
        lines += ["", *ab.summary(result["rows"], against["ref"], against["tolerance"])]
    return "\n".join(lines)


def targets(result: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """Issue 12's targets, checked against this run: (target, met?, measured)."""
    raw = result["raw"]
    out: list[tuple[str, bool | None, str]] = []
    local = result["combo"] == "local"

    def ratio(name: str, key: str) -> float | None:
        r = raw.get(name) or {}
        s, b = (r.get("service") or {}).get(key), (r.get("baseline") or {}).get(key)
        return s / b if s is not None and b else None

    floors = (("create_preview", 0.6, "create preview req/s >= 0.6x bare"),
              ("fetch_preview", 0.7, "fetch preview req/s >= 0.7x bare")) if local else (
              ("create_preview", 0.8, "S3+PG create preview req/s >= 0.8x bare"),
              ("fetch_preview", 0.8, "S3+PG fetch preview req/s >= 0.8x bare"))
    for name, floor, label in floors:
        value = ratio(name, "rps")
        out.append((label, None if value is None else value >= floor,
                    "-" if value is None else f"{value:.2f}x"))
    if local:
        p99 = (raw.get("create_preview") or {}).get("service", {}).get("p99_ms")
        out.append(("create preview p99 < 40 ms at c=16 (embedded default)",
                    None if p99 is None else p99 < 40, "-" if p99 is None else f"{p99:.0f} ms"))
    value = ratio("replay_window", "mean_ms")
    out.append(("replay window <= 10% of full fetch", None if value is None else value <= 0.1,
                "-" if value is None else f"{100 * value:.0f}%"))
    stored = raw.get("replay_storage")
    if stored:
        bound = 2 * stored["window"] + stored["index"]
        out.append(("window reads <= 2x its bytes + the index from the store",
                    stored["read"] <= bound,
                    f"{stored['read'] / 1024:.0f} KiB read, bound {bound / 1024:.0f} KiB"))
        share = stored["stored"] / stored["submitted"]
        out.append(("stored replay <= 25% of the submitted JSON", share <= 0.25,
                    f"{100 * share:.1f}%"))
    up = raw.get("upload")
    if up:
        mem = result["memory"]
        busiest = mem["after"]["max_hwm_mib"]
        out.append(("upload peak server RSS < 150 MiB", busiest < 150,
                    f"busiest process {busiest:.0f} MiB; all processes summed "
                    f"{mem['after']['sum_hwm_mib']:.0f} MiB"))
        value = up["service"]["mib_per_s"] / (up["service"]["size"] / up["raw_s"] / MIB)
        out.append(("upload MiB/s >= 0.5x raw write", value >= 0.5, f"{value:.2f}x"))
    value = ratio("thumbnail_get", "rps")
    out.append(("thumbnail GET of a stored variant >= 0.8x plain content GET",
                None if value is None else value >= 0.8,
                "-" if value is None else f"{value:.2f}x"))
    p99 = (raw.get("list") or {}).get("service", {}).get("p99_ms")
    out.append(("list p99 < 20 ms at 100k", None if p99 is None else p99 < 20,
                "-" if p99 is None else f"{p99:.1f} ms"))
    return out + mlflow_side.targets(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--combo", choices=[*COMBOS, "both"], default="both")
    parser.add_argument("--quick", action="store_true",
                        help="short runs and a smaller upload (a smoke test, not a measurement)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per throughput scenario (default 5, quick 2)")
    parser.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    parser.add_argument("--rounds", type=int, default=None,
                        help="turns per throughput scenario (default 2; 4 with --against; "
                             "quick 1)")
    parser.add_argument("--list-rows", type=int, default=100_000)
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="where the throwaway database is created and dropped")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    parser.add_argument("--only", default="",
                        help="comma-separated scenarios: preview,list,upload,upload_session,"
                             "replay,thumbnails,mlflow")
    parser.add_argument("--against", metavar="REF", default=None,
                        help="also run REF's service (a commit, checked out in a temporary "
                             "git worktree) in every scenario: a 'vs REF' column")
    parser.add_argument("--tolerance", type=float, default=ab.TOLERANCE,
                        help="with --against: how much worse than REF a row may be before it "
                             "counts as slower (default 0.05)")
    args = parser.parse_args(argv)
    opts = options_from(args)
    opts.tolerance = args.tolerance
    if args.against:
        opts.against = ab.Checkout.add(args.against)
    try:
        return run_combos(args, opts)
    finally:
        if opts.against:
            opts.against.remove()


def run_combos(args: argparse.Namespace, opts: Options) -> int:
    combos = list(COMBOS) if args.combo == "both" else [args.combo]
    info = machine()
    started = time.perf_counter()
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    print(f"engines bench {stamp}: {info['cpus']} cpus ({info['cpu_model']}), "
          f"python {info['python']}, {opts.workers} workers, "
          f"{'quick' if opts.quick else 'full'} run"
          + (f", against {opts.against.ref} ({opts.against.commit[:10]})" if opts.against
             else ""), flush=True)
    results = []
    for combo in combos:
        print(f"\n== {combo}: {COMBOS[combo]}", flush=True)
        result = Bench(combo, opts).run()
        result.update({"date": stamp, "machine": info, "options": vars(opts) | {
            "admin_pg_url": None, "against": args.against}})
        if opts.against:
            result["against"] = {"ref": opts.against.ref, "commit": opts.against.commit,
                                 "tolerance": opts.tolerance}
        results.append(result)
        print()
        print(table(result))
        result["targets"] = [{"target": t, "met": m, "measured": v}
                             for t, m, v in targets(result)]
        print("\ntargets:")
        for t in result["targets"]:
            mark = {True: "met ", False: "MISS", None: "n/a "}[t["met"]]
            print(f"  [{mark}] {t['target']}: {t['measured']}")
        for note in result["notes"]:
            print(f"note: {note}")
        print(f"({combo} took {result['wall_s']:.0f}s)", flush=True)
        if not args.no_save:
            RESULTS.mkdir(exist_ok=True)
            suffix = "-quick" if opts.quick else ""
            out = RESULTS / f"{stamp}-{combo}{suffix}.json"
            out.write_text(json.dumps(result, indent=2, default=str))
            print(f"wrote {out.relative_to(servers.ROOT)}")
            keep_latest_only(out, f"*-{combo}{suffix}.json")
    print(f"\nbench finished in {time.perf_counter() - started:.0f}s", flush=True)
    return 0


def keep_latest_only(latest: Path, pattern: str) -> None:
    """bench/results holds the latest run per combination: older runs live in git history."""
    for older in RESULTS.glob(pattern):
        if older != latest and older.name[:17] < latest.name[:17]:
            older.unlink()


if __name__ == "__main__":
    sys.exit(main())
