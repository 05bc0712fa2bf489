"""Group commit on a real SQLite file: shared transactions, failures kept apart.

What a create relies on: `run_write` returns only once its rows are
committed; creates queued together share one COMMIT; one that fails (a
constraint, a bug) fails alone and its neighbours' rows are kept.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    event,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from engines.config import Settings
from engines.db import writer
from engines.db.engine import build_engine
from engines.db.writer import run_write as run_write_async

things = Table("things", MetaData(), Column("id", Integer, primary_key=True),
               Column("name", String(32), nullable=False))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = build_engine(Settings(auth_jwt_signing="k" * 40),
                          f"sqlite:///{tmp_path / 'group.db'}")
    things.metadata.create_all(engine)
    yield engine
    engine.dispose()


def run_write(engine: Engine, work):
    """As a request's event loop awaits it; each caller thread runs its own loop."""
    return asyncio.run(run_write_async(engine, work))


def _commits(engine: Engine) -> list[int]:
    seen: list[int] = []
    event.listen(engine, "commit", lambda _conn: seen.append(1))
    return seen


def _insert(thing_id: int):
    def work(conn: Connection) -> int:
        conn.execute(insert(things), {"id": thing_id, "name": f"n{thing_id}"})
        return thing_id

    return work


def _ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(things.c.id)).scalars())


def _queued_behind_a_held_batch(engine: Engine, works: list) -> list:  # type: ignore[type-arg]
    """Run works concurrently while a first unit holds the writer, so they queue up
    and the writer takes them as one batch. Returns each one's result or exception."""
    holding, release = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        holding.set()
        release.wait(10)

    with ThreadPoolExecutor(len(works) + 1) as pool:
        first = pool.submit(run_write, engine, hold)
        assert holding.wait(10)
        futures = [pool.submit(run_write, engine, work) for work in works]
        while writer.sqlite_writer(engine)._queue.qsize() < len(works):
            threading.Event().wait(0.01)
        release.set()
        first.result(10)
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(10))
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                outcomes.append(exc)
    return outcomes


def test_returns_after_commit_and_shares_one_transaction(engine: Engine) -> None:
    commits = _commits(engine)
    assert run_write(engine, _insert(1)) == 1
    assert _ids(engine) == [1]  # visible to another connection: committed
    commits.clear()
    outcomes = _queued_behind_a_held_batch(engine, [_insert(i) for i in range(2, 12)])
    assert outcomes == list(range(2, 12))
    assert _ids(engine) == list(range(1, 12))
    assert len(commits) == 2, "the ten queued units should share one COMMIT"


def test_a_failing_unit_fails_alone(engine: Engine) -> None:
    run_write(engine, _insert(1))

    def broken(conn: Connection) -> None:
        conn.execute(insert(things), {"id": 99, "name": "half"})
        raise ValueError("a bug in this unit")

    outcomes = _queued_behind_a_held_batch(
        engine, [_insert(2), _insert(1), broken, _insert(3)])
    assert outcomes[0] == 2 and outcomes[3] == 3
    assert isinstance(outcomes[1], IntegrityError)  # id 1 exists: its own conflict
    assert isinstance(outcomes[2], ValueError)
    assert _ids(engine) == [1, 2, 3], "the failed units left nothing, the others are kept"


def test_the_writer_thread_leaves_when_idle(engine: Engine,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "IDLE_SECONDS", 0.05)

    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "engines-group-commit"]

    before = len(writers())
    run_write(engine, _insert(1))
    deadline = threading.Event()
    for _ in range(100):
        if len(writers()) <= before:
            break
        deadline.wait(0.02)
    assert len(writers()) <= before
    assert run_write(engine, _insert(2)) == 2, "the next unit starts a writer again"


def test_a_unit_raising_a_base_exception_answers_its_caller(engine: Engine) -> None:
    """Not every exception is an Exception: the writer thread answers the caller and
    keeps serving the next units instead of dying with callers left waiting."""

    def exits(conn: Connection) -> None:
        raise SystemExit("a unit that exits")

    with pytest.raises(SystemExit):
        run_write(engine, exits)
    assert run_write(engine, _insert(5)) == 5
    assert _ids(engine) == [5]


_INSERT_THING = insert(things)


def _deferred_insert(thing_id: int):
    def work(conn: Connection) -> int:
        writer.defer_insert(conn, _INSERT_THING, {"id": thing_id, "name": f"n{thing_id}"})
        return thing_id

    return work


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_rest: seen.append(statement))
    return seen


def test_deferred_rows_of_a_batch_go_as_one_statement(engine: Engine) -> None:
    statements = _statements(engine)
    outcomes = _queued_behind_a_held_batch(engine, [_deferred_insert(i) for i in range(1, 9)])
    assert outcomes == list(range(1, 9))
    assert _ids(engine) == list(range(1, 9))
    assert sum("INSERT INTO things" in s for s in statements) == 1, statements


def test_a_statement_sees_every_row_deferred_before_it(engine: Engine) -> None:
    def inserts_then_reads(conn: Connection) -> list[int]:
        writer.defer_insert(conn, _INSERT_THING, {"id": 100, "name": "mine"})
        return list(conn.execute(select(things.c.id).order_by(things.c.id)).scalars())

    outcomes = _queued_behind_a_held_batch(
        engine, [_deferred_insert(1), _deferred_insert(2), inserts_then_reads])
    seen = outcomes[2]
    assert 100 in seen, "its own deferred row"
    assert set(seen) <= {1, 2, 100}
    assert _ids(engine) == [1, 2, 100]


def test_a_deferred_conflict_fails_its_unit_alone(engine: Engine) -> None:
    run_write(engine, _insert(1))
    outcomes = _queued_behind_a_held_batch(
        engine, [_deferred_insert(2), _deferred_insert(1), _deferred_insert(3)])
    assert outcomes[0] == 2 and outcomes[2] == 3
    assert isinstance(outcomes[1], IntegrityError)
    assert _ids(engine) == [1, 2, 3]
