"""The chart against the real local control plane: the API server admits every object in a
namespace that enforces Pod Security "restricted" (server-side dry run), and a real `helm install
--wait` (kwok runs the pods), `helm upgrade` (the migration Job before the new code), `helm test`
and `helm uninstall` (clean, and project namespaces survive)."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from helm.chart_support import CHART, PROFILES, dump, pod_specs, render, run_helm
from orchestrator.devcluster.build import ensure_built
from orchestrator.devcluster.cluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RELEASE = "r"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"


def kubectl(
    cluster: LocalCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ensure_built() / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def helm_in(helm: Path, cluster: LocalCluster, *args: str, check: bool = True) -> str:
    return run_helm(helm, *args, f"--kubeconfig={cluster.kubeconfig}", check=check).stdout


def _secret_data(kube: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    secret = client.CoreV1Api(kube).read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


@contextmanager
def recording_additions(kube: client.ApiClient, namespace: str) -> Iterator[list[tuple[str, str]]]:
    """Records (kind, name/image) of Jobs and ReplicaSets as the API server announces them."""
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    batch = client.BatchV1Api(kube)
    apps = client.AppsV1Api(kube)

    def follow(kind: str, lister: Any) -> None:
        start = lister(namespace).metadata.resource_version
        w = watch.Watch()
        while not stop.is_set():
            for event in w.stream(lister, namespace, resource_version=start, timeout_seconds=1):
                obj = event["object"]
                start = obj.metadata.resource_version
                if event["type"] == "ADDED":
                    images = ",".join(c.image for c in obj.spec.template.spec.containers)
                    with lock:
                        seen.append((kind, f"{obj.metadata.name} {images}"))
                if stop.is_set():
                    break

    threads = [
        threading.Thread(target=follow, args=("Job", batch.list_namespaced_job), daemon=True),
        threading.Thread(
            target=follow, args=("ReplicaSet", apps.list_namespaced_replica_set), daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # both watches are open before the caller acts
    try:
        yield seen
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


def _release_objects(cluster: LocalCluster, namespace: str) -> list[str]:
    kinds = "deploy,rs,pods,svc,cm,secret,sa,pvc,netpol,pdb,role,rolebinding,ingress,job,cronjob"
    result = kubectl(cluster, "-n", namespace, "get", kinds, "-l", INSTANCE, "-o", "name")
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.split())


def _cluster_objects(cluster: LocalCluster, namespace: str) -> list[str]:
    result = kubectl(cluster, "get", "pv,clusterrole,clusterrolebinding", "-o", "name")
    assert result.returncode == 0, result.stderr
    return [name for name in result.stdout.split() if f"/{namespace}-" in name]


# --- server-side dry run --------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_chart_server_side_dry_run_admits_everything_under_restricted(
    helm: Path,
    cluster: LocalCluster,
    kube: client.ApiClient,
    restricted_namespace: str,
    profile: str,
) -> None:
    objects = render(helm, profile, namespace=restricted_namespace)

    applied = kubectl(
        cluster,
        "apply",
        "--dry-run=server",
        "-n",
        restricted_namespace,
        "-f",
        "-",
        stdin=dump(objects),
    )

    assert applied.returncode == 0, applied.stderr
    assert "PodSecurity" not in applied.stderr, applied.stderr
    core = client.CoreV1Api(kube)
    for account in (o for o in objects if o["kind"] == "ServiceAccount"):
        core.create_namespaced_service_account(restricted_namespace, account)
    for workload, template in pod_specs(objects):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"dry-{workload['metadata']['name']}"[:63],
                **{"labels": template["metadata"]["labels"]},
            },
            "spec": template["spec"],
        }
        # Pod Security admission enforces on pods: the API server itself admits each one.
        core.create_namespaced_pod(restricted_namespace, pod, dry_run="All")


def test_chart_restricted_namespace_rejects_a_pod_without_the_security_context(
    kube: client.ApiClient, restricted_namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": "kluis/control-plane:0.1.0"}]},
    }

    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(kube).create_namespaced_pod(restricted_namespace, pod, dry_run="All")

    assert caught.value.status == 403
    assert "restricted" in caught.value.body


# --- install, upgrade, test, uninstall ------------------------------------------------------------


def _project_namespace(kube: client.ApiClient) -> str:
    """A namespace like the reconciler makes for a project, with data in it."""
    core = client.CoreV1Api(kube)
    name = f"kluis-p-{uuid.uuid4().hex[:8]}"
    labels = {
        "app.kubernetes.io/managed-by": "kluis",
        "app.kubernetes.io/part-of": "kluis",
        "app.kubernetes.io/component": "workspace",
        "kluis.io/kind": "namespace",
    }
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="data"), data={"a": "b"})
    )
    return name


def _wait_pods_running(kube: client.ApiClient, namespace: str, expected: int) -> list[Any]:
    core = client.CoreV1Api(kube)
    deadline = time.monotonic() + 60
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector=INSTANCE).items
        serving = [
            p for p in pods if p.metadata.labels.get("app.kubernetes.io/component") != "test"
        ]
        running = [
            p for p in serving if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]
        if len(running) == expected == len(serving) or time.monotonic() > deadline:
            return running
        time.sleep(0.5)


def _can(cluster: LocalCluster, account: str, namespace: str, *question: str) -> bool:
    result = kubectl(
        cluster, "auth", "can-i", *question, f"--as=system:serviceaccount:{namespace}:{account}"
    )
    return result.stdout.strip() == "yes"


def _assert_least_privilege(cluster: LocalCluster, ns: str) -> None:
    """What the API server itself answers for the release's service accounts."""
    reconciler, hub, plain = "r-kluis-reconciler", "r-kluis-hub", "r-kluis"
    assert _can(cluster, reconciler, ns, "create", "namespaces")
    assert _can(cluster, reconciler, ns, "patch", "networkpolicies", "-n", "kluis-p-1")
    assert _can(cluster, reconciler, ns, "update", "leases", "-n", ns)
    assert not _can(cluster, reconciler, ns, "update", "leases", "-n", "kube-system")
    assert not _can(cluster, reconciler, ns, "get", "secrets", "-n", ns)
    assert not _can(
        cluster, reconciler, ns, "create", "pods", "--subresource=exec", "-n", "kluis-p-1"
    )
    assert not _can(cluster, reconciler, ns, "create", "clusterroles")
    # The hub: nothing cluster-wide and nothing in its own namespace; its project rights come
    # from the reconciler's RoleBinding in each project namespace.
    for verb, resource in [("list", "pods"), ("create", "pods"), ("get", "secrets")]:
        assert not _can(cluster, hub, ns, verb, resource, "--all-namespaces")
        assert not _can(cluster, hub, ns, verb, resource, "-n", ns)
    assert not _can(cluster, plain, ns, "list", "pods", "-n", ns)


