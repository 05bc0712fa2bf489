"""Export memory: a canvas whose payloads total 1 GiB streams out of a server under 200 MiB.

A real `engines serve` (local store + SQLite) receives four 256 MiB previews
(streamed in, so the uploads are memory-bounded too) and exports them; the
archive is checked member by member against the records' sha256, and the
server's peak RSS (VmHWM) is read from /proc.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from conftest import PNG, SIGNING_KEY, new_canvas
from engines.auth.tokens import issue_token
from engines.config import Settings
from tests._server import running_server

MIB = 1024 * 1024
PREVIEW = 256 * MIB
COUNT = 4
BLOCK = os.urandom(MIB)


def body(seed: int) -> Iterator[bytes]:
    """256 MiB that sniff as PNG, different per preview, generated as it is sent."""
    yield PNG[:16] + bytes([seed]) * (MIB - 16)
    for _ in range(PREVIEW // MIB - 1):
        yield BLOCK


def expected_sha(seed: int) -> str:
    digest = hashlib.sha256()
    for chunk in body(seed):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_exporting_1_gib_keeps_server_memory_flat(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'engines.db'}",
           "MEDIA_LOCAL_ROOT": str(tmp_path / "media"), "AUTH_JWT_SIGNING": SIGNING_KEY,
           "MAX_PREVIEW_BYTES": str(PREVIEW), "RAW_BUCKET": ""}
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_ana", tenants=["t_acme"],
                        role="member")
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": "t_acme", "X-Env": "dev",
               "X-Project-Id": "p_main"}
    canvas = new_canvas()
    archive = tmp_path / "export.tar"
    with running_server(env, tmp_path) as server, \
            httpx.Client(base_url=server.url, headers=headers, timeout=300) as http:
        records = {}
        for seed in range(COUNT):
            created = http.post(f"/canvas/{canvas}/artifacts/preview?rev={seed}",
                                content=body(seed), headers={"Content-Type": "image/png"})
            assert created.status_code == 201, created.text
            records[created.json()["id"]] = created.json()
        with http.stream("GET", f"/canvas/{canvas}/artifacts/export") as response, \
                archive.open("wb") as out:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                out.write(chunk)
        peak_mib = server.peak_rss_kib() / 1024

    assert archive.stat().st_size > COUNT * PREVIEW
    with tarfile.open(archive, mode="r:") as tar:
        members = tar.getmembers()
        assert members[0].name == "manifest.jsonl"
        manifest = [orjson.loads(line) for line in tar.extractfile(members[0]).read().splitlines()]  # type: ignore[union-attr]
        assert {line["record"]["id"] for line in manifest} == set(records)
        for member in members[1:]:
            digest = hashlib.sha256()
            with tar.extractfile(member) as payload:  # type: ignore[union-attr]
                while chunk := payload.read(4 * MIB):
                    digest.update(chunk)
            artifact_id = member.name.split("/")[1].split(".")[0]
            assert digest.hexdigest() == records[artifact_id]["sha256"]
    assert sorted(r["sha256"] for r in records.values()) == sorted(
        expected_sha(seed) for seed in range(COUNT))
    print(f"\nexport of {COUNT * PREVIEW // MIB} MiB: server peak RSS {peak_mib:.0f} MiB")
    assert peak_mib < 200, f"server peak RSS {peak_mib:.0f} MiB exporting 1 GiB"
