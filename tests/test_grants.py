"""Grants (`orchestrator/grants.py`) on SQLite and PostgreSQL: idempotent granting, availability,
closed projects, revocation (once), what is mounted (active grants) and the history, audited."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from admin_factories import make_user
from catalogue_factories import make_dataset, make_project, make_version
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from orchestrator import grants
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker
from orchestrator.errors import Conflict
from orchestrator.models import AuditEvent, DatasetVersion, Grant, ProjectState, Role

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def version_of(session: Session, **kw: date | None) -> DatasetVersion:
    kw.setdefault("available_from", TODAY - timedelta(days=30))
    return make_version(session, make_dataset(session), **kw)


def count_grants(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Grant)) or 0


def audit_actions(session: Session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)).all())


def test_grant_dataset_creates_and_audits(db_session: Session) -> None:
    project, version = make_project(db_session), version_of(db_session)
    steward = make_user(db_session, role=Role.DATA_STEWARD)

    grant = grants.grant_dataset(db_session, project, version, steward, NOW)

    assert (grant.project_id, grant.dataset_version_id) == (project.id, version.id)
    assert (grant.granted_at, grant.granted_by_id, grant.revoked_at) == (NOW, steward.id, None)
    [event] = audit_actions(db_session, "grant_created")
    assert (event.actor, event.object_id) == (steward.username, str(grant.id))
    assert event.details == {
        "project": project.code,
        "dataset": version.dataset.code,
        "label": version.label,
        "dataset_version_id": version.id,
    }


def test_grant_dataset_idempotent(db_session: Session) -> None:
    project, version = make_project(db_session), version_of(db_session)
    first = grants.grant_dataset(db_session, project, version, None, NOW)

    again = grants.grant_dataset(db_session, project, version, None, NOW + timedelta(days=3))

    assert again is first
    assert again.granted_at == NOW
    assert count_grants(db_session) == 1
    assert len(audit_actions(db_session, "grant_created")) == 1


def test_grant_dataset_after_revoke_creates_new(db_session: Session) -> None:
    project, version = make_project(db_session), version_of(db_session)
    first = grants.grant_dataset(db_session, project, version, None, NOW)
    grants.revoke_grant(db_session, first, None, NOW + timedelta(days=1))

    second = grants.grant_dataset(db_session, project, version, None, NOW + timedelta(days=2))

    assert second.id != first.id
    assert grants.active_grants(db_session, project) == [second]


def test_grant_dataset_same_version_two_projects(db_session: Session) -> None:
    version = version_of(db_session)
    one, two = make_project(db_session), make_project(db_session)

    a = grants.grant_dataset(db_session, one, version, None, NOW)
    b = grants.grant_dataset(db_session, two, version, None, NOW)

    assert a.id != b.id
    assert grants.active_grants(db_session, one) == [a]
    assert grants.active_grants(db_session, two) == [b]


@pytest.mark.parametrize(
    ("available_from", "available_until", "allowed"),
    [
        (TODAY + timedelta(days=1), None, False),
        (TODAY, None, True),
        (TODAY - timedelta(days=90), TODAY - timedelta(days=1), False),
        (TODAY - timedelta(days=90), TODAY, True),
    ],
    ids=["not-yet", "from-today", "withdrawn", "until-today"],
)
def test_grant_dataset_availability(
    db_session: Session, available_from: date, available_until: date | None, allowed: bool
) -> None:
    project = make_project(db_session)
    version = version_of(db_session, available_from=available_from, available_until=available_until)

    if allowed:
        assert grants.grant_dataset(db_session, project, version, None, NOW).id is not None
        return
    with pytest.raises(Conflict) as refused:
        grants.grant_dataset(db_session, project, version, None, NOW)

    assert refused.value.details["rule"] == "version_unavailable"
    assert version.label in refused.value.message
    assert count_grants(db_session) == 0
    assert audit_actions(db_session, "grant_created") == []


@pytest.mark.parametrize(
    "state", [ProjectState.REJECTED, ProjectState.ARCHIVED, ProjectState.DELETED]
)
def test_grant_dataset_closed_project_refused(db_session: Session, state: ProjectState) -> None:
    project, version = make_project(db_session, state=state), version_of(db_session)

    with pytest.raises(Conflict) as refused:
        grants.grant_dataset(db_session, project, version, None, NOW)

    assert refused.value.details["rule"] == "project_closed"
    assert count_grants(db_session) == 0


@pytest.mark.parametrize(
    "state",
    [ProjectState.ACCEPTED, ProjectState.APPROVED, ProjectState.ACTIVE, ProjectState.FROZEN],
)
def test_grant_dataset_open_project_accepted(db_session: Session, state: ProjectState) -> None:
    project, version = make_project(db_session, state=state), version_of(db_session)

    grant = grants.grant_dataset(db_session, project, version, None, NOW)

    assert grant.revoked_at is None


def test_revoke_grant_sets_revoked_and_audits(db_session: Session) -> None:
    project, version = make_project(db_session), version_of(db_session)
    steward = make_user(db_session, role=Role.DATA_STEWARD)
    grant = grants.grant_dataset(db_session, project, version, None, NOW)
    later = NOW + timedelta(days=10)

    grants.revoke_grant(db_session, grant, steward, later, reason="member request")

    assert (grant.revoked_at, grant.revoked_by_id) == (later, steward.id)
    [event] = audit_actions(db_session, "grant_revoked")
    assert (event.actor, event.object_id) == (steward.username, str(grant.id))
    assert event.details["reason"] == "member request"
    assert event.details["project"] == project.code


def test_revoke_grant_twice_409(db_session: Session) -> None:
    grant = grants.grant_dataset(
        db_session, make_project(db_session), version_of(db_session), None, NOW
    )
    grants.revoke_grant(db_session, grant, None, NOW + timedelta(days=1))

    with pytest.raises(Conflict) as refused:
        grants.revoke_grant(db_session, grant, None, NOW + timedelta(days=2))

    assert refused.value.details["rule"] == "already_revoked"
    assert grant.revoked_at == NOW + timedelta(days=1)
    assert len(audit_actions(db_session, "grant_revoked")) == 1


def test_revoke_grant_concurrent_second_409(isolated_engine: tuple[Settings, Engine]) -> None:
    _settings, engine = isolated_engine
    factory = make_sessionmaker(engine)
    with factory() as setup, setup.begin():
        grant_id = grants.grant_dataset(setup, make_project(setup), version_of(setup), None, NOW).id
    with factory() as first, factory() as second:
        mine, theirs = first.get(Grant, grant_id), second.get(Grant, grant_id)
        assert mine is not None
        assert theirs is not None
        first.commit()
        second.commit()  # both saw it unrevoked; neither holds a transaction now
        grants.revoke_grant(first, mine, None, NOW + timedelta(days=1))
        first.commit()

        with pytest.raises(Conflict):
            grants.revoke_grant(second, theirs, None, NOW + timedelta(days=2))
        second.rollback()

    with factory() as check:
        events = check.scalars(select(AuditEvent).where(AuditEvent.action == "grant_revoked"))
        assert len(events.all()) == 1


def test_active_grants_excludes_revoked(db_session: Session) -> None:
    project = make_project(db_session)
    kept, dropped = version_of(db_session), version_of(db_session)
    keep = grants.grant_dataset(db_session, project, kept, None, NOW)
    drop = grants.grant_dataset(db_session, project, dropped, None, NOW + timedelta(hours=1))

    grants.revoke_grant(db_session, drop, None, NOW + timedelta(days=1))

    assert grants.active_grants(db_session, project) == [keep]
    assert grants.grant_history(db_session, project) == [keep, drop]


def test_active_grants_only_own_project(db_session: Session) -> None:
    mine, other = make_project(db_session), make_project(db_session)
    grants.grant_dataset(db_session, other, version_of(db_session), None, NOW)

    assert grants.active_grants(db_session, mine) == []
    assert grants.grant_history(db_session, mine) == []


def test_grant_history_oldest_first_with_versions_loaded(db_session: Session) -> None:
    project = make_project(db_session)
    late, early = version_of(db_session), version_of(db_session)
    second = grants.grant_dataset(db_session, project, late, None, NOW + timedelta(days=5))
    first = grants.grant_dataset(db_session, project, early, None, NOW)
    grants.revoke_grant(db_session, first, None, NOW + timedelta(days=6))

    history = grants.grant_history(db_session, project)

    assert history == [first, second]
    assert [g.dataset_version.dataset.code for g in history] == [
        early.dataset.code,
        late.dataset.code,
    ]
