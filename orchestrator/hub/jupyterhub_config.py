"""Kluis's JupyterHub configuration, driven by environment variables only, so that `kluis dev`,
the tests and the Helm chart run the same file (`jupyterhub -f <this file>`).

Variables (defaults are for local development):

| variable | default | what |
|---|---|---|
| KLUIS_HUB_SERVICE_TOKEN | (required) | the hub's token for the control plane's /api/hub/ |
| KLUIS_HUB_API_TOKEN | (required) | the control plane's token for the hub's REST API (hub sync) |
| KLUIS_HUB_CONTROL_PLANE_URL | http://127.0.0.1:8000 | the control plane, as the hub reaches it |
| KLUIS_PUBLIC_URL | http://127.0.0.1:8000 | the portal, where people log in |
| KLUIS_HUB_BIND_URL | http://127.0.0.1:8001 | the public (proxy) URL and base path |
| KLUIS_HUB_HUB_BIND_URL | http://127.0.0.1:8081 | where the hub itself listens |
| KLUIS_HUB_HUB_CONNECT_URL | (none) | how servers reach the hub (e.g. http://kluis-hub:8081) |
| KLUIS_HUB_DATA_DIR | .kluis/hub | cookie secret and the default SQLite database |
| KLUIS_HUB_DB_URL | sqlite:///<data dir>/jupyterhub.sqlite | the hub's database (or PostgreSQL) |
| KLUIS_HUB_SPAWNER | kubernetes | `kubernetes` (KluisSpawner) or `development` (KluisDevSpawner) |
| KLUIS_HUB_PROXY_COMMAND | configurable-http-proxy | the proxy the hub starts |
| KLUIS_HUB_PROXY_API_URL | (none) | an external proxy's API: the hub then does not start one |
| KLUIS_HUB_CONCURRENT_SPAWN_LIMIT | 20 | spawns in progress at once (more: 429, try again) |
| KLUIS_HUB_AUTH_REFRESH_SECONDS | 60 | how often a hub login is checked again |
| KLUIS_HUB_CULL_TIMEOUT / _EVERY / _MAX_AGE | 3600 / 300 / 0 | the idle culler (seconds; 0: off) |
| KLUIS_HUB_START_TIMEOUT / KLUIS_HUB_HTTP_TIMEOUT | 300 / 120 | spawn timeouts |
| KLUIS_HUB_DEV_SERVERS_ROOT | <data dir>/dev-servers | folders of development servers |
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# The roles of the two services: scopes from JupyterHub's RBAC reference.
CONTROL_PLANE_SCOPES = ["list:users", "read:users", "read:servers", "servers", "users:activity"]
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(env.get(name, str(default)))


def configure(c: Any, env: Mapping[str, str]) -> None:
    """Fill JupyterHub's config object `c` from `env`. Missing tokens stop the hub at start."""
    from orchestrator.hub.authenticator import KluisAuthenticator
    from orchestrator.hub.spawner import KluisDevSpawner, KluisSpawner

    service_token = env.get("KLUIS_HUB_SERVICE_TOKEN", "")
    api_token = env.get("KLUIS_HUB_API_TOKEN", "")
    if not service_token or not api_token:
        raise SystemExit("KLUIS_HUB_SERVICE_TOKEN and KLUIS_HUB_API_TOKEN must be set")
    control_plane = env.get("KLUIS_HUB_CONTROL_PLANE_URL", "http://127.0.0.1:8000").rstrip("/")
    portal = env.get("KLUIS_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/") + "/"
    data_dir = Path(env.get("KLUIS_HUB_DATA_DIR", ".kluis/hub")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    bind_url = env.get("KLUIS_HUB_BIND_URL", "http://127.0.0.1:8001")
    c.JupyterHub.bind_url = bind_url
    c.JupyterHub.hub_bind_url = env.get("KLUIS_HUB_HUB_BIND_URL", "http://127.0.0.1:8081")
    if env.get("KLUIS_HUB_HUB_CONNECT_URL"):
        c.JupyterHub.hub_connect_url = env["KLUIS_HUB_HUB_CONNECT_URL"]
    c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.db_url = env.get("KLUIS_HUB_DB_URL", f"sqlite:///{data_dir / 'jupyterhub.sqlite'}")
    c.JupyterHub.pid_file = str(data_dir / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
    if env.get("KLUIS_HUB_PROXY_API_URL"):
        c.ConfigurableHTTPProxy.should_start = False
        c.ConfigurableHTTPProxy.api_url = env["KLUIS_HUB_PROXY_API_URL"]
    else:
        c.ConfigurableHTTPProxy.command = [
            env.get("KLUIS_HUB_PROXY_COMMAND", "configurable-http-proxy")
        ]

    # Authentication: launch tickets only; the portal is the login page.
    c.JupyterHub.authenticator_class = KluisAuthenticator
    c.KluisAuthenticator.control_plane_url = control_plane
    c.KluisAuthenticator.service_token = service_token
    c.KluisAuthenticator.portal_url = portal
    c.KluisAuthenticator.auth_refresh_age = _int(env, "KLUIS_HUB_AUTH_REFRESH_SECONDS", 60)
    c.KluisAuthenticator.refresh_pre_spawn = True
    c.JupyterHub.admin_access = False
    c.JupyterHub.shutdown_on_logout = False

    # One named server per project, the project's code as its name.
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 0
    c.JupyterHub.redirect_to_server = True
    c.JupyterHub.concurrent_spawn_limit = _int(env, "KLUIS_HUB_CONCURRENT_SPAWN_LIMIT", 20)
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = _int(env, "KLUIS_HUB_START_TIMEOUT", 300)
    c.Spawner.http_timeout = _int(env, "KLUIS_HUB_HTTP_TIMEOUT", 120)
    c.Spawner.options_form = ""

    if env.get("KLUIS_HUB_SPAWNER", "kubernetes") == "development":
        c.JupyterHub.spawner_class = KluisDevSpawner
        spawner = c.KluisDevSpawner
        spawner.cmd = [str(Path(sys.executable).parent / "jupyterhub-singleuser")]
        spawner.servers_root = env.get("KLUIS_HUB_DEV_SERVERS_ROOT", str(data_dir / "dev-servers"))
        # No calls to the internet from a workspace: no news feed, no update check.
        spawner.args = [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:  # CI and containers run as root; development only
            spawner.args = [*spawner.args, "--allow-root"]
    else:
        c.JupyterHub.spawner_class = KluisSpawner
        spawner = c.KluisSpawner
        spawner.events_enabled = True
        spawner.k8s_api_request_timeout = 10
    spawner.control_plane_url = control_plane
    spawner.service_token = service_token

    # Services: the control plane (stops servers whose access lapsed) and the idle culler.
    services: list[dict[str, Any]] = [{"name": "kluis-control-plane", "api_token": api_token}]
    roles: list[dict[str, Any]] = [
        {
            "name": "kluis-control-plane",
            "scopes": CONTROL_PLANE_SCOPES,
            "services": ["kluis-control-plane"],
        }
    ]
    timeout = _int(env, "KLUIS_HUB_CULL_TIMEOUT", 3600)
    if timeout > 0:
        services.append(
            {
                "name": "idle-culler",
                "command": [
                    sys.executable,
                    "-m",
                    "jupyterhub_idle_culler",
                    f"--timeout={timeout}",
                    f"--cull-every={_int(env, 'KLUIS_HUB_CULL_EVERY', 300)}",
                    f"--max-age={_int(env, 'KLUIS_HUB_CULL_MAX_AGE', 0)}",
                ],
            }
        )
        roles.append({"name": "idle-culler", "scopes": CULLER_SCOPES, "services": ["idle-culler"]})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles
    base_path = urlsplit(bind_url).path or "/"
    c.JupyterHub.template_vars = {"kluis_portal_url": portal, "kluis_base_path": base_path}


def _load() -> None:
    """Run by JupyterHub, which executes this file with `get_config` in its namespace."""
    get_config = globals().get("get_config")
    if get_config is not None:
        configure(get_config(), os.environ)


_load()
