"""One writer per SQLite file: every write, synchronous or grouped, takes its turn.

The writer owns the thread lock, the cross-process flock and the group-commit
queue of its file, so a write that skipped it would again sleep in SQLite's
busy handler against the others. Each test holds the turn and checks that
the write under test waits for it, then goes through once it is let go.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import Connection, Engine, event, insert, select

from conftest import Stack
from engines.config import Settings
from engines.db.engine import build_engine
from engines.db.tests.test_group_commit import things
from engines.db.writer import run_write, sqlite_writer, write_transaction
from engines.lifecycle import gc, purge

T = TypeVar("T")
SETTINGS = Settings(auth_jwt_signing="k" * 40)
WAITS = 0.3
"""How long a write must stay blocked behind a held turn to count as waiting for it."""


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "writer.db"
    engine = build_engine(SETTINGS, f"sqlite:///{path}")
    things.metadata.create_all(engine)
    engine.dispose()
    yield path


def _waits_for_the_turn(engine: Engine, write: Callable[[], T]) -> T:
    """Run write while the turn of engine's file is held; it must finish only after."""
    writer = sqlite_writer(engine)
    assert writer is not None
    with ThreadPoolExecutor(1) as pool:
        with writer.turn():
            pending: Future[T] = pool.submit(write)
            with pytest.raises(TimeoutError):
                pending.result(WAITS)
        return pending.result(10)


def test_one_writer_per_file_whatever_engine_or_spelling(
        database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = build_engine(SETTINGS, f"sqlite:///{database}")
    relative = build_engine(SETTINGS, "sqlite:///writer.db")
    other = build_engine(SETTINGS, f"sqlite:///{tmp_path / 'other.db'}")
    postgres = build_engine(SETTINGS, "postgresql+psycopg://nobody@127.0.0.1:9/none")
    assert sqlite_writer(absolute) is sqlite_writer(relative) is not None
    assert sqlite_writer(other) is not sqlite_writer(absolute)
    assert sqlite_writer(postgres) is None, "PostgreSQL takes concurrent writers itself"
    for engine in (absolute, relative, other, postgres):
        engine.dispose()


def test_a_synchronous_write_and_the_commit_queue_share_one_turn(database: Path) -> None:
    """An engine's grouped write waits for another engine's transaction on the same file,
    and still commits on its own engine."""
    holder = build_engine(SETTINGS, f"sqlite:///{database}")
    grouped = build_engine(SETTINGS, f"sqlite:///{database}")
    commits: list[int] = []
    event.listen(grouped, "commit", lambda _conn: commits.append(1))

    def add(conn: Connection) -> int:
        conn.execute(insert(things), {"id": 2, "name": "grouped"})
        return 2

    with ThreadPoolExecutor(1) as pool:
        with write_transaction(holder) as conn:
            conn.execute(insert(things), {"id": 1, "name": "held"})
            pending = pool.submit(asyncio.run, run_write(grouped, add))
            with pytest.raises(TimeoutError):
                pending.result(WAITS)
        assert pending.result(10) == 2
    assert commits == [1]
    with holder.connect() as conn:
        assert sorted(conn.execute(select(things.c.id)).scalars()) == [1, 2]
    holder.dispose()
    grouped.dispose()


def test_a_write_transaction_waits_for_the_turn(database: Path) -> None:
    engine = build_engine(SETTINGS, f"sqlite:///{database}")

    def write() -> None:
        with write_transaction(engine) as conn:
            conn.execute(insert(things), {"id": 7, "name": "late"})

    _waits_for_the_turn(engine, write)
    with engine.connect() as conn:
        assert list(conn.execute(select(things.c.id)).scalars()) == [7]
    engine.dispose()


def test_gc_drops_expired_leases_in_the_writers_turn(local: Stack) -> None:
    rt = local.runtime
    report = _waits_for_the_turn(rt.engine, lambda: gc.collect(
        rt.store, rt.engine, older_than=timedelta(hours=1), apply=True))
    assert report.applied and report.refused is None


def test_purge_deletes_in_the_writers_turn(local: Stack) -> None:
    rt = local.runtime
    report = _waits_for_the_turn(rt.engine, lambda: purge.purge(
        rt.store, rt.engine, "t_gone", "dev", apply=True))
    assert report.rows["canvas_artifacts"] == 0


def test_deleting_a_webhook_waits_for_the_writers_turn(local: Stack) -> None:
    headers = local.headers("t_hooks", role="admin")
    answered = _waits_for_the_turn(local.runtime.engine, lambda: local.client.delete(
        "/webhooks/whk_absent", headers=headers))
    assert answered.status_code == 404


def test_the_turn_is_let_go_when_the_write_fails(database: Path) -> None:
    engine = build_engine(SETTINGS, f"sqlite:///{database}")
    with pytest.raises(ValueError), write_transaction(engine) as conn:
        conn.execute(insert(things), {"id": 1, "name": "rolled back"})
        raise ValueError("a failed write")
    done = threading.Event()

    def write() -> None:
        with write_transaction(engine) as conn:
            conn.execute(insert(things), {"id": 1, "name": "kept"})
        done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(5), "a failed write must not keep the turn"
    engine.dispose()
