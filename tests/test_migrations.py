"""The migrations and the models describe the same schema, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

import orchestrator.models  # noqa: F401  (the whole schema)
from orchestrator.config import Settings
from orchestrator.db import Base, downgrade_database, upgrade_database


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    """A model change without its migration (or the reverse) shows up here as a difference."""
    assert _differences(engine) == []


def test_every_migration_downgrades_and_upgrades_again(
    isolated_engine: tuple[Settings, Engine],
) -> None:
    settings, engine = isolated_engine
    upgrade_database(settings)
    downgrade_database(settings, "base")
    upgrade_database(settings)
    assert _differences(engine) == []