def test_chart_install_upgrade_test_uninstall_on_the_local_cluster(
    helm: Path, cluster: LocalCluster, kube: client.ApiClient, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    values = ["-f", str(PROFILES["production"])]
    project = _project_namespace(kube)
    try:
        # install: hooks first (Secret, settings, migration Job), then everything, Ready.
        helm_in(
            helm,
            cluster,
            "install",
            RELEASE,
            str(CHART),
            "-n",
            ns,
            *values,
            "--wait",
            "--timeout",
            "180s",
        )
        running = _wait_pods_running(kube, ns, expected=8)
        components = sorted(p.metadata.labels["app.kubernetes.io/component"] for p in running)
        assert components == [
            "control-plane",
            "control-plane",
            "hub",
            "hub-sync",
            "proxy",
            "reconciler",
            "reconciler",
            "scheduler",
        ]
        claims = client.CoreV1Api(kube).list_namespaced_persistent_volume_claim(ns).items
        assert {c.status.phase for c in claims} == {"Bound"}
        _assert_least_privilege(cluster, ns)
        before = _secret_data(kube, ns, "r-kluis")
        assert len(before["secret-key"]) == 64
        assert before["database-url"].startswith("postgresql+psycopg://")
        assert client.BatchV1Api(kube).list_namespaced_job(ns).items == [], "hook cleaned up"

        # upgrade to a changed version: the migration Job runs before the new code rolls out.
        with recording_additions(kube, ns) as seen:
            helm_in(
                helm,
                cluster,
                "upgrade",
                RELEASE,
                str(CHART),
                "-n",
                ns,
                *values,
                "--set",
                "controlPlane.image.tag=0.1.1",
                "--wait",
                "--timeout",
                "180s",
            )
        kinds = [kind for kind, what in seen if kind == "Job" or "0.1.1" in what]
        assert kinds[0] == "Job", seen
        assert ("Job", "r-kluis-migrate kluis/control-plane:0.1.1") in seen
        assert "ReplicaSet" in kinds, seen
        # the secrets survive the upgrade unchanged
        assert _secret_data(kube, ns, "r-kluis") == before
        history = yaml.safe_load(helm_in(helm, cluster, "history", RELEASE, "-n", ns, "-o", "yaml"))
        assert [h["status"] for h in history] == ["superseded", "deployed"]

        # helm test: the smoke Job (kwok completes it; in a real cluster it asks each
        # component's health endpoint).
        out = helm_in(helm, cluster, "test", RELEASE, "-n", ns, "--timeout", "120s")
        assert "Phase:          Succeeded" in out or "Phase: Succeeded" in out.replace("  ", " ")

        # uninstall: nothing of the release is left but the kept Secret; projects stay.
        helm_in(helm, cluster, "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "120s")
        deadline = time.monotonic() + 60
        while _release_objects(cluster, ns) != ["secret/r-kluis"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _release_objects(cluster, ns) == ["secret/r-kluis"]
        assert _cluster_objects(cluster, ns) == []
        core = client.CoreV1Api(kube)
        assert core.read_namespace(project).status.phase == "Active"
        assert core.read_namespaced_config_map("data", project).data == {"a": "b"}

        # a re-install finds the kept keys again (the database stays readable)
        helm_in(
            helm,
            cluster,
            "install",
            RELEASE,
            str(CHART),
            "-n",
            ns,
            *values,
            "--wait",
            "--timeout",
            "180s",
        )
        assert _secret_data(kube, ns, "r-kluis") == before

        # an upgrade that cannot find the keys stops instead of generating new ones
        client.CoreV1Api(kube).delete_namespaced_secret("r-kluis", ns)
        refused = run_helm(
            helm,
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            ns,
            *values,
            f"--kubeconfig={cluster.kubeconfig}",
            check=False,
        )
        assert refused.returncode != 0
        assert "Refusing to generate new keys" in refused.stderr
        helm_in(helm, cluster, "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "120s")
    finally:
        helm_in(helm, cluster, "uninstall", RELEASE, "-n", ns, "--ignore-not-found", check=False)
        client.CoreV1Api(kube).delete_namespace(project)


def test_chart_trial_installs_with_sqlite_on_the_node(
    helm: Path, cluster: LocalCluster, kube: client.ApiClient, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    try:
        helm_in(
            helm,
            cluster,
            "install",
            RELEASE,
            str(CHART),
            "-n",
            ns,
            "-f",
            str(PROFILES["trial"]),
            "--wait",
            "--timeout",
            "180s",
        )
        running = _wait_pods_running(kube, ns, expected=6)
        assert len(running) == 6
        nodes = {p.spec.node_name for p in running}
        assert len(nodes) == 1, "the SQLite file is shared on one node"
        helm_in(helm, cluster, "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "120s")
        # The database (claim and volume) is kept on uninstall, on purpose.
        claims = client.CoreV1Api(kube).list_namespaced_persistent_volume_claim(ns).items
        assert [c.metadata.name for c in claims] == ["r-kluis-sqlite"]
        assert _cluster_objects(cluster, ns) == [f"persistentvolume/{ns}-r-kluis-sqlite"]
    finally:
        helm_in(helm, cluster, "uninstall", RELEASE, "-n", ns, "--ignore-not-found", check=False)
        kubectl(
            cluster,
            "-n",
            ns,
            "delete",
            "pvc",
            "r-kluis-sqlite",
            "--ignore-not-found",
            "--wait=false",
        )
        kubectl(
            cluster, "delete", "pv", f"{ns}-r-kluis-sqlite", "--ignore-not-found", "--wait=false"
        )
