"""What a new operator or client developer sees first.

`GET /` says what answers and where the docs are, without a token; the
OpenAPI document says which headers every call needs and how to get a token,
canvas artifacts first; `engines --help` names every command; `retention
show` and gc's dry run say in words what they did (and did not do).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import SIGNING_KEY, Stack
from tests._server import free_port
from tests.test_cli import REPO, output, run_cli


def test_the_root_answers_without_a_token(stack: Stack) -> None:
    response = stack.client.get("/")
    assert response.status_code == 200
    assert response.json() == {
        "name": "Northstar canvas artifact store", "version": "0.1.0",
        "links": {"docs": "/docs", "openapi": "/openapi.json", "healthz": "/healthz",
                  "readyz": "/readyz"}}
    for link in response.json()["links"].values():
        assert stack.client.get(link).status_code == 200, link


def test_the_openapi_description_says_what_every_call_needs(local: Stack) -> None:
    document = local.client.get("/openapi.json").json()
    description = document["info"]["description"]
    for header in ("Authorization", "Bearer", "X-Tenant-Id", "X-Env", "X-Project-Id",
                   "Idempotency-Key"):
        assert f"`{header}" in description, header
    assert "engines token --tenant" in description and "AUTH_JWT_SIGNING" in description
    tags = [tag["name"] for tag in document["tags"]]
    assert tags[0] == "canvas artifacts"
    used = {tag for path in document["paths"].values() for op in path.values()
            for tag in op.get("tags", [])}
    assert used <= set(tags), used - set(tags)


def _db(tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'engines.db'}", "AUTH_JWT_SIGNING":
            SIGNING_KEY, "MEDIA_LOCAL_ROOT": str(tmp_path / "media")}


def test_help_names_every_command(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path, env={})
    assert result.returncode == 0
    description = result.stdout.split("\n\n")[1]
    for command in ("serve", "token", "migrate", "doctor", "gc", "retention", "purge",
                    "worker"):
        assert command in description, command


def test_retention_show_says_there_are_no_overrides(tmp_path: Path) -> None:
    env = _db(tmp_path)
    assert run_cli("migrate", cwd=tmp_path, env=env).returncode == 0
    shown = run_cli("retention", "show", cwd=tmp_path, env=env)
    assert shown.returncode == 0, output(shown)
    after = shown.stdout.split("tenant overrides:\n", 1)[1]
    assert after.startswith("  none: every tenant keeps what is configured above")

    assert run_cli("retention", "set", "--tenant", "t_acme", "--kind", "replay", "--keep",
                   "30d", cwd=tmp_path, env=env).returncode == 0
    shown = run_cli("retention", "show", cwd=tmp_path, env=env)
    assert "  t_acme env=* replay: 30d" in shown.stdout, shown.stdout
    assert "none:" not in shown.stdout


def test_gc_dry_run_says_so(tmp_path: Path) -> None:
    env = _db(tmp_path)
    assert run_cli("migrate", cwd=tmp_path, env=env).returncode == 0
    dry = run_cli("gc", cwd=tmp_path, env=env)
    assert dry.returncode == 0, output(dry)
    assert "gc: dry run, nothing deleted; add --apply to delete it" in dry.stdout
    applied = run_cli("gc", "--apply", cwd=tmp_path, env=env)
    assert applied.returncode == 0, output(applied)
    assert "dry run" not in applied.stdout


def test_the_walkthrough_names_the_url_it_could_not_reach(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{free_port()}"
    walk = subprocess.run([str(REPO / "examples" / "walkthrough.sh")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "API": api})
    assert walk.returncode == 1, walk.stdout + walk.stderr
    assert walk.stdout == ""
    assert f"no server answers at {api}/healthz" in walk.stderr
    assert "make run PORT=" in walk.stderr and "API=" in walk.stderr
