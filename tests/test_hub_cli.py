"""`kluis hub sync --once` and the hub's configuration file, without a hub: a missing admin token
or an unreachable hub is a clear error (exit 1), the config refuses to start without its tokens
and sets the culler, the spawn limit and the spawner from the environment."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.hub import jupyterhub_config

runner = CliRunner()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_hub_sync_once_without_admin_token_fails_clearly(clean_env: Path) -> None:
    result = runner.invoke(app, ["hub", "sync", "--once"], env={"KLUIS_DATA_DIR": str(clean_env)})

    assert result.exit_code == 1
    assert "KLUIS_HUB_API_TOKEN" in result.output


def test_hub_sync_once_with_the_hub_down_fails_clearly(clean_env: Path) -> None:
    env = {
        "KLUIS_DATA_DIR": str(clean_env),
        "KLUIS_HUB_API_TOKEN": "x" * 40,
        "KLUIS_HUB_API_URL": f"http://127.0.0.1:{_closed_port()}/hub/api",
    }
    runner.invoke(app, ["migrate"], env=env)

    result = runner.invoke(app, ["hub", "sync", "--once"], env=env)

    assert result.exit_code == 1
    assert "cannot reach the hub" in result.output


def _configured(env: dict[str, str]) -> Any:
    config = Config()
    jupyterhub_config.configure(config, env)
    return config


def test_hub_config_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="KLUIS_HUB_SERVICE_TOKEN"):
        _configured({"KLUIS_HUB_DATA_DIR": str(tmp_path)})


def test_hub_config_from_environment(tmp_path: Path) -> None:
    config = _configured(
        {
            "KLUIS_HUB_DATA_DIR": str(tmp_path),
            "KLUIS_HUB_SERVICE_TOKEN": "s" * 40,
            "KLUIS_HUB_API_TOKEN": "a" * 40,
            "KLUIS_HUB_CONCURRENT_SPAWN_LIMIT": "7",
            "KLUIS_HUB_CULL_TIMEOUT": "900",
            "KLUIS_HUB_PROXY_API_URL": "http://proxy:8001",
            "KLUIS_HUB_DB_URL": "postgresql://hub@db/hub",
        }
    )

    assert config.JupyterHub.concurrent_spawn_limit == 7
    assert config.JupyterHub.spawner_class.__name__ == "KluisSpawner"
    assert config.JupyterHub.authenticator_class.__name__ == "KluisAuthenticator"
    assert config.ConfigurableHTTPProxy.should_start is False
    assert config.JupyterHub.db_url == "postgresql://hub@db/hub"
    culler = next(s for s in config.JupyterHub.services if s["name"] == "idle-culler")
    assert "--timeout=900" in culler["command"]
    roles = {role["name"]: role["scopes"] for role in config.JupyterHub.load_roles}
    assert "delete:servers" in roles["idle-culler"]
    assert config.KluisSpawner.service_token == "s" * 40


def test_hub_config_development_spawner_and_no_culler(tmp_path: Path) -> None:
    config = _configured(
        {
            "KLUIS_HUB_DATA_DIR": str(tmp_path),
            "KLUIS_HUB_SERVICE_TOKEN": "s" * 40,
            "KLUIS_HUB_API_TOKEN": "a" * 40,
            "KLUIS_HUB_SPAWNER": "development",
            "KLUIS_HUB_CULL_TIMEOUT": "0",
        }
    )

    assert config.JupyterHub.spawner_class.__name__ == "KluisDevSpawner"
    assert [s["name"] for s in config.JupyterHub.services] == ["kluis-control-plane"]
