"""`engines artifacts put|get|ls|rm|export|watch`: the client at a terminal.

Connection settings come from flags or, unset, from the environment:
`--url` ENGINES_URL (default http://127.0.0.1:8010), `--token` ENGINES_TOKEN,
`--tenant` ENGINES_TENANT, `--env` ENGINES_ENV, `--project` ENGINES_PROJECT.
Human output by default; `--json` prints JSON for scripts (one document, or
one event per line for `watch`). Transfers over PROGRESS_MIN_BYTES draw a
progress bar on stderr (rich), never on stdout. Exit status: 0, 1 when the
service (or the network) refused, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from engines.canvas_artifacts.models import ArtifactRecord
from engines.client.errors import ArtifactError
from engines.client.sync import ArtifactClient
from engines.client.transfer import Progress

PROGRESS_MIN_BYTES = 4 * 1024 * 1024
"""A transfer draws a bar once it is (or is known to become) this large."""
DEFAULT_URL = "http://127.0.0.1:8010"
KINDS = ("preview", "replay", "audit")
SETTINGS = (("url", "ENGINES_URL"), ("token", "ENGINES_TOKEN"), ("tenant", "ENGINES_TENANT"),
            ("env", "ENGINES_ENV"), ("project", "ENGINES_PROJECT"))
HELP = {"url": f"the service's base URL (default {DEFAULT_URL})",
        "token": "bearer token (`engines token` prints a dev one)",
        "tenant": "X-Tenant-Id, e.g. t_acme", "env": "X-Env: dev, staging or prod",
        "project": "X-Project-Id, e.g. p_web"}
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
              "image/svg+xml": ".svg", "text/html": ".html", "application/json": ".json"}


class UsageError(Exception):
    """A setting is missing or a flag combination makes no sense (exit status 2)."""


# ---- output -----------------------------------------------------------------


def _emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _record_line(record: ArtifactRecord) -> str:
    size = "-" if record.size_bytes is None else f"{record.size_bytes} bytes"
    return (f"{record.id}  {record.kind}  rev {record.rev}  {record.mime_type or '-'}  {size}  "
            f"{record.created_at:%Y-%m-%d %H:%M:%S}")


@contextlib.contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[Progress]:
    """A Progress callback drawing a rich bar on stderr, started only once the
    transfer reaches PROGRESS_MIN_BYTES (small transfers stay silent)."""
    bar: dict[str, Any] = {}

    def advance(done: int, total: int | None) -> None:
        if not bar:
            if not enabled or max(done, total or 0) < PROGRESS_MIN_BYTES:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            view = RichProgress("[progress.description]{task.description}", BarColumn(),
                            DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True))
            view.start()
            bar.update(view=view, task=view.add_task(label, total=total))
        bar["view"].update(bar["task"], completed=done, total=total)

    try:
        yield advance
    finally:
        if bar:
            bar["view"].stop()


# ---- the commands -----------------------------------------------------------


def _stdin_copy() -> IO[bytes]:
    """stdin spooled to a temporary file: a retried create must send the same bytes."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - the caller's ExitStack closes it
    shutil.copyfileobj(sys.stdin.buffer, spool)
    spool.seek(0)
    return spool


def _report(source: Path | IO[bytes] | None) -> dict[str, Any] | None:
    """An audit report file's JSON (None: no file, the service writes the placeholder)."""
    if source is None:
        return None
    raw = source.read_bytes() if isinstance(source, Path) else source.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"the audit report is not JSON: {exc}") from exc


def _put_words(args: argparse.Namespace) -> None:
    """`[KIND] CANVAS [FILE]`: a leading kind is the same as --kind."""
    words = list(args.words)
    if len(words) > 1 and words[0] in KINDS:
        args.kind = words.pop(0)
    if not 1 <= len(words) <= 2:
        raise UsageError("expected [KIND] CANVAS [FILE]")
    args.canvas, args.file = words[0], words[1] if len(words) == 2 else None


