"""Static checks of the container images under images/ (no buildah needed): pinned bases and
packages, multi-stage builds, a fixed non-root user, OCI labels, locked Python and npm
dependencies, files that exist, and the workspace's lockdown settings. `make images` builds and
runs them; these tests keep the recipes honest on every machine."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from orchestrator.config import Settings

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
NAMES = ("control-plane", "hub", "workspace")
# The image's user: (uid, gid). The workspace's is the spawn spec's default (Settings).
USERS = {"control-plane": (10001, 10001), "hub": (10001, 10001), "workspace": (1000, 100)}
REQUIRED_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.source",
    "org.opencontainers.image.created",
    "org.opencontainers.image.base.name",
)
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "r-base-dev", "python3-dev")
NETWORK_TOOLS = ("curl", "wget", "openssh-client", "netcat", "netcat-openbsd", "socat", "git")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


@dataclass
class Containerfile:
    global_args: dict[str, str]
    stages: list[Stage]


def parse_containerfile(text: str) -> Containerfile:
    """Instructions with continuation lines joined and comments dropped, split into stages."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continuation line ends the file"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM: {line}"
            key, _, value = rest.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return Containerfile(global_args, stages)


def load(name: str) -> Containerfile:
    return parse_containerfile((IMAGES / name / "Containerfile").read_text())


def apt_packages(run: str) -> list[str]:
    """The packages of every `apt-get install` in a RUN (options dropped)."""
    packages: list[str] = []
    for command in re.split(r"&&|;", run):
        words = shlex.split(command)
        if words[:2] == ["apt-get", "install"]:
            packages += [word for word in words[2:] if not word.startswith("-")]
    return packages


def requirement_names(lock: Path) -> dict[str, str]:
    """name -> version of every requirement in a pip-compile lock, asserting each is hashed."""
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        first = block.strip().splitlines()[0] if block.strip() else ""
        if not first or first.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", first)
        assert match, f"{lock.name}: not pinned with ==: {first}"
        assert "--hash=sha256:" in block, f"{lock.name}: {first} has no hash"
        pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("name", NAMES)
def test_containerfile_base_pinned_and_multi_stage(name: str) -> None:
    containerfile = load(name)

    base = containerfile.global_args["BASE_IMAGE"]
    stage_names = {stage.name for stage in containerfile.stages if stage.name}

    assert re.fullmatch(
        r"docker\.io/library/debian:bookworm-\d{8}-slim(@sha256:[0-9a-f]{64})?", base
    )
    assert len(containerfile.stages) >= 2, "multi-stage: build tools stay out of the final image"
    for stage in containerfile.stages:
        assert stage.base == "${BASE_IMAGE}" or stage.base in stage_names, stage.base
    assert "latest" not in (IMAGES / name / "Containerfile").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_containerfile_final_stage_runs_as_fixed_non_root_user(name: str) -> None:
    final = load(name).stages[-1]

    users = final.args("USER")

    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert (int(uid), int(gid)) == USERS[name]
    assert int(uid) != 0
    assert int(gid) != 0


@pytest.mark.parametrize("name", NAMES)
def test_containerfile_final_stage_has_oci_labels(name: str) -> None:
    final = load(name).stages[-1]

    labels = " ".join(final.args("LABEL"))

    for label in REQUIRED_LABELS:
        assert f"{label}=" in labels, label
    # A label's build argument must be declared in the stage, or it is empty (BASE_IMAGE too).
    declared = {arg.partition("=")[0] for arg in final.args("ARG")}
    for argument in re.findall(r"\$\{(\w+)\}", labels):
        assert argument in declared, argument
    assert '${KLUIS_VERSION}"' in labels
    assert '${KLUIS_SOURCE}"' in labels


@pytest.mark.parametrize("name", NAMES)
def test_containerfile_debian_packages_pinned_no_compilers_in_final_stage(name: str) -> None:
    containerfile = load(name)

    for stage in containerfile.stages:
        for run in stage.args("RUN"):
            for package in apt_packages(run):
                assert re.fullmatch(r"[a-z0-9.+\-]+=[0-9][0-9A-Za-z.+~:*\-]*", package), package
    final_packages = [
        p.split("=")[0] for r in containerfile.stages[-1].args("RUN") for p in apt_packages(r)
    ]

    assert final_packages, "the final stage installs its runtime from Debian"
    assert not set(final_packages) & set(COMPILERS), final_packages
    assert not set(final_packages) & set(NETWORK_TOOLS), final_packages
    assert "sudo" not in final_packages


@pytest.mark.parametrize("name", NAMES)
def test_containerfile_python_only_from_hashed_locks(name: str) -> None:
    containerfile = load(name)

    pip_installs = [
        command
        for stage in containerfile.stages
        for run in stage.args("RUN")
        for command in run.split("&&")
        if re.search(r"pip install", command)
    ]

    assert pip_installs
    for command in pip_installs:
        from_lock = "--require-hashes" in command and "--only-binary=:all:" in command
        own_wheel = "--no-deps" in command and "--no-index" in command
        assert from_lock or own_wheel, command
    for lock in (IMAGES / name).glob("*requirements.txt"):
        assert requirement_names(lock)


