"""Database plumbing: the declarative `Base`, engines for SQLite and PostgreSQL, sessions, and
Alembic migrations (upgrade, downgrade, and the readiness check against the script head).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    column,
    create_engine,
    event,
    inspect,
    select,
    table,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from orchestrator.config import Settings
from orchestrator.errors import Conflict

log = structlog.get_logger(__name__)

# Alembic lives next to the package in the source tree: found from any working directory.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000
POSTGRES_CONNECT_TIMEOUT_S = 10
ALEMBIC_VERSION_TABLE = "alembic_version"
WRITE_INTENT = "kluis_write_intent"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(settings: Settings) -> Engine:
    """An engine for the configured database. Connects lazily: never fails for a dead server."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _configure_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite_transaction)
        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3's legacy transaction control skips BEGIN for DDL and SAVEPOINT; let SQLAlchemy emit
    # it (see `_begin_sqlite_transaction`) so migrations and nested transactions are atomic.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, much faster
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
    finally:
        cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    # A deferred transaction that reads and then writes fails with "database is locked" when
    # another writer committed in between (WAL snapshots cannot be upgraded). Units of work that
    # intend to write take the write lock up front instead and queue on busy_timeout.
    if connection.get_execution_options().get(WRITE_INTENT):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


# -- optimistic locking (rows with a `version_id_col`) -----------------------------------------


def stale_version(what: str, sent: int | None, current: int | None) -> Conflict:
    """The one `Conflict` for a write based on an old read of `what` (e.g. "Project 1234")."""
    since = f" since you read version {sent}" if sent is not None else ""
    now = f" (now version {current})" if current is not None else ""
    return Conflict(
        f"{what} was changed by someone else{since}{now}; reload it and apply your change again.",
        {"rule": "optimistic_lock", "current_version": current},
    )


def check_version(what: str, sent: int | None, current: int) -> None:
    """`Conflict` when the caller read another version than the current one; `None` = not given."""
    if sent is not None and sent != current:
        raise stale_version(what, sent, current)


@contextmanager
def conflict_if_stale(what: str, sent: int | None) -> Iterator[None]:
    """A writer that committed between our read and our flush (the ORM's version check then
    matches no row) is the same `Conflict` as a stale `version` from the caller."""
    try:
        yield
    except StaleDataError:
        raise stale_version(what, sent, None) from None


def make_sessionmaker(engine: Engine, *, write: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`; `write=True` for units of work that will write (SQLite then begins
    with BEGIN IMMEDIATE; PostgreSQL is unaffected)."""
    bind = engine.execution_options(**{WRITE_INTENT: True}) if write else engine
    return sessionmaker(bind, expire_on_commit=False)


def begin_read(session: Session) -> Session:
    """Begin `session`'s transaction as a read one (a deferred BEGIN on SQLite) even when its
    sessionmaker is for writes, so no write lock is taken; returns `session`. Call it before
    anything else uses the session."""
    session.connection(execution_options={WRITE_INTENT: False})
    return session


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# -- migrations ----------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration without an ini file; `env.py` uses `connection` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_database(settings: Settings, revision: str = "head") -> None:
    """Migrate the configured database up to `revision`. Idempotent."""
    _run_migration(settings, command.upgrade, revision)


def downgrade_database(settings: Settings, revision: str = "base") -> None:
    _run_migration(settings, command.downgrade, revision)


def _run_migration(settings: Settings, step: Callable[[Config, str], None], revision: str) -> None:
    engine = make_engine(settings)
    try:
        with engine.begin() as connection:
            step(alembic_config(connection), revision)
    finally:
        engine.dispose()


@functools.cache
def script_heads() -> frozenset[str]:
    """The head revision(s) of the migration scripts shipped with this code."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def _current_revisions(connection: Connection) -> frozenset[str]:
    # Read directly rather than through alembic's MigrationContext, which logs on every probe.
    if not inspect(connection).has_table(ALEMBIC_VERSION_TABLE):
        return frozenset()
    version = table(ALEMBIC_VERSION_TABLE, column("version_num"))
    return frozenset(connection.scalars(select(version.c.version_num)))


@dataclass(frozen=True)
class DatabaseStatus:
    ready: bool
    reason: str


def check_database(engine: Engine) -> DatabaseStatus:
    """Whether the database answers and its schema is at the head of the shipped migrations.

    The reason is safe to show publicly: it names no host, user or driver message.
    """
    try:
        with engine.connect() as connection:
            current = _current_revisions(connection)
    except SQLAlchemyError as exc:
        log.warning("database_unreachable", error=type(exc).__name__, detail=str(exc)[:300])
        return DatabaseStatus(ready=False, reason="database unreachable")
    expected = script_heads()
    if current != expected:
        found = ", ".join(sorted(current)) or "empty"
        wanted = ", ".join(sorted(expected))
        return DatabaseStatus(ready=False, reason=f"schema at {found}, expected {wanted}")
    return DatabaseStatus(ready=True, reason="ok")
