"""Crash consistency and `engines gc`: what a killed process leaves is found and removed.

The crash test runs the real server (`engines serve`) as a subprocess,
SIGKILLs it with 50 uploads in flight, restarts it on the same data and runs
`engines gc --apply`; afterwards storage and metadata must agree exactly and
every upload that was acknowledged with 201 must read back byte for byte.
The gc tests pin down the rules on both blob stores: the grace period, dry
run by default, never a referenced blob, records with a missing blob reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from sqlalchemy import Engine, func, select

from conftest import PNG, SIGNING_KEY, Stack, new_canvas
from engines.auth.tokens import issue_token
from engines.canvas_artifacts.repository import canvas_artifacts
from engines.config import Settings
from engines.db.engine import build_engine
from engines.lifecycle.gc import collect
from engines.lineage.nexus.backends.sql import documents as nexus_documents
from engines.lineage.nexus.backends.sql import events as dataset_events
from engines.media_v2.repository import artifacts as media_artifacts
from engines.storage.base import BlobInfo
from engines.storage.local import UPLOADS_DIR, LocalBlobStore, LocalBlobWriter

ENGINES = str(Path(sys.executable).with_name("engines"))
KIB, MIB = 1024, 1024 * 1024
TENANT = "t_crash"


# ---- helpers --------------------------------------------------------------


def service_env(**values: object) -> dict[str, str]:
    """This process's environment minus every service setting, plus the given ones."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in Settings.model_fields and k != "AWS_DEFAULT_REGION"}
    env.update({k.upper(): str(v) for k, v in values.items()})
    return env


