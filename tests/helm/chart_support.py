"""Helpers for the Helm chart's tests: run the project-built helm, render CI profiles."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "kluis"
PROFILES = {path.name.removesuffix("-values.yaml"): path for path in (CHART / "ci").glob("*.yaml")}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

Manifest = dict[str, Any]


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(
    helm: Path,
    profile: str | None,
    *sets: str,
    namespace: str = "kluis",
    release: str = "r",
    extra: tuple[str, ...] = (),
) -> list[Manifest]:
    """`helm template` of the chart with a CI profile (and --set overrides), as dicts."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if profile:
        args += ["-f", str(PROFILES[profile])]
    for item in sets:
        args += ["--set", item]
    args += list(extra)
    out = run_helm(helm, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_specs(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, pod template) for every object that runs pods."""
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            yield obj, obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def dump(objects: list[Manifest]) -> str:
    return yaml.safe_dump_all(objects)
