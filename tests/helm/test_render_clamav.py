"""The chart's two ways to scan uploads, rendered with `helm template`: clamd as a sidecar
(clamav.enabled, the default) or an existing clamd over TCP (clamav.existingAddress: no sidecar,
KLUIS_CLAMD_ADDRESS set, egress to that port only), and neither (fail-closed). The address the
chart renders reaches a real clamd through Kluis's own client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airlock_helpers import CLAMD, EICAR
from clamd_helpers import start_tcp_clamd

from helm.chart_support import CHART, PROFILES, Manifest, by_kind, find, render, run_helm
from orchestrator import clamd
from orchestrator.config import Settings

EXISTING = "clamav-existing"
CLAMAV_CONTAINERS = {"clamd", "freshclam", "freshclam-init"}


def _pod(objects: list[Manifest]) -> Manifest:
    spec: Manifest = find(objects, "Deployment", "r-kluis-control-plane")["spec"]["template"]
    return spec["spec"]


def _container_names(objects: list[Manifest]) -> set[str]:
    pod = _pod(objects)
    return {c["name"] for c in [*pod.get("initContainers", []), *pod["containers"]]}


def _settings(objects: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = find(objects, "ConfigMap", "r-kluis")["data"]
    return data


def _egress(objects: list[Manifest]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = find(objects, "NetworkPolicy", "r-kluis-control-plane")["spec"][
        "egress"
    ]
    return rules


def _rules_on_port(objects: list[Manifest], port: int) -> list[dict[str, Any]]:
    return [r for r in _egress(objects) if {"protocol": "TCP", "port": port} in r.get("ports", [])]


def test_render_clamav_existing_address_runs_no_sidecar(helm: Path) -> None:
    objects = render(helm, EXISTING)
    pod = _pod(objects)

    assert _container_names(objects) == {"control-plane"}
    assert not {"clamd-socket", "clamav-db", "clamav-config"} & {v["name"] for v in pod["volumes"]}
    assert not [
        c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("clamav")
    ]


def test_render_clamav_existing_address_sets_kluis_clamd_address(helm: Path) -> None:
    env = _settings(render(helm, EXISTING))

    assert env["KLUIS_CLAMD_ADDRESS"] == "clamd.antivirus.example.org:3310"
    assert "KLUIS_CLAMD_SOCKET" not in env
    settings = Settings(clamd_address=env["KLUIS_CLAMD_ADDRESS"])
    assert settings.clamd_endpoint == ("clamd.antivirus.example.org", 3310)


def test_render_clamav_existing_address_egress_to_its_port_only(helm: Path) -> None:
    objects = render(helm, EXISTING)

    (rule,) = _rules_on_port(objects, 3310)
    assert rule == {
        "to": [{"ipBlock": {"cidr": "10.20.30.0/24"}}],
        "ports": [{"protocol": "TCP", "port": 3310}],
    }
    assert _rules_on_port(objects, 443) == [], "no freshclam, so no signature mirror"


def test_render_clamav_existing_address_default_cidrs_exclude_the_metadata_endpoint(
    helm: Path,
) -> None:
    objects = render(
        helm,
        "production",
        "clamav.enabled=false",
        "clamav.existingAddress=[fd00::5]:13310",
    )

    (rule,) = _rules_on_port(objects, 13310)
    assert rule["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]
    assert _settings(objects)["KLUIS_CLAMD_ADDRESS"] == "[fd00::5]:13310"


def test_render_clamav_sidecar_default_has_no_address_and_no_clamd_egress(helm: Path) -> None:
    objects = render(helm, "production")
    env = _settings(objects)

    assert _container_names(objects) >= CLAMAV_CONTAINERS
    assert "KLUIS_CLAMD_ADDRESS" not in env
    assert env["KLUIS_CLAMD_SOCKET"] == "/run/clamav/clamd.ctl"
    assert _rules_on_port(objects, 3310) == []


def test_render_clamav_neither_scans_nothing_and_fails_closed(helm: Path) -> None:
    objects = render(helm, "clamav-off")
    env = _settings(objects)

    assert _container_names(objects) == {"control-plane"}
    assert "KLUIS_CLAMD_ADDRESS" not in env
    # The socket no clamd serves: every scan is "scanner unavailable", every upload blocked.
    assert env["KLUIS_CLAMD_SOCKET"] == "/run/clamav/clamd.ctl"
    assert _rules_on_port(objects, 3310) == []


@pytest.mark.parametrize(
    "address",
    [
        "clamd",
        "clamd:",
        "clamd:0",
        "clamd:65536",
        "clamd:port",
        ":3310",
        "tcp://clamd:3310",
        "fd00::5:3310",
        "a..b:3310",
        "clam d:3310",
    ],
)
def test_render_clamav_schema_rejects_a_malformed_address(helm: Path, address: str) -> None:
    args = ["template", "r", str(CHART), "-f", str(PROFILES[EXISTING])]

    result = run_helm(helm, *args, "--set-string", f"clamav.existingAddress={address}", check=False)

    assert result.returncode != 0
    assert "/clamav/existingAddress" in result.stderr
    assert "does not match pattern" in result.stderr


def test_render_clamav_schema_rejects_sidecar_and_address_together(helm: Path) -> None:
    args = ["template", "r", str(CHART), "-f", str(PROFILES[EXISTING])]

    result = run_helm(helm, *args, "--set", "clamav.enabled=true", check=False)

    assert result.returncode != 0
    assert "/clamav/enabled" in result.stderr


def test_render_clamav_schema_rejects_a_bad_existing_cidr(helm: Path) -> None:
    args = ["template", "r", str(CHART), "-f", str(PROFILES[EXISTING])]

    result = run_helm(helm, *args, "--set", "clamav.existingCidrs[0]=anywhere", check=False)

    assert result.returncode != 0
    assert "/clamav/existingCidrs/0" in result.stderr


def test_render_clamav_rendered_address_reaches_a_real_clamd(helm: Path, tmp_path: Path) -> None:
    if not Path(CLAMD).exists():
        pytest.fail("clamd is missing: install Debian's clamav-daemon (.ci/system-packages)")
    (tmp_path / "clamd").mkdir()
    process, (host, port) = start_tcp_clamd(tmp_path / "clamd")
    eicar = tmp_path / "eicar.txt"
    eicar.write_bytes(EICAR)
    try:
        objects = render(
            helm,
            "production",
            "clamav.enabled=false",
            f"clamav.existingAddress={host}:{port}",
        )
        settings = Settings(clamd_address=_settings(objects)["KLUIS_CLAMD_ADDRESS"])

        verdict = clamd.scan_file(settings.clamd_endpoint, eicar, timeout=20)
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert not verdict.clean
    assert "Kluis.Test.EICAR" in verdict.detail
    (rule,) = _rules_on_port(objects, port)
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]
