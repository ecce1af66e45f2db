"""The reconciler: makes the cluster hold exactly each project's desired workspace and writes
what it saw back to `WorkspaceStatus` — the only writer to Kubernetes.

One pass over a project: build the desired objects (pure builders), and if their hash equals the
last converged one and no resync is due, stop (zero API calls). Otherwise apply (server-side, one
field manager), prune what Kluis owns but no longer wants, or — outside the active states — tear
the namespace down and report `torn_down` only once the API server answers 404. Frozen projects
keep their workspace without servers (pods quota 0, server pods deleted). Once an archived
project's workspace is gone its storage is packed into the archive area (`archive.py`); once a
deleted project's is, the archive goes and a deletion certificate is stored.

The loop around it (wake-ups on database changes, leader election, metrics) is
`reconcile_loop.py`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from orchestrator import archive, audit
from orchestrator.config import Settings
from orchestrator.db import begin_read
from orchestrator.errors import Invalid
from orchestrator.kube import RESOURCES, KubeClient, Permanent, Retryable, matches, object_key
from orchestrator.leader import default_identity
from orchestrator.manifests import make_workspace
from orchestrator.models import (
    DeletionCertificate,
    Grant,
    Project,
    ProjectArchive,
    ProjectMember,
    ProjectState,
    WorkspacePhase,
    WorkspaceStatus,
)
from orchestrator.names import SERVER_POD_LABELS, namespace_name, project_selector
from orchestrator.project_storage import ensure_project_folders
from orchestrator.projects import ACCESS_STATES, retention_until
from orchestrator.workspace import WorkspaceSpec, desired_workspace

log = structlog.get_logger(__name__)

# Projects whose workspace exists (frozen keeps data; the builders stop servers).
WORKSPACE_STATES = frozenset(ACCESS_STATES | {ProjectState.FROZEN})
# Projects whose workspace must go (storage PVs are Retain: their data stays).
TEARDOWN_STATES = frozenset(
    {ProjectState.EXPIRED, ProjectState.ARCHIVED, ProjectState.DELETED, ProjectState.REJECTED}
)
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0
TEARDOWN_POLL_SECONDS = 2.0
# A namespace still terminating after this long is reported `blocked` (stuck finalizer, an
# unavailable API service, …) instead of `progressing`.
TERMINATING_GRACE_SECONDS = 60.0
# Deleted before the kinds they depend on: claims before volumes, the namespace last.
PRUNE_ORDER = (
    "PersistentVolumeClaim",
    "RoleBinding",
    "Role",
    "ServiceAccount",
    "NetworkPolicy",
    "LimitRange",
    "ResourceQuota",
    "PersistentVolume",
    "Namespace",
)
ABSENT = "absent"  # what the desired set of a torn-down workspace hashes from
# After teardown, what becomes of the project's storage (part of the desire, so reaching one of
# these states is a change even for a workspace already torn down at expiry).
STORAGE_STEPS = {ProjectState.ARCHIVED: "archive", ProjectState.DELETED: "delete"}

Key = tuple[str, str, str]  # kind, namespace ("" when cluster-scoped), name
SERVER_POD_SELECTOR = ",".join(f"{k}={v}" for k, v in sorted(SERVER_POD_LABELS.items()))


@dataclass(frozen=True)
class ReconcileResult:
    """`requeue_after`: seconds until this project should be looked at again (None: only when
    its desired state changes)."""

    requeue_after: float | None
    phase: WorkspacePhase
    reason: str = ""


@dataclass
class _Pass:
    """What one pass did so far, kept even when it fails half-way."""

    applied: list[Key] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    audits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # action, details
    archived: archive.ArchiveFacts | None = None  # a verified archive to record
    certificate: dict[str, Any] | None = None  # a deletion certificate to store


@dataclass(frozen=True)
class _Storage:
    """What the storage step after teardown needs from the database (read before the pass)."""

    step: str  # "archive" or "delete" (STORAGE_STEPS)
    project_id: int
    recorded: archive.ArchiveFacts | None  # the archive the database knows of
    archive_created_at: datetime | None
    certified: bool  # a deletion certificate exists already
    was_active: bool  # the project ever had a workspace (and so storage)
    policy: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Desired:
    """What the database says the cluster should hold (read before any API call); `error` is
    raised inside the pass so it ends `blocked` exactly as if the builders had raised there."""

    spec: WorkspaceSpec | None
    objects: list[dict[str, Any]]
    wanted_hash: str
    error: Exception | None = None
    storage: _Storage | None = None


# The columns a pass writes: copied onto the freshly re-read row by `reconcile_all`.
_STATUS_FIELDS = (
    "phase",
    "reason",
    "desired_hash",
    "objects",
    "attempts",
    "next_attempt_at",
    "last_reconciled_at",
)


def backoff_seconds(attempts: int) -> float:
    """Delay before retry number `attempts` (1, 2, …): 1 s doubling to at most 5 minutes."""
    if attempts < 1:
        return 0.0
    return float(min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(attempts - 1, 32)))


def desired_hash(objects: Iterable[Mapping[str, Any]] | str) -> str:
    """SHA-256 of the canonical JSON of the desired object set (order kept: it is apply order)."""
    canonical = json.dumps(
        objects if isinstance(objects, str) else list(objects),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _label(key: Key) -> str:
    kind, namespace, name = key
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def _key_dict(key: Key) -> dict[str, str]:
    return {"kind": key[0], "namespace": key[1], "name": key[2]}


def _recorded(status: WorkspaceStatus) -> list[Key]:
    return [(o["kind"], o.get("namespace", ""), o["name"]) for o in status.objects or []]


def find_status(session: Session, project_id: int) -> WorkspaceStatus | None:
    return session.scalars(
        select(WorkspaceStatus).where(WorkspaceStatus.project_id == project_id)
    ).one_or_none()


# --- one project ---------------------------------------------------------------------------------


def reconcile_project(
    session: Session, kube: KubeClient, project: Project, settings: Settings, now: datetime
) -> ReconcileResult:
    """Converge one project's workspace and record what was seen, in the caller's transaction
    (status and audit rows commit together). Idempotent; never raises `Retryable`/`Permanent`:
    they become a backoff or `blocked` on the status row. `reconcile_all` runs the same pass
    without holding a transaction across the Kubernetes calls."""
    if project.state not in WORKSPACE_STATES | TEARDOWN_STATES:
        return ReconcileResult(None, WorkspacePhase.PENDING, f"no workspace while {project.state}")
    status = find_status(session, project.id) or _new_status(project.id)
    desired = _desire(session, project, settings)
    result, work = _run(kube, project, settings, now, status, desired)
    if work is not None:
        _persist(session, project.code, status, work)
    return result


def _new_status(project_id: int) -> WorkspaceStatus:
    return WorkspaceStatus(
        project_id=project_id,
        phase=WorkspacePhase.PENDING,
        reason="",
        desired_hash="",
        objects=[],
        attempts=0,
    )


def _desire(session: Session, project: Project, settings: Settings) -> _Desired:
    """Read the desired objects (database reads only, no API calls)."""
    if project.state not in WORKSPACE_STATES:
        step = STORAGE_STEPS.get(project.state)
        if step is None:
            return _Desired(None, [], desired_hash(ABSENT))
        storage = _read_storage(session, project, settings, step)
        return _Desired(None, [], desired_hash(f"{ABSENT}:{step}"), storage=storage)
    try:
        spec = desired_workspace(session, project, settings)
        objects = make_workspace(spec)
    except (Retryable, Permanent, Invalid) as exc:
        return _Desired(None, [], desired_hash(ABSENT), exc)
    return _Desired(spec, objects, desired_hash(objects))


def _read_storage(session: Session, project: Project, settings: Settings, step: str) -> _Storage:
    row = session.scalars(
        select(ProjectArchive).where(ProjectArchive.project_id == project.id)
    ).one_or_none()
    recorded = None
    if row is not None:
        recorded = archive.ArchiveFacts(
            path=row.path,
            manifest_path=row.manifest_path,
            sha256=row.sha256,
            manifest_sha256=row.manifest_sha256,
            size_bytes=row.size_bytes,
            content_bytes=row.content_bytes,
            file_count=row.file_count,
            source_path=row.source_path,
        )
    certified = (
        session.scalar(
            select(DeletionCertificate.id).where(DeletionCertificate.project_id == project.id)
        )
        is not None
    )
    policy = {
        "retention_years": settings.project_retention_years,
        "archived_at": project.archived_at.isoformat() if project.archived_at else None,
        "retention_until": retention_until(project, settings).isoformat(),
        "deleted_at": project.deleted_at.isoformat() if project.deleted_at else None,
        "rule": "an archived project is kept for KLUIS_PROJECT_RETENTION_YEARS after archiving, "
        "then deleted",
    }
    return _Storage(
        step=step,
        project_id=project.id,
        recorded=recorded,
        archive_created_at=row.created_at if row is not None else None,
        certified=certified,
        was_active=project.activated_at is not None,
        policy=policy,
    )


def _persist(session: Session, code: str, status: WorkspaceStatus, work: _Pass) -> None:
    """Write the status row, the pass's audit rows, and a new archive record or deletion
    certificate, in `session`'s transaction."""
    for action, details in work.audits:
        audit.record(session, action, object_type="project", object_id=code, details=details)
    if work.archived is not None or work.certificate is not None:
        row = session.scalars(
            select(ProjectArchive).where(ProjectArchive.project_id == status.project_id)
        ).one_or_none()
        if work.archived is not None and row is None:
            facts = work.archived
            session.add(
                ProjectArchive(project_id=status.project_id, project_code=code, **facts.as_dict())
            )
        if work.certificate is not None:
            certificate = work.certificate
            if row is not None and row.removed_at is None:
                row.removed_at = datetime.fromisoformat(certificate["issued_at"])
            exists = session.scalar(
                select(DeletionCertificate.id).where(
                    DeletionCertificate.project_id == status.project_id
                )
            )
            if exists is None:
                session.add(
                    DeletionCertificate(
                        project_id=status.project_id,
                        project_code=code,
                        issued_at=datetime.fromisoformat(certificate["issued_at"]),
                        issued_by=certificate["issued_by"],
                        policy=certificate["policy"],
                        removed=certificate["removed"],
                        sha256=archive.certificate_digest(certificate),
                    )
                )
    session.add(status)
    session.flush()


