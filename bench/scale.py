"""Issue 18's table at N records: `make bench-scale` (10M) or `python -m bench.scale --records N`.

1. a PostgreSQL database `engines_scale_{N}` is created (or found: the seed
   resumes where a stopped run left it), migrated, and seeded by
   `bench/scale_seed.py` (COPY, in committed pieces);
2. `bench/s3_server.py` (moto, the seed's N/10 blobs) and the service
   (`engines serve --workers W`) start;
3. each row of the table is measured through the service or the `engines`
   commands, with the EXPLAIN of every query its path makes (captured from
   the real repository functions, run against the seeded database); a row
   whose plan has a sequential scan of a big table is missed; the read rows
   run beside a REFERENCE-record seed served the same way (seeded, served and
   dropped by the run), turn and turn about, for their ratio;
4. the table is printed and saved to `bench/results/scale-{N}.json`; the
   database is dropped unless `--keep`.

Long phases (retention, DELETE of a canvas) stop after `--phase-seconds`
and report the rate they ran at: the row says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import event

from bench import servers
from bench.ab import Checkout
from bench.load import percentile
from bench.run import Client, load
from bench.scale_seed import HOT, MAIN, OTHERS, PURGED, make_plan, seed
from engines.auth.tokens import issue_token
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.migrate import upgrade
from engines.db.writer import write_transaction

BUCKET = "engines-scale"
REFERENCE = 100_000
"""The reads' ratio is to a seed of this many records, served beside the measured one."""
SIGNING = "scale-bench-signing-key-" + "s" * 32
BIG = {"canvas_artifacts", "media_v2_artifacts", "nexus_documents", "dataset_events",
       "media_v2_assets"}
RESULTS = servers.ROOT / "bench" / "results"
GC_RATE = re.compile(r"blobs scanned \(([\d,]+) blobs/s\)")
"""The rate in `engines gc`'s summary line."""


def headers(tenant: str, role: str = "admin") -> dict[str, str]:
    token = issue_token(Settings(auth_jwt_signing=SIGNING), sub="u_bench", tenants=[tenant],
                        role=role, ttl=7200)
    return {"Authorization": f"Bearer {token}", "X-Tenant-Id": tenant, "X-Env": "prod",
            "X-Project-Id": "p_main"}


# ---- EXPLAIN of the real statements -------------------------------------------------------


