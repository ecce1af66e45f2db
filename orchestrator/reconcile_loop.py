"""The reconciler as a long-running process: wake-ups on database changes, leader election,
Prometheus metrics and health endpoints around `reconciler.reconcile_all`.

Every `reconcile_poll_seconds` the leader asks the database one question — which projects were
touched (project row, grants, memberships) since its last look, or asked to be looked at again
(`workspace_status.next_attempt_at`)? — and reconciles only those; an unchanged project costs no
Kubernetes call. A full pass over every due project runs at start, on gaining leadership and every
`full_pass_seconds` as a safety net. Standbys only renew their candidacy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from orchestrator.config import Settings
from orchestrator.kube import KubeClient, KubeError
from orchestrator.leader import LeaderElector
from orchestrator.models import WorkspacePhase, utcnow
from orchestrator.reconciler import PassSummary, changed_project_ids, reconcile_all

log = structlog.get_logger(__name__)

# Rows committed a little after the moment they were stamped (or stamped by a host whose clock is
# a little behind) are still seen: each look reaches back this far.
CHANGE_OVERLAP_SECONDS = 5.0
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _ApiCalls(Collector):
    """The Kubernetes client's own call counter, by verb, read at scrape time."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "kluis_kube_api_calls",
            "Kubernetes API calls by the reconciler, by verb",
            labels=["verb"],
        )
        for verb, count in sorted(self.kube.calls.items()):
            family.add_metric([verb], count)
        yield family


class ReconcileMetrics:
    """The reconciler's metrics in a registry of their own (no process-wide state)."""

    def __init__(self, kube: KubeClient) -> None:
        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "kluis_reconcile_duration_seconds",
            "Time to reconcile one project",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.pass_duration = Histogram(
            "kluis_reconcile_pass_duration_seconds",
            "Time of one pass over the projects due",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.reconciles = Counter(
            "kluis_reconciles",
            "Projects reconciled, by resulting phase",
            ["phase"],
            registry=self.registry,
        )
        self.errors = Counter(
            "kluis_reconcile_errors",
            "Failed reconciles by class: retryable, permanent (blocked) or exception (a bug)",
            ["error_class"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "kluis_reconcile_queue_depth", "Projects due at the last look", registry=self.registry
        )
        self.leader = Gauge(
            "kluis_reconciler_leader", "1 while this replica leads, else 0", registry=self.registry
        )
        self.registry.register(_ApiCalls(kube))

    def observe(self, summary: PassSummary, pass_seconds: float) -> None:
        self.pass_duration.observe(pass_seconds)
        for seconds in summary.seconds.values():
            self.duration.observe(seconds)
        for result in summary.results.values():
            self.reconciles.labels(phase=str(result.phase)).inc()
            if result.phase is WorkspacePhase.BLOCKED:
                self.errors.labels(error_class="permanent").inc()
            elif result.reason.startswith("retrying"):
                self.errors.labels(error_class="retryable").inc()
        if summary.errors:
            self.errors.labels(error_class="exception").inc(len(summary.errors))


class ReconcileLoop:
    """Run passes while leading until `stop` is set; `ready()` backs `/readyz`."""

    def __init__(
        self,
        settings: Settings,
        session_factory: Callable[[], Session],
        kube: KubeClient,
        elector: LeaderElector | None,
        full_pass_seconds: float,
        on_pass: Callable[[PassSummary], None] | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.kube = kube
        self.elector = elector
        self.full_pass_seconds = full_pass_seconds
        self.on_pass = on_pass
        self.metrics = ReconcileMetrics(kube)
        self.passes = 0
        self.metrics_port: int | None = None  # set once the health server listens

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def run(self, stop: threading.Event) -> None:
        """Poll, reconcile what changed, repeat; the elector (if any) renews in its own thread."""
        candidacy = None
        if self.elector is not None:
            candidacy = threading.Thread(
                target=self.elector.run, args=(stop,), name="kluis-leader", daemon=True
            )
            candidacy.start()
        since: datetime | None = None  # None: the next pass is a full one
        full_at = 0.0
        try:
            while not stop.is_set():
                leading = self.leading
                self.metrics.leader.set(1 if leading else 0)
                if not leading:
                    since = None  # on (re)gaining the lease, start with a full pass
                elif since is None or time.monotonic() >= full_at:
                    since = self._pass(None)
                    full_at = time.monotonic() + self.full_pass_seconds
                else:
                    since = self._pass(since)
                stop.wait(self.settings.reconcile_poll_seconds)
        finally:
            if candidacy is not None:
                candidacy.join(timeout=10)

    def _pass(self, since: datetime | None) -> datetime | None:
        """One look: everything due (`since` None) or what changed since `since`. Returns the
        moment this look started (the next look's `since`), or the old one when it failed."""
        tick = utcnow()
        started = time.monotonic()
        try:
            ids: list[int] | None = None
            if since is not None:
                with self.session_factory() as session:
                    back = since - timedelta(seconds=CHANGE_OVERLAP_SECONDS)
                    ids = changed_project_ids(session, back, tick)
                if not ids:
                    self.metrics.queue_depth.set(0)
                    return tick
                self.metrics.queue_depth.set(len(ids))
            summary = reconcile_all(self.session_factory, self.kube, self.settings, tick, ids)
        except SQLAlchemyError as exc:
            log.error("reconcile_pass_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return since
        if ids is None:
            self.metrics.queue_depth.set(len(summary.seconds))
        self.metrics.observe(summary, time.monotonic() - started)
        self.passes += 1
        if self.on_pass is not None:
            self.on_pass(summary)
        return tick

    def ready(self) -> tuple[bool, str]:
        """Ready: the database answers and the API server answered recently (leading or not)."""
        try:
            with self.session_factory() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return False, f"database: {type(exc).__name__}"
        if self.elector is not None:
            seen = self.elector.api_ok_at
            window = max(3 * self.elector.renew_seconds, float(self.elector.lease_seconds))
            if seen is None or time.monotonic() - seen > window:
                return False, "API server: no answer to the leader election lately"
            return True, "leader" if self.elector.is_leader else "standby"
        try:
            self.kube.get("Namespace", None, "default")
        except KubeError as exc:
            return False, f"API server: {exc}"[:300]
        return True, "leader"


class HealthServer:
    """`/metrics`, `/healthz` and `/readyz` on a loopback port, in a daemon thread."""

    def __init__(self, loop: ReconcileLoop, host: str, port: int) -> None:
        handler = _handler(loop)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kluis-metrics", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(loop: ReconcileLoop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(loop.metrics.registry), "text/plain; version=0.0.4")
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ok, reason = loop.ready()
                self._send(200 if ok else 503, f"{reason}\n".encode())
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would flood the log

    return Handler
