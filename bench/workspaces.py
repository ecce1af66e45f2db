"""P1, P2, P3, P4 and P8 of PERFORMANCE.md: the reconciler against a real local control plane.

One run, one machine, one cluster of its own (a temporary folder), so every figure is a ratio
against a baseline measured next to it:

- P1: N=50 workspaces provisioned from scratch by `reconcile_all` (its own concurrency), against
  (a) a minimal reference client: plain httpx server-side-apply PATCHes of the same manifests
  (`make_workspace` output, built before the clock starts) with the same concurrency, no
  throttling, no retries; (b) `kubectl apply --server-side`, one kubectl per workspace (one file
  each) with the same concurrency. The cluster is cleaned (namespaces and PVs deleted, waited
  for) between runs; the median of `REPEATS` repetitions after one warm-up provision.
- P2: a second `reconcile_all` over the 50 unchanged workspaces: mutating calls from the
  client's counter and the time against the first provision. Also a forced resync (the resync
  interval elapsed): reads only.
- P3: one workspace on an idle system (`reconcile_project` + commit), p50 of several, against
  4 x the median latency of a single create call (a ConfigMap POST) + 20 ms, same run.
- P4: all 50 expired at once; `reconcile_all` ticks until every namespace is marked for
  deletion and until every workspace reads `torn_down`; DELETE calls against objects.
- P8: 100 projects made active in one transaction and reconciled by `reconcile_all`, against 100
  made active and reconciled one after the other.
- Memory: the desired state of 1,000 projects (`desired_workspace` + `make_workspace`, read from
  the database and held) and the process's peak RSS (`ru_maxrss`).

The apiserver runs with request throttling off (`UNTHROTTLED_FLAGS`, added by a subclass of
`LocalCluster` here); the database is a temporary SQLite file, and PostgreSQL too when
`KLUIS_BENCH_POSTGRES_URL` is set (P1/P2/P3/P4/P8 on each backend).
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.config import Environment, Settings
from orchestrator.db import make_engine, make_sessionmaker, upgrade_database
from orchestrator.devcluster import build
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.kube import KubeClient, object_key, resource_for
from orchestrator.manifests import make_workspace
from orchestrator.models import (
    Dataset,
    DatasetVersion,
    Grant,
    Institution,
    MemberRole,
    Project,
    ProjectMember,
    ProjectState,
    RequestedDataset,
    Role,
    User,
    UserStatus,
    WorkspacePhase,
)
from orchestrator.names import namespace_name, project_selector
from orchestrator.reconciler import reconcile_all, reconcile_project
from orchestrator.workspace import desired_workspace

N = 50
REPEATS = 3  # P1 repetitions
WARMUP = 5  # workspaces each client provisions before the clock runs
P3_REPEATS = 7
P8_N = 100
MEMORY_PROJECTS = 1000
CREATE_SAMPLES = 20
BENCH_SQLITE_BUSY_TIMEOUT_MS = 120_000  # the product's default is 5 s
MUTATING = ("PATCH", "POST", "PUT", "DELETE")
UNTHROTTLED_FLAGS = (
    "--max-requests-inflight=0",
    "--max-mutating-requests-inflight=0",
    "--enable-priority-and-fairness=false",
)
REF_MANAGER = "bench-reference"
KUBECTL_MANAGER = "bench-kubectl"


# --- the database --------------------------------------------------------------------------------


@dataclass
class Db:
    settings: Settings
    factory: sessionmaker[Session]


def _seed(db: Db, count: int, state: ProjectState) -> list[int]:
    """`count` projects in `state`, each with a lead, one more researcher and one granted
    dataset version of its own; returns their ids."""
    now = datetime.now(UTC)
    today = now.date()
    tag = secrets.token_hex(3)
    with db.factory() as session:
        institution = Institution(
            name=f"Bench institute {tag}",
            country="NL",
            authorised_from=today - timedelta(days=1),
            authorised_until=today + timedelta(days=365),
            allowed_networks=[],
        )
        session.add(institution)
        session.flush()
        people = []
        for who in ("lead", "member"):
            user = User(
                username=f"bench-{who}-{tag}",
                email=f"{who}-{tag}@bench.kluis.invalid",
                full_name=who.title(),
                role=Role.RESEARCHER,
                status=UserStatus.ACTIVE,
                institution_id=institution.id,
                statement_signed_at=now,
                statement_valid_until=today + timedelta(days=365),
            )
            session.add(user)
            people.append(user)
        session.flush()
        lead, member = people
        ids = []
        for i in range(count):
            dataset = Dataset(code=f"B{tag}{i}".upper(), title="Bench data", topic=f"t{tag}{i}")
            session.add(dataset)
            session.flush()
            version = DatasetVersion(
                dataset_id=dataset.id,
                label="2024V1",
                location=f"{dataset.code}/2024V1",
                available_from=today - timedelta(days=30),
                files=[],
                size_bytes=0,
            )
            session.add(version)
            project = Project(
                code=_code(session),
                title="Bench project",
                purpose="Benchmark",
                institution_id=institution.id,
                lead_id=lead.id,
                start_date=today,
                end_date=today + timedelta(days=364),
                compute_size="small",
                state=state,
                state_changed_at=now,
                approved_at=now,
                activated_at=now if state is ProjectState.ACTIVE else None,
            )
            session.add(project)
            session.flush()
            session.add_all(
                [
                    ProjectMember(
                        project_id=project.id, user_id=lead.id, role=MemberRole.LEAD, added_at=now
                    ),
                    ProjectMember(
                        project_id=project.id,
                        user_id=member.id,
                        role=MemberRole.RESEARCHER,
                        added_at=now,
                    ),
                    RequestedDataset(project_id=project.id, dataset_version_id=version.id),
                    Grant(project_id=project.id, dataset_version_id=version.id, granted_at=now),
                ]
            )
            ids.append(project.id)
        session.commit()
    return ids


_used_codes: set[str] = set()


def _code(session: Session) -> str:
    while True:
        code = str(10_000 + secrets.randbelow(90_000))
        if code not in _used_codes:
            _used_codes.add(code)
            return code


def _codes(db: Db, ids: list[int]) -> list[str]:
    with db.factory() as session:
        return list(session.scalars(select(Project.code).where(Project.id.in_(ids))))


def _manifests(db: Db, ids: list[int]) -> dict[str, list[dict[str, Any]]]:
    with db.factory() as session:
        out = {}
        for project_id in ids:
            project = session.get(Project, project_id)
            assert project is not None
            out[project.code] = make_workspace(desired_workspace(session, project, db.settings))
        return out


def _set_state(db: Db, ids: list[int], state: ProjectState) -> None:
    with db.factory() as session:
        session.execute(
            update(Project)
            .where(Project.id.in_(ids))
            .values(state=state, state_changed_at=datetime.now(UTC))
        )
        session.commit()


# --- the cluster side ----------------------------------------------------------------------------


def _cleanup(kube: KubeClient, codes: list[str], timeout: float = 120.0) -> float:
    """Delete the projects' namespaces and volumes and wait until they are gone; seconds taken."""
    start = time.monotonic()
    for code in codes:
        kube.delete("Namespace", None, namespace_name(code))
        for volume in kube.list_owned("PersistentVolume", project_selector(code)):
            kube.delete("PersistentVolume", None, volume["metadata"]["name"])
    pending = set(codes)
    while pending:
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"cleanup: {len(pending)} namespace(s) still there")
        time.sleep(0.5)
        for code in list(pending):
            if kube.get("Namespace", None, namespace_name(code)) is None and not kube.list_owned(
                "PersistentVolume", project_selector(code)
            ):
                pending.discard(code)
    return time.monotonic() - start