def _run(
    kube: KubeClient,
    project: Project,
    settings: Settings,
    now: datetime,
    status: WorkspaceStatus,
    desired: _Desired,
) -> tuple[ReconcileResult, _Pass | None]:
    """The Kubernetes side of a pass: updates `status` (no database access) and returns the
    result with what to persist, or None when nothing is to be written."""
    due = status.next_attempt_at
    if status.attempts and due is not None and now < due:
        return ReconcileResult((due - now).total_seconds(), status.phase, status.reason), None

    work = _Pass()
    wanted_hash = desired.wanted_hash
    try:
        if desired.error is not None:
            raise desired.error
        spec = desired.spec
        objects = desired.objects
        unchanged = wanted_hash == status.desired_hash
        if unchanged and (
            status.phase is WorkspacePhase.TORN_DOWN or (due is not None and now < due)
        ):
            # Nothing changed and no resync is due: zero API calls, no write.
            wait = None if due is None else (due - now).total_seconds()
            return ReconcileResult(wait, status.phase, status.reason), None
        if spec is not None:
            ensure_project_folders(spec)  # before any volume points at them (hostPath only)
            resync = unchanged and status.phase is WorkspacePhase.READY
            result = _converge(kube, project, settings, now, status, objects, work, resync)
            if not spec.servers_allowed:  # frozen: the quota admits no new pod; stop the rest
                result = _stop_servers_while_frozen(kube, project, now, status, work, result)
        else:
            result = _tear_down(kube, project, now, status, work)
            if result.phase is WorkspacePhase.TORN_DOWN and desired.storage is not None:
                # Nothing runs on the storage any more: archive it, or remove it for good.
                _settle_storage(project, settings, now, desired.storage, work)
        status.desired_hash = wanted_hash
        status.attempts = 0  # only once every call of the pass succeeded
    except (Retryable, OSError) as exc:  # OSError: the archive area (disk full, unmounted, …)
        status.attempts += 1
        retry_after = exc.retry_after if isinstance(exc, Retryable) else None
        delay = max(backoff_seconds(status.attempts), retry_after or 0.0)
        status.next_attempt_at = now + timedelta(seconds=delay)
        if status.phase is WorkspacePhase.READY:
            status.phase = WorkspacePhase.PROGRESSING  # not known to be ready any more
        status.reason = f"retrying in {delay:g} s: {exc}"[:2000]
        _remember(status, work.applied)
        log.warning(
            "workspace_retry", project=project.code, attempts=status.attempts, error=str(exc)
        )
        result = ReconcileResult(delay, status.phase, status.reason)
    except (Permanent, Invalid) as exc:
        message = exc.message if isinstance(exc, Invalid) else str(exc)
        status.phase = WorkspacePhase.BLOCKED
        status.reason = message[:2000]
        status.attempts = 0
        status.desired_hash = wanted_hash  # retried at the next resync or when the desire changes
        status.next_attempt_at = now + timedelta(seconds=settings.reconcile_interval_seconds)
        _remember(status, work.applied)
        log.error("workspace_blocked", project=project.code, reason=status.reason)
        result = ReconcileResult(settings.reconcile_interval_seconds, status.phase, status.reason)
    return result, work


