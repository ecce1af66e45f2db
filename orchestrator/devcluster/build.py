"""Build the local control plane's binaries from pinned Go modules and cache them.

Kubernetes, etcd, kwok and helm are compiled with the machine's Go toolchain into the user's cache
directory, in a folder keyed by the pinned versions, so a fresh clone on the same machine reuses
them and a version bump rebuilds. Standard library only: it runs before anything else is set up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Bump RECIPE when the way binaries are built changes, so caches are rebuilt.
RECIPE = 3


@dataclass(frozen=True)
class Versions:
    kubernetes: str = "v1.36.3"
    etcd: str = "v3.6.16"
    kwok: str = "v0.7.0"
    helm: str = "v3.22.0"


PINNED = Versions()
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
BINARIES = (*KUBE_COMMANDS, "etcd", "kwok", "helm")


def cache_root() -> Path:
    """The user's cache directory for Kluis (XDG_CACHE_HOME or ~/.cache), overridable."""
    override = os.environ.get("KLUIS_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kluis"


def cache_key(versions: Versions = PINNED) -> str:
    payload = json.dumps({"recipe": RECIPE, **asdict(versions)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def bin_dir(versions: Versions = PINNED) -> Path:
    return cache_root() / "bin" / f"{versions.kubernetes}-{cache_key(versions)}"


def is_built(versions: Versions = PINNED) -> bool:
    d = bin_dir(versions)
    return (d / "STAMP.json").is_file() and all((d / name).is_file() for name in BINARIES)


def _say(message: str) -> None:
    print(f"[kluis devcluster] {message}", file=sys.stderr, flush=True)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Never let the go command fetch another toolchain: the machine's Go is the one we have.
    env.setdefault("GOTOOLCHAIN", "local")
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = "-mod=mod"
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    start = time.monotonic()
    _say(f"{what} …")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {proc.returncode}): {' '.join(args)}\n{proc.stderr[-4000:]}"
        )
    _say(f"{what}: done in {time.monotonic() - start:.0f}s")
    return proc.stdout


def _module_file(
    module: str, version: str, env: dict[str, str], cwd: Path
) -> tuple[str, dict[str, str]]:
    out = _run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd,
        env,
        f"download {module}@{version}",
    )
    meta = json.loads(out)
    info = json.loads(Path(meta["Info"]).read_text())
    return Path(meta["GoMod"]).read_text(), info


def _kubernetes_go_mod(versions: Versions, upstream: str) -> str:
    """A consumer go.mod: require k8s.io/kubernetes and pin every staging module it uses."""
    staging_version = "v0." + versions.kubernetes.removeprefix("v1.")
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) v0\.0\.0\s*$", upstream, re.M)))
    godebug = re.findall(r"^godebug .*$", upstream, re.M)
    go_line = re.search(r"^go (\S+)$", upstream, re.M)
    lines = ["module kluis.local/kubebuild", "", f"go {go_line.group(1) if go_line else '1.26'}"]
    lines += ["", *godebug, "", f"require k8s.io/kubernetes {versions.kubernetes}", ""]
    lines += ["replace ("]
    lines += [f"\t{mod} => {mod} {staging_version}" for mod in staging]
    lines += [")", ""]
    lines += ["tool ("]
    lines += [f"\tk8s.io/kubernetes/cmd/{cmd}" for cmd in KUBE_COMMANDS]
    lines += [")", ""]
    return "\n".join(lines)


def _kube_ldflags(version: str, build_date: str) -> str:
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitCommit=0000000000000000000000000000000000000000",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={build_date}",
        ]
    return " ".join(["-s", "-w", *flags])


