"""Pure parts of the reconciler: backoff, desired-state hash, drift comparison, error classes."""

from __future__ import annotations

import pytest

from orchestrator.kube import Permanent, Retryable, classify, matches
from orchestrator.reconciler import BACKOFF_CAP_SECONDS, backoff_seconds, desired_hash


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (1000, 300.0)],
)
def test_backoff_seconds_doubles_from_one_second_to_the_cap(attempts: int, seconds: float) -> None:
    assert backoff_seconds(attempts) == seconds
    assert backoff_seconds(attempts) <= BACKOFF_CAP_SECONDS


def test_desired_hash_stable_under_key_order() -> None:
    one = [{"kind": "Namespace", "metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}}]
    same = [{"metadata": {"labels": {"y": "2", "x": "1"}, "name": "a"}, "kind": "Namespace"}]

    assert desired_hash(one) == desired_hash(same)
    assert len(desired_hash(one)) == 64


def test_desired_hash_changes_with_a_value_or_the_order() -> None:
    a = {"kind": "Namespace", "metadata": {"name": "a"}}
    b = {"kind": "Namespace", "metadata": {"name": "b"}}

    assert desired_hash([a, b]) != desired_hash([b, a])
    assert desired_hash([a]) != desired_hash([{"kind": "Namespace", "metadata": {"name": "c"}}])
    assert desired_hash([]) != desired_hash("absent")


def test_matches_ignores_server_added_fields_and_compares_quantities_by_value() -> None:
    desired = {"spec": {"capacity": {"storage": "1024Mi"}, "storageClassName": "", "x": {}}}
    live = {"spec": {"capacity": {"storage": "1Gi"}, "volumeMode": "Filesystem"}, "status": {}}

    assert matches(desired, live)


def test_matches_sees_a_changed_label_a_missing_field_and_a_shorter_list() -> None:
    assert not matches({"labels": {"enforce": "restricted"}}, {"labels": {"enforce": "privileged"}})
    assert not matches({"spec": {"policyTypes": ["Ingress"]}}, {"spec": {}})
    assert not matches({"rules": [1, 2]}, {"rules": [1]})
    assert not matches({"automount": False}, {"automount": 0})
    assert not matches({"cpu": "2"}, {"cpu": "3"})


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (0, "connection refused", Retryable),
        (429, "too many requests", Retryable),
        (500, "etcd timeout", Retryable),
        (503, "unavailable", Retryable),
        (409, "conflict", Retryable),
        (
            403,
            "unable to create new content in namespace x because it is being terminated",
            Retryable,
        ),
        (403, "forbidden: cannot patch", Permanent),
        (422, "invalid", Permanent),
        (400, "bad request", Permanent),
    ],
)
def test_classify_retry_later_or_permanent(status: int, message: str, kind: type) -> None:
    assert type(classify(status, message, "PATCH /x")) is kind