def run_gc(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`engines gc ARGS` as an operator runs it; returns the JSON summary it prints."""
    done = subprocess.run([ENGINES, "gc", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout[done.stdout.index("\n{") + 1:])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_of(root: Path, uri: str) -> Path:
    """The file of a `local:` URI under the media root."""
    assert uri.startswith("local:tenants/"), uri
    return root / uri.removeprefix("local:")


def png(size: int) -> bytes:
    return PNG[:16] + os.urandom(size - 16)


# ---- the crash ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`engines serve` in a subprocess, killed the hard way."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""

    def start(self) -> str:
        port = free_port()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                # one process, the one killed: with several workers a SIGKILL of the
                # supervisor would leave its workers serving the uploads
                [ENGINES, "serve", "--port", str(port), "--workers", "1", "--log-level",
                 "warning", "--no-access-log"], env=self.env, stdout=out,
                stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return self.base
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Upload:
    canvas: str
    size: int
    delay: float
    """Seconds slept between 64 KiB chunks; 0 sends the body in one piece."""
    data: bytes = b""
    status: int | None = None
    record: dict[str, Any] | None = None
    error: str | None = None

    def body(self) -> Iterator[bytes] | bytes:
        if not self.delay:
            return self.data

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(self.data), 64 * KIB):
                yield self.data[start:start + 64 * KIB]
                time.sleep(self.delay)

        return chunks()

    def run(self, base: str, headers: dict[str, str], go: threading.Event) -> None:
        go.wait()
        try:
            with httpx.Client(base_url=base, timeout=60) as http:
                response = http.post(f"/canvas/{self.canvas}/artifacts/preview?rev=1",
                                     content=self.body(),
                                     headers={**headers, "Content-Type": "image/png"})
            self.status = response.status_code
            if self.status == 201:
                self.record = response.json()
        except httpx.HTTPError as exc:
            self.error = type(exc).__name__


def plan_uploads(rng: random.Random) -> list[Upload]:
    """50 uploads: 20 small in one piece, 15 quick streams, 15 slow streams (2-4 s)."""
    canvases = [new_canvas() for _ in range(5)]
    uploads = [Upload(rng.choice(canvases), rng.randint(2 * KIB, 300 * KIB), 0)
               for _ in range(20)]
    uploads += [Upload(rng.choice(canvases), rng.randint(1100 * KIB, 2500 * KIB), 0.002)
                for _ in range(15)]
    uploads += [Upload(rng.choice(canvases), rng.randint(3 * MIB, 4 * MIB), 0.04)
                for _ in range(15)]
    for upload in uploads:
        upload.data = PNG[:16] + rng.randbytes(upload.size - 16)
    rng.shuffle(uploads)
    return uploads


def part_files(root: Path) -> list[Path]:
    """Unfinished uploads: temporary files in the reserved directory."""
    return [p for p in (root / UPLOADS_DIR).rglob("*") if p.is_file()]


def storage_files(root: Path) -> set[Path]:
    base = root / "tenants"
    return {p.resolve() for p in base.rglob("*") if p.is_file()} if base.exists() else set()


@pytest.mark.slow
def test_sigkill_with_50_uploads_in_flight_then_gc(tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    media = tmp_path / "media"
    database = f"sqlite:///{tmp_path / 'engines.db'}"
    env = service_env(database_url=database, media_local_root=media,
                      auth_jwt_signing=SIGNING_KEY, dev_key_file=tmp_path / "dev-key")
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_crash", tenants=[TENANT],
                        role="member")
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": TENANT, "X-Env": "dev",
               "X-Project-Id": "p_main"}
    server = Server(env, tmp_path / "server.log")
    request.addfinalizer(server.stop)
    base = server.start()
    uploads = plan_uploads(random.Random(4))
    go = threading.Event()
    threads = [threading.Thread(target=u.run, args=(base, headers, go), daemon=True)
               for u in uploads]
    for thread in threads:
        thread.start()

    # Crash point: a good share acknowledged, and at least one body mid-write on disk.
    go.set()
    deadline = time.monotonic() + 20
    while not (sum(u.status == 201 for u in uploads) >= 15 and part_files(media)):
        assert time.monotonic() < deadline, "never reached the crash point"
        time.sleep(0.005)
    server.kill()
    for thread in threads:
        thread.join(30)
    acknowledged = [u for u in uploads if u.status == 201]
    cut_off = [u for u in uploads if u.error]
    assert len(acknowledged) + len(cut_off) == 50, [(u.status, u.error) for u in uploads]
    assert acknowledged and cut_off

    # What the crash left, before anything touches it.
    engine = build_engine(Settings(database_url=database))
    request.addfinalizer(engine.dispose)
    with engine.connect() as conn:
        uris = set(conn.execute(select(canvas_artifacts.c.uri)).scalars())
    left_parts = part_files(media)
    orphans = storage_files(media) - {file_of(media, u).resolve() for u in uris}
    assert left_parts, "the crash left no half-written upload; the test proved nothing"

    base = server.start()
    dry = run_gc(env, "--older-than", "0s")
    assert dry["deleted"] == 0 and len(part_files(media)) == len(left_parts)
    applied = run_gc(env, "--older-than", "0s", "--apply", "--force")
    assert applied["incomplete_uploads"] == len(left_parts)
    assert applied["orphan_blobs"] == len(orphans)
    assert applied["deleted"] == len(left_parts) + len(orphans)
    assert applied["records_missing_blob"] == []
    assert_consistent(engine, media)
    assert_acknowledged_intact(base, headers, acknowledged)
    print(f"\ncrash: {len(acknowledged)} acknowledged (201), {len(cut_off)} cut off, "
          f"{len(uris)} records committed, {len(left_parts)} .part files and "
          f"{len(orphans)} orphan blobs left; gc deleted {applied['deleted']}; "
          "acknowledged lost: 0")


def assert_consistent(engine: Engine, media: Path) -> None:
    """Every record has its blob (sha256 checked) and full metadata; every blob a record."""
    with engine.connect() as conn:
        records = conn.execute(select(canvas_artifacts)).mappings().all()
        for record in records:
            path = file_of(media, record["uri"])
            assert path.is_file(), record["id"]
            assert sha256(path.read_bytes()) == record["sha256"], record["id"]
            assert path.stat().st_size == record["size_bytes"]
            derived = conn.execute(select(media_artifacts.c.uri).where(
                media_artifacts.c.id == record["media_artifact_id"])).scalar_one()
            assert derived == record["uri"]
            for table in (nexus_documents, dataset_events):
                assert conn.execute(select(func.count()).select_from(table).where(
                    table.c.subject_id == record["id"])).scalar_one() == 1, table.name
    assert storage_files(media) == {file_of(media, r["uri"]).resolve() for r in records}
    assert part_files(media) == []


def assert_acknowledged_intact(base: str, headers: dict[str, str],
                               acknowledged: list[Upload]) -> None:
    """Every 201 survived the crash: listed, and its bytes hash to what was sent."""
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        listed: set[str] = set()
        for canvas in {u.canvas for u in acknowledged}:
            cursor: str | None = None
            while True:
                params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                page = http.get(f"/canvas/{canvas}/artifacts", params=params).json()
                listed |= {item["id"] for item in page["items"]}
                if not (cursor := page["next_cursor"]):
                    break
        for upload in acknowledged:
            assert upload.record is not None
            assert upload.record["sha256"] == sha256(upload.data)
            assert upload.record["id"] in listed
            got = http.get(f"/canvas/{upload.canvas}/artifacts/{upload.record['id']}/content")
            assert got.status_code == 200 and sha256(got.content) == sha256(upload.data)


# ---- gc rules -------------------------------------------------------------


def create(stack: Stack, canvas: str, data: bytes) -> dict[str, Any]:
    response = stack.client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=data,
                                 headers={**stack.headers(), "Content-Type": "image/png"})
    assert response.status_code == 201, response.text
    return response.json()


def content_of(stack: Stack, canvas: str, artifact_id: str) -> httpx.Response:
    return stack.client.get(f"/canvas/{canvas}/artifacts/{artifact_id}/content",
                            headers=stack.headers())


def orphan_key(canvas: str) -> str:
    return f"tenants/t_acme/dev/canvas/{canvas}/preview/art_orphan{uuid.uuid4().hex[:8]}.png"


def test_gc_local(make_stack) -> None:
    stack = make_stack("local-sqlite")
    store, canvas = stack.runtime.store, new_canvas()
    env = service_env(database_url=stack.settings.database_url,
                      media_local_root=stack.settings.media_local_root,
                      auth_jwt_signing=SIGNING_KEY)
    kept_data = png(10 * KIB)
    kept = create(stack, canvas, kept_data)
    lost = create(stack, canvas, png(10 * KIB))
    root = store.root
    file_of(root, lost["uri"]).unlink()
    old_orphan, fresh_orphan = orphan_key(canvas), orphan_key(canvas)
    for key in (old_orphan, fresh_orphan):
        store.put_bytes(key, png(KIB), "image/png")
    writer = store.open_writer(orphan_key(canvas), "image/png")
    writer.write(png(KIB))
    writer.fh.close()  # a crashed writer: its temporary file stays
    old_part = writer.tmp
    an_hour_ago = time.time() - 3600
    for path in (file_of(root, store.uri_for(old_orphan)), old_part,
                 file_of(root, kept["uri"])):
        os.utime(path, (an_hour_ago, an_hour_ago))

    dry = run_gc(env)
    assert (dry["orphan_blobs"], dry["incomplete_uploads"], dry["deleted"]) == (1, 1, 0)
    assert dry["records_missing_blob"] == [lost["id"]]
    assert store.exists(old_orphan) and old_part.exists()

    applied = run_gc(env, "--older-than", "15m", "--apply", "--force")
    assert (applied["orphan_blobs"], applied["incomplete_uploads"], applied["deleted"]) == (1, 1, 2)
    assert applied["records_missing_blob"] == [lost["id"]]
    assert not store.exists(old_orphan) and not old_part.exists()
    assert store.exists(fresh_orphan)
    assert content_of(stack, canvas, kept["id"]).content == kept_data
    missing = content_of(stack, canvas, lost["id"])
    assert missing.status_code == 503 and missing.json()["error"]["code"] == "storage.blob_missing"


@pytest.mark.s3
@pytest.mark.postgres
def test_gc_s3(make_stack, s3_endpoint: str) -> None:
    stack = make_stack("s3-postgres")
    store, canvas, bucket = stack.runtime.store, new_canvas(), stack.settings.raw_bucket
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    env = service_env(database_url=stack.settings.database_url, raw_bucket=bucket,
                      aws_endpoint_url_s3=s3_endpoint, auth_jwt_signing=SIGNING_KEY,
                      s3_max_attempts=2)
    kept_data = png(10 * KIB)
    kept = create(stack, canvas, kept_data)
    lost = create(stack, canvas, png(10 * KIB))
    s3.delete_object(Bucket=bucket, Key=store.key_for(lost["uri"]))
    orphan = orphan_key(canvas)
    store.put_bytes(orphan, png(KIB), "image/png")
    unfinished = orphan_key(canvas)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=unfinished)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=unfinished, UploadId=upload_id, PartNumber=1,
                   Body=png(KIB))

    def uploads() -> list[str]:
        return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    # S3 cannot backdate objects: within the grace period everything is young.
    young = run_gc(env, "--older-than", "15m", "--apply")
    assert (young["orphan_blobs"], young["incomplete_uploads"], young["deleted"]) == (0, 0, 0)
    assert young["records_missing_blob"] == [lost["id"]]
    assert store.exists(orphan) and uploads() == [unfinished]

    dry = run_gc(env, "--older-than", "0s")
    assert (dry["orphan_blobs"], dry["incomplete_uploads"], dry["deleted"]) == (1, 1, 0)
    assert store.exists(orphan) and uploads() == [unfinished]

    applied = run_gc(env, "--older-than", "0s", "--apply", "--force")
    assert (applied["orphan_blobs"], applied["incomplete_uploads"], applied["deleted"]) == (1, 1, 2)
    assert applied["records_missing_blob"] == [lost["id"]]
    assert not store.exists(orphan) and uploads() == []
    assert store.exists(store.key_for(kept["uri"]))
    assert content_of(stack, canvas, kept["id"]).content == kept_data
    missing = content_of(stack, canvas, lost["id"])
    assert missing.status_code == 503 and missing.json()["error"]["code"] == "storage.blob_missing"


def test_gc_scan_survives_uploads_finishing_mid_scan(make_stack) -> None:
    """gc runs beside a live service: an upload that commits after the uploads
    directory was listed (its temporary file renamed away) is skipped, not a
    crash of the scan."""
    stack = make_stack("local-sqlite")
    canvas = new_canvas()
    writers: list[LocalBlobWriter] = []
    for _ in range(2):  # two unfinished uploads in one directory: one listing covers both
        writer = stack.runtime.store.open_writer(orphan_key(canvas), "image/png")
        writer.write(png(KIB))
        writers.append(writer)

    class Busy(LocalBlobStore):
        def iter_uploads(self) -> Iterator[BlobInfo]:
            for index, info in enumerate(super().iter_uploads()):
                if index == 0:  # the other upload finishes while gc looks at this one
                    for writer in writers:
                        if writer.tmp.name != Path(info.key).name:
                            writer.commit()
                yield info

    report = collect(Busy(stack.settings.media_local_root), stack.runtime.engine,
                     older_than=timedelta(0), apply=False)
    for writer in writers:  # the one still unfinished stands for a crashed process
        writer.fh.close()
    assert report.scanned == 0 and len(report.incomplete_uploads) == 1
