"""Create and fetch throughput for 1, 2 and 3 nodes on one PostgreSQL, behind HAProxy.

`python -m bench.nodes [--duration S] [--concurrency C]`: a scratch
PostgreSQL database and a moto S3 server are shared by every node (each
`engines serve --workers 1`, its own ENGINES_HOME, its own process group);
HAProxy (Debian's package) balances round robin. For k = 1, 2, 3 nodes it
drives creates (64 KiB PNG) and content fetches through the balancer and
prints req/s, p99, CPU per request of the nodes and of PostgreSQL (every
`postgres` process, from /proc), and the scaling ratio against one node.
On a 2-core machine the ratio cannot reach 3x: what it shows is where the
CPU goes as nodes are added, and when PostgreSQL's share is what grows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3
import orjson

from bench import servers
from bench.run import Client, load, png_body
from bench.scale import headers
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.migrate import upgrade

TENANT = "t_main"
HAPROXY_CONFIG = """\
global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend api
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
{servers}
"""


def postgres_cpu() -> float:
    """CPU seconds of every postgres process (the database all nodes share)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    total += _own_cpu(int(entry))
            except OSError:
                continue
    return total


def _own_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(nodes: list[servers.Proc], lb_port: int, args: argparse.Namespace,
            body_file: Path, fetch_paths: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, job in (("create", {"method": "POST", "path": "/canvas/c_nodes/artifacts/preview"
                                  "?rev=1", "body_file": str(body_file), "expect": 201,
                                  "headers": {**headers(TENANT, "member"),
                                              "Content-Type": "image/png"}}),
                      ("fetch", {"method": "GET", "paths": fetch_paths, "expect": 200,
                                 "headers": headers(TENANT, "viewer")})):
        cpu0 = sum(servers.cpu_seconds(n.pid) for n in nodes)
        pg0 = postgres_cpu()
        result = load({"kind": "fixed", "host": "127.0.0.1", "port": lb_port,
                       "concurrency": args.concurrency, "duration": args.duration,
                       "warmup": 1, **job})
        node_cpu = sum(servers.cpu_seconds(n.pid) for n in nodes) - cpu0
        pg_cpu = postgres_cpu() - pg0
        served = max(1, result["completed"])
        out[name] = {"rps": result["rps"], "p99_ms": result["p99_ms"],
                     "errors": result["error_count"],
                     "node_cpu_ms_per_req": 1000 * node_cpu / served,
                     "pg_cpu_ms_per_req": 1000 * pg_cpu / served}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        raise SystemExit("bench.nodes needs HAProxy: `make haproxy` (apt-get install haproxy)")
    work = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    body_file = work / "body.png"
    body_file.write_bytes(png_body(64 * 1024))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    base_env = dict(os.environ)
    moto = servers.start_moto(base_env, work)
    rows = []
    try:
        with servers.ScratchDatabase(args.pg_admin_url) as db:
            engine = build_engine(Settings(database_url=db.url()))
            upgrade(engine)
            engine.dispose()
            endpoint = f"http://127.0.0.1:{moto.port}"
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
                Bucket="bench-nodes")
            env = {**base_env, "DATABASE_URL": db.url(), "AUTO_MIGRATE": "0",
                   "RAW_BUCKET": "bench-nodes", "AWS_ENDPOINT_URL_S3": endpoint,
                   "AUTH_JWT_SIGNING": "scale-bench-signing-key-" + "s" * 32,
                   "WEBHOOKS_ENABLED": "false", "MAX_PREVIEW_BYTES": str(1 << 20)}
            nodes: list[servers.Proc] = []
            try:
                for index in range(3):
                    home = work / f"node-{index}"
                    home.mkdir()
                    node = servers.launch_service({**env, "ENGINES_HOME": str(home)}, 1, work,
                                                  name=f"node-{index}")
                    node.wait_ready("/readyz")
                    nodes.append(node)
                # records to fetch, made through node 0
                client = Client(nodes[0].port, {**headers(TENANT, "member"),
                                                "Content-Type": "image/png"})
                fetch_paths = []
                for rev in range(50):
                    status, data = client.call("POST", f"/canvas/c_fetch/artifacts/preview"
                                               f"?rev={rev}", body_file.read_bytes())
                    assert status == 201, data[:200]
                    fetch_paths.append(f"/canvas/c_fetch/artifacts/{orjson.loads(data)['id']}"
                                       "/content")
                for count in (1, 2, 3):
                    lb_port = servers.free_port()
                    config = work / f"haproxy-{count}.cfg"
                    config.write_text(HAPROXY_CONFIG.format(port=lb_port, servers="\n".join(
                        f"    server n{i} 127.0.0.1:{n.port}" for i, n in
                        enumerate(nodes[:count]))))
                    lb = servers.start(f"haproxy-{count}", [haproxy, "-db", "-f", str(config)],
                                       base_env, lb_port, work)
                    try:
                        lb.wait_ready("/readyz")
                        rows.append((count, measure(nodes[:count], lb_port, args, body_file,
                                                    fetch_paths)))
                    finally:
                        lb.stop()
            finally:
                for node in nodes:
                    node.stop()
    finally:
        moto.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    print(f"\n== nodes: one PostgreSQL, one S3 (moto), HAProxy round robin, c={args.concurrency},"
          f" {args.duration:g} s per row, {os.cpu_count()} cores")
    base = {op: rows[0][1][op]["rps"] for op in ("create", "fetch")}
    for count, result in rows:
        for op, r in result.items():
            print(f"{count} node(s) {op:<7} {r['rps']:8.0f} req/s  p99 {r['p99_ms']:7.1f} ms  "
                  f"node CPU {r['node_cpu_ms_per_req']:5.2f} ms/req  PostgreSQL CPU "
                  f"{r['pg_cpu_ms_per_req']:5.2f} ms/req  x{r['rps'] / base[op]:.2f}  "
                  f"errors {r['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
