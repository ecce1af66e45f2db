"""Concurrent read-then-write units of work on a real file-backed SQLite database (and PostgreSQL).

Two writers that both read before either writes: with a deferred BEGIN, SQLite refuses the second
("database is locked": a WAL snapshot cannot be upgraded); sessions made with `write=True` take the
write lock at BEGIN and simply queue, so both succeed.
"""

from __future__ import annotations

import contextlib
import threading

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import OperationalError

from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker
from orchestrator.models import InstanceInfo


def run_two_writers(engine: Engine, *, write: bool) -> list[BaseException | None]:
    factory = make_sessionmaker(engine, write=write)
    both_read = threading.Barrier(2, timeout=2)
    results: list[BaseException | None] = [None, None]

    def writer(index: int) -> None:
        try:
            with factory() as session, session.begin():
                session.scalar(select(InstanceInfo.note))
                # With the write lock taken at BEGIN the other writer never gets here: expected.
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_read.wait()
                session.execute(update(InstanceInfo).values(note=f"writer {index}"))
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_write_sessions_concurrent_read_then_write_both_succeed(
    isolated_engine: tuple[Settings, Engine],
) -> None:
    _settings, engine = isolated_engine

    results = run_two_writers(engine, write=True)

    assert results == [None, None]


def test_deferred_sessions_concurrent_read_then_write_lose_one_on_sqlite(
    isolated_engine: tuple[Settings, Engine],
) -> None:
    # The control for the test above: without the write intent, SQLite refuses one writer.
    settings, engine = isolated_engine
    if not settings.is_sqlite:
        pytest.skip("PostgreSQL row locks make the second writer wait instead")

    results = run_two_writers(engine, write=False)

    failures = [r for r in results if r is not None]
    assert len(failures) == 1
    assert isinstance(failures[0], OperationalError)
    assert "locked" in str(failures[0])