def cmd_put(client: ArtifactClient, args: argparse.Namespace) -> int:
    _put_words(args)
    if args.kind != "replay" and args.rev is None:
        raise UsageError(f"a {args.kind} needs --rev N")
    if args.uri and args.kind != "preview":
        raise UsageError("--uri makes a render-ref preview: it goes with --kind preview")
    if args.file is None and not (args.uri or args.kind == "audit"):
        raise UsageError("name a file (or - for stdin)")
    key = args.idempotency_key
    with contextlib.ExitStack() as stack:
        source: Any = None
        if args.file == "-":
            source = stack.enter_context(_stdin_copy())
        elif args.file is not None:
            source = Path(args.file)
        progress = stack.enter_context(progress_bar(f"put {args.file}", not args.quiet))
        if args.uri:
            record = client.create_render_ref(args.canvas, args.rev, args.uri, args.mime_type,
                                              idempotency_key=key)
        elif args.kind == "preview":
            record = client.create_preview(args.canvas, args.rev, source, args.mime_type,
                                           idempotency_key=key, progress=progress)
        elif args.kind == "replay":
            record = client.create_replay(args.canvas, source, idempotency_key=key,
                                          progress=progress)
        else:
            record = client.create_audit(args.canvas, args.rev, _report(source),
                                         idempotency_key=key)
    if args.json:
        _emit_json(record.model_dump(mode="json"))
    else:
        print(f"created {_record_line(record)}")
    return 0


def cmd_get(client: ArtifactClient, args: argparse.Namespace) -> int:
    record = client.get(args.canvas, args.artifact_id)
    if args.meta:
        if args.json:
            _emit_json(record.model_dump(mode="json"))
        else:
            print(_record_line(record))
        return 0
    args.output = args.output or args.path
    to_stdout = args.output == "-"
    target: Any = (sys.stdout.buffer if to_stdout else
                   Path(args.output or f"{record.id}{EXTENSIONS.get(record.mime_type or '', '')}"))
    with progress_bar(f"get {record.id}", not args.quiet) as progress:
        size = client.content(args.canvas, record.id, target, from_ms=args.from_ms,
                              to_ms=args.to_ms, progress=progress)
    if to_stdout:
        sys.stdout.buffer.flush()
    elif args.json:
        _emit_json({"artifact": record.model_dump(mode="json"), "path": str(target),
                    "bytes": size})
    else:
        print(f"{record.id} -> {target} ({size} bytes)")
    return 0


def cmd_ls(client: ArtifactClient, args: argparse.Namespace) -> int:
    records = client.list(args.canvas, kind=args.kind, rev=args.rev)
    if args.json:
        _emit_json([record.model_dump(mode="json") for record in records])
        return 0
    for record in records:
        print(_record_line(record))
    return 0


def cmd_rm(client: ArtifactClient, args: argparse.Namespace) -> int:
    deleted = []
    for artifact_id in args.artifact_ids:
        client.delete(args.canvas, artifact_id)
        deleted.append(artifact_id)
        if not args.json:
            print(f"deleted {artifact_id}")
    if args.json:
        _emit_json({"deleted": deleted})
    return 0


def cmd_export(client: ArtifactClient, args: argparse.Namespace) -> int:
    target = Path(args.output or args.path or f"{args.canvas}-artifacts.tar")
    with progress_bar(f"export {args.canvas}", not args.quiet) as progress:
        size = client.export(args.canvas, target, kind=args.kind, progress=progress)
    if args.json:
        _emit_json({"canvas": args.canvas, "path": str(target), "bytes": size})
    else:
        print(f"{args.canvas} -> {target} ({size} bytes)")
    return 0


def cmd_watch(client: ArtifactClient, args: argparse.Namespace) -> int:
    for seen, event in enumerate(client.events(args.canvas, after=args.after), start=1):
        if args.json:
            sys.stdout.write(event.model_dump_json() + "\n")
        else:
            data = event.data
            print(f"{event.seq}  {event.type}  {event.routing.get('canvas_id')}  "
                  f"{data.get('kind')}  {data.get('artifact_id')}  rev {data.get('rev')}")
        sys.stdout.flush()
        if args.count is not None and seen >= args.count:
            return 0
    return 0


# ---- the parser -------------------------------------------------------------