def _build_kubernetes(versions: Versions, work: Path, out: Path, env: dict[str, str]) -> None:
    mod = work / "kubernetes"
    mod.mkdir(parents=True, exist_ok=True)
    upstream, info = _module_file("k8s.io/kubernetes", versions.kubernetes, env, mod)
    (mod / "go.mod").write_text(_kubernetes_go_mod(versions, upstream))
    _run(["go", "mod", "tidy"], mod, env, "resolve Kubernetes dependencies (go mod tidy)")
    build_date = info.get("Time", "1970-01-01T00:00:00Z")
    pkgs = [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBE_COMMANDS]
    _run(
        [
            "go",
            "build",
            "-trimpath",
            "-tags",
            "grpcnotrace",
            "-ldflags",
            _kube_ldflags(versions.kubernetes, build_date),
            "-o",
            str(out) + "/",
            *pkgs,
        ],
        mod,
        env,
        f"compile {', '.join(KUBE_COMMANDS)} {versions.kubernetes} (cold: 10-25 min)",
    )


def _build_etcd(versions: Versions, work: Path, out: Path, env: dict[str, str]) -> None:
    mod = work / "etcd"
    mod.mkdir(parents=True, exist_ok=True)
    (mod / "go.mod").write_text(
        "module kluis.local/etcdbuild\n\ngo 1.24\n\n"
        f"require go.etcd.io/etcd/server/v3 {versions.etcd}\n\ntool go.etcd.io/etcd/server/v3\n"
    )
    _run(["go", "mod", "tidy"], mod, env, "resolve etcd dependencies")
    _run(
        [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(out / "etcd"),
            "go.etcd.io/etcd/server/v3",
        ],
        mod,
        env,
        f"compile etcd {versions.etcd}",
    )


def _go_install(
    module_cmd: str,
    version: str,
    out: Path,
    env: dict[str, str],
    work: Path,
    ldflags: str = "-s -w",
) -> None:
    env = {**env, "GOBIN": str(out)}
    _run(
        ["go", "install", "-trimpath", "-ldflags", ldflags, f"{module_cmd}@{version}"],
        work,
        env,
        f"compile {module_cmd}@{version}",
    )


def _helm_ldflags(versions: Versions) -> str:
    # A go-installed helm assumes Kubernetes 1.20 for lint/template; tell it ours.
    major, minor = versions.kubernetes.removeprefix("v").split(".")[:2]
    return " ".join(
        [
            "-s",
            "-w",
            f"-X helm.sh/helm/v3/internal/version.version={versions.helm}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
        ]
    )


def ensure_built(versions: Versions = PINNED, force: bool = False) -> Path:
    """Return the folder with every binary, building what is missing. Idempotent."""
    out = bin_dir(versions)
    if is_built(versions) and not force:
        return out
    if shutil.which("go") is None:
        raise RuntimeError("Go is required to build the local control plane; install Go 1.26")
    started = time.monotonic()
    _say(f"building the local control plane into {out} (versions {asdict(versions)})")
    staging = out.with_name(out.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    work = cache_root() / "gobuild"
    work.mkdir(parents=True, exist_ok=True)
    env = _go_env()
    if not all((staging / c).is_file() for c in KUBE_COMMANDS):
        _build_kubernetes(versions, work, staging, env)
    if not (staging / "etcd").is_file():
        _build_etcd(versions, work, staging, env)
    if not (staging / "kwok").is_file():
        _go_install("sigs.k8s.io/kwok/cmd/kwok", versions.kwok, staging, env, work)
    if not (staging / "helm").is_file():
        _go_install(
            "helm.sh/helm/v3/cmd/helm", versions.helm, staging, env, work, _helm_ldflags(versions)
        )
    stamp = {
        "versions": asdict(versions),
        "recipe": RECIPE,
        "built_at": dt.datetime.now(dt.UTC).isoformat(),
        "seconds": round(time.monotonic() - started, 1),
    }
    (staging / "STAMP.json").write_text(json.dumps(stamp, indent=2))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    _say(f"binaries ready in {out} after {stamp['seconds']}s")
    return out


if __name__ == "__main__":
    print(ensure_built(force="--force" in sys.argv))