def _remember(status: WorkspaceStatus, applied: list[Key]) -> None:
    """Keep objects applied by a failed pass on record, so a later pass can prune them."""
    known = _recorded(status)
    status.objects = [_key_dict(key) for key in known + [k for k in applied if k not in known]]


def _converge(
    kube: KubeClient,
    project: Project,
    settings: Settings,
    now: datetime,
    status: WorkspaceStatus,
    objects: list[dict[str, Any]],
    work: _Pass,
    resync: bool,
) -> ReconcileResult:
    """Resync (read first, write only drift) when the desire is what was last converged; apply
    everything and prune what was recorded but is no longer desired when it changed."""
    wanted = [object_key(obj) for obj in objects]
    if resync:
        _resync(kube, project, objects, work)
    else:
        for wave in apply_waves(objects):
            _apply_all(kube, wave, work, settings.reconcile_apply_parallelism)
        stale = [key for key in _recorded(status) if key not in wanted]
        for key in sorted(stale, key=lambda k: PRUNE_ORDER.index(k[0])):
            _delete(kube, key)
            work.pruned.append(_label(key))
    if resync and (work.repaired or work.pruned):
        work.audits.append(
            ("workspace_drift_repaired", {"repaired": work.repaired, "pruned": work.pruned})
        )
    log.info(
        "workspace_applied",
        project=project.code,
        applied=len(work.applied),
        repaired=len(work.repaired),
        pruned=len(work.pruned),
    )
    status.phase = WorkspacePhase.READY
    status.reason = ""
    status.objects = [_key_dict(key) for key in wanted]
    status.attempts = 0
    status.last_reconciled_at = now
    status.next_attempt_at = now + timedelta(seconds=settings.reconcile_interval_seconds)
    return ReconcileResult(settings.reconcile_interval_seconds, WorkspacePhase.READY)