@contextlib.contextmanager
def captured(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the engine runs meanwhile, with its parameters."""
    found: list[tuple[str, Any]] = []

    def note(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        found.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _seq_scans(plan: dict[str, Any]) -> list[str]:
    out = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in BIG:
        out.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        out += _seq_scans(child)
    return out


def _one_line(plan: dict[str, Any]) -> str:
    name = plan.get("Node Type", "")
    if plan.get("Index Name"):
        name += f" using {plan['Index Name']}"
    elif plan.get("Relation Name"):
        name += f" on {plan['Relation Name']}"
    runs: list[list[Any]] = []  # a BitmapOr of 500 alike scans is "500 x ..."
    for child in (_one_line(c) for c in plan.get("Plans", [])):
        if runs and runs[-1][0] == child:
            runs[-1][1] += 1
        else:
            runs.append([child, 1])
    children = ", ".join(child if n == 1 else f"{n} x {child}" for child, n in runs)
    return f"{name}({children})" if children else name


INDEX_ONLY_BELOW = 1_000_000
"""Under this many records the planner rightly prefers a seq scan of a table that small;
EXPLAIN then runs with enable_seqscan off, so a Seq Scan left means no index serves it."""


def explain(engine: Any, work: Callable[[Any], object], records: int) -> list[dict[str, Any]]:
    """Run `work(conn)` in a transaction that is rolled back, then EXPLAIN what it ran."""
    with captured(engine) as statements, engine.connect() as conn:
        with contextlib.suppress(Exception):
            work(conn)
        conn.rollback()
    out = []
    seen = set()
    with engine.connect() as conn:
        for statement, parameters in statements:
            head = statement.lstrip().split(None, 1)[0].upper()
            if head not in ("SELECT", "UPDATE", "DELETE", "WITH") or statement in seen:
                continue
            seen.add(statement)
            cursor = conn.connection.cursor()
            if records < INDEX_ONLY_BELOW:
                cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            plan = cursor.fetchone()[0][0]["Plan"]
            conn.rollback()
            out.append({"sql": " ".join(statement.split())[:160], "plan": _one_line(plan),
                        "seq_scans": _seq_scans(plan)})
    return out


# ---- the run --------------------------------------------------------------------------------


def launch_service(env: dict[str, str], workers: int, log_dir: Any) -> servers.Proc:
    """`engines serve` as servers.launch_service starts it, but logging at info: a canvas
    DELETE logs its batches' longest duration and event-counter hold there."""
    port = servers.free_port()
    return servers.start("service", [str(servers.BIN / "engines"), "serve", "--host",
                                     "127.0.0.1", "--port", str(port), "--workers",
                                     str(workers), "--no-access-log", "--log-level", "info"],
                         env, port, log_dir)



class ScaleBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.records = args.records
        self.plan = make_plan(self.records)
        self.name = f"engines_scale_{self.records}"
        self.log_dir = servers.ROOT / "var" / "bench-scale" / str(self.records) / "logs"
        self.state_dir = self.log_dir.parent
        self.rows: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.checkout: Checkout | None = None

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)

    # -- setup --

    def database(self, name: str | None = None) -> str:
        from sqlalchemy.engine import make_url

        name = name or self.name
        with psycopg.connect(self.args.pg_admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                [name]).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
        url = (make_url(self.args.pg_admin_url).set(drivername="postgresql+psycopg",
                                                    database=name)
               .render_as_string(hide_password=False))
        engine = build_engine(Settings(database_url=url))
        upgrade(engine)
        engine.dispose()
        return url

    def drop(self, name: str | None = None) -> None:
        with psycopg.connect(self.args.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name or self.name}" WITH (FORCE)')

    # -- measuring --

    def row(self, name: str, target: str, value: str, met: bool | None,
            plans: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        plans = plans or []
        scans = sorted({s for p in plans for s in p["seq_scans"]})
        if scans:
            met = False
            value += f"; SEQ SCAN of {', '.join(scans)}"
        self.rows.append({"row": name, "target": target, "value": value, "met": met,
                          "explain": plans, **extra})
        verdict = {True: "met", False: "MISSED", None: "-"}[met]
        self.say(f"{name}: {value} [{target}] {verdict}")
        for p in plans:
            print(f"    EXPLAIN {p['sql'][:90]}\n      -> {p['plan']}", flush=True)

    def fixed(self, port: int, paths: list[str], tenant: str, count: int,
              concurrency: int = 1, duration: float | None = None,
              return_latencies: bool = False) -> dict[str, Any]:
        job = {"kind": "fixed", "host": "127.0.0.1", "port": port, "method": "GET",
               "paths": paths, "headers": headers(tenant, "viewer"), "concurrency": concurrency,
               "expect": 200, "return_latencies": return_latencies}
        job.update({"duration": duration} if duration else {"count": count})
        return load(job)

    def samples(self, engine: Any, tenant: str, count: int) -> list[tuple[str, str]]:
        with engine.connect() as conn:
            cursor = conn.connection.cursor()
            cursor.execute("SELECT canvas_id, id FROM canvas_artifacts TABLESAMPLE SYSTEM (1) "
                           "WHERE tenant_id = %s AND deleted_at IS NULL LIMIT %s",
                           [tenant, count])
            found = [(c, i) for c, i in cursor.fetchall()]
            if len(found) < count // 4:  # a small tenant: the first canvases, by index
                cursor.execute("SELECT canvas_id, id FROM canvas_artifacts WHERE tenant_id = %s "
                               "AND env = 'prod' AND deleted_at IS NULL ORDER BY tenant_id, env, "
                               "canvas_id, id LIMIT %s", [tenant, count])
                found = [(c, i) for c, i in cursor.fetchall()]
            return found

    def read_paths(self, engine: Any) -> dict[str, list[str]]:
        """Each read row's 400 requests, over records and canvases sampled from `engine`."""
        picks = self.samples(engine, MAIN, 400)
        canvases = sorted({c for c, _i in picks})[:200]
        hot = HOT[2]
        return {
            "record GET": [f"/canvas/{c}/artifacts/{i}" for c, i in picks],
            "list 50 newest": [f"/canvas/{c}/artifacts?limit=50" for c in [hot, *canvases]],
            "list 50 newest, kind": [f"/canvas/{c}/artifacts?limit=50&kind=preview"
                                     for c in [hot, *canvases]],
            "latest": [f"/canvas/{c}/artifacts/latest?kind=preview" for c in [hot, *canvases]],
            "lineage": [f"/canvas/{c}/artifacts/{i}/lineage" for c, i in picks],
        }

    @contextlib.contextmanager
    def reference(self, env: dict[str, str]) -> Iterator[tuple[int, Any] | None]:
        """A REFERENCE-record seed served beside this one, for the reads' ratio: (port,
        engine), or None when this run is that size. Seeded, served and dropped here."""
        if self.records <= REFERENCE:
            yield None
            return
        name = f"engines_scale_ref_{REFERENCE}"
        self.drop(name)
        url = self.database(name)
        self.say(f"reference: seeding {REFERENCE:,} records in {name}")
        seed(url.replace("postgresql+psycopg", "postgresql"), REFERENCE, BUCKET,
             self.state_dir / "reference", self.say)
        log_dir = self.log_dir / "reference"
        log_dir.mkdir(parents=True, exist_ok=True)
        proc = launch_service({**env, "DATABASE_URL": url}, self.args.workers, log_dir)
        engine = build_engine(Settings(database_url=url))
        try:
            proc.wait_ready("/readyz")
            proc.wait_workers(self.args.workers)
            yield proc.port, engine
        finally:
            proc.stop()
            engine.dispose()
            self.drop(name)

    def reads(self, port: int, engine: Any, rt: Any, env: dict[str, str]) -> None:
        from engines.canvas_artifacts import repository as repo
        from engines.canvas_artifacts.reads import read_lineages

        hot = HOT[2]
        c0, i0 = self.samples(engine, MAIN, 1)[0]
        works = {
            "record GET": lambda conn: repo.get_record(conn, MAIN, "prod", c0, i0),
            "list 50 newest": lambda conn: repo.list_records(
                conn, MAIN, "prod", hot, kind=None, rev=None, before_id=None, limit=50),
            "list 50 newest, kind": lambda conn: repo.list_records(
                conn, MAIN, "prod", hot, kind="preview", rev=None, before_id=None, limit=50),
            "latest": lambda conn: repo.latest_record(conn, MAIN, "prod", hot, "preview"),
            "lineage": lambda conn: read_lineages(
                conn, rt, MAIN, "prod", [repo.get_record(conn, MAIN, "prod", c0, i0)]),
        }
        with self.reference(env) as reference:
            sides = {"this": (port, self.read_paths(engine))}
            if reference is not None:
                sides["reference"] = (reference[0], self.read_paths(reference[1]))
            measured = self.read_passes(sides)
        target = (f"p99 < 20 ms at c=1 (first touch and again); again <= 1.5x the "
                  f"{REFERENCE:,}-record seed served beside it")
        for name in works:
            cold, warm = measured["this"][name]
            if cold is None or warm is None:
                self.row(name, target, "a request failed or was not timed", False)
                continue
            # the reference's second pass (None without a reference, or if it failed)
            ref = measured["reference"][name][1] if "reference" in measured else None
            ratio = warm[0] / ref[0] if ref else None
            value = (f"p99 {warm[0]:.1f} ms (p50 {warm[1]:.1f})"
                     + (f", {ratio:.2f}x the {REFERENCE:,}-record seed's {ref[0]:.1f} ms "
                        f"(p50 {ref[1]:.1f})" if ref and ratio else "")
                     + f"; first touch p99 {cold[0]:.1f} ms (p50 {cold[1]:.1f})")
            met = max(warm[0], cold[0]) < 20 and (reference is None or (
                ratio is not None and ratio <= 1.5))
            self.row(name, target, value, met, explain(engine, works[name], self.records),
                     p99_ms=warm[0], first_touch_p99_ms=cold[0],
                     reference_p99_ms=ref[0] if ref else None)

    def read_passes(self, sides: dict[str, tuple[int, dict[str, list[str]]]]
                    ) -> dict[str, dict[str, list[tuple[float, float] | None]]]:
        """Per side and row, (p99, p50) ms of a first-touch pass and of a longer pass again.

        In a pass the rows' requests take turns (no row reads pages an earlier row
        warmed), and the sides take turns every `chunk` rounds, so a burst of the
        machine's noise (a checkpoint, another job) lands on both. First touch reads
        each sampled path once (at 10M it is largely disk reads); again runs
        `again_rounds` rounds over the same paths, with those pages cached: the service's own
        cost at this size, what the ratio judges, from enough samples that its p99 is
        not the 4th-slowest request of a few hundred."""
        first_rounds, again_rounds, chunk = 400, 2000, 50
        latencies: dict[str, list[list[float] | None]] = {side: [] for side in sides}

        def interleaved(paths: dict[str, list[str]], start: int, stop: int) -> list[str]:
            return [paths[n][i % len(paths[n])] for i in range(start, stop) for n in paths]

        for port, paths in sides.values():
            self.fixed(port, interleaved(paths, 0, 50), MAIN, 50 * len(paths))  # warm the pools
        self.checkpoint()
        for rounds in (first_rounds, again_rounds):
            taken: dict[str, list[float] | None] = {side: [] for side in sides}
            for start in range(0, rounds, chunk):
                for side, (port, paths) in sides.items():
                    stop = min(start + chunk, rounds)
                    result = self.fixed(port, interleaved(paths, start, stop), MAIN,
                                        (stop - start) * len(paths), return_latencies=True)
                    got = taken[side]
                    if got is None or result["error_count"] or (
                            len(result["latencies"]) != (stop - start) * len(paths)):
                        taken[side] = None
                    else:
                        got.extend(result["latencies"])
            for side in sides:
                latencies[side].append(taken[side])
        out: dict[str, dict[str, list[tuple[float, float] | None]]] = {}
        for side, (_port, paths) in sides.items():
            names = list(paths)
            out[side] = {name: [] for name in names}
            for taken_ in latencies[side]:
                for index, name in enumerate(names):
                    if taken_ is None:
                        out[side][name].append(None)
                        continue
                    mine = sorted(taken_[index::len(names)])
                    p99, p50 = (1000 * (percentile(mine, q) or float("inf")) for q in (99, 50))
                    out[side][name].append((p99, p50))
        return out

    def checkpoint(self) -> None:
        """A CHECKPOINT before the read passes: the reference's fresh seed would otherwise
        be written out during them, by whichever side's pass ran at that moment."""
        with psycopg.connect(self.args.pg_admin_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def export(self, port: int, service: servers.Proc, engine: Any, rt: Any) -> None:
        from engines.canvas_artifacts import repository as repo
        from engines.canvas_artifacts.reads import read_lineages

        canvas = HOT[0]
        servers.reset_peaks(service.pid)
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
        started = time.monotonic()
        conn.request("GET", f"/canvas/{canvas}/artifacts/export", headers=headers(MAIN))
        response = conn.getresponse()
        first = response.read(1)
        first_byte = time.monotonic() - started
        size = len(first)
        cap = started + min(self.args.phase_seconds, self.args.export_seconds)
        while (chunk := response.read(1 << 20)) and time.monotonic() < cap:
            size += len(chunk)
        complete = not chunk
        conn.close()
        took = time.monotonic() - started
        busiest = servers.memory(service.pid)["max_hwm_mib"]

        def work(c: Any) -> None:  # one page of the manifest, as export.py reads it
            from engines.lifecycle.export import PAGE

            read_lineages(c, rt, MAIN, "prod", repo.records_after(
                c, MAIN, "prod", canvas, kind=None, after_id="", limit=PAGE))

        value = (f"first byte {first_byte * 1000:.0f} ms, {size / 2**20:.0f} MiB in {took:.0f} s"
                 f"{'' if complete else ' (stopped at --export-seconds)'}, busiest process "
                 f"{busiest:.0f} MiB")
        self.row(f"export of a {self.plan.canvases[0].count:,}-artifact canvas",
                 "first byte < 1 s; busiest process < 200 MiB", value,
                 first_byte < 1 and busiest < 200, explain(engine, work, self.records))

    def delete_canvas(self, port: int, service: servers.Proc, engine: Any,
                      rt: Any) -> None:
        from engines.canvas_artifacts import repository as repo
        from engines.lifecycle.delete import BATCH

        with engine.connect() as conn:  # a rerun (--only delete) takes the spare hot canvas
            live = conn.connection.cursor()
            live.execute("SELECT 1 FROM canvas_artifacts WHERE tenant_id = %s AND env = 'prod' "
                         "AND canvas_id = %s AND deleted_at IS NULL LIMIT 1", [MAIN, HOT[1]])
            canvas = HOT[1] if live.fetchone() else HOT[3]
        stop = threading.Event()
        create_ms: list[float] = []

        def writer() -> None:  # same tenant/env: waits on any lock a delete batch holds
            client = Client(port, {**headers(MAIN, "member"), "Content-Type": "image/png"})
            body = b"\x89PNG\r\n\x1a\n" + b"\0" * 200
            rev = 0
            while not stop.is_set():
                t0 = time.monotonic()
                client.call("POST", f"/canvas/c_beside_delete/artifacts/preview?rev={rev}", body)
                create_ms.append((time.monotonic() - t0) * 1000)
                rev += 1
                time.sleep(0.05)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        client = Client(port, headers(MAIN))
        started = time.monotonic()
        result: dict[str, Any] = {}

        def run() -> None:
            result["reply"] = client.call("DELETE", f"/canvas/{canvas}/artifacts",
                                          timeout=36000)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        runner.join(self.args.phase_seconds)
        took = time.monotonic() - started
        stop.set()
        thread.join(10)
        with engine.connect() as conn:
            cursor = conn.connection.cursor()
            cursor.execute("SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM "
                           "canvas_artifacts WHERE tenant_id = %s AND env = 'prod' AND "
                           "canvas_id = %s", [MAIN, canvas])
            live, total = cursor.fetchone()
        done = total - live
        worst = max(create_ms) if create_ms else float("nan")
        finished = "reply" in result
        # delete_canvas logs its batches when it is done (engines.lifecycle, at info)
        logged = service.log.read_text(errors="replace").splitlines()
        summary = next((line for line in reversed(logged)
                        if f"deleted canvas {MAIN}/prod {canvas}:" in line), "")
        batches = re.search(r"(\d+) batches, longest (\d+) ms, usage and event counter held "
                            r"at most (\d+) ms", summary)
        longest = int(batches.group(2)) if batches else None
        value = (f"{done:,} of {total:,} deleted in {took:.0f} s ({done / took:,.0f}/s, "
                 f"{BATCH} per committed batch){'' if finished else ', still running at cap'};"
                 + (f" {batches.group(1)} batches, longest {longest} ms, usage and event "
                    f"counter held <= {batches.group(3)} ms;" if batches
                    else " no batch summary logged;")
                 + f" creates beside it: max {worst:.0f} ms over {len(create_ms)}")

        def work(conn: Any) -> None:
            from engines.lifecycle.delete import Deletion, _announce, _tombstone

            records = repo.list_records(conn, MAIN, "prod", canvas, kind=None, rev=None,
                                        before_id=None, limit=BATCH)
            deletion = Deletion("deleted", "u", "r", "c")
            _announce(conn, rt, _tombstone(conn, rt, records, deletion, []), deletion)

        self.row(f"DELETE of a {total:,}-artifact canvas",
                 "batches that each commit, no lock held > 1 s", value,
                 finished and worst < 1000 and longest is not None and longest < 1000,
                 explain(engine, work, self.records), longest_batch_ms=longest,
                 creates_beside_max_ms=worst)

    def job(self, name: str, command: list[str], env: dict[str, str], port: int,
            reads_tenant: str, target_p99: float | None,
            cwd: Any = servers.ROOT) -> dict[str, Any]:
        """A command (its peak RSS from wait4) while reads of another tenant run at c=1."""
        log = self.log_dir / f"{name}.log"
        picks = self.samples(self.engine, reads_tenant, 200)
        paths = [f"/canvas/{c}/artifacts/{i}" for c, i in picks]
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=cwd, start_new_session=True)
        reads: list[dict[str, Any]] = []
        started = time.monotonic()
        # wait4, not Popen.poll: the child's own peak RSS comes with its exit status
        peak = 0  # VmHWM, polled: wait4's ru_maxrss carries the forking parent's over exec
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        while not pid and time.monotonic() - started < self.args.phase_seconds:
            peak = max([peak, *(servers._status_kib(p, "VmHWM") for p in servers.tree(proc.pid))])
            if target_p99 is not None:
                reads.append(self.fixed(port, paths, reads_tenant, 0, duration=3))
            else:
                time.sleep(0.5)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        capped = not pid
        if capped:
            os.killpg(proc.pid, signal.SIGTERM)
            _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = status
        took = time.monotonic() - started
        lats = [r["p99_ms"] for r in reads if r.get("p99_ms") is not None]
        text = log.read_text(errors="replace")
        return {"took": took, "capped": capped, "status": status,
                "rss_mib": peak / 1024, "p99": max(lats) if lats else None,
                "progress": [line for line in text.splitlines()
                             if "so far" in line or "scanned" in line][-3:],
                "output": text}

    def retention(self, env: dict[str, str], port: int, rt: Any) -> None:
        from engines.canvas_artifacts import repository as repo
        from engines.lifecycle import retention
        from engines.lifecycle.delete import BATCH

        target = self.records // 10
        found = None
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            # audits, or on a kept database whose audits an earlier run expired, the
            # next kind that still has `target` live records to expire
            for kind in ("audit", "replay", "preview"):
                cursor.execute("SELECT created_at FROM canvas_artifacts WHERE tenant_id = %s "
                               "AND env = 'prod' AND kind = %s AND deleted_at IS NULL ORDER BY "
                               "created_at OFFSET %s LIMIT 1", [MAIN, kind, target])
                if (found := cursor.fetchone()) is not None:
                    break
        if found is None:
            self.row("retention pass", "progress line, RSS flat, others' p99 < 50 ms",
                     f"no kind has {target:,} live records to expire", False)
            return
        cutoff = found[0]
        keep = datetime.now(UTC) - cutoff
        with write_transaction(self.engine) as conn:
            retention.set_override(conn, MAIN, "prod", kind, keep)
        command = [sys.executable, "-m", "bench.scale_jobs", "retention"]
        result = self.job("retention", command, env, port, OTHERS[0], 50)
        with write_transaction(self.engine) as conn:
            retention.unset_override(conn, MAIN, "prod", kind)
        done = [line for line in result["output"].splitlines()
                if line.startswith("retention:") and kind in line and "so far" not in line]
        value = (f"{'stopped at cap, ' if result['capped'] else ''}{result['took']:.0f} s, "
                 f"{done[-1][:90] if done else 'unfinished'} (~{target:,} due), RSS "
                 f"{result['rss_mib']:.0f} MiB, others' p99 {result['p99'] or 0:.1f} ms; "
                 f"{result['progress'][-1] if result['progress'] else 'no progress line'}")

        def work(conn: Any) -> None:
            retention.scopes_with_artifacts(conn, kind)
            retention.count_candidates(conn, MAIN, "prod", kind, cutoff)
            first = retention.expired(conn, MAIN, "prod", kind, cutoff,
                                      keep_latest=True, limit=BATCH)
            repo.records_by_id(conn, MAIN, "prod", [i for _c, i in first])
            if first:  # the next batch reads on from where this one ended
                retention.expired(conn, MAIN, "prod", kind, cutoff, keep_latest=True,
                                  limit=BATCH, after=first[-1])

        self.row(f"retention pass expiring ~{target:,} records",
                 "progress line, RSS flat, others' p99 < 50 ms", value,
                 bool(result["progress"] or done) and (result["p99"] or 0) < 50
                 and result["rss_mib"] < 300, explain(self.engine, work, self.records))

    def gc(self, env: dict[str, str], port: int) -> None:
        from engines.lifecycle.references import references_between

        store = self.runtime.store
        with self.engine.connect() as conn:  # one listing page's range, as gc asks it
            cursor = conn.connection.cursor()
            cursor.execute('SELECT uri FROM canvas_artifacts ORDER BY uri COLLATE "C" '
                           "OFFSET 1000 LIMIT 1")
            upto = store.key_for(cursor.fetchone()[0]) or "tenants0"
        for apply in (False, True):
            args = ["gc", "--older-than", "1h", *(["--apply"] if apply else [])]
            name = "gc-apply" if apply else "gc-dry"
            result = self.job(name, [str(servers.BIN / "engines"), *args], env, port, MAIN, None)
            summary_line = next((line for line in result["output"].splitlines()
                                 if line.startswith("gc:") and "blobs scanned" in line), "")
            value = (f"{'stopped at cap, ' if result['capped'] else ''}{result['took']:.0f} s, "
                     f"RSS {result['rss_mib']:.0f} MiB; {summary_line[:150]}")
            compared: dict[str, Any] = {}
            if self.checkout is not None:
                compared = self.gc_against(name, args, env, port, result)
                value += f"; {compared['text']}"
            self.row(f"engines gc {'--apply' if apply else '(dry run)'} over "
                     f"{self.plan.blobs:,} blobs",
                     "streams in key order, RSS < 300 MiB, progress line, rate printed", value,
                     result["rss_mib"] < 300 and "blobs/s" in summary_line
                     and bool(result["progress"]),
                     explain(self.engine, lambda conn: references_between(
                         conn, store, "tenants/", upto),
                         self.records), **compared)

    def gc_against(self, name: str, args: list[str], env: dict[str, str], port: int,
                   first: dict[str, Any]) -> dict[str, Any]:
        """REF's `engines gc` beside this tree's, on the same database and bucket: after
        this tree's first run, REF, REF, this tree (ABBA, so a machine that slows down or
        speeds up meanwhile weighs on both alike); the best rate of each side compared."""
        assert self.checkout is not None
        ref_env = {**env, "PYTHONPATH": str(self.checkout.path)}
        ref_command = [sys.executable, "-m", "engines.cli", *args]
        ours = [first]
        theirs = [self.job(f"{name}-ref{n}", ref_command, ref_env, port, MAIN, None,
                           cwd=self.checkout.path) for n in (1, 2)]
        ours.append(self.job(f"{name}-2", [str(servers.BIN / "engines"), *args], env, port,
                             MAIN, None))

        def rates(results: list[dict[str, Any]]) -> list[int]:
            found = (GC_RATE.search(r["output"]) for r in results)
            return [int(m.group(1).replace(",", "")) if m else 0 for m in found]

        mine, refs = rates(ours), rates(theirs)
        ratio = max(mine) / max(max(refs), 1)
        label = f"{self.checkout.ref} ({self.checkout.commit[:7]})"
        text = (f"side by side: this tree {' / '.join(f'{r:,}' for r in mine)} blobs/s, "
                f"{label} {' / '.join(f'{r:,}' for r in refs)} blobs/s: x{ratio:.2f} "
                "(best of each)")
        return {"text": text, "rates": mine, "against": label, "against_rates": refs,
                "vs_against": round(ratio, 2)}

    def purge(self, env: dict[str, str], port: int) -> None:
        from engines.lifecycle.purge import PURGED_TABLES, purge_batch

        command = [str(servers.BIN / "engines"), "purge", "--tenant", PURGED, "--apply"]
        result = self.job("purge", command, env, port, OTHERS[0], 50)
        value = (f"{'stopped at cap, ' if result['capped'] else ''}{result['took']:.0f} s, "
                 f"others' p99 {result['p99'] or 0:.1f} ms, RSS {result['rss_mib']:.0f} MiB")

        def work(conn: Any) -> None:
            for table in PURGED_TABLES:
                purge_batch(conn, table, PURGED, "prod")

        self.row(f"engines purge of a {self.plan.tenant_records[PURGED]:,}-record tenant",
                 "the nine others' p99 < 50 ms", value, (result["p99"] or 1e9) < 50,
                 explain(self.engine, work, self.records))

    def run(self) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.args.against:
            self.checkout = Checkout.add(self.args.against)
            where = subprocess.run(
                [sys.executable, "-c", "import engines; print(engines.__file__)"],
                env={**os.environ, "PYTHONPATH": str(self.checkout.path)},
                cwd=self.checkout.path, capture_output=True, text=True, check=True).stdout
            if not where.startswith(str(self.checkout.path)):
                self.checkout.remove()
                raise RuntimeError(f"REF's interpreter imports engines from {where}")
        try:
            return self.measure()
        finally:
            if self.checkout is not None:
                self.checkout.remove()

    def measure(self) -> int:
        from engines.app import build_runtime

        url = self.database()
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            measured = conn.execute("SELECT to_regclass('bench_seed')").fetchone()[0] and \
                conn.execute("SELECT 1 FROM bench_seed WHERE name = 'measured'").fetchone()
        if measured and not self.args.only:  # an earlier run changed the data: start over
            self.drop()
            url = self.database()
        self.say(f"database {self.name}: seeding {self.records:,} records (resumable)")
        self.plan = seed(url.replace("postgresql+psycopg", "postgresql"), self.records,
                         BUCKET, self.state_dir, self.say)
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            conn.execute("INSERT INTO bench_seed VALUES ('measured', '1') ON CONFLICT DO NOTHING")
        s3_port = servers.free_port()
        s3 = servers.start("s3", [sys.executable, "-m", "bench.s3_server", "--port",
                                  str(s3_port), "--bucket", BUCKET, "--keys-dir",
                                  str(self.state_dir)], {**os.environ}, s3_port, self.log_dir)
        service = None
        try:
            s3.wait_ready("/moto-api/", timeout=1800)
            self.say(s3.tail(2).replace("\n", "; "))
            env = {**os.environ, "DATABASE_URL": url, "AUTO_MIGRATE": "0",
                   "RAW_BUCKET": BUCKET, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
                   "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AUTH_JWT_SIGNING": SIGNING, "WEBHOOKS_ENABLED": "false",
                   "LOG_FORMAT": "text", "DB_STATEMENT_TIMEOUT_MS": "600000"}
            settings = Settings(database_url=url, raw_bucket=BUCKET,
                                aws_endpoint_url_s3=env["AWS_ENDPOINT_URL_S3"],
                                auth_jwt_signing=SIGNING)
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            self.runtime = build_runtime(settings)
            self.engine = self.runtime.engine
            service = launch_service(env, self.args.workers, self.log_dir)
            service.wait_ready("/readyz")
            service.wait_workers(self.args.workers)
            port = service.port
            phases: dict[str, Callable[[], None]] = {
                "reads": lambda: self.reads(port, self.engine, self.runtime, env),
                "export": lambda: self.export(port, service, self.engine, self.runtime),
                "delete": lambda: self.delete_canvas(port, service, self.engine, self.runtime),
                "retention": lambda: self.retention(env, port, self.runtime),
                "gc": lambda: self.gc(env, port),
                "purge": lambda: self.purge(env, port),
            }
            for name in self.args.only or phases:
                phases[name]()
        finally:
            if service is not None:
                service.stop()
            s3.stop()
        self.report()
        if not self.args.keep:
            self.runtime.engine.dispose()
            self.drop()
        return 0 if all(r["met"] is not False for r in self.rows) else 1

    def report(self) -> None:
        print(f"\n== scale: {self.records:,} records, {self.plan.blobs:,} blobs, "
              f"{self.args.workers} workers ({time.monotonic() - self.started:.0f} s)")
        for r in self.rows:
            verdict = {True: "met", False: "MISSED", None: "-"}[r["met"]]
            print(f"{r['row']:<48} {verdict:<7} {r['value']}\n{'':<48} target: {r['target']}")
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"scale-{self.records}.json"
        if self.args.only and path.exists():  # a rerun of some rows replaces those rows
            again = {r["row"]: r for r in self.rows}
            kept = json.loads(path.read_text())["rows"]
            self.rows = [again.pop(r["row"], r) for r in kept] + list(again.values())
        path.write_text(orjson.dumps({"records": self.records, "workers": self.args.workers,
                                      "at": datetime.now(UTC).isoformat(),
                                      "rows": self.rows}, option=orjson.OPT_INDENT_2).decode())
        print(f"saved {path.relative_to(servers.ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phase-seconds", type=float, default=600.0,
                        help="stop a long phase (export, DELETE, retention, gc, purge) after "
                             "this and report its rate")
    parser.add_argument("--export-seconds", type=float, default=120.0,
                        help="read the export for at most this long (its row is the first "
                             "byte and the memory while it streams, not the whole tar)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--only", action="append", choices=[
        "reads", "export", "delete", "retention", "gc", "purge"], help="measure only these "
        "rows (repeatable), on the database as an earlier --keep run left it, and replace "
        "them in the saved results")
    parser.add_argument("--against", metavar="REF", help="run REF's `engines gc` (a commit, "
                        "in a detached worktree) beside this tree's in the gc rows and "
                        "compare their rates")
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    return ScaleBench(parser.parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())