class Reference:
    """The minimal reference client: one keep-alive httpx client, SSA PATCH per object."""

    def __init__(self, cluster: LocalCluster, pool: int) -> None:
        context = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
        context.load_cert_chain(str(cluster.pki.cert("admin")), str(cluster.pki.key("admin")))
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self.http = httpx.Client(
            base_url=cluster.server, verify=context, timeout=30.0, limits=limits
        )

    def apply(self, obj: dict[str, Any], manager: str = REF_MANAGER) -> None:
        kind, namespace, name = object_key(obj)
        where = resource_for(kind)
        path = where.prefix
        if where.namespaced:
            path += f"/namespaces/{namespace}"
        path += f"/{where.plural}/{name}"
        response = self.http.patch(
            path,
            params={"fieldManager": manager, "force": "true"},
            content=json.dumps(obj),  # JSON is YAML: the apply content type takes it
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        if response.status_code >= 300:
            raise RuntimeError(f"reference apply {kind}/{name}: {response.status_code}")

    def create_latency_ms(self, samples: int) -> float:
        """Median latency of a single create (a ConfigMap POST), after 3 warm-up calls."""
        times = []
        tag = secrets.token_hex(3)
        for i in range(samples + 3):
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"bench-{tag}-{i}"},
                "data": {"a": "b"},
            }
            began = time.perf_counter()
            response = self.http.post("/api/v1/namespaces/default/configmaps", json=body)
            elapsed = (time.perf_counter() - began) * 1000
            if response.status_code != 201:
                raise RuntimeError(f"create: {response.status_code}")
            if i >= 3:
                times.append(elapsed)
        return statistics.median(times)

    def close(self) -> None:
        self.http.close()


