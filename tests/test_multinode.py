"""Three API nodes behind a real HAProxy, sharing nothing but PostgreSQL and S3.

Each node is `engines serve` in its own process group with its own
ENGINES_HOME; the only things they share are one throwaway PostgreSQL
database and one moto S3 server (and the settings docs/scaling.md says
must be equal). HAProxy (Debian's package, installed by `make test`) runs
with a config this test writes, round robin over the three, on a free port.
What "stateless API processes behind a load balancer" promises:

- a create on node A is readable on B and C at once;
- a delete on A is 404 on B and C within DELETE_VISIBLE_WITHIN_S (no 503,
  no 200 for a GET that started later than that);
- an SSE subscriber on B gets the events written through A and C in `seq`
  order with no gap, also across a restart of B resumed with Last-Event-ID;
- webhooks: every event gets exactly the attempts its schedule says (a
  first attempt answered 500, one retry), with all three nodes delivering;
- retries of one Idempotency-Key spread over the three nodes create one
  artifact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import (
    PNG,
    SIGNING_KEY,
    _unavailable,
    create_pg_database,
    drop_pg_database,
    make_bucket,
    migrate,
    new_canvas,
)
from engines.auth.tokens import issue_token
from engines.config import Settings
from engines.events.tests.sse_client import SseReader
from tests._http import serving
from tests._server import ENGINES, free_port, stop, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3,
              pytest.mark.xdist_group("multinode")]

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
RECORD_CACHE_MS = 1000
"""What the nodes run with (the default): how long a node may answer a GET from memory."""
DELETE_VISIBLE_WITHIN_S = RECORD_CACHE_MS / 1000
"""The staleness bound this test holds every node to: a GET that starts later than this
after a delete on another node committed is a 404. Today it is the record cache's TTL;
when caches are invalidated from the event feed it becomes the feed's wake-up latency,
and this constant is where the test tightens."""
RETRY_AFTER_S = 0.3
NODES = ("a", "b", "c")
TENANT = "t_multinode"


def headers(role: str = "admin", **extra: str) -> dict[str, str]:
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana", tenants=[TENANT],
                        role=role, ttl=600)
    return {"Authorization": f"Bearer {token}", "X-Tenant-Id": TENANT, "X-Env": "dev",
            "X-Project-Id": "p_main", **extra}


@dataclass
class Node:
    """One `engines serve`, in its own session (process group), with its own ENGINES_HOME."""

    name: str
    port: int
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.home / "server.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [str(ENGINES), "serve", "--port", str(self.port), "--workers", "1",
                 "--no-access-log", "--log-level", "warning"],
                cwd=self.home, env={**os.environ, **self.env, "ENGINES_HOME": str(self.home)},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(self.url, self.process, log)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def pids(self) -> set[int]:
        """The node's processes: the server and its workers (its process group)."""
        assert self.process is not None
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ProcessLookupError):
                    if os.getpgid(int(entry.name)) == self.process.pid:
                        found.add(int(entry.name))
        return found


@dataclass
class Cluster:
    nodes: dict[str, Node]
    lb_url: str
    admin_url: str = ""

    def node_of(self, pid: int) -> str | None:
        return next((name for name, node in self.nodes.items() if pid in node.pids()), None)


HAPROXY_CONFIG = """\
global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 120s
    retries 2
    option redispatch
frontend api
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-response set-header X-Node %[srv_name]
{servers}
"""


@contextlib.contextmanager
def haproxy(nodes: dict[str, Node], workdir: Path) -> Iterator[str]:
    """HAProxy in the foreground (-db), in its own session, round robin over the nodes."""
    port = free_port()
    servers = "\n".join(f"    server {name} 127.0.0.1:{node.port} check inter 200ms fall 2 rise 1"
                        for name, node in nodes.items())
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    log = workdir / "haproxy.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not Path(HAPROXY).exists():
        _unavailable("HAProxy is not installed: run `make test` as root (it runs apt-get "
                     "install -y haproxy) or install Debian's haproxy package yourself")
    admin_url = request.getfixturevalue("pg_admin_url")
    endpoint = request.getfixturevalue("s3_endpoint")
    workdir = tmp_path_factory.mktemp("multinode")
    url = create_pg_database(admin_url)
    migrate(url)
    shared = {
        "DATABASE_URL": url, "AUTO_MIGRATE": "0", "RAW_BUCKET": make_bucket(endpoint),
        "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AUTH_JWT_SIGNING": SIGNING_KEY,
        "URL_SIGNING_KEY": "multinode-url-key-" + "u" * 32,
        "RECORD_CACHE_MS": str(RECORD_CACHE_MS), "EVENTS_HEARTBEAT_SECONDS": "1",
        "WEBHOOKS_ENABLED": "true", "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_RETRY_SCHEDULE": f"[{RETRY_AFTER_S}]",
        "WEBHOOK_TIMEOUT_SECONDS": "2", "WEBHOOK_POLL_SECONDS": "0.1", "LOG_FORMAT": "text",
        # one claim per round: a node that polls first does not take every due delivery
        "WEBHOOK_CONCURRENCY": "1",
    }
    nodes = {name: Node(name, free_port(), workdir / f"node-{name}", shared) for name in NODES}
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(Node.start, nodes.values()))
        with haproxy(nodes, workdir) as lb_url:
            yield Cluster(nodes, lb_url, admin_url)
    finally:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(Node.stop, nodes.values()))
        drop_pg_database(admin_url, url)