def apply_waves(objects: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The desired objects in three waves whose members do not depend on each other, so each
    wave may be applied in parallel: the namespace and the (cluster-scoped) volumes; then what
    lives in the namespace; then what refers to those (the hub RoleBinding needs its Role to exist
    for the API server's escalation check; a claim comes after its volume). Order within a wave
    is kept."""
    waves: list[list[dict[str, Any]]] = [[], [], []]
    for obj in objects:
        kind = obj["kind"]
        if kind in ("Namespace", "PersistentVolume"):
            waves[0].append(obj)
        elif kind in ("RoleBinding", "PersistentVolumeClaim"):
            waves[2].append(obj)
        else:
            waves[1].append(obj)
    return [wave for wave in waves if wave]


def _apply_all(
    kube: KubeClient, objects: list[dict[str, Any]], work: _Pass, parallelism: int
) -> None:
    """Apply `objects` (independent of each other), up to `parallelism` at once. Every call is
    made and waited for; what succeeded is recorded in `work`, then the first failure is raised."""
    if parallelism <= 1 or len(objects) == 1:
        for obj in objects:
            kube.apply(obj)
            work.applied.append(object_key(obj))
        return
    with ThreadPoolExecutor(max_workers=min(parallelism, len(objects))) as pool:
        futures = [(obj, pool.submit(kube.apply, obj)) for obj in objects]
    failure: BaseException | None = None
    for obj, future in futures:
        error = future.exception()
        if error is None:
            work.applied.append(object_key(obj))
        elif failure is None:
            failure = error
    if failure is not None:
        raise failure


def _stop_servers(kube: KubeClient, project: Project, work: _Pass, why: str) -> list[str]:
    """Delete the workspace server pods (label `kluis.io/kind: server`, set by the hub's
    spawner) in the project's namespace; returns the names of those still there (terminating
    included). One LIST, plus a DELETE per running server."""
    namespace = namespace_name(project.code)
    pods = kube.list_owned("Pod", SERVER_POD_SELECTOR, namespace)
    stopped = []
    for pod in pods:
        name = pod["metadata"]["name"]
        if not pod["metadata"].get("deletionTimestamp"):
            kube.delete("Pod", namespace, name)
            stopped.append(name)
    if stopped:
        work.audits.append(("workspace_servers_stopped", {"pods": sorted(stopped), "why": why}))
        log.info("workspace_servers_stopped", project=project.code, pods=len(stopped), why=why)
    return [pod["metadata"]["name"] for pod in pods]


def _stop_servers_while_frozen(
    kube: KubeClient,
    project: Project,
    now: datetime,
    status: WorkspaceStatus,
    work: _Pass,
    result: ReconcileResult,
) -> ReconcileResult:
    """A frozen project's workspace is ready only without servers: while some still terminate,
    say so and look again soon (a resync: LISTs only)."""
    left = _stop_servers(kube, project, work, str(project.state))
    if not left:
        return result
    status.reason = f"{project.state}: {len(left)} workspace server(s) stopping"
    status.next_attempt_at = now + timedelta(seconds=TEARDOWN_POLL_SECONDS)
    return ReconcileResult(TEARDOWN_POLL_SECONDS, status.phase, status.reason)


def _resync(kube: KubeClient, project: Project, objects: list[dict[str, Any]], work: _Pass) -> None:
    """Read what Kluis owns for the project (one LIST per kind), re-apply what is missing or has
    drifted, and delete what is owned but not desired. An unchanged workspace costs LISTs only."""
    selector = project_selector(project.code)
    namespace = namespace_name(project.code)
    live: dict[Key, dict[str, Any]] = {}
    for kind, resource in RESOURCES.items():
        scope = namespace if resource.namespaced else None
        for item in kube.list_owned(kind, selector, scope):
            live[object_key(item)] = item
    wanted = set()
    for obj in objects:
        key = object_key(obj)
        wanted.add(key)
        current = live.get(key)
        if current is None or not matches(obj, current):
            kube.apply(obj)
            work.applied.append(key)
            work.repaired.append(_label(key))
    for key in sorted(set(live) - wanted, key=lambda k: PRUNE_ORDER.index(k[0])):
        _delete(kube, key, live[key])
        work.pruned.append(_label(key))


def _delete(kube: KubeClient, key: Key, live: dict[str, Any] | None = None) -> None:
    kind, namespace, name = key
    if kind == "PersistentVolume":
        live = live if live is not None else kube.get(kind, None, name)
        if live is None:
            return
        _refuse_unless_retained(live)
    kube.delete(kind, namespace or None, name)


def _refuse_unless_retained(volume: Mapping[str, Any]) -> None:
    """Deleting a PV object must never delete its data: only Retain volumes are deleted."""
    policy = volume.get("spec", {}).get("persistentVolumeReclaimPolicy")
    if policy != "Retain":
        name = volume.get("metadata", {}).get("name")
        raise Permanent(
            f"PersistentVolume {name} has reclaim policy {policy}, not Retain: "
            "refusing to delete it (its data could go); set Retain by hand and it is retried"
        )


def _tear_down(
    kube: KubeClient,
    project: Project,
    now: datetime,
    status: WorkspaceStatus,
    work: _Pass,
) -> ReconcileResult:
    """Delete the namespace (which takes everything in it), then the project's PVs (their data
    stays: Retain). `torn_down` only once the namespace GET answers 404 and no PV is left."""
    name = namespace_name(project.code)
    live = kube.get("Namespace", None, name)
    if live is not None:
        meta = live.get("metadata", {})
        since_text = meta.get("deletionTimestamp")
        if since_text is None:
            # The namespace takes its pods along; stopping the servers first makes it at once.
            _stop_servers(kube, project, work, str(project.state))
            kube.delete("Namespace", None, name)
            since = now
        else:
            since = datetime.fromisoformat(since_text.replace("Z", "+00:00"))
        waited = (now - since).total_seconds()
        if waited > TERMINATING_GRACE_SECONDS:
            status.phase = WorkspacePhase.BLOCKED
            status.reason = f"namespace {name} still terminating after {waited:.0f} s: " + (
                _namespace_blockers(live) or "waiting for its contents to be removed"
            )
            wait = min(BACKOFF_CAP_SECONDS, max(TEARDOWN_POLL_SECONDS, waited / 4))
        else:
            status.phase = WorkspacePhase.PROGRESSING
            status.reason = f"namespace {name} terminating"
            wait = TEARDOWN_POLL_SECONDS
        status.next_attempt_at = now + timedelta(seconds=wait)
        return ReconcileResult(wait, status.phase, status.reason)
    volumes = kube.list_owned("PersistentVolume", project_selector(project.code))
    remaining = [pv for pv in volumes if not pv.get("metadata", {}).get("deletionTimestamp")]
    for volume in remaining:
        _refuse_unless_retained(volume)
        kube.delete("PersistentVolume", None, volume["metadata"]["name"])
        work.pruned.append(f"PersistentVolume/{volume['metadata']['name']}")
    if volumes:
        status.phase = WorkspacePhase.PROGRESSING
        status.reason = f"namespace {name} gone; {len(volumes)} volume object(s) being deleted"
        status.next_attempt_at = now + timedelta(seconds=TEARDOWN_POLL_SECONDS)
        return ReconcileResult(TEARDOWN_POLL_SECONDS, status.phase, status.reason)
    if status.phase is not WorkspacePhase.TORN_DOWN and status.objects:
        work.audits.append(
            ("workspace_torn_down", {"namespace": name, "state": str(project.state)})
        )
    status.phase = WorkspacePhase.TORN_DOWN
    status.reason = ""
    status.objects = []
    status.last_reconciled_at = now
    status.next_attempt_at = None
    log.info("workspace_torn_down", project=project.code, namespace=name)
    return ReconcileResult(None, WorkspacePhase.TORN_DOWN)


def _settle_storage(
    project: Project, settings: Settings, now: datetime, storage: _Storage, work: _Pass
) -> None:
    """After teardown: an archived project's storage into one verified archive (the live folder
    goes once it verified); a deleted project's archive and any folder left removed, and a
    deletion certificate drawn up. File work only; `work` carries what to record."""
    storage_root = settings.effective_project_storage_root
    archive_root = settings.effective_archive_root
    if storage.step == "archive":
        facts = archive.settle_archived(
            storage_root, archive_root, project.code, now, storage.recorded
        )
        if storage.recorded is None:
            work.archived = facts
            work.audits.append(
                (
                    "project_archive_created",
                    {
                        "path": facts.path,
                        "sha256": facts.sha256,
                        "size_bytes": facts.size_bytes,
                        "file_count": facts.file_count,
                    },
                )
            )
        return
    if storage.certified:
        return
    found = archive.remove_project_data(storage_root, archive_root, project.code)
    if not (found or storage.recorded or storage.was_active):
        return  # never had a workspace, storage or archive: nothing was there to remove
    paths: list[dict[str, Any]] = []
    recorded = storage.recorded
    if recorded is not None:  # listed even when a crashed earlier pass removed the files
        paths.append({"path": recorded.path, "kind": "archive", "bytes": recorded.size_bytes})
        paths.append({"path": recorded.manifest_path, "kind": "manifest"})
    listed = {entry["path"] for entry in paths}
    paths.extend(entry for entry in found if entry["path"] not in listed)
    archive_details = None
    if recorded is not None:
        archive_details = {
            **recorded.as_dict(),
            "created_at": storage.archive_created_at.isoformat()
            if storage.archive_created_at
            else None,
        }
    body = {
        "project_code": project.code,
        "project_id": project.id,
        "issued_at": now.isoformat(),
        "issued_by": f"reconciler {settings.leader_election_identity or default_identity()}",
        "policy": storage.policy,
        "removed": {
            "archive": archive_details,
            "paths": paths,
            "workspace": {"namespace": namespace_name(project.code), "torn_down": True},
        },
    }
    work.certificate = body
    work.audits.append(
        (
            "project_deletion_certificate_issued",
            {
                "sha256": archive.certificate_digest(body),
                "archive_sha256": recorded.sha256 if recorded else None,
                "paths": [entry["path"] for entry in paths],
            },
        )
    )
    log.info("project_data_deleted", project=project.code, paths=len(paths))


def _namespace_blockers(namespace: Mapping[str, Any]) -> str:
    """The namespace controller's own account of what holds deletion up (its True conditions)."""
    conditions = namespace.get("status", {}).get("conditions") or []
    messages = [
        f"{c.get('type')}: {c.get('message', '')}" for c in conditions if c.get("status") == "True"
    ]
    return "; ".join(messages)[:1500]


