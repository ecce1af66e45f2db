"""Settings: defaults, environment and secrets-directory overrides, and refusal of unsafe setups."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.config import Environment, LogFormat, LogLevel, Settings, load_settings

PG_URL = "postgresql+psycopg://kluis:pw@db.example/kluis"
STRONG_KEY = "k" * 32


def test_settings_defaults_work_without_configuration(clean_env: Path) -> None:
    settings = load_settings()

    assert settings.environment is Environment.DEVELOPMENT
    assert settings.data_dir == clean_env / ".kluis"
    assert settings.effective_database_url == f"sqlite:///{clean_env / '.kluis' / 'kluis.db'}"
    assert settings.effective_cluster_dir == clean_env / ".kluis" / "cluster"
    assert settings.effective_public_url == "http://127.0.0.1:8000"
    assert settings.secret_key.get_secret_value() == ""
    assert settings.log_format is LogFormat.AUTO
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_settings_environment_variables_override(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLUIS_ENVIRONMENT", "test")
    monkeypatch.setenv("KLUIS_DATA_DIR", "var")
    monkeypatch.setenv("KLUIS_DATABASE_URL", PG_URL)
    monkeypatch.setenv("KLUIS_LOG_LEVEL", "debug")
    monkeypatch.setenv("KLUIS_PORT", "9000")
    monkeypatch.setenv("KLUIS_PUBLIC_URL", "https://kluis.example/")

    settings = load_settings()

    assert settings.environment is Environment.TEST
    assert settings.data_dir == clean_env / "var"
    assert settings.effective_database_url == PG_URL
    assert not settings.is_sqlite
    assert settings.log_level is LogLevel.DEBUG
    assert settings.port == 9000
    assert settings.effective_public_url == "https://kluis.example"


def test_settings_invalid_port_refused(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLUIS_PORT", "70000")

    with pytest.raises(ValidationError, match="port"):
        load_settings()


def test_settings_secrets_dir_supplies_secret(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = clean_env / "secrets"
    secrets.mkdir()
    (secrets / "kluis_secret_key").write_text(STRONG_KEY)
    (secrets / "kluis_database_url").write_text(PG_URL)
    monkeypatch.setenv("KLUIS_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("KLUIS_ENVIRONMENT", "production")
    monkeypatch.setenv("KLUIS_STORAGE_BACKEND", "nfs")

    settings = load_settings()

    assert settings.secret_key.get_secret_value() == STRONG_KEY
    assert settings.database_url == PG_URL
    assert STRONG_KEY not in repr(settings)


def test_settings_environment_wins_over_secrets_dir(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "kluis_secret_key").write_text("from-file")
    monkeypatch.setenv("KLUIS_SECRETS_DIR", str(clean_env))
    monkeypatch.setenv("KLUIS_SECRET_KEY", "from-env")

    assert load_settings().secret_key.get_secret_value() == "from-env"


def test_settings_missing_secrets_dir_refused(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLUIS_SECRETS_DIR", str(clean_env / "absent"))

    with pytest.raises(FileNotFoundError, match="KLUIS_SECRETS_DIR"):
        load_settings()


def test_settings_production_refuses_short_secret_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least 32 characters") as caught:
        Settings(environment="production", secret_key="short", database_url=PG_URL)

    assert "short" not in str(caught.value)


def test_settings_production_refuses_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SQLite is refused in production"):
        Settings(environment="production", secret_key=STRONG_KEY, data_dir=tmp_path)


def test_settings_production_allows_sqlite_when_explicit(tmp_path: Path) -> None:
    settings = Settings(
        environment="production",
        secret_key=STRONG_KEY,
        data_dir=tmp_path,
        allow_sqlite_in_production=True,
        storage_backend="nfs",
    )

    assert settings.is_sqlite
    assert settings.unsafe_reasons() == []


def test_settings_production_refuses_host_path_storage(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="hostPath is for development only"):
        Settings(environment="production", secret_key=STRONG_KEY, database_url=PG_URL)


def test_settings_production_accepts_nfs_storage(tmp_path: Path) -> None:
    settings = Settings(
        environment="production",
        secret_key=STRONG_KEY,
        database_url=PG_URL,
        storage_backend="nfs",
        storage_nfs_server="nfs.example.org",
    )

    assert settings.unsafe_reasons() == []


def test_settings_development_accepts_empty_secret_key(tmp_path: Path) -> None:
    assert Settings(environment="development", data_dir=tmp_path).unsafe_reasons() == []
