"""Issue 18, part 3: the service side by side with MLflow's artifact proxy.

`mlflow server --serve-artifacts` (a real tracking server, from the bench-only venv
`.venv-mlflow` that `make bench` installs: MLflow is no dependency of the package) runs
on loopback with a local artifact destination, a SQLite backend store and the service's
worker count. The same load driver sends the same 64 KiB PNG at the same concurrency:
creates are `PUT /api/2.0/mlflow-artifacts/artifacts/<path>` (a new path per request),
fetches `GET` of one stored path; the service creates previews and fetches their
content. Service, MLflow and the bare app take turns round by round (and REF's service
too, with --against). The bare app's rate over MLflow is the ceiling the issue names.

Run on the `local` combo only: its artifact destination is a directory, as the
service's blobs are there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import servers
from bench.client import Client

if TYPE_CHECKING:
    from bench.run import Bench

VENV = servers.ROOT / ".venv-mlflow"
API = "/api/2.0/mlflow-artifacts/artifacts"
TARGETS = {"create": 2.0, "fetch": 3.5}  # service req/s over MLflow's (issue 18 part 3)


def version() -> str | None:
    """The installed MLflow's version (None: the bench venv has no MLflow)."""
    found = sorted((VENV / "lib").glob("python3*/site-packages/mlflow-*.dist-info"))
    return found[-1].name.removeprefix("mlflow-").removesuffix(".dist-info") if found else None


def launch(work: Path, workers: int) -> servers.Proc:
    port = servers.free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    cmd = [str(VENV / "bin" / "mlflow"), "server", "--serve-artifacts",
           "--artifacts-destination", str(work / "mlflow-artifacts"),
           "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    proc = servers.start("mlflow", cmd, env, port, work)
    try:
        proc.wait_ready("/health", timeout=180)
        proc.wait_workers(workers)
    except BaseException:
        proc.stop()
        raise
    return proc


def scenario(bench: Bench) -> None:
    title = "MLflow artifact proxy, same 64 KiB PNG"
    if bench.combo != "local":
        bench.notes.append("mlflow: measured on the local combo only (a local artifact "
                           "destination, like the local combo's blobs)")
        return
    found = version()
    if found is None or not (VENV / "bin" / "mlflow").exists():
        bench.row(title, "-", None, note=f"not measured: no MLflow in {VENV.name} "
                                         "(`make bench` installs it; the install failed?)")
        return
    o = bench.opts
    bench.say(f"{title}: mlflow {found}")
    where = bench.work / "mlflow"
    where.mkdir()
    mlflow = launch(where, o.workers)
    bench.cleanups.append(mlflow.stop)
    bench.procs[mlflow.port] = mlflow
    from bench.run import png_body  # bench.run imports this module

    body = bench.work / "mlflow-64k.png"
    body.write_bytes(png_body(64 * 1024))
    c = o.concurrency
    png = {"Content-Type": "image/png"}

    def job(port: int, **kw: Any) -> dict[str, Any]:
        return {"kind": "fixed", "host": "127.0.0.1", "port": port, "concurrency": c, **kw}

    # creates: a new artifact path per request ({n} is numbered by the load driver)
    bench.say(f"create vs MLflow (c={c})")
    bench.alternate(
        "mlflow_create",
        bench.job("service", method="POST", path="/canvas/c_bench_mlflow/artifacts/preview?rev=1",
                  body_file=str(body), headers=png, concurrency=c, expect=201),
        job(mlflow.port, method="PUT", path=f"{API}/bench/create/{{n}}.png", numbered=True,
            body_file=str(body), headers=png, expect=200),
        bare=job(bench.baseline.port, method="POST", path="/blobs", body_file=str(body),
                 headers=png, expect=201))
    record = bench.svc.json("POST", "/canvas/c_bench_mlflow/artifacts/preview?rev=2",
                            body.read_bytes(), 201, png)
    key = bench.store.key_for(record["uri"])
    stored, reply = Client(mlflow.port, {}).call("PUT", f"{API}/bench/fetch.png",
                                                 body.read_bytes(), png)
    if stored != 200:
        raise RuntimeError(f"MLflow upload: {stored} {reply[:300]!r}")
    bench.say(f"fetch vs MLflow (c={c})")
    bench.alternate(
        "mlflow_fetch",
        bench.job("service", method="GET",
                  path=f"/canvas/c_bench_mlflow/artifacts/{record['id']}/content",
                  concurrency=c, expect=200),
        job(mlflow.port, method="GET", path=f"{API}/bench/fetch.png", expect=200),
        bare=job(bench.baseline.port, method="GET", path=f"/blobs?key={key}", expect=200))
    for name, label in (("mlflow_create", "create"), ("mlflow_fetch", "fetch")):
        bench.throughput_rows(f"{label} 64 KiB vs MLflow {found} (c={c})", name,
                              "baseline: MLflow's artifact proxy")
        bare, theirs = bench.raw[name]["bare"], bench.raw[name]["baseline"]
        bench.row("  bare app over MLflow", "req/s", bare["rps"], theirs["rps"],
                  "the ceiling: bench.baseline against MLflow, same rounds")
        bench.row("", "server CPU ms/req", bare["cpu_ms_per_req"], theirs["cpu_ms_per_req"])
    mlflow.stop()


def targets(raw: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """Issue 18's MLflow targets, with the bare app's ratio beside each (the ceiling)."""
    out: list[tuple[str, bool | None, str]] = []
    for label, floor in TARGETS.items():
        r = raw.get(f"mlflow_{label}")
        if not r:
            continue
        theirs = r["baseline"]["rps"]
        value = r["service"]["rps"] / theirs if theirs else None
        bare = r["bare"]["rps"] / theirs if theirs else None
        out.append((f"{label} req/s >= {floor}x MLflow's artifact proxy (issue 18)",
                    None if value is None else value >= floor,
                    "-" if value is None or bare is None
                    else f"{value:.2f}x (bare app {bare:.2f}x)"))
    return out