def create(base: str, canvas: str, rev: int = 1, **extra: str) -> httpx.Response:
    return httpx.post(f"{base}/canvas/{canvas}/artifacts/preview?rev={rev}", content=PNG,
                      headers=headers("member", **{"Content-Type": "image/png", **extra}),
                      timeout=10)


def created(base: str, canvas: str, rev: int = 1) -> dict[str, Any]:
    response = create(base, canvas, rev)
    assert response.status_code == 201, response.text
    return response.json()


def test_the_balancer_spreads_requests_over_all_three_nodes(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.lb_url, timeout=10) as client:
        served = [client.get("/readyz").headers["x-node"] for _ in range(9)]
    assert sorted(set(served)) == list(NODES)


def test_a_create_on_a_is_readable_on_b_and_c_at_once(cluster: Cluster) -> None:
    a, b, c = (cluster.nodes[n] for n in NODES)
    canvas = new_canvas()
    record = created(a.url, canvas)
    for node in (b, c):
        path = f"/canvas/{canvas}/artifacts/{record['id']}"
        got = httpx.get(node.url + path, headers=headers("viewer"), timeout=10)
        assert got.status_code == 200, got.text
        assert got.json() == record
        content = httpx.get(node.url + path + "/content", headers=headers("viewer"), timeout=10)
        assert content.content == PNG
        listed = httpx.get(f"{node.url}/canvas/{canvas}/artifacts", headers=headers("viewer"),
                           timeout=10).json()["items"]
        assert [item["id"] for item in listed] == [record["id"]]


def test_a_delete_on_a_is_404_on_b_and_c_within_the_bound(cluster: Cluster) -> None:
    a, b, c = (cluster.nodes[n] for n in NODES)
    canvas = new_canvas()
    record = created(a.url, canvas)
    path = f"/canvas/{canvas}/artifacts/{record['id']}"
    for node in (b, c):  # both hold the record in their caches now
        assert httpx.get(node.url + path, headers=headers("viewer"), timeout=10).status_code == 200
    assert httpx.delete(a.url + path, headers=headers("member"), timeout=10).status_code == 204
    committed = time.monotonic()  # A answers 204 after its transaction committed
    seen: dict[str, list[tuple[float, int]]] = {"b": [], "c": []}
    with httpx.Client(timeout=10, headers=headers("viewer")) as client:
        while time.monotonic() < committed + DELETE_VISIBLE_WITHIN_S + 0.5:
            for name, node in (("b", b), ("c", c)):
                started = time.monotonic() - committed
                seen[name].append((started, client.get(node.url + path).status_code))
            time.sleep(0.02)
    for name, answers in seen.items():
        assert {status for _t, status in answers} <= {200, 404}, (name, answers)
        stale = [t for t, status in answers if status == 200]
        assert not stale or max(stale) < DELETE_VISIBLE_WITHIN_S, (name, stale)
        late = [status for t, status in answers if t >= DELETE_VISIBLE_WITHIN_S]
        assert late and set(late) == {404}, (name, answers)
        first_404 = next(t for t, status in answers if status == 404)
        assert all(status == 404 for t, status in answers if t > first_404), (name, answers)


def subscribe(node: Node, **extra: str) -> SseReader:
    reader = SseReader(f"{node.url}/artifacts/events",
                       {**headers("viewer"), **extra}).start()
    assert reader.next_comment() == "connected"
    return reader


