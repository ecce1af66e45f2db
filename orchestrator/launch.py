"""Opening a project's workspace: single-use launch tickets bound to (user, project), who may run
a server for which project (and why not), and the spawn spec the hub applies — built here, from
the project's `WorkspaceSpec`, so the hub never decides image, volumes, identity or security.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator import audit, names
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, Invalid, NotFound
from orchestrator.hub_models import LaunchTicket, WorkspaceServer
from orchestrator.manifests import workspace_service_account_name
from orchestrator.models import (
    Project,
    User,
    UserSession,
    WorkspacePhase,
    WorkspaceStatus,
)
from orchestrator.project_rules import standing_problem
from orchestrator.projects import ACCESS_STATES, find_project_by_code, is_current_member
from orchestrator.workspace import WorkspaceSpec, desired_workspace

TICKET_PREFIX = "klt_"
_TICKET = re.compile(r"^klt_[A-Za-z0-9_-]{20,100}$")
# Where things appear inside a server.
HOME_PATH = "/home/jovyan"
PROJECT_PATH = "/project"
DATA_PATH = "/data"
# The user options a researcher may send; everything else is refused.
ALLOWED_OPTIONS = frozenset({"image"})
# Session ends that are a person's own doing; every other end (all sessions ended because the
# password, role, status or token changed, or "log out everywhere") revokes hub access too.
_OWN_SESSION_ENDS = frozenset({"logout", "ended_by_user", "replaced_by_login"})


# The ticket's query parameter at the hub: JupyterHub's request log scrubs the values of
# parameters whose names contain "auth" (jupyterhub.log.SCRUB_PARAM_KEYS), so no ticket is logged.
TICKET_PARAM = "auth_ticket"


@dataclass(frozen=True)
class IssuedTicket:
    secret: str  # shown once, never stored
    expires_at: datetime
    launch_url: str  # where the browser goes: the hub's ticket login
    project_code: str

    @property
    def url(self) -> str:
        """The launch URL with the project and the ticket as query parameters."""
        return f"{self.launch_url}?project={self.project_code}&{TICKET_PARAM}={self.secret}"


def hash_ticket(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- who may run what -----------------------------------------------------------------------------


def launch_problem(session: Session, user: User, project: Project, now: datetime) -> str | None:
    """Why `user` may not run a server for `project` now, or `None` when they may. The reasons
    are safe to show to that user (they are a member, or learn nothing new)."""
    if project.state not in ACCESS_STATES:
        return f"the project is {project.state.value}"
    if not is_current_member(project, user.id):
        return "you are not a member of this project"
    problem = standing_problem(user, now.date())
    if problem is not None:
        return problem
    return None


def workspace_problem(session: Session, project: Project) -> str | None:
    """Why the project's workspace cannot take a server yet (not reconciled, blocked)."""
    status = session.scalar(select(WorkspaceStatus).where(WorkspaceStatus.project_id == project.id))
    if status is None or status.phase is WorkspacePhase.PENDING:
        return "the workspace is being prepared"
    if status.phase is WorkspacePhase.BLOCKED:
        return "the workspace is blocked; the data stewards have been told"
    if status.phase is not WorkspacePhase.READY:
        return "the workspace is being updated"
    return None


# --- tickets --------------------------------------------------------------------------------------


