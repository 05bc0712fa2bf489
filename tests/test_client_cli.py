"""`engines artifacts put|get|ls|rm|export|watch`, run as a real command against a real
server on both stacks, configured by ENGINES_* env vars and flags."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import orjson

from conftest import PNG, new_canvas
from engines.client.cli import PROGRESS_MIN_BYTES
from tests._client_stacks import PROJECT, Served, new_tenant, served_fixture, token
from tests._server import ENGINES

served = served_fixture()
REPLAY = {"rev": 5, "keyframes": [{"t_ms": 0, "type": "snapshot"}, {"t_ms": 10, "type": "commit"}]}


def artifacts(served: Served, *args: str, tenant: str = "t_acme", cwd: Path,
              stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess[bytes]:
    settings = {"ENGINES_URL": served.url, "ENGINES_TOKEN": token(tenant),
                "ENGINES_TENANT": tenant, "ENGINES_ENV": "dev", "ENGINES_PROJECT": PROJECT}
    full = {k: v for k, v in os.environ.items() if not k.startswith("ENGINES_")}
    return subprocess.run([str(ENGINES), "artifacts", *args], cwd=cwd, input=stdin,
                          env={**full, **settings, **env}, capture_output=True, timeout=60,
                          check=False)


def as_json(result: subprocess.CompletedProcess[bytes]) -> Any:
    assert result.returncode == 0, result.stderr.decode()
    return orjson.loads(result.stdout)


def test_put_ls_get_export_rm_watch_with_json(served: Served, tmp_path: Path) -> None:
    tenant, canvas = new_tenant(), new_canvas()
    (tmp_path / "preview.png").write_bytes(PNG)
    (tmp_path / "replay.json").write_bytes(orjson.dumps(REPLAY))

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return artifacts(served, *args, tenant=tenant, cwd=tmp_path, **kwargs)

    preview = as_json(run("put", canvas, "preview.png", "--rev", "7", "--json"))
    replay = as_json(run("put", "replay", canvas, "-", "--json", stdin=orjson.dumps(REPLAY)))
    audit = as_json(run("put", canvas, "--kind", "audit", "--rev", "7", "--json"))
    ref = as_json(run("put", canvas, "--uri", "https://cdn.example/r.png", "--rev", "8",
                      "--json"))
    assert (preview["kind"], preview["rev"], preview["size_bytes"]) == ("preview", 7, len(PNG))
    assert (replay["kind"], replay["rev"], audit["meta"]["placeholder"]) == ("replay", 5, True)
    assert ref["uri"] == "https://cdn.example/r.png"

    listed = as_json(run("ls", canvas, "--json"))
    assert sorted(r["id"] for r in listed) == sorted(
        r["id"] for r in (preview, replay, audit, ref))
    assert [r["id"] for r in as_json(run("ls", canvas, "--kind", "replay", "--json"))] == [
        replay["id"]]
    human = run("ls", canvas)
    assert human.returncode == 0 and preview["id"].encode() in human.stdout

    fetched = as_json(run("get", canvas, preview["id"], "-o", "out.png", "--json"))
    assert (fetched["path"], fetched["bytes"], fetched["artifact"]["id"]) == (
        "out.png", len(PNG), preview["id"])
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert run("get", canvas, preview["id"]).returncode == 0  # named after the artifact
    assert (tmp_path / f"{preview['id']}.png").read_bytes() == PNG
    assert run("get", canvas, preview["id"], "positional.png").returncode == 0
    assert (tmp_path / "positional.png").read_bytes() == PNG
    to_stdout = run("get", canvas, replay["id"], "-o", "-")
    assert orjson.loads(to_stdout.stdout)["keyframes"] == REPLAY["keyframes"]
    assert as_json(run("get", canvas, audit["id"], "--meta", "--json")) == audit

    exported = as_json(run("export", canvas, "board.tar", "--json"))
    assert exported["bytes"] == (tmp_path / "board.tar").stat().st_size
    with tarfile.open(tmp_path / "board.tar") as tar:
        assert f"preview/{preview['id']}.png" in tar.getnames()

    assert as_json(run("rm", canvas, audit["id"], ref["id"], "--json")) == {
        "deleted": [audit["id"], ref["id"]]}
    assert len(as_json(run("ls", canvas, "--json"))) == 2

    watched = run("watch", canvas, "--after", "0", "--count", "6", "--json")
    assert watched.returncode == 0, watched.stderr.decode()
    events = [orjson.loads(line) for line in watched.stdout.splitlines()]
    assert [(e["type"], e["data"]["artifact_id"]) for e in events] == [
        *[("artifact_written", r["id"]) for r in (preview, replay, audit, ref)],
        ("artifact_deleted", audit["id"]), ("artifact_deleted", ref["id"])]


def test_progress_bar_on_large_transfers(served: Served, tmp_path: Path) -> None:
    canvas = new_canvas()
    big = PNG + bytes(PROGRESS_MIN_BYTES + 1024 * 1024)
    (tmp_path / "big.png").write_bytes(big)
    put = artifacts(served, "put", canvas, "big.png", "--rev", "1", "--json", cwd=tmp_path)
    record = as_json(put)
    assert record["size_bytes"] == len(big)
    assert b"put big.png" in put.stderr and b"MB" in put.stderr  # the bar, on stderr

    got = artifacts(served, "get", canvas, record["id"], "-o", "copy.png", cwd=tmp_path)
    assert got.returncode == 0 and (tmp_path / "copy.png").read_bytes() == big
    assert f"get {record['id']}".encode() in got.stderr
    quiet = artifacts(served, "export", canvas, "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == b""
    assert (tmp_path / f"{canvas}-artifacts.tar").stat().st_size > len(big)

    small = artifacts(served, "put", canvas, "-", "--rev", "2", cwd=tmp_path, stdin=PNG)
    assert small.returncode == 0 and small.stderr == b""  # no bar for small transfers


def test_flags_win_over_the_environment(served: Served, tmp_path: Path) -> None:
    canvas = new_canvas()
    made = as_json(artifacts(served, "put", canvas, "--kind", "audit", "--rev", "1", "--json",
                             cwd=tmp_path))
    wrong = {"ENGINES_TENANT": "t_nobody", "ENGINES_URL": "http://127.0.0.1:9"}
    listed = as_json(artifacts(served, "ls", canvas, "--json", "--tenant", "t_acme", "--url",
                               served.url, cwd=tmp_path, **wrong))
    assert [r["id"] for r in listed] == [made["id"]]


def test_errors_and_missing_settings(served: Served, tmp_path: Path) -> None:
    missing = artifacts(served, "ls", "c_x", cwd=tmp_path, ENGINES_TOKEN="", ENGINES_PROJECT="")
    assert missing.returncode == 2
    assert b"ENGINES_TOKEN" in missing.stderr and b"ENGINES_PROJECT" in missing.stderr

    absent = artifacts(served, "get", new_canvas(), "art_nope", "--json", cwd=tmp_path)
    assert absent.returncode == 1 and absent.stdout == b""
    error = orjson.loads(absent.stderr)["error"]
    assert (error["status"], error["code"]) == (404, "canvas.not_found")
    assert len(error["request_id"]) == 32 and error["message"]

    human = artifacts(served, "ls", "c_x", cwd=tmp_path, ENGINES_TOKEN="bad")
    assert human.returncode == 1 and b"HTTP 401" in human.stderr

    usage = artifacts(served, "put", "c_x", "f.png", cwd=tmp_path)
    assert usage.returncode == 2 and b"--rev" in usage.stderr


def test_unreadable_file_is_a_clear_error(served: Served, tmp_path: Path) -> None:
    result = artifacts(served, "put", "c_x", "nope.png", "--rev", "1", cwd=tmp_path)
    assert result.returncode == 1 and b"nope.png" in result.stderr
