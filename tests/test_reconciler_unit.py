"""Pure parts of the reconciler: backoff, desired-state hash, drift comparison, error classes;
and `reconcile_all` surviving a project it cannot load (no cluster needed)."""

from __future__ import annotations

from typing import cast

import pytest
from project_factories import make_project, utcnow
from sqlalchemy import Engine, text

from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker, session_scope
from orchestrator.kube import KubeClient, Permanent, Retryable, classify, matches
from orchestrator.manifests import make_workspace
from orchestrator.models import ProjectState, WorkspacePhase
from orchestrator.reconciler import (
    BACKOFF_CAP_SECONDS,
    apply_waves,
    backoff_seconds,
    desired_hash,
    reconcile_all,
)


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


def test_a_project_that_cannot_be_loaded_is_reported_and_the_pass_goes_on(
    isolated_engine: tuple[Settings, Engine],
) -> None:
    settings, engine = isolated_engine
    factory = make_sessionmaker(engine, write=True)
    with session_scope(factory) as session:
        projects = [make_project(session, state=ProjectState.SUBMITTED) for _ in range(4)]
        session.flush()
        ids = [p.id for p in projects]
        codes = [p.code for p in projects]
    broken = ids[1]
    with engine.begin() as connection:  # a value no ProjectState has: loading the row raises
        connection.execute(
            text("UPDATE project SET state = 'bogus' WHERE id = :id"), {"id": broken}
        )
    # None of these projects has a workspace, so the client is never called.
    kube = cast(KubeClient, object())

    summary = reconcile_all(factory, kube, settings, utcnow(), ids)

    assert list(summary.errors) == [f"#{broken}"]
    assert "bogus" in summary.errors[f"#{broken}"]
    assert summary.phases == {
        code: WorkspacePhase.PENDING for i, code in zip(ids, codes, strict=True) if i != broken
    }


def test_apply_waves_put_every_object_after_what_it_needs() -> None:
    from test_manifests import make_spec

    objects = make_workspace(make_spec())

    waves = apply_waves(objects)

    assert sorted(map(repr, (o for wave in waves for o in wave))) == sorted(map(repr, objects))
    kinds = [{o["kind"] for o in wave} for wave in waves]
    assert kinds[0] == {"Namespace", "PersistentVolume"}
    assert "Role" in kinds[1]
    assert "RoleBinding" not in kinds[1]
    assert kinds[2] == {"RoleBinding", "PersistentVolumeClaim"}
    for wave in waves:  # apply order kept within a wave
        assert wave == [o for o in objects if o in wave]
