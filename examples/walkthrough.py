"""The README's walkthrough in Python: the same steps as walkthrough.sh, with engines.client.

With `make run` serving in one terminal, run from another:

    .venv/bin/python examples/walkthrough.py

Settings (all optional): API (http://127.0.0.1:8010), CANVAS (c_board1), TOKEN (default:
one from `engines token`, which signs with the server's key: AUTH_JWT_SIGNING, or the dev
key in ENGINES_HOME), ENGINES (the engines command; this interpreter's by default).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from engines.client import ArtifactClient, ArtifactError

API = os.environ.get("API", "http://127.0.0.1:8010")
CANVAS = os.environ.get("CANVAS", "c_board1")
ENGINES = os.environ.get("ENGINES", str(Path(sys.executable).with_name("engines")))
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwAD"
                       "hgGAWjR9awAAAABJRU5ErkJggg==")
REPLAY = {"rev": 42, "rev_from": 30, "mode": "keyframes", "summary": {"commits": 2},
          "keyframes": [{"t_ms": 0, "rev": 30, "type": "snapshot", "data": {"shapes": 3}},
                        {"t_ms": 400, "rev": 31, "type": "commit", "data": {"op": "move"}},
                        {"t_ms": 900, "rev": 35, "type": "snapshot", "data": {"shapes": 5}},
                        {"t_ms": 1500, "rev": 40, "type": "gesture", "data": {"tool": "pen"}},
                        {"t_ms": 2100, "rev": 42, "type": "commit", "data": {"op": "resize"}}]}


def show(step: str, result: object, *, indent: int | None = None) -> None:
    """Print the step as written, then what it returned (JSON)."""
    print(f"\n>>> {step}")
    if hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    print(result if isinstance(result, str) else json.dumps(result, indent=indent))


def dev_token() -> str:
    return subprocess.run([ENGINES, "token", "--tenant", "t_acme", "--sub", "u_ana", "--role",
                           "member"], check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    token = os.environ.get("TOKEN") or dev_token()
    work = Path(tempfile.mkdtemp())
    with ArtifactClient(API, token, "t_acme", "dev", "p_web") as client:
        preview = client.create_preview(CANVAS, 7, PNG, "image/png")
        show("preview = client.create_preview(CANVAS, 7, PNG, 'image/png')", preview, indent=4)
        size = client.content(CANVAS, preview.id, work / "fetched.png")
        show("client.content(CANVAS, preview.id, work / 'fetched.png')", size)
        same = (work / "fetched.png").read_bytes() == PNG
        show("(work / 'fetched.png').read_bytes() == PNG", same)

        replay = client.create_replay(CANVAS, REPLAY)
        show("replay = client.create_replay(CANVAS, REPLAY)", replay)
        window = io.BytesIO()
        client.content(CANVAS, replay.id, window, from_ms=1000, to_ms=2000)
        show("client.content(CANVAS, replay.id, window, from_ms=1000, to_ms=2000)",
             json.loads(window.getvalue()))

        audit = client.create_audit(CANVAS, 42)
        show("audit = client.create_audit(CANVAS, 42)", audit)
        report = io.BytesIO()
        client.content(CANVAS, audit.id, report)
        show("client.content(CANVAS, audit.id, report)", json.loads(report.getvalue()))

        show("[r.id for r in itertools.islice(client.list(CANVAS), 2)]",
             [record.id for record in itertools.islice(client.list(CANVAS), 2)])
        show("client.latest(CANVAS, 'preview').id", client.latest(CANVAS, "preview").id)
        show("client.lineage(CANVAS, preview.id)", client.lineage(CANVAS, preview.id))

    with ArtifactClient(API, token, "t_other", "dev", "p_web") as other:
        try:
            other.get(CANVAS, preview.id)
        except ArtifactError as error:
            show("other.get(CANVAS, preview.id)  # a token of t_acme, X-Tenant-Id t_other",
                 repr(error))
    print("\nwalkthrough: done")


if __name__ == "__main__":
    main()
