"""Change requests: asking (who, in which states, what is checked), deciding (segregation of
duties, re-checks, the change and its fee applied in the same transaction), extensions that
bring an expired project back within its grace period, withdrawal, optimistic locking, and the
audit trail. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from project_factories import (
    make_dataset_version,
    make_project,
    make_researcher,
    make_staff,
    today,
    utcnow,
)
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from orchestrator import audit, projects, requests
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, Invalid, NotFound
from orchestrator.models import (
    AuditEvent,
    ChangeRequest,
    Charge,
    ChargeKind,
    Grant,
    MemberRole,
    OutboxMessage,
    Project,
    ProjectState,
    RequestKind,
    RequestState,
    Role,
    User,
)

S = ProjectState
K = RequestKind


@pytest.fixture
def settings(db_settings: Settings, db_session: Session) -> Settings:
    db_session.info["settings"] = db_settings
    return db_settings


def ask(
    session: Session,
    settings: Settings,
    project: Project,
    kind: RequestKind,
    *,
    actor: User | str | None = "lead",
    now: datetime | None = None,
    **fields: Any,
) -> ChangeRequest:
    who = project.lead if actor == "lead" else actor
    assert not isinstance(who, str)
    return requests.create_request(
        session, project, who, now or utcnow(), settings, kind=kind, **fields
    )


def events(session: Session, action: str) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        )
    )


def charges(session: Session, project: Project) -> list[Charge]:
    return list(session.scalars(select(Charge).where(Charge.project_id == project.id)))


# --- each kind, asked and approved ----------------------------------------------------------------


def test_requests_add_member_approved_adds_a_row_and_the_fee(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    newcomer = make_researcher(db_session)
    steward = make_staff(db_session)

    request = ask(db_session, settings, project, K.ADD_MEMBER, user_id=newcomer.id)
    assert request.state is RequestState.PENDING
    assert request.payload == {"user_id": newcomer.id}
    requests.approve_request(db_session, request, steward, utcnow(), settings, comment="Fine.")

    assert request.state is RequestState.APPROVED
    assert request.decided_by_id == steward.id
    assert projects.is_current_member(project, newcomer.id)
    [fee] = charges(db_session, project)
    assert fee.kind is ChargeKind.ADD_RESEARCHER
    assert fee.amount == Decimal("250.00")
    assert fee.change_request_id == request.id
    assert events(db_session, "project_member_added")[-1].details["user_id"] == newcomer.id
    approved = events(db_session, "change_approved")[-1]
    assert approved.details["amount"] == "250.00"
    assert approved.object_id == str(request.id)


def test_requests_remove_member_closes_the_row_without_fee(
    db_session: Session, settings: Settings
) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, state=S.ACTIVE, members=[member])
    now = utcnow()

    request = ask(db_session, settings, project, K.REMOVE_MEMBER, user_id=member.id)
    requests.approve_request(db_session, request, make_staff(db_session), now, settings)

    row = next(m for m in project.members if m.user_id == member.id)
    assert row.removed_at == now
    assert not projects.is_current_member(project, member.id)
    assert charges(db_session, project) == []


def test_requests_readded_member_gets_a_new_row(db_session: Session, settings: Settings) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, state=S.ACTIVE, members=[member])
    steward = make_staff(db_session)

    out = ask(db_session, settings, project, K.REMOVE_MEMBER, user_id=member.id)
    requests.approve_request(db_session, out, steward, utcnow(), settings)
    back = ask(db_session, settings, project, K.ADD_MEMBER, user_id=member.id)
    requests.approve_request(db_session, back, steward, utcnow(), settings)

    rows = [m for m in projects.membership_history(project) if m.user_id == member.id]
    assert [r.removed_at is None for r in rows] == [False, True]
    assert all(r.role is MemberRole.RESEARCHER for r in rows)


def test_requests_add_dataset_grants_it_with_the_fee(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.FROZEN)
    version = make_dataset_version(db_session)

    request = ask(db_session, settings, project, K.ADD_DATASET, dataset_version_id=version.id)
    requests.approve_request(db_session, request, make_staff(db_session), utcnow(), settings)

    granted = db_session.scalars(
        select(Grant).where(Grant.project_id == project.id, Grant.dataset_version_id == version.id)
    ).one()
    assert granted.revoked_at is None
    assert [c.kind for c in charges(db_session, project)] == [ChargeKind.ADD_DATASET]


def test_requests_extension_moves_the_end_date_with_the_fee(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    old_end = project.end_date
    new_end = old_end + timedelta(days=90)

    request = ask(
        db_session, settings, project, K.EXTENSION, new_end_date=new_end, reason="Data late."
    )
    requests.approve_request(db_session, request, make_staff(db_session), utcnow(), settings)

    assert request.payload == {"new_end_date": new_end.isoformat()}
    assert project.end_date == new_end
    assert project.state is S.ACTIVE
    assert [c.kind for c in charges(db_session, project)] == [ChargeKind.EXTENSION]
    extended = events(db_session, "project_extended")[-1]
    assert extended.details["from"] == old_end.isoformat()
    assert extended.details["to"] == new_end.isoformat()


# --- extensions and the grace period --------------------------------------------------------------


def expired_project(session: Session, settings: Settings, days_ago: int) -> Project:
    """Expired `days_ago` days after its end date (the end date is the last day)."""
    end = today() - timedelta(days=days_ago)
    return make_project(
        session, state=S.EXPIRED, start_date=end - timedelta(days=365), end_date=end
    )


def test_requests_extension_within_grace_reactivates(
    db_session: Session, settings: Settings
) -> None:
    project = expired_project(db_session, settings, days_ago=settings.project_grace_days)
    assert projects.grace_until(project, settings) == today()  # the last day of grace
    new_end = today() + timedelta(days=60)
    lead = project.lead
    before = db_session.scalar(select(OutboxMessage.id).order_by(OutboxMessage.id.desc()).limit(1))

    request = ask(
        db_session, settings, project, K.EXTENSION, new_end_date=new_end, reason="Revision."
    )
    requests.approve_request(db_session, request, make_staff(db_session), utcnow(), settings)

    assert project.state is S.ACTIVE
    assert project.expired_at is None
    assert project.end_date == new_end
    assert events(db_session, "project_extended")[-1].details["reactivated"] is True
    mails = db_session.scalars(select(OutboxMessage).where(OutboxMessage.id > (before or 0))).all()
    assert any("project active" in m.subject and m.to_address == lead.email for m in mails)


def test_requests_extension_after_grace_is_refused(db_session: Session, settings: Settings) -> None:
    project = expired_project(db_session, settings, days_ago=settings.project_grace_days + 1)

    with pytest.raises(Conflict) as caught:
        ask(
            db_session, settings, project, K.EXTENSION,
            new_end_date=today() + timedelta(days=60), reason="Too late.",
        )  # fmt: skip

    assert caught.value.details["rule"] == "grace_period"


def test_requests_extension_asked_in_grace_decided_after_is_refused(
    db_session: Session, settings: Settings
) -> None:
    project = expired_project(db_session, settings, days_ago=settings.project_grace_days)
    request = ask(
        db_session, settings, project, K.EXTENSION,
        new_end_date=today() + timedelta(days=60), reason="Revision.",
    )  # fmt: skip
    tomorrow = utcnow() + timedelta(days=1)

    with pytest.raises(Conflict, match="grace period ended"):
        requests.approve_request(db_session, request, make_staff(db_session), tomorrow, settings)

    assert request.state is RequestState.PENDING
    assert project.state is S.EXPIRED


@pytest.mark.parametrize(
    ("new_end", "rule"),
    [
        (lambda p: p.end_date, "later_end_date"),
        (lambda p: p.end_date - timedelta(days=1), "later_end_date"),
        (lambda p: p.start_date.replace(year=p.start_date.year + 5) + timedelta(days=1),
         "max_project_years"),
    ],
    ids=["same", "earlier", "too-long"],
)  # fmt: skip
def test_requests_extension_dates_are_checked(
    db_session: Session, settings: Settings, new_end: Any, rule: str
) -> None:
    project = make_project(db_session, state=S.ACTIVE)

    with pytest.raises(Invalid) as caught:
        ask(
            db_session, settings, project, K.EXTENSION, new_end_date=new_end(project),
            reason="More time.",
        )  # fmt: skip

    assert caught.value.details["rule"] == rule


def test_requests_extension_to_the_longest_period_is_allowed(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    latest = project.start_date.replace(year=project.start_date.year + settings.max_project_years)

    request = ask(
        db_session, settings, project, K.EXTENSION, new_end_date=latest, reason="More time."
    )

    assert request.payload["new_end_date"] == latest.isoformat()


def test_requests_extension_needs_a_reason(db_session: Session, settings: Settings) -> None:
    project = make_project(db_session, state=S.ACTIVE)

    with pytest.raises(Invalid, match="reason"):
        ask(
            db_session, settings, project, K.EXTENSION,
            new_end_date=project.end_date + timedelta(days=1), reason=" ",
        )  # fmt: skip


# --- states ---------------------------------------------------------------------------------------

OPEN = {S.APPROVED, S.ACTIVE, S.FROZEN}


def request_fields(kind: RequestKind, session: Session, project: Project) -> dict[str, Any]:
    if kind is K.ADD_MEMBER:
        return {"user_id": make_researcher(session).id}
    if kind is K.REMOVE_MEMBER:
        member = next(m for m in project.members if m.role is MemberRole.RESEARCHER)
        return {"user_id": member.user_id}
    if kind is K.ADD_DATASET:
        return {"dataset_version_id": make_dataset_version(session).id}
    return {"new_end_date": project.end_date + timedelta(days=30), "reason": "More time."}


@pytest.mark.parametrize("state", list(ProjectState))
@pytest.mark.parametrize("kind", list(RequestKind))
def test_requests_only_in_open_states(
    db_session: Session, settings: Settings, state: ProjectState, kind: RequestKind
) -> None:
    project = make_project(db_session, state=state, members=[make_researcher(db_session)])
    fields = request_fields(kind, db_session, project)
    allowed = state in OPEN or (kind is K.EXTENSION and state is S.EXPIRED)

    if allowed:
        assert ask(db_session, settings, project, kind, **fields).state is RequestState.PENDING
    else:
        with pytest.raises(Conflict) as caught:
            ask(db_session, settings, project, kind, **fields)
        assert caught.value.details["state"] == state.value


# --- who may ask ----------------------------------------------------------------------------------


def test_requests_only_the_lead_asks(db_session: Session, settings: Settings) -> None:
    member, outsider = make_researcher(db_session), make_researcher(db_session)
    project = make_project(db_session, state=S.ACTIVE, members=[member])
    fields = {"user_id": make_researcher(db_session).id}

    with pytest.raises(Forbidden):
        ask(db_session, settings, project, K.ADD_MEMBER, actor=member, **fields)
    with pytest.raises(NotFound):
        ask(db_session, settings, project, K.ADD_MEMBER, actor=outsider, **fields)
    for role in (Role.DATA_STEWARD, Role.OUTPUT_CHECKER, Role.OPS):
        with pytest.raises(Forbidden):
            ask(
                db_session, settings, project, K.ADD_MEMBER,
                actor=make_staff(db_session, role), **fields,
            )  # fmt: skip
    assert ask(db_session, settings, project, K.ADD_MEMBER, actor=None, **fields)


def test_requests_what_is_asked_is_checked(db_session: Session, settings: Settings) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, state=S.ACTIVE, members=[member])
    lapsed = make_researcher(db_session, statement_valid_until=today() - timedelta(days=1))
    granted = project.requested_datasets[0].dataset_version_id
    withdrawn = make_dataset_version(db_session, available_until=today() - timedelta(days=1))

    cases: list[tuple[RequestKind, dict[str, Any], type[Exception], str]] = [
        (K.ADD_MEMBER, {"user_id": member.id}, Conflict, "already_member"),
        (K.ADD_MEMBER, {"user_id": project.lead_id}, Conflict, "already_member"),
        (K.ADD_MEMBER, {"user_id": lapsed.id}, Invalid, "member_standing"),
        (K.ADD_MEMBER, {"user_id": make_staff(db_session).id}, Invalid, "member_standing"),
        (K.REMOVE_MEMBER, {"user_id": project.lead_id}, Invalid, "lead_stays"),
        (K.REMOVE_MEMBER, {"user_id": lapsed.id}, Conflict, "not_a_member"),
        (K.ADD_DATASET, {"dataset_version_id": granted}, Conflict, "already_granted"),
        (K.ADD_DATASET, {"dataset_version_id": withdrawn.id}, Invalid, "dataset_available"),
    ]
    for kind, fields, error, rule in cases:
        with pytest.raises(error) as caught:
            ask(db_session, settings, project, kind, **fields)
        assert caught.value.details["rule"] == rule, (kind, fields)  # type: ignore[attr-defined]
    with pytest.raises(Invalid):
        ask(db_session, settings, project, K.ADD_MEMBER, user_id=2_000_000)
    with pytest.raises(Invalid):
        ask(db_session, settings, project, K.ADD_DATASET, dataset_version_id=2_000_000)


def test_requests_duplicate_pending_is_a_conflict(db_session: Session, settings: Settings) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    newcomer = make_researcher(db_session)
    first = ask(db_session, settings, project, K.ADD_MEMBER, user_id=newcomer.id)

    with pytest.raises(Conflict) as caught:
        ask(db_session, settings, project, K.ADD_MEMBER, user_id=newcomer.id)
    assert caught.value.details["request_id"] == first.id
    ask(
        db_session, settings, project, K.EXTENSION,
        new_end_date=project.end_date + timedelta(days=5), reason="A",
    )  # fmt: skip
    with pytest.raises(Conflict, match="pending"):
        ask(
            db_session, settings, project, K.EXTENSION,
            new_end_date=project.end_date + timedelta(days=9), reason="B",
        )  # fmt: skip


# --- deciding -------------------------------------------------------------------------------------


def test_requests_member_steward_cannot_decide(db_session: Session, settings: Settings) -> None:
    steward = make_staff(db_session)
    project = make_project(db_session, state=S.ACTIVE)
    # A steward who was once a researcher in the project (before their role changed) still is
    # (or was) a member: they may not decide its requests.
    db_session.add(
        type(project.members[0])(
            project_id=project.id, user_id=steward.id, role=MemberRole.RESEARCHER,
            added_at=utcnow() - timedelta(days=3), removed_at=utcnow() - timedelta(days=1),
        )
    )  # fmt: skip
    db_session.flush()
    db_session.expire(project, ["members"])
    request = ask(
        db_session, settings, project, K.EXTENSION,
        new_end_date=project.end_date + timedelta(days=5), reason="A",
    )  # fmt: skip

    for decide in (requests.approve_request, requests.reject_request):
        with pytest.raises(Forbidden) as caught:
            decide(db_session, request, steward, utcnow(), settings, comment="No.")
        assert caught.value.details["rule"] == "segregation_of_duties"
    assert request.state is RequestState.PENDING
    requests.reject_request(
        db_session, request, make_staff(db_session), utcnow(), settings, comment="No."
    )
    assert request.state is RequestState.REJECTED


@pytest.mark.parametrize("who", ["lead", "member", "outsider", "output_checker", "ops"])
def test_requests_only_stewards_decide(db_session: Session, settings: Settings, who: str) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, state=S.ACTIVE, members=[member])
    request = ask(
        db_session, settings, project, K.ADD_MEMBER, user_id=make_researcher(db_session).id
    )
    actor = {
        "lead": project.lead,
        "member": member,
        "outsider": make_researcher(db_session),
        "output_checker": make_staff(db_session, Role.OUTPUT_CHECKER),
        "ops": make_staff(db_session, Role.OPS),
    }[who]

    with pytest.raises(NotFound if who == "outsider" else Forbidden):
        requests.approve_request(db_session, request, actor, utcnow(), settings)
    with pytest.raises(NotFound if who == "outsider" else Forbidden):
        requests.reject_request(db_session, request, actor, utcnow(), settings, comment="x")


def test_requests_reject_needs_a_comment_and_changes_nothing(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    newcomer = make_researcher(db_session)
    request = ask(db_session, settings, project, K.ADD_MEMBER, user_id=newcomer.id)
    steward = make_staff(db_session)

    with pytest.raises(Invalid, match="comment"):
        requests.reject_request(db_session, request, steward, utcnow(), settings, comment="")
    requests.reject_request(db_session, request, steward, utcnow(), settings, comment="Not needed.")

    assert request.state is RequestState.REJECTED
    assert request.decision_comment == "Not needed."
    assert not projects.is_current_member(project, newcomer.id)
    assert charges(db_session, project) == []
    assert events(db_session, "change_rejected")[-1].details["comment"] == "Not needed."


def test_requests_decided_once(db_session: Session, settings: Settings) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    request = ask(
        db_session, settings, project, K.ADD_MEMBER, user_id=make_researcher(db_session).id
    )
    steward = make_staff(db_session)
    requests.approve_request(db_session, request, steward, utcnow(), settings)

    with pytest.raises(Conflict, match="approved already"):
        requests.reject_request(db_session, request, steward, utcnow(), settings, comment="x")
    with pytest.raises(Conflict):
        requests.withdraw_request(db_session, request, project.lead, utcnow(), settings)
    assert len(charges(db_session, project)) == 1


def test_requests_checked_again_at_decision(db_session: Session, settings: Settings) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    newcomer = make_researcher(db_session)
    request = ask(db_session, settings, project, K.ADD_MEMBER, user_id=newcomer.id)
    newcomer.statement_valid_until = today() - timedelta(days=1)

    with pytest.raises(Invalid, match="confidentiality statement"):
        requests.approve_request(db_session, request, make_staff(db_session), utcnow(), settings)

    assert request.state is RequestState.PENDING


def test_requests_project_frozen_meanwhile_still_decidable(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    request = ask(
        db_session, settings, project, K.ADD_MEMBER, user_id=make_researcher(db_session).id
    )
    projects.freeze_project(db_session, project, None, utcnow(), settings, comment="Audit.")

    requests.approve_request(db_session, request, make_staff(db_session), utcnow(), settings)

    assert request.state is RequestState.APPROVED


def test_requests_pending_ones_close_when_the_project_is_archived(
    db_session: Session, settings: Settings
) -> None:
    project = expired_project(db_session, settings, days_ago=1)
    request = ask(
        db_session, settings, project, K.EXTENSION,
        new_end_date=today() + timedelta(days=30), reason="Revision.",
    )  # fmt: skip

    projects.archive_project(db_session, project, None, utcnow(), settings)

    assert request.state is RequestState.REJECTED
    assert request.decision_comment == "The project was archived."
    queue, _ = requests.list_requests(db_session, None, state=RequestState.PENDING, limit=500)
    assert request.id not in {r.id for r in queue}
    with pytest.raises(Conflict):
        requests.approve_request(db_session, request, make_staff(db_session), utcnow(), settings)
    assert events(db_session, "project_archived")[-1].details["requests_closed"] == [request.id]


# --- withdrawal and locking -----------------------------------------------------------------------


def test_requests_lead_withdraws(db_session: Session, settings: Settings) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, state=S.ACTIVE, members=[member])
    request = ask(
        db_session, settings, project, K.ADD_MEMBER, user_id=make_researcher(db_session).id
    )

    with pytest.raises(Forbidden):
        requests.withdraw_request(db_session, request, member, utcnow(), settings)
    with pytest.raises(Forbidden):
        requests.withdraw_request(db_session, request, make_staff(db_session), utcnow(), settings)
    requests.withdraw_request(
        db_session, request, project.lead, utcnow(), settings, version=request.version
    )

    assert request.state is RequestState.WITHDRAWN
    assert events(db_session, "change_withdrawn")[-1].object_id == str(request.id)


def test_requests_stale_version_is_a_conflict(db_session: Session, settings: Settings) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    request = ask(
        db_session, settings, project, K.ADD_MEMBER, user_id=make_researcher(db_session).id
    )
    stale = request.version
    requests.withdraw_request(db_session, request, project.lead, utcnow(), settings)

    with pytest.raises(Conflict) as caught:
        requests.approve_request(
            db_session, request, make_staff(db_session), utcnow(), settings, version=stale
        )

    assert caught.value.details["rule"] == "optimistic_lock"


def test_requests_concurrent_decisions_one_wins(isolated_engine: tuple[Settings, Engine]) -> None:
    settings, engine = isolated_engine
    with Session(engine, info={"settings": settings}) as session:
        project = make_project(session, state=S.ACTIVE)
        newcomer = make_researcher(session)
        request = ask(session, settings, project, K.ADD_MEMBER, user_id=newcomer.id)
        stewards = [make_staff(session).id, make_staff(session).id]
        session.commit()
        request_id = request.id
    first = Session(engine, info={"settings": settings})
    second = Session(engine, info={"settings": settings}, expire_on_commit=False)
    try:
        r2 = requests.get_request(second, request_id)
        r2.project.members  # noqa: B018 (load what the decision reads)
        decider = second.get(User, stewards[1])
        second.commit()
        r1 = requests.get_request(first, request_id)
        requests.approve_request(first, r1, first.get(User, stewards[0]), utcnow(), settings)
        first.commit()

        with pytest.raises(Conflict):
            requests.reject_request(second, r2, decider, utcnow(), settings, comment="No.")
        second.rollback()
    finally:
        first.close()
        second.close()
    with Session(engine) as session:
        assert requests.get_request(session, request_id).state is RequestState.APPROVED
        assert len(list(session.scalars(select(Charge)))) == 1


# --- reading and the trail ------------------------------------------------------------------------


def test_requests_queue_and_visibility(db_session: Session, settings: Settings) -> None:
    mine = make_project(db_session, state=S.ACTIVE)
    other = make_project(db_session, state=S.ACTIVE)
    a = ask(db_session, settings, mine, K.ADD_MEMBER, user_id=make_researcher(db_session).id)
    b = ask(db_session, settings, other, K.ADD_MEMBER, user_id=make_researcher(db_session).id)
    requests.withdraw_request(db_session, b, other.lead, utcnow(), settings)
    steward = make_staff(db_session)

    queue, _ = requests.list_requests(db_session, steward, state=RequestState.PENDING, limit=200)
    own, total = requests.list_requests(db_session, mine.lead, limit=200)

    assert a.id in {r.id for r in queue}
    assert b.id not in {r.id for r in queue}
    assert [r.id for r in own] == [a.id]
    assert total == 1


def test_requests_every_change_is_audited_and_notified(
    db_session: Session, settings: Settings
) -> None:
    make_staff(db_session)  # someone to tell about new requests
    project = make_project(db_session, state=S.ACTIVE)
    before = db_session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1))
    mail_before = db_session.scalar(
        select(OutboxMessage.id).order_by(OutboxMessage.id.desc()).limit(1)
    )

    request = ask(
        db_session, settings, project, K.ADD_MEMBER, user_id=make_researcher(db_session).id
    )
    requests.approve_request(db_session, request, make_staff(db_session), utcnow(), settings)
    second = ask(
        db_session, settings, project, K.EXTENSION,
        new_end_date=project.end_date + timedelta(days=3), reason="A",
    )  # fmt: skip
    requests.reject_request(
        db_session, second, make_staff(db_session), utcnow(), settings, comment="No."
    )

    actions = [
        e.action
        for e in db_session.scalars(
            select(AuditEvent).where(AuditEvent.seq > (before or 0)).order_by(AuditEvent.seq)
        )
    ]
    assert actions == [
        "change_requested",
        "project_member_added",
        "change_approved",
        "change_requested",
        "change_rejected",
    ]
    subjects = [
        m.subject
        for m in db_session.scalars(
            select(OutboxMessage).where(OutboxMessage.id > (mail_before or 0))
        )
    ]
    assert any("change requested" in s for s in subjects)
    assert any("change approved" in s for s in subjects)
    assert any("change rejected" in s for s in subjects)
    assert audit.verify_chain(db_session).ok
    history = [e.action for e in projects.project_history(db_session, project, limit=500)[0]]
    assert {"change_requested", "change_approved", "change_rejected"} <= set(history)
