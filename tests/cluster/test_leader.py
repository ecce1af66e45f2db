"""Leader election against the real API server: one Lease, several candidates, exactly one
leader; a leader that stops renewing is replaced after the lease duration."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.kube import KubeClient
from orchestrator.leader import LeaderElector

pytestmark = pytest.mark.cluster

LEASE_SECONDS = 2
RENEW_SECONDS = 0.5


@pytest.fixture
def lclient(cluster: LocalCluster) -> Iterator[KubeClient]:
    client = KubeClient.from_kubeconfig(cluster.kubeconfig, "kluis-test")
    yield client
    client.close()


def make_elector(client: KubeClient, namespace: str, lease: str, identity: str) -> LeaderElector:
    return LeaderElector(client, namespace, lease, identity, LEASE_SECONDS, RENEW_SECONDS)


def test_leader_two_candidates_exactly_one_leads(lclient: KubeClient, namespace: str) -> None:
    lease = f"kluis-reconciler-{uuid.uuid4().hex[:6]}"
    first = make_elector(lclient, namespace, lease, "replica-a")
    second = make_elector(lclient, namespace, lease, "replica-b")

    results = [first.try_acquire_or_renew(), second.try_acquire_or_renew()]
    results += [first.try_acquire_or_renew(), second.try_acquire_or_renew()]

    assert results == [True, False, True, False]
    live = lclient.get_lease(namespace, lease)
    assert live is not None
    assert live["spec"]["holderIdentity"] == "replica-a"
    assert live["spec"]["leaseDurationSeconds"] == LEASE_SECONDS


def test_leader_racing_for_a_new_lease_one_wins(lclient: KubeClient, namespace: str) -> None:
    lease = f"kluis-reconciler-{uuid.uuid4().hex[:6]}"
    electors = [make_elector(lclient, namespace, lease, f"replica-{n}") for n in range(4)]
    start = threading.Barrier(len(electors))

    def attempt(elector: LeaderElector) -> None:
        start.wait()
        elector.try_acquire_or_renew()

    threads = [threading.Thread(target=attempt, args=(e,)) for e in electors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    leaders = [e.identity for e in electors if e.is_leader]
    assert len(leaders) == 1
    live = lclient.get_lease(namespace, lease)
    assert live is not None
    assert live["spec"]["holderIdentity"] == leaders[0]


def test_leader_that_stops_renewing_is_replaced_after_the_lease(
    lclient: KubeClient, namespace: str
) -> None:
    lease = f"kluis-reconciler-{uuid.uuid4().hex[:6]}"
    first = make_elector(lclient, namespace, lease, "replica-a")
    second = make_elector(lclient, namespace, lease, "replica-b")
    assert first.try_acquire_or_renew()
    stopped = time.monotonic()  # from here on `first` never renews (a hung or crashed replica)

    took_over = None
    while time.monotonic() - stopped < LEASE_SECONDS + 3:
        if second.try_acquire_or_renew():
            took_over = time.monotonic() - stopped
            break
        assert not (second.is_leader and first.is_leader)
        time.sleep(RENEW_SECONDS / 2)

    assert took_over is not None
    assert took_over >= LEASE_SECONDS
    assert not first.is_leader  # it stepped down (lease - renew) after its last renewal
    assert not first.try_acquire_or_renew()  # and cannot take it back while `second` renews
    live = lclient.get_lease(namespace, lease)
    assert live is not None
    assert live["spec"]["holderIdentity"] == "replica-b"
    assert live["spec"]["leaseTransitions"] == 1


def test_leader_release_hands_over_at_once(lclient: KubeClient, namespace: str) -> None:
    lease = f"kluis-reconciler-{uuid.uuid4().hex[:6]}"
    first = make_elector(lclient, namespace, lease, "replica-a")
    second = make_elector(lclient, namespace, lease, "replica-b")
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()

    first.release()

    assert not first.is_leader
    assert second.try_acquire_or_renew()


def test_leader_run_in_threads_one_leader_then_the_other(
    lclient: KubeClient, namespace: str
) -> None:
    lease = f"kluis-reconciler-{uuid.uuid4().hex[:6]}"
    first = make_elector(lclient, namespace, lease, "replica-a")
    second = make_elector(lclient, namespace, lease, "replica-b")
    stop_first, stop_second = threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=first.run, args=(stop_first,)),
        threading.Thread(target=second.run, args=(stop_second,)),
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 5
        while not (first.is_leader or second.is_leader):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(10):  # never both at once
            assert first.is_leader != second.is_leader
            time.sleep(0.1)
        leader, standby, stop = (
            (first, second, stop_first) if first.is_leader else (second, first, stop_second)
        )

        stop.set()  # a clean stop releases the Lease

        deadline = time.monotonic() + 3
        while not standby.is_leader:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not leader.is_leader
    finally:
        stop_first.set()
        stop_second.set()
        for thread in threads:
            thread.join(timeout=10)