def issue_ticket(
    session: Session,
    user: User,
    project: Project,
    settings: Settings,
    now: datetime,
    *,
    source: str = "",
) -> IssuedTicket:
    """A ticket for `user` to open `project`'s workspace; `Forbidden` with the reason when they
    may not, `Conflict` when the workspace is not ready. The caller has checked visibility."""
    problem = launch_problem(session, user, project, now)
    if problem is not None:
        raise Forbidden(f"You cannot open this workspace: {problem}.", {"reason": problem})
    not_ready = workspace_problem(session, project)
    if not_ready is not None:
        raise Conflict(f"You cannot open this workspace yet: {not_ready}.", {"reason": not_ready})
    secret = TICKET_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=settings.launch_ticket_seconds)
    session.add(
        LaunchTicket(
            secret_hash=hash_ticket(secret),
            user_id=user.id,
            project_id=project.id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    audit.record(
        session,
        "workspace_launch_ticket_issued",
        actor=user,
        object_type="project",
        object_id=project.code,
        source=source,
    )
    launch_url = f"{settings.hub_public_url}/hub/kluis/login"
    return IssuedTicket(
        secret=secret, expires_at=expires_at, launch_url=launch_url, project_code=project.code
    )


@dataclass(frozen=True)
class Redeemed:
    username: str
    project_code: str


def redeem_ticket(
    session: Session,
    secret: str,
    project_code: str,
    now: datetime,
    *,
    username: str | None = None,
) -> Redeemed:
    """Use a ticket once: it must exist, be unused and unexpired, be for `project_code` and, if
    the hub names a user already logged in, for that user. One conditional UPDATE marks it used,
    so of two redemptions at once exactly one succeeds (on SQLite and PostgreSQL alike). A
    ticket presented for the wrong project or user is used up all the same.

    Access is checked again at redemption: it may have lapsed since the ticket was issued."""
    refused = Forbidden("The launch ticket is invalid, used or expired.")
    if not _TICKET.fullmatch(secret):
        raise refused
    row = session.execute(
        update(LaunchTicket)
        .where(
            LaunchTicket.secret_hash == hash_ticket(secret),
            LaunchTicket.used_at.is_(None),
            LaunchTicket.expires_at > now,
        )
        .values(used_at=now)
        .returning(LaunchTicket.id, LaunchTicket.user_id, LaunchTicket.project_id)
    ).one_or_none()
    if row is None:
        raise refused
    user = session.get(User, row.user_id)
    project = session.get(Project, row.project_id)
    assert user is not None  # foreign key
    assert project is not None  # foreign key
    bound_ok = hmac.compare_digest(project.code, project_code) and (
        username is None or hmac.compare_digest(user.username, username)
    )
    problem = launch_problem(session, user, project, now) if bound_ok else "wrong binding"
    audit.record(
        session,
        "workspace_launch_ticket_redeemed" if problem is None else "workspace_launch_refused",
        actor=user,
        object_type="project",
        object_id=project.code,
        details={} if problem is None else {"reason": problem},
    )
    if problem is not None:
        # Commit the used-up ticket and the audit row; the caller answers 403.
        session.commit()
        raise refused
    return Redeemed(username=user.username, project_code=project.code)


# --- the spawn spec -------------------------------------------------------------------------------

_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")
_MEMORY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def cpu_value(quantity: str) -> Decimal:
    """Cores in a Kubernetes CPU quantity ('2', '0.5', '500m')."""
    match = _CPU.fullmatch(quantity)
    if match is None:
        raise Invalid(f"not a CPU quantity: {quantity!r}")
    value = Decimal(match.group(1))
    return value / 1000 if match.group(2) else value


def memory_bytes(quantity: str) -> int:
    match = _MEMORY.fullmatch(quantity)
    if match is None:
        raise Invalid(f"not a memory quantity: {quantity!r}")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]


def server_resources(spec: WorkspaceSpec) -> dict[str, Any]:
    """Each member's server gets an equal share of the project's size, so every member can run
    one server at once within the namespace's quota; guarantees are small and within the share."""
    members = max(1, len(spec.members))
    cpu = cpu_value(spec.size.cpu) / members
    memory = memory_bytes(spec.size.memory) // members
    return {
        "cpu_limit": float(cpu),
        "cpu_guarantee": float(min(cpu, Decimal("0.1"))),
        "mem_limit": memory,
        "mem_guarantee": min(memory, 256 * 2**20),
    }


def _mounts(
    spec: WorkspaceSpec, username: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes (the project's claims only) and where each is mounted, with read-only as granted:
    datasets and import/ read-only (datasets recursively where the cluster can), workspace/,
    export/ and the user's home read-write."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []

    def add(name: str, claim: str, path: str, *, read_only: bool, recursive: bool = False) -> None:
        volumes.append(
            {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
        )
        mount: dict[str, Any] = {"name": name, "mountPath": path, "readOnly": read_only}
        if recursive:
            mount["recursiveReadOnly"] = "IfPossible"
        mounts.append(mount)

    for index, version in enumerate(sorted(spec.datasets, key=lambda d: d.version_id)):
        claim = names.dataset_claim_name(version.dataset_code, version.label, version.version_id)
        path = f"{DATA_PATH}/{version.dataset_code}/{version.label}"
        add(f"dataset-{index}", claim, path, read_only=True, recursive=True)
    add(
        "workspace",
        names.storage_claim_name("workspace"),
        f"{PROJECT_PATH}/workspace",
        read_only=False,
    )
    add(
        "import",
        names.storage_claim_name("import"),
        f"{PROJECT_PATH}/import",
        read_only=True,
        recursive=True,
    )
    add("export", names.storage_claim_name("export"), f"{PROJECT_PATH}/export", read_only=False)
    add("home", names.home_claim_name(username), HOME_PATH, read_only=False)
    return volumes, mounts


def _local_paths(spec: WorkspaceSpec, username: str) -> dict[str, str]:
    """For the development spawner (hostPath storage only): mount path -> folder on this host."""
    storage = spec.storage
    project = f"{storage.projects_path}/{spec.project_code}"
    paths = {
        f"{DATA_PATH}/{d.dataset_code}/{d.label}": f"{storage.microdata_path}/{d.location}"
        for d in spec.datasets
    }
    for area in ("workspace", "import", "export"):
        paths[f"{PROJECT_PATH}/{area}"] = f"{project}/{area}"
    paths[HOME_PATH] = f"{project}/home/{username}"
    return paths


def grants_hash(spec: WorkspaceSpec, username: str) -> str:
    """SHA-256 of what a server's access consists of (namespace, volumes and mounts): a server
    started with another hash has mounts it should no longer have, or lacks ones it should."""
    volumes, mounts = _mounts(spec, username)
    canonical = json.dumps(
        {"namespace": spec.namespace, "volumes": volumes, "mounts": mounts},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_options(options: dict[str, Any], settings: Settings) -> str:
    """The image the user chose (or the default); `Invalid` for anything outside the allow-list."""
    unknown = sorted(set(options) - ALLOWED_OPTIONS)
    if unknown:
        raise Invalid(f"Options not allowed: {', '.join(unknown)}.", {"options": unknown})
    image = options.get("image", settings.workspace_images[0])
    if image not in settings.workspace_images:
        raise Invalid("This image is not offered.", {"field": "image"})
    return str(image)


def make_spawn_spec(
    spec: WorkspaceSpec, username: str, settings: Settings, image: str
) -> dict[str, Any]:
    """Everything the spawner applies, as JSON. Pure: the same inputs give the same spec."""
    volumes, mounts = _mounts(spec, username)
    uid, gid = settings.workspace_uid, settings.workspace_gid
    labels = {
        **names.project_labels(spec.project_code, "server"),
        names.COMPONENT_LABEL: "singleuser-server",
        **names.SERVER_POD_LABELS,
    }
    return {
        "username": username,
        "project": spec.project_code,
        "server_name": spec.project_code,
        "namespace": spec.namespace,
        "service_account": workspace_service_account_name(),
        "automount_service_account_token": False,
        "image": image,
        "images": list(settings.workspace_images),
        "port": settings.workspace_server_port,
        **server_resources(spec),
        "volumes": volumes,
        "volume_mounts": mounts,
        "working_dir": f"{PROJECT_PATH}/workspace",
        "environment": {
            "KLUIS_PROJECT": spec.project_code,
            "KLUIS_DATA_DIR": DATA_PATH,
            "KLUIS_PROJECT_DIR": PROJECT_PATH,
        },
        "labels": labels,
        "uid": uid,
        "gid": gid,
        "fs_gid": gid,
        "pod_security_context": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container_security_context": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "local_paths": _local_paths(spec, username) if spec.storage.backend == "hostPath" else {},
        "grants_hash": grants_hash(spec, username),
    }


def spawn_spec_for(
    session: Session,
    username: str,
    project_code: str,
    settings: Settings,
    options: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The spawn spec the hub asked for; records its grants hash for the hub sync. `NotFound`
    for an unknown user or project, `Forbidden` with the reason when the user may not run it,
    `Conflict` when the workspace is not ready, `Invalid` for options outside the allow-list."""
    image = check_options(options, settings)
    user = session.scalar(select(User).where(User.username == username))
    project = find_project_by_code(session, project_code)
    if user is None or project is None:
        raise NotFound("No such user or project.")
    problem = launch_problem(session, user, project, now)
    if problem is not None:
        raise Forbidden(f"No server: {problem}.", {"reason": problem})
    not_ready = workspace_problem(session, project)
    if not_ready is not None:
        raise Conflict(f"No server yet: {not_ready}.", {"reason": not_ready})
    spec = desired_workspace(session, project, settings)
    spawn = make_spawn_spec(spec, user.username, settings, image)
    record = session.scalar(
        select(WorkspaceServer).where(
            WorkspaceServer.user_id == user.id, WorkspaceServer.project_id == project.id
        )
    )
    if record is None:
        record = WorkspaceServer(user_id=user.id, project_id=project.id, spawns=0)
        session.add(record)
    record.spec_hash = spawn["grants_hash"]
    record.spec_issued_at = now
    record.spawns += 1
    audit.record(
        session,
        "workspace_server_spec_issued",
        actor=user,
        object_type="project",
        object_id=project.code,
        details={"image": image, "datasets": len(spec.datasets)},
    )
    return spawn


@dataclass(frozen=True)
class ServerVerdict:
    keep: bool
    reason: str


def judge_server(
    session: Session, username: str, server_name: str, settings: Settings, now: datetime
) -> ServerVerdict:
    """Whether a running hub server may keep running: its owner may still run it, and it was
    started with the grants the project has now (a revoked or added grant changes the hash)."""
    user = session.scalar(select(User).where(User.username == username))
    project = find_project_by_code(session, server_name)
    if user is None or project is None:
        return ServerVerdict(False, "unknown user or project")
    problem = launch_problem(session, user, project, now)
    if problem is not None:
        return ServerVerdict(False, problem)
    record = session.scalar(
        select(WorkspaceServer).where(
            WorkspaceServer.user_id == user.id, WorkspaceServer.project_id == project.id
        )
    )
    if record is None:
        return ServerVerdict(False, "no spawn spec was issued for this server")
    if sessions_revoked_since(session, user, record.spec_issued_at):
        return ServerVerdict(False, "the account's sessions were revoked")
    current = grants_hash(desired_workspace(session, project, settings), user.username)
    if not hmac.compare_digest(current, record.spec_hash):
        return ServerVerdict(False, "the project's grants changed since the server started")
    return ServerVerdict(True, "")


def sessions_revoked_since(session: Session, user: User, since: datetime) -> bool:
    """Whether the user's sessions were ended for them (not a plain logout) at or after `since`."""
    found = session.scalar(
        select(UserSession.id)
        .where(
            UserSession.user_id == user.id,
            UserSession.ended_at >= since,
            UserSession.end_reason.not_in(_OWN_SESSION_ENDS),
        )
        .limit(1)
    )
    return found is not None


def user_may_use_hub(session: Session, username: str, now: datetime) -> bool:
    """Whether the user's hub login may go on: the account is in good standing and its sessions
    were not revoked since it last redeemed a ticket. The hub asks this when it refreshes a user
    (`auth_refresh_age`), so a revoked account is logged out of the hub within that bound."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None or standing_problem(user, now.date()) is not None:
        return False
    last_login = session.scalar(
        select(LaunchTicket.used_at)
        .where(LaunchTicket.user_id == user.id, LaunchTicket.used_at.is_not(None))
        .order_by(LaunchTicket.used_at.desc())
        .limit(1)
    )
    if last_login is None:
        return False
    return not sessions_revoked_since(session, user, last_login)
