"""The README's two commands, from a fresh clone, as a new user runs them.

`make run` must set everything up on its own (venv, install, SQLite, dev
key) and print a curl line that works as pasted. `make test` is what CI runs
on a fresh clone; here we check it is wired (README, .ci/run, Makefile) and
leave running it to CI, since running the suite from inside itself recurses.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests._server import free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    """No settings leak in from the test run: the README's defaults must do."""
    dropped = ("DATABASE_URL", "RAW_BUCKET", "AUTH_JWT_SIGNING", "MEDIA_LOCAL_ROOT",
               "AWS_ENDPOINT_URL_S3", "VIRTUAL_ENV", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k not in dropped}


def test_readme_and_ci_name_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert re.search(r"^\s*make test\b", (REPO / ".ci" / "run").read_text(), re.M)
    dry = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert "pytest" in dry and "ruff check" in dry


def test_make_run_from_a_fresh_clone_serves_and_prints_a_working_curl(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    port = free_port()
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=clone, env=_clean_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        curl_line = None
        deadline = time.monotonic() + 540
        while time.monotonic() < deadline and curl_line is None:
            assert proc.poll() is None, log.read_text()
            match = re.search(r"^\s*(curl .*)$", log.read_text(), re.M)
            curl_line = match.group(1) if match else None
            time.sleep(0.5)
        assert curl_line, f"no curl line printed:\n{log.read_text()}"
        text = log.read_text()
        assert "blobs in local directory" in text and "metadata in sqlite" in text
        for _ in range(100):
            result = subprocess.run([*shlex.split(curl_line), "-w", "\n%{http_code}"],
                                    capture_output=True, text=True)
            if result.stdout.endswith("200"):
                break
            time.sleep(0.2)
        assert result.stdout.endswith("200"), result.stdout
        assert '"items":[]' in result.stdout
        assert (clone / "var" / "engines.db").exists()
        assert (clone / "var" / "dev-signing-key").exists()
        assert not (clone / ".venv" / "bin" / "pytest").exists(), "make run: runtime deps only"

        # the README's walkthrough, as a newcomer runs it next to `make run` (only the port
        # differs): preview, replay and audit created, fetched and listed
        walk = subprocess.run(["examples/walkthrough.sh"], cwd=clone, capture_output=True,
                              text=True, timeout=120,
                              env={**_clean_env(), "API": f"http://127.0.0.1:{port}"})
        assert walk.returncode == 0, walk.stdout + walk.stderr
        for expected in ('"kind": "preview"', "\nidentical\n", "\n206\n", '"kind":"replay"',
                         '"status":"pending"', '"next_cursor":', '"canvas.preview.created"',
                         '"code":"auth.tenant_forbidden"', "walkthrough: done"):
            assert expected in walk.stdout, (expected, walk.stdout)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _commands(lines: list[str]) -> list[str]:
    return [line[2:] for line in lines if line.startswith("$ ")]


def test_readme_shows_the_walkthrough_as_the_script_runs_it() -> None:
    """The README's walkthrough commands are the script's, in order (its output is pasted)."""
    script = (REPO / "examples" / "walkthrough.sh").read_text()
    shown = re.findall(r"^show '(.*)'$", script, re.M)
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using it", 1)[1].split("\n## ", 1)[0]
    run, *steps = _commands(section.splitlines())
    assert run == "examples/walkthrough.sh"
    assert steps == shown
