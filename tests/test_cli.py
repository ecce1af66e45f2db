"""The `kluis` command line, run in-process on a temporary data directory."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from orchestrator import __version__
from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.db import check_database, make_engine

runner = CliRunner()


def test_cli_version_prints_version(clean_env: Path) -> None:
    result = runner.invoke(app, ["version"])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"kluis {__version__}"


def test_cli_migrate_brings_database_to_head(clean_env: Path) -> None:
    data_dir = clean_env / "data"

    result = runner.invoke(app, ["migrate"], env={"KLUIS_DATA_DIR": str(data_dir)})

    assert result.exit_code == 0, result.output
    assert "(head)" in result.stdout
    assert (data_dir / "kluis.db").is_file()
    engine = make_engine(Settings(data_dir=data_dir))
    assert check_database(engine).ready
    engine.dispose()


def test_cli_unsafe_configuration_refused(clean_env: Path) -> None:
    env = {"KLUIS_ENVIRONMENT": "production", "KLUIS_SECRET_KEY": "tooshort"}

    result = runner.invoke(app, ["migrate"], env=env)

    assert result.exit_code == 2
    assert "at least 32 characters" in result.stderr
    assert "SQLite is refused" in result.stderr
    assert "tooshort" not in result.output


def test_cli_dev_refused_outside_development(clean_env: Path) -> None:
    result = runner.invoke(app, ["dev"], env={"KLUIS_ENVIRONMENT": "test"})

    assert result.exit_code == 2
    assert "only with KLUIS_ENVIRONMENT=development" in result.stderr