# --- all projects --------------------------------------------------------------------------------

_in_flight: set[int] = set()  # project ids being reconciled by this process
_in_flight_lock = threading.Lock()


@dataclass(frozen=True)
class PassSummary:
    """What `reconcile_all` did: phases by project code, failures, and the soonest requeue."""

    phases: dict[str, WorkspacePhase]
    errors: dict[str, str]
    requeue_after: float | None
    results: dict[str, ReconcileResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # how long each project took


def due_project_ids(session: Session) -> list[int]:
    """Projects the reconciler must look at: workspace states, and teardown states whose
    workspace is not known to be gone. The hash check inside makes unchanged ones free."""
    rows = session.execute(
        select(Project.id)
        .outerjoin(WorkspaceStatus, WorkspaceStatus.project_id == Project.id)
        .where(
            or_(
                Project.state.in_(WORKSPACE_STATES),
                Project.state.in_(TEARDOWN_STATES)
                & or_(
                    WorkspaceStatus.id.is_(None),
                    WorkspaceStatus.phase != WorkspacePhase.TORN_DOWN,
                    # torn down at expiry, archived or deleted since: its storage step is due
                    WorkspaceStatus.updated_at < Project.state_changed_at,
                ),
            )
        )
        .order_by(Project.id)
    )
    return list(rows.scalars())


def changed_project_ids(session: Session, since: datetime, now: datetime) -> list[int]:
    """Projects whose desire may have changed since `since` (the project row, a grant given or
    revoked, a member added or removed) plus those whose status asks to be looked at by `now`
    (a retry, a terminating namespace, a resync). One query; no Kubernetes calls."""
    touched = or_(
        Project.updated_at > since,
        select(Grant.id)
        .where(
            Grant.project_id == Project.id,
            or_(Grant.granted_at > since, Grant.revoked_at > since),
        )
        .exists(),
        select(ProjectMember.id)
        .where(
            ProjectMember.project_id == Project.id,
            or_(ProjectMember.added_at > since, ProjectMember.removed_at > since),
        )
        .exists(),
        WorkspaceStatus.next_attempt_at <= now,
    )
    rows = session.execute(
        select(Project.id)
        .outerjoin(WorkspaceStatus, WorkspaceStatus.project_id == Project.id)
        .where(
            Project.state.in_(WORKSPACE_STATES | TEARDOWN_STATES),
            or_(touched, WorkspaceStatus.id.is_(None) & Project.state.in_(WORKSPACE_STATES)),
        )
        .order_by(Project.id)
    )
    return list(rows.scalars())


def reconcile_all(
    session_factory: Callable[[], Session],
    kube: KubeClient,
    settings: Settings,
    now: datetime,
    project_ids: Iterable[int] | None = None,
) -> PassSummary:
    """One pass over every due project (or only `project_ids`), at most `reconcile_concurrency`
    at once; a project already being reconciled is skipped. Each project is read in a read
    transaction that ends before any Kubernetes call, and its status and audit rows are written
    together in a short write transaction afterwards (`session_factory` may be a write
    sessionmaker: no write lock is held across API calls). One project's failure, the database's
    included, is reported for that project in `errors` and never aborts the pass."""
    if project_ids is None:
        with session_factory() as session:
            ids = due_project_ids(begin_read(session))
    else:
        ids = list(project_ids)
    # Projects at once share the API server's cores with the objects of one project at once: a
    # burst is applied project by project in parallel, one lone project object by object.
    at_once = max(1, min(settings.reconcile_concurrency, len(ids)))
    per_project = max(1, settings.reconcile_apply_parallelism // at_once)
    if per_project != settings.reconcile_apply_parallelism:
        settings = settings.model_copy(update={"reconcile_apply_parallelism": per_project})
    phases: dict[str, WorkspacePhase] = {}
    errors: dict[str, str] = {}
    results: dict[str, ReconcileResult] = {}
    seconds: dict[str, float] = {}
    waits: list[float] = []
    lock = threading.Lock()

    def one(project_id: int) -> None:
        with _in_flight_lock:
            if project_id in _in_flight:
                return
            _in_flight.add(project_id)
        code = f"#{project_id}"  # until the project's row is read
        started: float | None = None
        try:
            with session_factory() as session:
                project = begin_read(session).get(Project, project_id)
                if project is None:
                    return
                code = project.code
                started = time.monotonic()
                active = project.state in WORKSPACE_STATES | TEARDOWN_STATES
                status = find_status(session, project_id) or _new_status(project_id)
                desired = _desire(session, project, settings) if active else None
                # Leaving the block ends the read transaction (loaded attributes are kept).
            if desired is None:
                reason = f"no workspace while {project.state}"
                result = ReconcileResult(None, WorkspacePhase.PENDING, reason)
            else:
                result, work = _run(kube, project, settings, now, status, desired)
                if work is not None:  # status and audit rows commit together, briefly
                    with session_factory() as session:
                        stored = find_status(session, project_id) or _new_status(project_id)
                        for name in _STATUS_FIELDS:
                            setattr(stored, name, getattr(status, name))
                        _persist(session, code, stored, work)
                        session.commit()
        except Exception as exc:  # a bug or the database: this project waits a tick
            log.exception("workspace_reconcile_failed", project=code)
            with lock:
                errors[code] = f"{type(exc).__name__}: {exc}"[:500]
            return
        finally:
            with lock:
                if started is not None:
                    seconds[code] = time.monotonic() - started
            with _in_flight_lock:
                _in_flight.discard(project_id)
        with lock:
            phases[code] = result.phase
            results[code] = result
            if result.requeue_after is not None:
                waits.append(result.requeue_after)

    with ThreadPoolExecutor(max_workers=settings.reconcile_concurrency) as pool:
        list(pool.map(one, ids))
    return PassSummary(phases, errors, min(waits) if waits else None, results, seconds)
