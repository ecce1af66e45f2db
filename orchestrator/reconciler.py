"""The reconciler: makes the cluster hold exactly each project's desired workspace and writes
what it saw back to `WorkspaceStatus` — the only writer to Kubernetes.

One pass over a project: build the desired objects (pure builders), and if their hash equals the
last converged one and no resync is due, stop (zero API calls). Otherwise apply (server-side, one
field manager), prune what Kluis owns but no longer wants, or — outside the active states — tear
the namespace down and report `torn_down` only once the API server answers 404.

The loop around it (wake-ups on database changes, leader election, metrics) is
`reconcile_loop.py`; the archive / deletion-certificate lifecycle is a later slice.
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

from orchestrator import audit
from orchestrator.config import Settings
from orchestrator.db import begin_read
from orchestrator.errors import Invalid
from orchestrator.kube import RESOURCES, KubeClient, Permanent, Retryable, matches, object_key
from orchestrator.manifests import make_workspace
from orchestrator.models import (
    Grant,
    Project,
    ProjectMember,
    ProjectState,
    WorkspacePhase,
    WorkspaceStatus,
)
from orchestrator.names import namespace_name, project_selector
from orchestrator.project_storage import ensure_project_folders
from orchestrator.projects import ACCESS_STATES
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

Key = tuple[str, str, str]  # kind, namespace ("" when cluster-scoped), name


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


@dataclass
class _Desired:
    """What the database says the cluster should hold (read before any API call); `error` is
    raised inside the pass so it ends `blocked` exactly as if the builders had raised there."""

    spec: WorkspaceSpec | None
    objects: list[dict[str, Any]]
    wanted_hash: str
    error: Exception | None = None


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
        return _Desired(None, [], desired_hash(ABSENT))
    try:
        spec = desired_workspace(session, project, settings)
        objects = make_workspace(spec)
    except (Retryable, Permanent, Invalid) as exc:
        return _Desired(None, [], desired_hash(ABSENT), exc)
    return _Desired(spec, objects, desired_hash(objects))


def _persist(session: Session, code: str, status: WorkspaceStatus, work: _Pass) -> None:
    """Write the status row and the pass's audit rows in `session`'s transaction."""
    for action, details in work.audits:
        audit.record(session, action, object_type="project", object_id=code, details=details)
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
        else:
            result = _tear_down(kube, project, now, status, work)
        status.desired_hash = wanted_hash
        status.attempts = 0  # only once every call of the pass succeeded
    except Retryable as exc:
        status.attempts += 1
        delay = max(backoff_seconds(status.attempts), exc.retry_after or 0.0)
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
        for obj in objects:
            kube.apply(obj)
            work.applied.append(object_key(obj))
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
