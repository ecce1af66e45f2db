"""Alembic environment: migrates `orchestrator.db.Base.metadata` on the Kluis database.

`orchestrator.db.upgrade_database` hands in a connection; the plain `alembic` command builds one
from the KLUIS_* settings.
"""

from alembic import context
from sqlalchemy import Connection

import orchestrator.models  # noqa: F401  (registers every table on Base.metadata)
from orchestrator.config import load_settings
from orchestrator.db import Base, make_engine

config = context.config


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place: batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=load_settings().effective_database_url,
        target_metadata=Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (given := config.attributes.get("connection")) is not None:
    run_migrations(given)
else:
    engine = make_engine(load_settings())
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()
