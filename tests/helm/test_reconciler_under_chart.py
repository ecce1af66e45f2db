"""The real `kluis reconcile` process as the chart runs it: installed RBAC (the chart's
ClusterRole and lease Role, through a token of the chart's reconciler service account), the
chart's rendered settings, a database of the test's own (SQLite and PostgreSQL). It takes the
Lease in the release namespace and provisions a project's workspace whose hub RoleBinding names
the chart's hub service account."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cluster.reconciler_support import (
    Projects,
    live_keys,
    service_account_token,
    token_kubeconfig,
)
from kubernetes import client
from sqlalchemy import Engine

from helm.chart_support import CHART, PROFILES, find, render, run_helm
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.kube import KubeClient
from orchestrator.manifests import hub_role_name
from orchestrator.names import namespace_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

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


def test_reconciler_runs_under_the_charts_rbac_and_settings(
    helm: Path,
    cluster: LocalCluster,
    kube: client.ApiClient,
    restricted_namespace: str,
    isolated_engine: tuple[Settings, Engine],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = restricted_namespace
    database, engine = isolated_engine
    kubeconfig = f"--kubeconfig={cluster.kubeconfig}"
    run_helm(
        helm,
        "install",
        "r",
        str(CHART),
        "-n",
        ns,
        "-f",
        str(PROFILES["production"]),
        "--wait",
        "--timeout",
        "180s",
        kubeconfig,
    )
    token = service_account_token(kube, "r-kluis-reconciler", ns)
    as_reconciler = token_kubeconfig(cluster.kubeconfig, token, tmp_path / "sa.kubeconfig")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLUIS_")}
    env.update(find(render(helm, "production", namespace=ns), "ConfigMap", "r-kluis")["data"])
    env.update(SECRETS)
    env.update(
        {
            "KLUIS_DATABASE_URL": database.effective_database_url,
            "KLUIS_DATA_DIR": str(tmp_path / "data"),
            "KLUIS_KUBECONFIG": str(as_reconciler),
            "KLUIS_RECONCILE_METRICS_HOST": "127.0.0.1",
            "KLUIS_RECONCILE_METRICS_PORT": str(port),
        }
    )
    if database.is_sqlite:
        env["KLUIS_ALLOW_SQLITE_IN_PRODUCTION"] = "true"
    for name in list(os.environ):
        if name.startswith("KLUIS_"):
            monkeypatch.delenv(name)
    for key, value in env.items():
        if key.startswith("KLUIS_"):
            monkeypatch.setenv(key, value)
    settings = Settings()  # what the reconciler process builds from the same variables
    projects = Projects(settings, make_sessionmaker(engine, write=True))
    project_id = projects.project()
    code = projects.code(project_id)
    admin = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
    args = find(render(helm, "production"), "Deployment", "r-kluis-reconciler")["spec"]["template"][
        "spec"
    ]["containers"][0]["args"]
    process = subprocess.Popen(
        [str(KLUIS), *args[1:]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        coordination = client.CoordinationV1Api(kube)
        deadline = time.monotonic() + 90
        while live_keys(admin, code) != projects.desired_keys(project_id):
            assert process.poll() is None, process.stderr.read() if process.stderr else b""
            assert time.monotonic() < deadline, "the workspace did not converge within 90 s"
            time.sleep(0.5)

        lease = coordination.read_namespaced_lease("r-kluis-reconciler", ns)
        assert lease.spec.holder_identity
        binding = client.RbacAuthorizationV1Api(kube).read_namespaced_role_binding(
            hub_role_name(), namespace_name(code)
        )
        assert [(s.name, s.namespace) for s in binding.subjects] == [("r-kluis-hub", ns)]
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200
        assert "leader" in ready.text
    finally:
        process.terminate()
        process.wait(timeout=30)
        projects.clean_up(admin)
        admin.close()
        run_helm(helm, "uninstall", "r", "-n", ns, "--ignore-not-found", kubeconfig, check=False)
