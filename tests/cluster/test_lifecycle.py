"""Start, inspect and stop separate control planes; nothing may outlive a crash or a `down`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.devcluster import build
from orchestrator.devcluster.commands import cluster_app

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_dead(pids: list[int], timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def test_cluster_commands_up_status_kubeconfig_down(tmp_path: Path) -> None:
    runner = CliRunner()
    directory = str(tmp_path / "c")

    up = runner.invoke(cluster_app, ["up", "--dir", directory])
    try:
        status = runner.invoke(cluster_app, ["status", "--dir", directory, "--json"])
        path = runner.invoke(cluster_app, ["kubeconfig", "--dir", directory]).output.strip()
        nodes = subprocess.run(
            [
                str(build.bin_dir() / "kubectl"),
                "--kubeconfig",
                path,
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[0].status.conditions[?(@.type=='Ready')].status}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        again = runner.invoke(cluster_app, ["up", "--dir", directory])
        pids = list(json.loads((tmp_path / "c" / "state.json").read_text())["pids"].values())
    finally:
        down = runner.invoke(cluster_app, ["down", "--dir", directory])
    after = runner.invoke(cluster_app, ["status", "--dir", directory, "--json"])

    assert up.exit_code == 0, up.output
    assert status.exit_code == 0
    assert set(json.loads(status.output)["components"].values()) == {"healthy"}
    assert nodes.stdout == "True"
    assert again.exit_code == 0  # idempotent: a healthy cluster is left as it is
    assert len(pids) == 5
    assert down.exit_code == 0
    assert wait_dead(pids) == []
    assert after.exit_code == 1
    assert set(json.loads(after.output)["components"].values()) == {"stopped"}


def test_cluster_processes_die_with_crashed_test_run(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from orchestrator.devcluster.cluster import LocalCluster\n"
        "LocalCluster(Path(sys.argv[1]), tie_to_parent=True).up()\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "c")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        pids = list(json.loads((tmp_path / "c" / "state.json").read_text())["pids"].values())
        assert all(alive(p) for p in pids)

        os.kill(owner.pid, signal.SIGKILL)  # like a test run killed by the CI timeout
        owner.wait()

        assert wait_dead(pids) == []
    finally:
        if owner.poll() is None:
            owner.kill()


def test_cluster_start_failure_names_the_log(tmp_path: Path) -> None:
    from orchestrator.devcluster.cluster import ClusterError, LocalCluster

    cluster = LocalCluster(tmp_path / "c")
    (tmp_path / "c").mkdir()
    # A file where etcd wants its data folder makes etcd fail at once.
    (tmp_path / "c" / "etcd").write_text("not a folder")

    with pytest.raises(ClusterError) as err:
        cluster.up(timeout=30)

    assert "etcd" in str(err.value)
    assert str(cluster.log_file("etcd")) in str(err.value)
    assert set(cluster.status().values()) == {"stopped"}
