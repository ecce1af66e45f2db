"""The chart's commands run for real outside the cluster, on SQLite and PostgreSQL: the migration
Job's `kluis migrate` and the control plane's `kluis serve --no-migrate` with the environment the
chart renders (paths and the database moved to the test's own), then the `helm test` smoke script
from the chart against the live control plane — it passes, and it fails naming a dead component.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helm.chart_support import Manifest, find, render
from orchestrator.config import Settings

KLUIS = Path(sys.executable).parent / "kluis"
SECRETS = {
    "KLUIS_SECRET_KEY": "k" * 64,
    "KLUIS_HUB_SERVICE_TOKEN": "s" * 48,
    "KLUIS_HUB_API_TOKEN": "a" * 48,
    "KLUIS_AIRLOCK_SIGNING_KEY": base64.b64encode(b"x" * 32).decode(),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _container(objects: list[Manifest], kind: str, name: str) -> Manifest:
    container: Manifest = find(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]
    return container


def _environment(
    objects: list[Manifest], settings: Settings, root: Path, port: int
) -> dict[str, str]:
    """The chart's settings for the control plane, with this machine's paths and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLUIS_")}
    env.update(find(objects, "ConfigMap", "r-kluis")["data"])
    for entry in _container(objects, "Deployment", "r-kluis-control-plane")["env"]:
        if entry["name"] in SECRETS:
            env[entry["name"]] = SECRETS[entry["name"]]
    env["KLUIS_DATABASE_URL"] = settings.effective_database_url
    if settings.is_sqlite:
        env["KLUIS_ALLOW_SQLITE_IN_PRODUCTION"] = "true"  # what the chart sets with SQLite
    for name in ("DATA_DIR", "MICRODATA_ROOT", "PROJECT_STORAGE_ROOT", "ARCHIVE_ROOT"):
        folder = root / name.lower()
        folder.mkdir()
        env[f"KLUIS_{name}"] = str(folder)
    env["KLUIS_AIRLOCK_DIR"] = str(root / "airlock")
    env["KLUIS_HOST"] = "127.0.0.1"
    env["KLUIS_PORT"] = str(port)
    return env


@pytest.fixture
def control_plane(
    helm: Path, unmigrated_settings: Settings, tmp_path: Path
) -> Iterator[tuple[list[Manifest], str]]:
    objects = render(helm, "production")
    port = _free_port()
    env = _environment(objects, unmigrated_settings, tmp_path, port)
    migrate = _container(objects, "Job", "r-kluis-migrate")["args"]
    serve = _container(objects, "Deployment", "r-kluis-control-plane")["args"]
    assert migrate[0] == serve[0] == "kluis"

    migrated = subprocess.run(
        [str(KLUIS), *migrate[1:]], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    process = subprocess.Popen(
        [str(KLUIS), *serve[1:]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else b""
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the control plane was not ready within 60 s"
            time.sleep(0.1)
        yield objects, base
    finally:
        process.terminate()
        process.wait(timeout=10)


def _smoke(objects: list[Manifest], checks: dict[str, str], folder: Path) -> tuple[int, str]:
    data = find(objects, "ConfigMap", "r-kluis-test")["data"]
    (folder / "smoke.py").write_text(data["smoke.py"])
    (folder / "checks.json").write_text(json.dumps(checks))
    result = subprocess.run(
        [sys.executable, str(folder / "smoke.py"), str(folder / "checks.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout


def test_smoke_passes_against_the_chart_configured_control_plane(
    control_plane: tuple[list[Manifest], str], tmp_path: Path
) -> None:
    objects, base = control_plane
    rendered = json.loads(find(objects, "ConfigMap", "r-kluis-test")["data"]["checks.json"])

    code, out = _smoke(objects, {"control-plane": f"{base}/readyz"}, tmp_path)

    assert rendered["control-plane"].endswith("/readyz")
    assert (code, out) == (0, "control-plane: ok\n")


def test_smoke_fails_naming_the_component_that_does_not_answer(
    control_plane: tuple[list[Manifest], str], tmp_path: Path
) -> None:
    objects, base = control_plane
    dead = f"http://127.0.0.1:{_free_port()}/readyz"

    code, out = _smoke(objects, {"control-plane": f"{base}/readyz", "hub": dead}, tmp_path)

    assert code == 1
    assert "control-plane: ok" in out
    assert "hub: FAILED" in out
