"""Leader election with a `coordination.k8s.io/v1` Lease, so several reconciler replicas are safe:
only the holder reconciles, the others stand by.

The holder renews the Lease every renew period; a candidate takes it over once it has seen the
same record unchanged for the lease's duration (measured on its own monotonic clock, so clock skew
between machines does not matter). Every write carries the resourceVersion that was read: of two
candidates racing for a free Lease, the API server lets exactly one through (409 for the other).
A holder counts itself leader only until `lease - renew` seconds after the start of its last
successful renewal, so it stops before anyone else may start, even when it cannot reach the API.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from orchestrator.config import Settings
from orchestrator.kube import LEASE_API_VERSION, KubeClient, KubeError

log = structlog.get_logger(__name__)


def default_identity() -> str:
    """This replica's name in the Lease: the pod (host) name and the process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquire and renew one Lease; `is_leader` says whether this replica may reconcile now.

    Call `try_acquire_or_renew` every `renew_seconds` (or use `run` in a thread)."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int,
        renew_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        # A holder must renew well within the lease, else it would lapse between renewals.
        self.renew_seconds = min(renew_seconds, lease_seconds / 3)
        self.clock = clock
        self.api_ok_at: float | None = None  # monotonic time of the last answer from the API
        self._leading_until = 0.0
        self._observed: tuple[str, str] | None = None  # (holder, resourceVersion) last seen
        self._observed_at = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, kube: KubeClient, settings: Settings) -> LeaderElector:
        return cls(
            kube,
            settings.leader_election_namespace,
            settings.leader_election_lease_name,
            settings.leader_election_identity or default_identity(),
            settings.leader_election_lease_seconds,
            settings.leader_election_renew_seconds,
        )

    @property
    def is_leader(self) -> bool:
        return self.clock() < self._leading_until

    def try_acquire_or_renew(self) -> bool:
        """One round: create the Lease, renew ours, or take over a free or expired one.
        Returns whether this replica leads afterwards; never raises for API failures."""
        with self._lock:
            was_leader = self.is_leader
            try:
                leading = self._round()
            except KubeError as exc:
                # 409: another replica wrote the Lease since we read it; it leads now.
                if exc.status == 409:
                    self._leading_until = 0.0
                log.info("leader_round_failed", lease=self.name, error=str(exc)[:200])
                leading = self.is_leader  # keep what remains of the last renewal
            if leading != was_leader:
                log.info(
                    "leader_acquired" if leading else "leader_lost",
                    lease=self.name,
                    identity=self.identity,
                )
            return leading

    def release(self) -> None:
        """Give the Lease up (on a clean stop) so a standby need not wait for it to expire."""
        with self._lock:
            if not self.is_leader:
                return
            self._leading_until = 0.0
            try:
                lease = self.kube.get_lease(self.namespace, self.name)
                if lease is None or lease.get("spec", {}).get("holderIdentity") != self.identity:
                    return
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                self.kube.replace_lease(lease)
                log.info("leader_released", lease=self.name, identity=self.identity)
            except KubeError as exc:
                log.info("leader_release_failed", lease=self.name, error=str(exc)[:200])

    def run(self, stop: threading.Event) -> None:
        """Renew (or try to acquire) every `renew_seconds` until `stop`, then release."""
        try:
            while True:
                self.try_acquire_or_renew()
                if stop.wait(self.renew_seconds):
                    return
        finally:
            self.release()

    # --- one round -------------------------------------------------------------------------------

    def _round(self) -> bool:
        started = self.clock()
        now = datetime.now(UTC)
        lease = self.kube.get_lease(self.namespace, self.name)
        self.api_ok_at = self.clock()
        if lease is None:
            self.kube.create_lease(self._body(None, now, now, transitions=0))
            return self._lead_from(started)
        spec: dict[str, Any] = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        version = str(lease.get("metadata", {}).get("resourceVersion", ""))
        if self._observed != (holder, version):
            self._observed = (holder, version)
            self._observed_at = started
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        ours = holder == self.identity
        if holder and not ours and started < self._observed_at + duration:
            self._leading_until = 0.0  # someone else holds a live lease
            return False
        acquired = spec.get("acquireTime") if ours else _micro_time(now)
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        self.kube.replace_lease(self._body(lease, acquired, now, transitions))
        return self._lead_from(started)

    def _lead_from(self, started: float) -> bool:
        self._leading_until = started + self.lease_seconds - self.renew_seconds
        return True

    def _body(
        self,
        current: dict[str, Any] | None,
        acquired: datetime | str | None,
        renewed: datetime,
        transitions: int,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        if isinstance(acquired, datetime):
            acquired = _micro_time(acquired)
        return {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": acquired or _micro_time(renewed),
                "renewTime": _micro_time(renewed),
                "leaseTransitions": transitions,
            },
        }