def _pool_run(concurrency: int, work: Callable[[Any], None], items: list[Any]) -> float:
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(work, items))
    return time.perf_counter() - began


def _kubectl_run(
    kubectl: Path, kubeconfig: Path, cache: Path, files: list[Path], concurrency: int
) -> float:
    def one(path: Path) -> None:
        subprocess.run(
            [
                str(kubectl),
                f"--kubeconfig={kubeconfig}",
                f"--cache-dir={cache}",
                "apply",
                "--server-side",
                "--force-conflicts",
                f"--field-manager={KUBECTL_MANAGER}",
                "-f",
                str(path),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    return _pool_run(concurrency, one, files)


def _reconcile_pass(db: Db, kube: KubeClient, now: datetime | None = None) -> tuple[float, Any]:
    began = time.perf_counter()
    summary = reconcile_all(db.factory, kube, db.settings, now or datetime.now(UTC))
    elapsed = time.perf_counter() - began
    if summary.errors:
        raise RuntimeError(f"reconcile_all errors: {list(summary.errors.items())[:3]}")
    return elapsed, summary


_T0 = time.monotonic()


def _say(text: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {text}", file=sys.stderr, flush=True)


def _mutating(kube: KubeClient) -> int:
    return sum(kube.calls[verb] for verb in MUTATING)


# --- the benchmark -------------------------------------------------------------------------------


def _measure(db: Db, cluster: LocalCluster, tmp: Path) -> dict[str, Any]:
    settings = db.settings
    concurrency = settings.reconcile_concurrency
    kube = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager, concurrency * 2)
    janitor = KubeClient.from_kubeconfig(cluster.kubeconfig, "bench-janitor", 4)
    reference = Reference(cluster, concurrency * 2)
    kubectl = build.bin_dir() / "kubectl"
    metrics: dict[str, Any] = {}
    try:
        cache = tmp / "kubectl-cache"

        def fresh(count: int) -> tuple[list[int], dict[str, list[dict[str, Any]]], list[Path]]:
            """A new set of projects (left ACCEPTED, so no pass picks them up) and their
            manifests, also as one YAML file per workspace for kubectl."""
            ids = _seed(db, count, ProjectState.ACTIVE)
            manifests = _manifests(db, ids)
            _set_state(db, ids, ProjectState.ACCEPTED)
            files = []
            for code, objs in manifests.items():
                path = tmp / f"ws-{code}.yaml"
                path.write_text(yaml.safe_dump_all(objs))
                files.append(path)
            return ids, manifests, files

        def reference_run(count: int) -> float:
            _, manifests, _ = fresh(count)
            return _pool_run(
                concurrency,
                lambda objs: [reference.apply(o) for o in objs],
                list(manifests.values()),
            )

        def kubectl_run(count: int) -> float:
            _, _, files = fresh(count)
            return _kubectl_run(kubectl, cluster.kubeconfig, cache, files, concurrency)

        last: dict[str, Any] = {}

        def ours_run(count: int) -> float:
            if last:
                _set_state(db, last["ids"], ProjectState.ACCEPTED)  # out of later passes
            ids, manifests, _ = fresh(count)
            _set_state(db, ids, ProjectState.ACTIVE)
            kube.calls.clear()
            elapsed, summary = _reconcile_pass(db, kube)
            assert all(p is WorkspacePhase.READY for p in summary.phases.values()), summary
            last.update(ids=ids, manifests=manifests, calls=dict(kube.calls))
            return elapsed

        runs: dict[str, Callable[[int], float]] = {
            "reference": reference_run,
            "kubectl": kubectl_run,
            "ours": ours_run,
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        calls_first: list[int] = []
        _say("P1 warm-up")
        for run_one in runs.values():
            run_one(WARMUP)
        order = list(runs)
        for rep in range(REPEATS):
            for name in order[rep % 3 :] + order[: rep % 3]:  # rotate who goes first
                _say(f"P1 repetition {rep + 1}: {name}")
                times[name].append(runs[name](N))
                if name == "ours":
                    calls_first.append(sum(last["calls"].values()))
        ids = last["ids"]
        manifests = last["manifests"]
        codes = list(manifests)
        objects = len(next(iter(manifests.values())))
        total_objects = sum(len(m) for m in manifests.values())
        med = {name: statistics.median(values) for name, values in times.items()}
        m = metrics
        m["P1 setup"] = (
            f"N={N}, concurrency {concurrency}, {objects} objects/workspace; median of {REPEATS} "
            f"after a warm-up of {WARMUP} each; every run on a fresh set of {N} projects (no "
            "cleanup between runs: the cluster accumulates objects; who goes first rotates)"
        )
        m["P1 kubectl mode"] = "one `kubectl apply --server-side -f <file>` per workspace"
        m["P1 ours s (median)"] = round(med["ours"], 3)
        m["P1 reference s (median)"] = round(med["reference"], 3)
        m["P1 kubectl s (median)"] = round(med["kubectl"], 3)
        m["P1 ours samples s"] = [round(t, 3) for t in times["ours"]]
        m["P1 reference samples s"] = [round(t, 3) for t in times["reference"]]
        m["P1 kubectl samples s"] = [round(t, 3) for t in times["kubectl"]]
        m["P1 ours/reference (goal <= 1.25)"] = round(med["ours"] / med["reference"], 2)
        m["P1 ours/kubectl (goal <= 0.3)"] = round(med["ours"] / med["kubectl"], 2)
        per_ws = statistics.median(calls_first) / N
        m[f"API calls/workspace, first provision (goal {objects}+2={objects + 2})"] = round(
            per_ws, 2
        )
        m["API calls by verb, last provision"] = last["calls"]

        # P2: the same 50 again, unchanged.
        _say("P2")
        kube.calls.clear()
        t_again, _ = _reconcile_pass(db, kube)
        m["P2 re-reconcile s"] = round(t_again, 4)
        m["P2 mutating calls (goal 0)"] = _mutating(kube)
        m["P2 all API calls"] = sum(kube.calls.values())
        m["P2 re-reconcile / first (goal <= 0.15)"] = round(t_again / times["ours"][-1], 3)
        kube.calls.clear()
        later = datetime.now(UTC) + timedelta(seconds=settings.reconcile_interval_seconds + 1)
        t_resync, _ = _reconcile_pass(db, kube, later)
        m["P2 forced resync s / first"] = (
            f"{t_resync:.3f} / ratio {t_resync / times['ours'][-1]:.2f}"
        )
        m["P2 forced resync calls (mutating)"] = f"{dict(kube.calls)} ({_mutating(kube)})"

        # P4: expire all 50 at once.
        _say("P4")
        _set_state(db, ids, ProjectState.EXPIRED)
        kube.calls.clear()
        began = time.perf_counter()
        t_marked = None
        ticks = 0
        while True:
            _, summary = _reconcile_pass(db, kube)
            ticks += 1
            if t_marked is None:
                marked = all(
                    (janitor.get("Namespace", None, namespace_name(c)) or {"metadata": {}})[
                        "metadata"
                    ].get("deletionTimestamp", "gone")
                    for c in codes
                )
                if marked:
                    t_marked = time.perf_counter() - began
            if all(p is WorkspacePhase.TORN_DOWN for p in summary.phases.values()):
                break
            if time.perf_counter() - began > 120:
                raise RuntimeError("P4: teardown did not finish in 120 s")
            time.sleep(0.25)
        t_gone = time.perf_counter() - began
        m["P4 every namespace marked s (first tick)"] = (
            round(t_marked, 3) if t_marked is not None else "n/a"
        )
        m["P4 every workspace torn_down s (ticks)"] = f"{t_gone:.2f} ({ticks})"
        deletes = kube.calls["DELETE"]
        m["P4 DELETE calls / objects (goal <= 1 per object)"] = (
            f"{deletes} / {total_objects} = {deletes / total_objects:.3f}"
        )
        m["P4 calls by verb"] = dict(kube.calls)
        _cleanup(janitor, codes)  # volumes too, should any be left

        # P3: one workspace on an idle system.
        _say("P3")
        time.sleep(2)
        single = _seed(db, P3_REPEATS + 1, ProjectState.ACCEPTED)
        latency = reference.create_latency_ms(CREATE_SAMPLES)
        samples = []
        for i, project_id in enumerate(single):
            _set_state(db, [project_id], ProjectState.ACTIVE)
            began = time.perf_counter()
            with db.factory() as session:
                project = session.get(Project, project_id)
                assert project is not None
                result = reconcile_project(session, kube, project, settings, datetime.now(UTC))
                session.commit()
            elapsed = (time.perf_counter() - began) * 1000
            assert result.phase is WorkspacePhase.READY, result
            if i:
                samples.append(elapsed)
        p50 = statistics.median(samples)
        bound = 4 * latency + 20
        m["P3 single create latency ms (median of 20)"] = round(latency, 2)
        m[f"P3 one workspace p50 ms (of {P3_REPEATS}, 1 warm-up)"] = round(p50, 1)
        m["P3 bound 4 x create + 20 ms"] = round(bound, 1)
        m["P3 p50 / bound (goal <= 1)"] = round(p50 / bound, 2)

        # P8: 100 starts at once vs 100 one after the other.
        _say("P8")
        together = _seed(db, P8_N, ProjectState.ACCEPTED)
        apart = _seed(db, P8_N, ProjectState.ACCEPTED)
        began = time.perf_counter()
        _set_state(db, together, ProjectState.ACTIVE)
        _, summary = _reconcile_pass(db, kube)
        t_together = time.perf_counter() - began
        ready = sum(summary.phases.get(c) is WorkspacePhase.READY for c in _codes(db, together))
        began = time.perf_counter()
        for project_id in apart:
            _set_state(db, [project_id], ProjectState.ACTIVE)
            with db.factory() as session:
                project = session.get(Project, project_id)
                assert project is not None
                reconcile_project(session, kube, project, settings, datetime.now(UTC))
                session.commit()
        t_apart = time.perf_counter() - began
        m["P8 start"] = "project set active (DB) + workspace reconciled to ready"
        m[f"P8 {P8_N} at once s (ready)"] = f"{t_together:.2f} ({ready} ready)"
        m[f"P8 {P8_N} sequential s"] = round(t_apart, 2)
        m["P8 at once / sequential (goal <= 0.4)"] = round(t_together / t_apart, 2)
        m["control plane RSS MiB after P8"] = {
            k: round(v / 1024, 1) for k, v in cluster.memory_kib().items()
        }
    finally:
        reference.close()
        janitor.close()
        kube.close()
    return metrics


def _rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _memory(db: Db) -> dict[str, Any]:
    """The desired state of 1,000 projects, built from the database and held at once."""
    _say("memory")
    ids = _seed(db, MEMORY_PROJECTS, ProjectState.ACTIVE)
    before = _rss_now_mib()
    began = time.perf_counter()
    held: dict[int, list[dict[str, Any]]] = {}
    with db.factory() as session:
        for project_id in ids:
            project = session.get(Project, project_id)
            assert project is not None
            held[project_id] = make_workspace(desired_workspace(session, project, db.settings))
    elapsed = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    objects = sum(len(v) for v in held.values())
    return {
        f"memory: desired state of {MEMORY_PROJECTS} projects built s": round(elapsed, 2),
        "memory: objects held": objects,
        "memory: RSS before / after MiB": f"{before:.1f} / {_rss_now_mib():.1f}",
        "memory: peak RSS of the process MiB (ru_maxrss)": round(peak, 1),
    }


def _long_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BENCH_SQLITE_BUSY_TIMEOUT_MS:d}")
    finally:
        cursor.close()


@contextmanager
def _database(tmp: Path, url: str | None) -> Iterator[Db]:
    settings = Settings(
        environment=Environment.DEVELOPMENT,
        data_dir=tmp / "data",
        cookie_secure=False,
        database_url=url,
    )
    upgrade_database(settings)
    engine = make_engine(settings)
    if url is None:
        # Each reconcile holds SQLite's write lock (BEGIN IMMEDIATE) across its API calls, so
        # concurrent passes queue on it; at the default 5 s busy timeout a waiter gives up
        # ("database is locked") under this load. The bench waits longer; see the report.
        event.listen(engine, "connect", _long_busy_timeout)
    try:
        yield Db(settings, make_sessionmaker(engine, write=True))
    finally:
        engine.dispose()


def run() -> dict[str, Any]:
    build.ensure_built()
    metrics: dict[str, Any] = {
        "apiserver flags": " ".join(UNTHROTTLED_FLAGS) + " (dev cluster otherwise as usual)",
        "cores": os.cpu_count(),
    }
    postgres = os.environ.get("KLUIS_BENCH_POSTGRES_URL")
    with tempfile.TemporaryDirectory(prefix="kluis-bench-ws-") as tmp_text:
        tmp = Path(tmp_text)
        # The dev cluster with the apiserver's inflight limits and priority-and-fairness off.
        cluster = LocalCluster(
            tmp / "cluster", tie_to_parent=True, apiserver_flags=UNTHROTTLED_FLAGS
        )
        cluster.up()
        try:
            with _database(tmp / "sqlite", None) as db:
                metrics["database"] = (
                    "SQLite (temporary file, WAL); busy_timeout raised to "
                    f"{BENCH_SQLITE_BUSY_TIMEOUT_MS // 1000} s (default 5 s: database is locked)"
                )
                metrics.update(_measure(db, cluster, tmp))
                metrics.update(_memory(db))
            if postgres:
                from bench.projects import _postgres_schema

                with (
                    _postgres_schema(postgres) as url,
                    _database(tmp / "pg", url) as db,
                ):
                    pg = _measure(db, cluster, tmp)
                metrics["[PostgreSQL] database"] = "KLUIS_BENCH_POSTGRES_URL, a schema of its own"
                metrics.update({f"[PostgreSQL] {k}": v for k, v in pg.items()})
            else:
                metrics["PostgreSQL"] = "skipped: set KLUIS_BENCH_POSTGRES_URL"
        finally:
            cluster.down()
    return {"metrics": metrics}