def test_sse_on_b_gets_writes_through_a_and_c_in_seq_order_across_a_restart(
        cluster: Cluster) -> None:
    a, b, c = (cluster.nodes[n] for n in NODES)
    canvas = new_canvas()
    reader = subscribe(b)
    try:
        before = [created((a, c)[i % 2].url, canvas, i)["id"] for i in range(6)]
        got = [reader.next_event() for _ in before]
    finally:
        reader.close()
    b.stop()
    try:
        missed = [created((a, c)[i % 2].url, canvas, 10 + i)["id"] for i in range(4)]
    finally:
        b.start()
    resumed = subscribe(b, **{"Last-Event-ID": str(got[-1].id)})
    try:
        backlog = [resumed.next_event() for _ in missed]
        live = created(c.url, canvas, 20)["id"]
        after = resumed.next_event()
        assert resumed.events_so_far() == []
    finally:
        resumed.close()
    assert [m.data["data"]["artifact_id"] for m in got] == before
    assert [m.data["data"]["artifact_id"] for m in backlog] == missed
    assert after.data["data"]["artifact_id"] == live
    seqs = [m.id for m in [*got, *backlog, after]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


@dataclass
class Hook:
    """A webhook receiver that notes which node's process sent each POST (the peer port's
    socket, found in /proc while the request is open) and fails each event's first try."""

    cluster: Cluster
    url: str = ""
    seen: list[tuple[float, str, str | None, int]] = field(default_factory=list)
    """(monotonic time, webhook-id, node, status answered)"""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sender(self, peer_port: int, own_port: int) -> str | None:
        inode = _socket_inode(peer_port, own_port)
        if inode is None:
            return None
        target = f"socket:[{inode}]"
        for name, node in self.cluster.nodes.items():
            for pid in node.pids():
                with contextlib.suppress(OSError):
                    for fd in Path(f"/proc/{pid}/fd").iterdir():
                        with contextlib.suppress(OSError):
                            if os.readlink(fd) == target:
                                return name
        return None


def _socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the socket from `local_port` to `remote_port`. Both ports count: Linux
    gives one ephemeral port to several connections that go to different peers."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == local_port
                        and int(fields[2].rsplit(":", 1)[1], 16) == remote_port
                        and fields[9] != "0"):
                    return int(fields[9])
    return None


@contextlib.contextmanager
def hook_receiver(cluster: Cluster) -> Iterator[Hook]:
    hook = Hook(cluster)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("content-length", 0)))
            webhook_id = self.headers["webhook-id"]
            node = hook.sender(self.client_address[1], self.server.server_address[1])
            with hook.lock:
                tried = any(seen_id == webhook_id for _t, seen_id, _n, _s in hook.seen)
                status = 204 if tried else 500
                hook.seen.append((time.monotonic(), webhook_id, node, status))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    with serving(Handler) as url:
        hook.url = url
        yield hook


def test_webhooks_are_delivered_once_per_attempt_with_all_three_nodes_delivering(
        cluster: Cluster) -> None:
    subscriptions, events = 4, 4
    with hook_receiver(cluster) as hook, httpx.Client(base_url=cluster.lb_url,
                                                      timeout=10) as lb:
        made = []
        for index in range(subscriptions):
            canvas = new_canvas()
            response = lb.post("/webhooks", headers=headers(), json={
                "url": f"{hook.url}/{index}", "events": ["artifact_written"],
                "canvas_id": canvas})
            assert response.status_code == 201, response.text
            made.append((response.json()["id"], canvas))
        for rev in range(events):
            for _sub, canvas in made:
                assert create(cluster.lb_url, canvas, rev).status_code == 201
        deadline = time.monotonic() + 60
        while len(hook.seen) < 2 * subscriptions * events and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(3 * RETRY_AFTER_S + 0.5)  # a third attempt would have come by now
        logs = [lb.get(f"/webhooks/{sub}/deliveries", headers=headers()).json()["items"]
                for sub, _canvas in made]
    by_id: dict[str, list[tuple[float, str | None, int]]] = {}
    for at, webhook_id, node, status in hook.seen:
        by_id.setdefault(webhook_id, []).append((at, node, status))
    assert len(by_id) == subscriptions * events
    for webhook_id, attempts in by_id.items():
        assert [status for _at, _node, status in attempts] == [500, 204], webhook_id
        assert attempts[1][0] - attempts[0][0] >= RETRY_AFTER_S * 0.9, webhook_id
    for log in logs:
        outcomes = sorted((a["event_id"], a["attempt"], a["outcome"]) for a in log)
        assert [(attempt, outcome) for _e, attempt, outcome in outcomes] == [
            (1, "retrying"), (2, "succeeded")] * events
    senders = [node for _at, _id, node, _s in hook.seen]
    assert None not in senders, "a delivery came from no node's process"
    assert sorted(set(senders)) == list(NODES), senders


def test_idempotent_retries_spread_over_the_nodes_create_one_artifact(
        cluster: Cluster) -> None:
    canvas = new_canvas()
    key = f"idem-{canvas}"

    def attempt(_i: int) -> httpx.Response:
        return create(cluster.lb_url, canvas, 3, **{"Idempotency-Key": key})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(attempt, range(6)))
    answers += [attempt(i) for i in range(6)]
    assert sorted({r.headers["x-node"] for r in answers}) == list(NODES)
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert len({orjson.dumps(r.json()) for r in answers}) == 1
    listed = httpx.get(f"{cluster.lb_url}/canvas/{canvas}/artifacts", headers=headers("viewer"),
                       timeout=10).json()["items"]
    assert [item["id"] for item in listed] == [answers[0].json()["id"]]
