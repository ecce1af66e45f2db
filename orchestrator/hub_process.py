"""Running JupyterHub (and the proxy it starts) as a child process with Kluis's hub configuration,
for `kluis dev` and the tests. Production runs the same config file in the hub image (Helm)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import httpx

from orchestrator.config import Settings

START_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _terminate_with_parent() -> Callable[[], None]:
    """For the child before exec: SIGTERM when the parent dies (Linux prctl), so a killed
    `kluis dev` or test run leaves no hub behind (and the hub stops the proxy it started).
    libc is loaded here, in the parent: the child only makes the one system call."""
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return arm


def config_file() -> Path:
    return Path(str(files("orchestrator.hub").joinpath("jupyterhub_config.py")))


def find_proxy() -> str:
    """configurable-http-proxy: `KLUIS_HUB_PROXY_COMMAND`, else the copy `.ci/node-tools`
    installs in the cache, else whatever is on PATH."""
    configured = os.environ.get("KLUIS_HUB_PROXY_COMMAND")
    if configured:
        return configured
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kluis" / "node"
    for candidate in sorted(cache.glob("configurable-http-proxy-*/node_modules/.bin/*")):
        if candidate.name == "configurable-http-proxy":
            return str(candidate)
    return "configurable-http-proxy"


@dataclass
class HubProcess:
    process: subprocess.Popen[bytes]
    public_url: str  # the proxy: where browsers go
    api_url: str  # the hub's REST API through the proxy
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def hub_environment(
    settings: Settings,
    *,
    data_dir: Path,
    public_port: int,
    hub_port: int,
    proxy_api_port: int,
    spawner: str = "development",
    control_plane_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a hub on loopback for these settings (tokens, URLs, spawner)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KLUIS_")}
    env.update(
        {
            "KLUIS_HUB_SERVICE_TOKEN": settings.hub_service_token.get_secret_value(),
            "KLUIS_HUB_API_TOKEN": settings.hub_api_token.get_secret_value(),
            "KLUIS_HUB_CONTROL_PLANE_URL": control_plane_url or settings.effective_public_url,
            "KLUIS_PUBLIC_URL": settings.effective_public_url,
            "KLUIS_HUB_BIND_URL": f"http://127.0.0.1:{public_port}",
            "KLUIS_HUB_HUB_BIND_URL": f"http://127.0.0.1:{hub_port}",
            "KLUIS_HUB_DATA_DIR": str(data_dir),
            "KLUIS_HUB_SPAWNER": spawner,
            "KLUIS_HUB_PROXY_COMMAND": find_proxy(),
            "CONFIGPROXY_AUTH_TOKEN": settings.hub_api_token.get_secret_value()[::-1],
        }
    )
    env["KLUIS_HUB_PROXY_API_PORT"] = str(proxy_api_port)
    env.update(extra or {})
    return env


def start_hub(env: dict[str, str], data_dir: Path) -> HubProcess:
    """Start `jupyterhub -f <Kluis's config>` and wait until it answers through the proxy."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "jupyterhub.log"
    public_url = env["KLUIS_HUB_BIND_URL"]
    command = [
        sys.executable,
        "-m",
        "jupyterhub",
        "-f",
        str(config_file()),
        f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{env['KLUIS_HUB_PROXY_API_PORT']}",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_terminate_with_parent(),
        )
    hub = HubProcess(process, public_url, f"{public_url}/hub/api", log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterHub exited at start; see {log_path}")
        try:
            if httpx.get(f"{public_url}/hub/health", timeout=2).status_code == 200:
                return hub
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            hub.stop()
            raise RuntimeError(
                f"JupyterHub did not answer within {START_TIMEOUT_S} s; see {log_path}"
            )
        time.sleep(0.3)