@pytest.mark.parametrize("name", NAMES)
def test_containerfile_copies_only_existing_paths(name: str) -> None:
    containerfile = load(name)

    for stage in containerfile.stages:
        for arg in stage.args("COPY"):
            if arg.startswith("--from="):
                continue
            *sources, _destination = arg.split()
            for source in sources:
                assert (REPO / source).exists(), source


@pytest.mark.parametrize("name", NAMES)
def test_dockerignore_matches_the_shared_allow_list(name: str) -> None:
    shared = (IMAGES / "containerignore").read_text()

    assert (IMAGES / name / "Containerfile.dockerignore").read_text() == shared
    assert shared.splitlines()[3:5] == ["*", "!pyproject.toml"]


def test_control_plane_lock_has_every_pyproject_pin() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = requirement_names(IMAGES / "control-plane" / "requirements.txt")

    for dependency in project["dependencies"]:
        name, _, version = dependency.partition("==")
        locked = pins.get(normalise(re.split(r"[\[<>=!~; ]", name)[0]))
        assert locked is not None, f"{dependency}: not in the lock, run images/lock"
        assert not version or locked == version, f"{dependency}: the lock has {locked}"


def test_hub_and_workspace_share_jupyterhub_version() -> None:
    hub = requirement_names(IMAGES / "hub" / "requirements.txt")
    workspace = requirement_names(IMAGES / "workspace" / "requirements.txt")

    assert hub["jupyterhub"] == workspace["jupyterhub"]
    for package in ("jupyterhub-kubespawner", "jupyterhub-idle-culler", "httpx"):
        assert package in hub
    for package in ("jupyterlab", "pandas", "statsmodels", "scikit-learn", "pyreadstat", "acro"):
        assert package in workspace, package
    assert "matplotlib" in workspace


def test_hub_proxy_npm_lock_is_exact() -> None:
    package = json.loads((IMAGES / "hub" / "proxy" / "package.json").read_text())
    lock = json.loads((IMAGES / "hub" / "proxy" / "package-lock.json").read_text())

    version = package["dependencies"]["configurable-http-proxy"]

    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert lock["packages"]["node_modules/configurable-http-proxy"]["version"] == version
    assert all(
        "integrity" in entry
        for path, entry in lock["packages"].items()
        if path.startswith("node_modules/")
    )
    runs = " ".join(load("hub").stages[0].args("RUN"))
    assert "npm ci" in runs


def test_workspace_user_is_the_spawn_specs_default() -> None:
    settings = Settings()

    assert (settings.workspace_uid, settings.workspace_gid) == USERS["workspace"]


def test_kluis_images_user_matches_chart_security_context() -> None:
    values_file = REPO / "helm" / "kluis" / "values.yaml"
    if not values_file.exists():
        pytest.skip("no chart yet")
    context = yaml.safe_load(values_file.read_text())["securityContext"]

    assert (context["runAsUser"], context["runAsGroup"]) == USERS["control-plane"] == USERS["hub"]


def test_workspace_lockdown_settings() -> None:
    folder = IMAGES / "workspace"
    page_config = json.loads((folder / "jupyter" / "page_config.json").read_text())
    server_config = (folder / "jupyter" / "jupyter_server_config.py").read_text()
    pip_conf = (folder / "pip.conf").read_text()
    rprofile = (folder / "R" / "Rprofile.site").read_text()
    containerfile = (folder / "Containerfile").read_text()

    for plugin in (
        "@jupyterlab/docmanager-extension:download",
        "@jupyterlab/filebrowser-extension:download",
        "@jupyterlab/extensionmanager-extension",
    ):
        assert page_config["disabledExtensions"][plugin] is True
        assert page_config["lockedExtensions"][plugin] is True
    assert 'c.LabApp.extension_manager = "readonly"' in server_config
    assert '"kluis_workspace": True' in server_config
    assert re.search(r"^no-index = true$", pip_conf, re.MULTILINE)
    assert "KLUIS_CRAN_MIRROR" in rprofile
    assert "JUPYTER_CONFIG_DIR=/opt/kluis/jupyter" in containerfile
    assert "--no-install-recommends" in containerfile


def test_build_script_uses_buildah_chroot_and_vfs() -> None:
    script = (IMAGES / "build").read_text()

    assert "bud --isolation chroot" in script
    assert "--storage-driver vfs" in script
    assert "debootstrap --variant=minbase" in script
    for path in (IMAGES / "build", IMAGES / "lock"):
        subprocess.run(["bash", "-n", str(path)], check=True)