def _connection_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("connection (flags win over the environment)")
    for name, variable in SETTINGS:
        group.add_argument(f"--{name}", default=os.environ.get(variable) or None,
                           help=f"{HELP[name]} (env {variable})")
    flags.add_argument("--json", action="store_true", help="print JSON, for scripts")
    flags.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return flags


def add_parser(commands: Any) -> None:
    """Add `artifacts` and its verbs to the `engines` sub-command set."""
    flags = _connection_flags()
    artifacts = commands.add_parser("artifacts", help="put, get, list, delete, export and "
                                                      "watch artifacts of a running service")
    verbs = artifacts.add_subparsers(dest="verb", required=True)

    def verb(name: str, run: Callable[[ArtifactClient, argparse.Namespace], int],
             help: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, parents=[flags], help=help, description=help)
        parser.set_defaults(func=lambda args: run_verb(run, args))
        return parser

    put = verb("put", cmd_put, "create an artifact from a file (- for stdin)")
    put.add_argument("words", nargs="+", metavar="[KIND] CANVAS [FILE]",
                     help="KIND as --kind; FILE the payload (- for stdin), optional for --uri "
                          "and audits")
    put.add_argument("--kind", choices=KINDS, default="preview")
    put.add_argument("--rev", type=int, help="the canvas revision (previews and audits)")
    put.add_argument("--mime-type", help="declare the type (default: read from the bytes)")
    put.add_argument("--uri", help="make a render-ref preview pointing at this URI")
    put.add_argument("--idempotency-key", help="repeat a create safely across runs")

    get = verb("get", cmd_get, "download an artifact's content")
    get.add_argument("canvas")
    get.add_argument("artifact_id")
    get.add_argument("path", nargs="?", help="same as --output")
    get.add_argument("-o", "--output", help="file to write (- for stdout; default: "
                                            "<artifact id>.<ext> here)")
    get.add_argument("--meta", action="store_true", help="print the record, download nothing")
    get.add_argument("--from-ms", type=int, help="replays: window start")
    get.add_argument("--to-ms", type=int, help="replays: window end")

    ls = verb("ls", cmd_ls, "list a canvas's artifacts, newest first (every page)")
    ls.add_argument("canvas")
    ls.add_argument("--kind", choices=KINDS)
    ls.add_argument("--rev", type=int)

    rm = verb("rm", cmd_rm, "delete artifacts")
    rm.add_argument("canvas")
    rm.add_argument("artifact_ids", nargs="+", metavar="artifact_id")

    export = verb("export", cmd_export, "download a canvas's artifacts as one tar")
    export.add_argument("canvas")
    export.add_argument("path", nargs="?", help="same as --output")
    export.add_argument("-o", "--output", help="default: <canvas>-artifacts.tar here")
    export.add_argument("--kind", choices=KINDS)

    watch = verb("watch", cmd_watch, "print artifact events as they happen (resumes by itself)")
    watch.add_argument("canvas", nargs="?", help="default: every canvas of the tenant/env")
    watch.add_argument("--after", type=int, help="start after this event seq (replays the "
                                                 "backlog)")
    watch.add_argument("--count", type=int, help="stop after this many events")


def _client(args: argparse.Namespace) -> ArtifactClient:
    missing = [f"--{name} (or {variable})" for name, variable in SETTINGS
               if name != "url" and not getattr(args, name)]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}")
    return ArtifactClient(args.url or DEFAULT_URL, args.token, args.tenant, args.env,
                          args.project)


def run_verb(run: Callable[[ArtifactClient, argparse.Namespace], int],
             args: argparse.Namespace) -> int:
    """Run one verb; errors become a message (JSON with --json) on stderr and a status."""
    try:
        with _client(args) as client:
            return run(client, args)
    except UsageError as exc:
        print(f"engines artifacts {args.verb}: {exc}", file=sys.stderr)
        return 2
    except ArtifactError as exc:
        if args.json:
            sys.stderr.write(orjson.dumps({"error": exc.to_dict()}).decode() + "\n")
        else:
            print(f"engines artifacts {args.verb}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a file that cannot be read or written
        print(f"engines artifacts {args.verb}: {exc}", file=sys.stderr)
        return 1
