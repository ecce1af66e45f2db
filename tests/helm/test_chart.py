"""The Helm chart rendered with `helm template` for every CI profile (helm/kluis/ci/): lint,
Pod Security "restricted", resources, NetworkPolicies, RBAC (equal to orchestrator/rbac.py),
secrets, hooks, schema and settings."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from helm.chart_support import (
    CHART,
    PROFILES,
    Manifest,
    by_kind,
    find,
    pod_specs,
    render,
    run_helm,
)
from orchestrator import rbac
from orchestrator.config import Settings

ALL_PROFILES = sorted(PROFILES)
TRIAL = "trial"
# Pod Security "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.fixture(scope="module", params=ALL_PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def rendered(helm: Path, profile: str) -> list[Manifest]:
    return render(helm, profile)


def _containers(pod: Manifest) -> list[Manifest]:
    spec = pod["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def restricted_violations(pod: Manifest) -> list[str]:
    """What in a pod template Pod Security "restricted" (v1.36) forbids; empty when admitted."""
    spec = pod["spec"]
    problems = []
    pod_ctx = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(key)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: {kinds}")
    if pod_ctx.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("pod seccompProfile")
    for container in _containers(pod):
        name = container["name"]
        ctx = container.get("securityContext", {})
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name}: capabilities not dropped")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
        # Kluis's own rule on top of "restricted": a read-only root file system everywhere.
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: writable root file system")
    return problems


# --- lint and rendering ---------------------------------------------------------------------------


def test_chart_lint_strict_passes_for_profile(helm: Path, profile: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(PROFILES[profile]))

    assert "0 chart(s) failed" in result.stdout


def test_chart_profiles_cover_trial_production_csi_existing_secret_clamav_off() -> None:
    assert set(PROFILES) >= {"trial", "production", "csi", "existing-secret", "clamav-off"}


# --- pods -----------------------------------------------------------------------------------------


def test_chart_every_pod_meets_pod_security_restricted(rendered: list[Manifest]) -> None:
    pods = list(pod_specs(rendered))

    assert pods
    for workload, pod in pods:
        assert restricted_violations(pod) == [], workload["metadata"]["name"]


def test_chart_every_container_has_requests_and_limits(rendered: list[Manifest]) -> None:
    for workload, pod in pod_specs(rendered):
        for container in _containers(pod):
            resources = container.get("resources", {})
            where = f"{workload['metadata']['name']}/{container['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: {part}"


def test_chart_no_service_account_token_where_the_api_is_not_used(
    rendered: list[Manifest],
) -> None:
    with_token = {
        workload["metadata"]["labels"]["app.kubernetes.io/component"]
        for workload, pod in pod_specs(rendered)
        if pod["spec"].get("automountServiceAccountToken") is not False
    }

    assert with_token <= {"reconciler", "hub"}
    assert "reconciler" in with_token


def test_chart_no_host_path_outside_the_trial_profile(
    rendered: list[Manifest], profile: str
) -> None:
    text = yaml.safe_dump_all(rendered)

    if profile == TRIAL:
        assert "hostPath" in text
        assert all(pv["spec"].get("hostPath") for pv in by_kind(rendered, "PersistentVolume")), (
            "the trial keeps everything on the node"
        )
    else:
        assert "hostPath" not in text


def test_chart_pods_mount_only_claims_never_nfs_or_host_paths(rendered: list[Manifest]) -> None:
    for _, pod in pod_specs(rendered):
        for volume in pod["spec"].get("volumes", []):
            assert "nfs" not in volume
            assert "hostPath" not in volume


def test_chart_static_volumes_are_retained_and_prebound(rendered: list[Manifest]) -> None:
    claims = {c["metadata"]["name"]: c for c in by_kind(rendered, "PersistentVolumeClaim")}
    for pv in by_kind(rendered, "PersistentVolume"):
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        ref = pv["spec"]["claimRef"]
        assert ref["namespace"] == "kluis"
        assert claims[ref["name"]]["spec"]["volumeName"] == pv["metadata"]["name"]
        assert "kluis.io/project" not in pv["metadata"]["labels"], "never mistaken for a project's"


def test_chart_microdata_is_read_only_everywhere(rendered: list[Manifest]) -> None:
    for _, pod in pod_specs(rendered):
        for container in _containers(pod):
            for mount in container.get("volumeMounts", []):
                if mount["name"] == "microdata":
                    assert mount["readOnly"] is True


# --- network --------------------------------------------------------------------------------------


def _selects(policy: Manifest, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(key) == value for key, value in wanted.items())


def test_chart_network_policies_cover_every_pod_in_both_directions(
    rendered: list[Manifest],
) -> None:
    policies = by_kind(rendered, "NetworkPolicy")
    for workload, pod in pod_specs(rendered):
        labels = pod["metadata"]["labels"]
        # Its own policy, not just the namespace-wide default deny.
        mine = [p for p in policies if p["spec"]["podSelector"] and _selects(p, labels)]
        types = {t for p in mine for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, workload["metadata"]["name"]


def test_chart_namespace_default_deny_is_on_by_default(
    helm: Path, rendered: list[Manifest]
) -> None:
    catch_all = [p for p in by_kind(rendered, "NetworkPolicy") if not p["spec"]["podSelector"]]

    assert [(p["metadata"]["name"], p["spec"]) for p in catch_all] == [
        ("r-kluis-default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    ]
    others = render(helm, "production", "networkPolicy.defaultDeny=false")
    assert all(p["spec"]["podSelector"] for p in by_kind(others, "NetworkPolicy"))


def test_chart_network_policies_never_allow_the_metadata_endpoint(
    rendered: list[Manifest],
) -> None:
    for policy in by_kind(rendered, "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                block = peer.get("ipBlock")
                if block and block["cidr"] == "0.0.0.0/0":
                    assert "169.254.169.254/32" in block.get("except", [])


def test_chart_hub_reaches_only_servers_in_project_namespaces(helm: Path) -> None:
    objects = render(helm, "production")
    hub = find(objects, "NetworkPolicy", "r-kluis-hub")
    project_peers = [
        peer
        for rule in hub["spec"]["egress"]
        for peer in rule.get("to", [])
        if "namespaceSelector" in peer
    ]

    assert project_peers == [
        {
            "namespaceSelector": {
                "matchLabels": {
                    "app.kubernetes.io/component": "workspace",
                    "app.kubernetes.io/part-of": "kluis",
                }
            },
            "podSelector": {"matchLabels": {"kluis.io/kind": "server"}},
        }
    ]


# --- RBAC -----------------------------------------------------------------------------------------


def _normalised(rules: list[Manifest]) -> list[tuple[Any, ...]]:
    return sorted(
        (tuple(r["apiGroups"]), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"])))
        for r in rules
    )


def test_chart_reconciler_cluster_role_is_exactly_rbac_py(rendered: list[Manifest]) -> None:
    (role,) = by_kind(rendered, "ClusterRole")

    assert _normalised(role["rules"]) == _normalised(rbac.make_reconciler_cluster_role()["rules"])


def test_chart_reconciler_lease_role_is_exactly_rbac_py(rendered: list[Manifest]) -> None:
    (role,) = by_kind(rendered, "Role")
    (binding,) = by_kind(rendered, "RoleBinding")
    expected = rbac.make_reconciler_lease_role("kluis")

    assert _normalised(role["rules"]) == _normalised(expected["rules"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "r-kluis-reconciler", "namespace": "kluis"}
    ]


def test_chart_rbac_has_no_wildcards_or_escalation(rendered: list[Manifest]) -> None:
    for role in [*by_kind(rendered, "ClusterRole"), *by_kind(rendered, "Role")]:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert not {"secrets", "pods/exec", "clusterroles"} & set(rule["resources"])


def test_chart_only_the_reconciler_is_bound_to_roles(rendered: list[Manifest]) -> None:
    subjects = [
        subject
        for binding in [*by_kind(rendered, "ClusterRoleBinding"), *by_kind(rendered, "RoleBinding")]
        for subject in binding["subjects"]
    ]

    assert {s["name"] for s in subjects} == {"r-kluis-reconciler"}


def test_chart_hub_service_account_is_the_one_the_reconciler_binds(helm: Path) -> None:
    objects = render(helm, "production")
    settings = find(objects, "ConfigMap", "r-kluis")["data"]
    hub = find(objects, "Deployment", "r-kluis-hub")["spec"]["template"]

    assert settings["KLUIS_HUB_NAMESPACE"] == "kluis"
    assert settings["KLUIS_HUB_SERVICE_ACCOUNT"] == hub["spec"]["serviceAccountName"]
    assert json.loads(settings["KLUIS_HUB_POD_LABELS"]).items() <= hub["metadata"]["labels"].items()
    proxy = find(objects, "Deployment", "r-kluis-proxy")["spec"]["template"]
    assert (
        json.loads(settings["KLUIS_PROXY_POD_LABELS"]).items()
        <= proxy["metadata"]["labels"].items()
    )


# --- secrets --------------------------------------------------------------------------------------

SECRET_ENV = {
    "KLUIS_SECRET_KEY",
    "KLUIS_DATABASE_URL",
    "KLUIS_HUB_SERVICE_TOKEN",
    "KLUIS_HUB_API_TOKEN",
    "KLUIS_AIRLOCK_SIGNING_KEY",
    "KLUIS_SMTP_PASSWORD",
    "JPY_COOKIE_SECRET",
    "CONFIGPROXY_AUTH_TOKEN",
}


def test_chart_secrets_only_from_secret_refs(rendered: list[Manifest]) -> None:
    for cm in by_kind(rendered, "ConfigMap"):
        assert not SECRET_ENV & set(cm.get("data", {})), cm["metadata"]["name"]
    for _, pod in pod_specs(rendered):
        for container in _containers(pod):
            for env in container.get("env", []):
                if env["name"] in SECRET_ENV:
                    assert "secretKeyRef" in env["valueFrom"], env["name"]
                    assert "value" not in env


def test_chart_values_yaml_holds_no_secret() -> None:
    values = (CHART / "values.yaml").read_text()

    assert not re.search(r"(?im)^\s*(password|token|secretKey|key):\s*\S", values)
    assert 'url: ""' in values


def test_chart_generated_secret_is_a_kept_hook_before_the_migration(helm: Path) -> None:
    objects = render(helm, "production")
    secret = find(objects, "Secret", "r-kluis")
    job = find(objects, "Job", "r-kluis-migrate")
    notes = secret["metadata"]["annotations"]

    assert notes["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert notes["helm.sh/resource-policy"] == "keep"
    assert int(notes["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {
        "secret-key",
        "hub-service-token",
        "hub-api-token",
        "hub-cookie-secret",
        "proxy-auth-token",
        "airlock-signing-key",
        "database-url",
    }
    assert len(data["secret-key"]) >= 32
    assert len(base64.b64decode(data["airlock-signing-key"])) == 32
    assert re.fullmatch(r"[0-9a-f]{64}", data["hub-cookie-secret"])  # JPY_COOKIE_SECRET: hex


def test_chart_existing_secret_generates_nothing(helm: Path) -> None:
    objects = render(helm, "existing-secret")

    assert by_kind(objects, "Secret") == []
    refs = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for _, pod in pod_specs(objects)
        for container in _containers(pod)
        for env in container.get("env", [])
        if "valueFrom" in env
    }
    assert refs == {"kluis-keys", "kluis-smtp"}


# --- hooks ----------------------------------------------------------------------------------------


def test_chart_migration_job_is_a_pre_install_pre_upgrade_hook(helm: Path) -> None:
    objects = render(helm, "production")
    job = find(objects, "Job", "r-kluis-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]

    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert container["args"] == ["kluis", "migrate"]
    # What the Job needs exists before it: its settings, account and policy are hooks too.
    hooks = [
        o
        for o in objects
        if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-install,pre-upgrade"
    ]
    assert {(o["kind"], o["metadata"]["name"]) for o in hooks} == {
        ("Secret", "r-kluis"),
        ("ConfigMap", "r-kluis-migrate"),
        ("ServiceAccount", "r-kluis-migrate"),
        ("NetworkPolicy", "r-kluis-migrate"),
        ("Job", "r-kluis-migrate"),
    }
    assert container["envFrom"] == [{"configMapRef": {"name": "r-kluis-migrate"}}]


def test_chart_sqlite_trial_migrates_in_the_single_control_plane(helm: Path) -> None:
    objects = render(helm, TRIAL)
    control_plane = find(objects, "Deployment", "r-kluis-control-plane")
    inits = control_plane["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["freshclam-init", "migrate"]
    init = inits[1]

    assert by_kind(objects, "Job") == [find(objects, "Job", "r-kluis-smoke-test")]
    assert init["args"] == ["kluis", "migrate"]
    assert control_plane["spec"]["replicas"] == 1
    assert control_plane["spec"]["strategy"] == {"type": "Recreate"}
    sqlite_claim = find(objects, "PersistentVolumeClaim", "r-kluis-sqlite")
    assert sqlite_claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_chart_smoke_test_checks_every_component(helm: Path) -> None:
    objects = render(helm, "production")
    checks = json.loads(find(objects, "ConfigMap", "r-kluis-test")["data"]["checks.json"])
    job = find(objects, "Job", "r-kluis-smoke-test")

    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert set(checks) == {"control-plane", "reconciler", "hub", "proxy"}


def test_chart_config_change_restarts_pods(helm: Path) -> None:
    def checksum(*sets: str) -> str:
        objects = render(helm, "production", *sets)
        pod = find(objects, "Deployment", "r-kluis-reconciler")["spec"]["template"]
        value: str = pod["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum() == checksum()
    assert checksum() != checksum("reconciler.concurrency=8")


# --- settings -------------------------------------------------------------------------------------


def _settings_env(objects: list[Manifest]) -> dict[str, str]:
    env = dict(find(objects, "ConfigMap", "r-kluis")["data"])
    fake = {
        "KLUIS_SECRET_KEY": "k" * 64,
        "KLUIS_DATABASE_URL": "postgresql+psycopg://kluis:pw@db.example.org/kluis",
        "KLUIS_HUB_SERVICE_TOKEN": "s" * 48,
        "KLUIS_HUB_API_TOKEN": "a" * 48,
        "KLUIS_AIRLOCK_SIGNING_KEY": base64.b64encode(b"x" * 32).decode(),
    }
    control_plane = find(objects, "Deployment", "r-kluis-control-plane")["spec"]["template"]
    for entry in control_plane["spec"]["containers"][0]["env"]:
        if entry["name"] in fake:
            env[entry["name"]] = fake[entry["name"]]
    return env


def test_chart_settings_are_kluis_settings_the_app_accepts(
    rendered: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _settings_env(rendered)
    fields = {f"KLUIS_{name.upper()}" for name in Settings.model_fields}

    assert set(env) - fields == set(), "every variable is a Kluis setting"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # raises on unsafe or invalid configuration
    assert settings.unsafe_reasons() == []
    assert settings.reconcile_metrics_host == "0.0.0.0"  # noqa: S104 - probes and scraping
    assert settings.leader_election_namespace == "kluis"


def test_chart_production_settings_are_production(helm: Path) -> None:
    env = find(render(helm, "production"), "ConfigMap", "r-kluis")["data"]

    assert env["KLUIS_ENVIRONMENT"] == "production"
    assert env["KLUIS_STORAGE_BACKEND"] == "nfs"
    assert env["KLUIS_STORAGE_NFS_SERVER"] == "nfs.example.org"
    assert env["KLUIS_PUBLIC_URL"] == "https://kluis.example.org"
    assert "KLUIS_ALLOW_SQLITE_IN_PRODUCTION" not in env


# --- images ---------------------------------------------------------------------------------------


def test_chart_image_tags_default_to_the_app_version(helm: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    objects = render(helm, "production")
    images = {c["image"] for _, pod in pod_specs(objects) for c in _containers(pod)}

    assert f"kluis/control-plane:{chart['appVersion']}" in images
    assert f"kluis/hub:{chart['appVersion']}" in images
    assert "kluis/control-plane:9.9.9" in {
        c["image"]
        for _, pod in pod_specs(render(helm, "production", "controlPlane.image.tag=9.9.9"))
        for c in _containers(pod)
    }


def test_chart_clamav_off_renders_no_sidecar_and_no_hub(helm: Path) -> None:
    objects = render(helm, "clamav-off")
    control_plane = find(objects, "Deployment", "r-kluis-control-plane")
    names = [c["name"] for c in control_plane["spec"]["template"]["spec"]["containers"]]

    assert names == ["control-plane"]
    assert not [d for d in by_kind(objects, "Deployment") if "hub" in d["metadata"]["name"]]


def test_chart_clamav_on_shares_the_socket_with_the_control_plane(helm: Path) -> None:
    objects = render(helm, "production")
    pod = find(objects, "Deployment", "r-kluis-control-plane")["spec"]["template"]["spec"]
    mounts = {
        c["name"]: {m["mountPath"] for m in c["volumeMounts"] if m["name"] == "clamd-socket"}
        for c in pod["containers"]
    }
    env = find(objects, "ConfigMap", "r-kluis")["data"]

    assert mounts == {
        "control-plane": {"/run/clamav"},
        "clamd": {"/run/clamav"},
        "freshclam": {"/run/clamav"},
    }
    (init,) = pod["initContainers"]
    assert init["command"][0] == "freshclam", "signatures before clamd starts"
    assert env["KLUIS_CLAMD_SOCKET"] == "/run/clamav/clamd.ctl"


def test_chart_service_monitor_is_optional(helm: Path) -> None:
    assert by_kind(render(helm, "production"), "ServiceMonitor") == []
    (monitor,) = by_kind(
        render(helm, "production", "reconciler.serviceMonitor.enabled=true"), "ServiceMonitor"
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_chart_ingress_has_host_tls_and_routes(helm: Path) -> None:
    (ingress,) = by_kind(render(helm, "production"), "Ingress")
    paths = {
        p["path"]: p["backend"]["service"]["name"]
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
    }

    assert ingress["spec"]["tls"] == [{"hosts": ["kluis.example.org"], "secretName": "kluis-tls"}]
    assert paths == {"/": "r-kluis-control-plane", "/jupyter": "r-kluis-proxy-public"}


def test_chart_every_workload_has_a_disruption_budget_when_long_running(helm: Path) -> None:
    objects = render(helm, "production")
    budgets = by_kind(objects, "PodDisruptionBudget")
    for deployment in by_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if labels["app.kubernetes.io/component"] in ("scheduler", "hub-sync"):
            continue  # one-replica loops that may simply move
        assert any(
            b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets
        ), deployment["metadata"]["name"]


# --- schema ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["unknownKey=1"], "additional properties 'unknownKey' not allowed"),
        (["controlPlane.replica=2"], "additional properties 'replica' not allowed"),
        (["storage.microdata.readOnly=false"], "additional properties 'readOnly' not allowed"),
        (["controlPlane.replicas=0"], "minimum"),
        (["storage.backend=s3"], "value must be one of"),
        (["database.type=mysql"], "value must be one of"),
        (["kluis.environment=staging"], "value must be one of"),
        (["controlPlane.resources.limits=null"], "limits"),
        (["controlPlane.image.pullPolicy=Sometimes"], "value must be one of"),
        (["kluis.extraEnv.KLUIS_SECRET_KEY=x"], "KLUIS_SECRET_KEY"),
        (["kluis.extraEnv.PATH=/bin"], "PATH"),
        (["storage.csi.volumeHandle=fixed"], "volumeHandle"),
        (["clamav.streamMaxLength=5G"], "streamMaxLength"),
        (["networkPolicy.apiServerCidrs[0]=everywhere"], "apiServerCidrs"),
        (["database.postgresql.url=mysql://x"], "url"),
    ],
)
def test_chart_schema_rejects_unknown_keys_and_bad_values(
    helm: Path, sets: list[str], message: str
) -> None:
    args = ["template", "r", str(CHART), "-f", str(PROFILES["production"])]
    for item in sets:
        args += ["--set", item]

    result = run_helm(helm, *args, check=False)

    assert result.returncode != 0
    assert "schema" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("profile", "sets", "message"),
    [
        # SQLite is a single-replica trial.
        ("trial", ["controlPlane.replicas=2"], "/controlPlane/replicas"),
        # hostPath only in development.
        ("trial", ["kluis.environment=production"], "/kluis/environment"),
        ("production", ["storage.backend=hostPath"], "/kluis/environment"),
        # PostgreSQL needs a URL; nfs a server; csi a driver.
        ("production", ["database.postgresql.url="], "/database/postgresql"),
        ("production", ["storage.nfs.server="], "/storage/nfs/server"),
        ("production", ["storage.backend=csi"], "/storage/csi/driver"),
        ("production", ["proxy.replicas=2"], "/proxy/replicas"),
    ],
)
def test_chart_schema_enforces_profiles(
    helm: Path, profile: str, sets: list[str], message: str
) -> None:
    args = ["template", "r", str(CHART), "-f", str(PROFILES[profile])]
    for item in sets:
        args += ["--set", item]

    result = run_helm(helm, *args, check=False)

    assert result.returncode != 0
    assert message in result.stderr


def test_chart_schema_has_no_open_objects() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            is_open = node.get("type") == "object" and "additionalProperties" not in node
            if is_open and where != "/properties/global":
                open_objects.append(where)
            for key, child in node.items():
                walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{where}/{index}")

    walk(schema, "")
    assert open_objects == []


def test_chart_values_yaml_documents_every_key() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([\w-]+):\s*(\S.*)?$", line)
        if not match or not match.group(3):
            continue  # a block header: its keys carry the comments
        if match.group(2) in ("requests", "limits"):
            continue  # inside a documented `resources`
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            undocumented.append(line.strip())
    assert undocumented == []


def test_chart_schema_accepts_the_default_values_apart_from_the_required_ones(
    helm: Path,
) -> None:
    result = run_helm(helm, "template", "r", str(CHART), check=False)

    assert result.returncode != 0
    found = set(re.findall(r"at '(/[^']+)'", result.stderr))
    assert found == {
        "/database/postgresql",
        "/database/postgresql/url",
        "/database/postgresql/existingSecret",
        "/storage/nfs/server",
    }


# --- the hub --------------------------------------------------------------------------------------


def _hub_env(objects: list[Manifest], data_dir: Path) -> dict[str, str]:
    pod = find(objects, "Deployment", "r-kluis-hub")["spec"]["template"]["spec"]
    env = {
        entry["name"]: entry.get("value", entry["name"].lower() + "-" + "x" * 40)
        for entry in pod["containers"][0]["env"]
    }
    env["KLUIS_HUB_DATA_DIR"] = str(data_dir)  # the pod's emptyDir
    return env


def test_chart_hub_environment_is_what_jupyterhub_config_reads(helm: Path, tmp_path: Path) -> None:
    from traitlets.config import Config

    from orchestrator.hub import jupyterhub_config

    env = _hub_env(render(helm, "production"), tmp_path)
    c = Config()

    jupyterhub_config.configure(c, env)

    assert c.JupyterHub.bind_url == "http://:8000/jupyter/"
    assert c.JupyterHub.hub_bind_url == "http://0.0.0.0:8081"
    assert c.JupyterHub.hub_connect_url == "http://r-kluis-hub:8081"
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.ConfigurableHTTPProxy.api_url == "http://r-kluis-proxy-api:8001"
    assert c.KluisAuthenticator.control_plane_url == "http://r-kluis-control-plane:8000"
    assert c.KluisAuthenticator.portal_url == "https://kluis.example.org/"
    (culler,) = [s for s in c.JupyterHub.services if s["name"] == "idle-culler"]
    assert "--timeout=3600" in culler["command"]
    source = Path(jupyterhub_config.__file__).read_text()
    for name in env:
        if name.startswith("KLUIS_"):
            assert re.search(rf"[\"']{name}[\"']", source), f"{name} is not read by the hub"


def test_chart_hub_culler_off_removes_the_service(helm: Path, tmp_path: Path) -> None:
    from traitlets.config import Config

    from orchestrator.hub import jupyterhub_config

    env = _hub_env(render(helm, "production", "hub.culler.enabled=false"), tmp_path)
    c = Config()

    jupyterhub_config.configure(c, env)

    assert [s["name"] for s in c.JupyterHub.services] == ["kluis-control-plane"]


def test_chart_control_plane_reaches_the_hub_api_through_its_service(helm: Path) -> None:
    env = find(render(helm, "production"), "ConfigMap", "r-kluis")["data"]

    assert env["KLUIS_HUB_API_URL"] == "http://r-kluis-hub:8081/jupyter/hub/api"
    assert env["KLUIS_HUB_PUBLIC_URL"] == "https://kluis.example.org/jupyter"


def _settings_of(helm: Path, profile: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("KLUIS_"):
            monkeypatch.delenv(name)
    for key, value in _settings_env(render(helm, profile)).items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_chart_structured_values_reach_the_settings(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    production = _settings_of(helm, "production", monkeypatch)
    csi = _settings_of(helm, "csi", monkeypatch)
    trial = _settings_of(helm, "trial", monkeypatch)

    assert production.session_idle_minutes == 20  # kluis.extraEnv
    assert production.trusted_proxies == ["10.244.0.0/16"]
    assert production.workspace_images == ["registry.example.org/kluis/workspace:0.1.0"]
    assert production.hub_namespace == "kluis"
    # Without hub.workspaceImages the chart's default is the image built from images/workspace.
    assert trial.workspace_images == ["kluis/workspace:0.1.0"]
    assert production.hub_service_account == "r-kluis-hub"
    assert csi.compute_sizes["xlarge"].memory == "256Gi"
    assert csi.storage_csi_volume_handle == "kluis{path}"
    assert str(csi.effective_microdata_root) == "/var/lib/kluis/microdata"


def test_chart_minimal_values_in_the_operations_guide_render(helm: Path, tmp_path: Path) -> None:
    guide = (CHART.parents[1] / "docs" / "operations.md").read_text()
    section = guide.split("A minimal `my-values.yaml` for production", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my-values.yaml").write_text(example)

    result = run_helm(helm, "template", "kluis", str(CHART), "-f", str(tmp_path / "my-values.yaml"))

    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert find(objects, "Job", "kluis-migrate")
    assert find(objects, "ConfigMap", "kluis")["data"]["KLUIS_SMTP_HOST"] == "smtp.example.org"


def test_chart_image_pull_secrets_reach_every_pod(helm: Path) -> None:
    objects = render(helm, "production", "imagePullSecrets[0]=regcred")

    for workload, pod in pod_specs(objects):
        assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}], workload["metadata"]
    assert all("imagePullSecrets" not in pod["spec"] for _, pod in pod_specs(render(helm, "csi")))


def test_chart_airlock_sweep_runs_daily_with_only_the_airlock_mounted(helm: Path) -> None:
    objects = render(helm, "production")
    cron = find(objects, "CronJob", "r-kluis-airlock-sweep")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert container["args"] == ["kluis", "airlock", "sweep"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert {m["name"] for m in container["volumeMounts"]} == {"airlock", "data", "tmp"}
    assert any(w["kind"] == "CronJob" for w, _ in pod_specs(objects)), "checked like the rest"
