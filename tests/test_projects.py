"""Projects: the application, the draft, and every step of the state machine (allowed and
forbidden) for every kind of actor, with its effects, audit rows and notifications; optimistic
locking; deletion records. On SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from project_factories import (
    make_dataset_version,
    make_institution,
    make_project,
    make_researcher,
    make_staff,
    make_tariff,
    today,
    utcnow,
)
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from orchestrator import applications, audit, policy, project_rules, projects
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, Invalid, NotFound
from orchestrator.models import (
    AuditEvent,
    ChangeRequest,
    DeletionRecord,
    Grant,
    MemberRole,
    OutboxMessage,
    Project,
    ProjectState,
    RequestKind,
    Role,
    Tariff,
    User,
    UserStatus,
)
from orchestrator.policy import Action
from orchestrator.projects import ProjectAction

S = ProjectState
LEAD, MEMBER, OUTSIDER = "lead", "member", "outsider"
STEWARD, CHECKER, OPS, SYSTEM = "data_steward", "output_checker", "ops", "system"
ACTORS = [LEAD, MEMBER, OUTSIDER, STEWARD, CHECKER, OPS, SYSTEM]

# The state machine of the issue, written out here independently of `projects.TRANSITIONS`:
# (from state, action) -> (to state, who besides the system may take the step).
EXPECTED: dict[tuple[ProjectState, str], tuple[ProjectState, frozenset[str]]] = {
    (S.DRAFT, "submit"): (S.SUBMITTED, frozenset({LEAD})),
    (S.DRAFT, "delete"): (S.DELETED, frozenset({LEAD, STEWARD})),
    (S.SUBMITTED, "return"): (S.DRAFT, frozenset({STEWARD})),
    (S.SUBMITTED, "reject"): (S.REJECTED, frozenset({STEWARD})),
    (S.SUBMITTED, "quote"): (S.QUOTED, frozenset({STEWARD})),
    (S.QUOTED, "return"): (S.DRAFT, frozenset({STEWARD})),
    (S.QUOTED, "reject"): (S.REJECTED, frozenset({STEWARD})),
    (S.QUOTED, "accept"): (S.ACCEPTED, frozenset({LEAD})),
    (S.ACCEPTED, "return"): (S.DRAFT, frozenset({STEWARD})),
    (S.ACCEPTED, "reject"): (S.REJECTED, frozenset({STEWARD})),
    # the start date (today) has come: approval activates at once
    (S.ACCEPTED, "approve"): (S.ACTIVE, frozenset({STEWARD})),
    (S.REJECTED, "delete"): (S.DELETED, frozenset({STEWARD})),
    (S.APPROVED, "activate"): (S.ACTIVE, frozenset({STEWARD})),
    (S.APPROVED, "expire"): (S.EXPIRED, frozenset({STEWARD})),
    (S.ACTIVE, "freeze"): (S.FROZEN, frozenset({STEWARD})),
    (S.ACTIVE, "expire"): (S.EXPIRED, frozenset({STEWARD})),
    (S.FROZEN, "unfreeze"): (S.ACTIVE, frozenset({STEWARD})),
    (S.FROZEN, "expire"): (S.EXPIRED, frozenset({STEWARD})),
    (S.EXPIRED, "archive"): (S.ARCHIVED, frozenset({STEWARD})),
    (S.ARCHIVED, "delete"): (S.DELETED, frozenset({STEWARD})),
}
EVENT_OF = {
    "submit": "submitted",
    "return": "returned",
    "reject": "rejected",
    "quote": "quoted",
    "accept": "accepted",
    "approve": "approved",
    "activate": "activated",
    "freeze": "frozen",
    "unfreeze": "unfrozen",
    "expire": "expired",
    "archive": "archived",
    "delete": "deleted",
}
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)  # archived long enough ago to be deleted


def expected_outcome(state: ProjectState, action: str, actor: str) -> Any:
    """The state reached, or the error class, when `actor` tries `action` from `state`."""
    if actor == OUTSIDER:
        return NotFound  # a project one is not in does not exist for a researcher
    entry = EXPECTED.get((state, action))
    if entry is None:
        could_ever = actor == SYSTEM or any(
            actor in who for (_, a), (_, who) in EXPECTED.items() if a == action
        )
        return Conflict if could_ever else Forbidden
    target, who = entry
    return target if actor == SYSTEM or actor in who else Forbidden


@dataclass
class World:
    project: Project
    actors: dict[str, User | None]


@pytest.fixture
def settings(db_settings: Settings, db_session: Session) -> Settings:
    """The session's settings, also on the session (notifications read them from there)."""
    db_session.info["settings"] = db_settings
    return db_settings


@pytest.fixture
def tariff(db_session: Session) -> Tariff:
    return make_tariff(db_session)


def make_world(session: Session, state: ProjectState) -> World:
    lead, member, outsider = (make_researcher(session) for _ in range(3))
    project = make_project(session, state=state, lead=lead, members=[member], archived_at=LONG_AGO)
    actors: dict[str, User | None] = {
        LEAD: lead,
        MEMBER: member,
        OUTSIDER: outsider,
        STEWARD: make_staff(session, Role.DATA_STEWARD),
        CHECKER: make_staff(session, Role.OUTPUT_CHECKER),
        OPS: make_staff(session, Role.OPS),
        SYSTEM: None,
    }
    return World(project, actors)


def audit_actions(session: Session, project: Project) -> list[str]:
    rows, _ = projects.project_history(session, project, limit=500)
    return [row.action for row in rows]


def table() -> list[Any]:
    return [
        pytest.param(state, action, actor, id=f"{state.value}-{action.value}-{actor}")
        for state in ProjectState
        for action in ProjectAction
        for actor in ACTORS
    ]


# --- the state machine, table-driven --------------------------------------------------------------


@pytest.mark.parametrize(("state", "action", "actor"), table())
def test_projects_transition_table(
    db_session: Session,
    settings: Settings,
    tariff: Tariff,
    state: ProjectState,
    action: ProjectAction,
    actor: str,
) -> None:
    world = make_world(db_session, state)
    project = world.project
    before = audit_actions(db_session, project)
    outcome = expected_outcome(state, action.value, actor)

    def act() -> Project:
        return projects.transition(
            db_session,
            project,
            action,
            world.actors[actor],
            utcnow(),
            settings,
            version=project.version,
            comment="Because.",
        )

    if isinstance(outcome, ProjectState):
        act()
        assert project.state is outcome
        assert f"project_{EVENT_OF[action.value]}" in audit_actions(db_session, project)
    else:
        with pytest.raises(outcome):
            act()
        assert project.state is state
        assert audit_actions(db_session, project) == before


@pytest.mark.parametrize("state", list(ProjectState))
@pytest.mark.parametrize("actor", ACTORS)
def test_projects_actions_for_matches_the_table(
    db_session: Session, settings: Settings, state: ProjectState, actor: str
) -> None:
    world = make_world(db_session, state)

    actions = projects.actions_for(world.project, world.actors[actor])

    expected = sorted(
        a
        for (s, a), (_, who) in EXPECTED.items()
        if s is state and (actor == SYSTEM or actor in who)
    )
    assert sorted(a.value for a in actions) == expected


@pytest.mark.parametrize(("state", "action"), sorted(EXPECTED, key=str))
def test_projects_every_step_is_audited_and_notified(
    db_session: Session, settings: Settings, tariff: Tariff, state: ProjectState, action: str
) -> None:
    world = make_world(db_session, state)
    project = world.project
    before = db_session.scalar(select(OutboxMessage.id).order_by(OutboxMessage.id.desc()).limit(1))

    projects.transition(
        db_session, project, ProjectAction(action), None, utcnow(), settings, comment="Because."
    )

    event = EVENT_OF[action]
    row = db_session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == f"project_{event}", AuditEvent.object_id == str(project.id))
        .order_by(AuditEvent.seq.desc())
    ).first()
    assert row is not None
    assert row.actor == audit.SYSTEM_ACTOR
    assert row.details["from"] == state.value
    mails = db_session.scalars(select(OutboxMessage).where(OutboxMessage.id > (before or 0))).all()
    assert any(f"Project {project.code}" in m.subject for m in mails)
    assert audit.verify_chain(db_session).ok


# --- refusals and their messages ------------------------------------------------------------------


def test_projects_conflict_names_state_and_possible_steps(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.DRAFT)

    with pytest.raises(Conflict) as caught:
        projects.transition(db_session, project, ProjectAction.APPROVE, None, utcnow(), settings)

    assert caught.value.message == (
        f"Project {project.code} is draft: it cannot approve from there. "
        "Possible now: submit, delete."
    )
    assert caught.value.details["state"] == "draft"
    assert caught.value.details["allowed_actions"] == ["submit", "delete"]


def test_projects_conflict_on_final_state_says_none(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.DELETED)

    with pytest.raises(Conflict, match="Possible now: none"):
        projects.transition(db_session, project, ProjectAction.FREEZE, None, utcnow(), settings)


def test_projects_stale_version_is_a_conflict(db_session: Session, settings: Settings) -> None:
    project = make_project(db_session, state=S.DRAFT)

    with pytest.raises(Conflict) as caught:
        projects.submit_project(
            db_session, project, project.lead, utcnow(), settings, version=project.version - 1
        )

    assert caught.value.details["rule"] == "optimistic_lock"
    assert project.state is S.DRAFT


@pytest.mark.parametrize(
    "action", [ProjectAction.RETURN, ProjectAction.REJECT, ProjectAction.FREEZE]
)
def test_projects_step_needs_a_comment(
    db_session: Session, settings: Settings, action: ProjectAction
) -> None:
    state = S.ACTIVE if action is ProjectAction.FREEZE else S.SUBMITTED
    project = make_project(db_session, state=state)

    with pytest.raises(Invalid, match="comment"):
        projects.transition(db_session, project, action, None, utcnow(), settings, comment="  ")


def test_projects_concurrent_steps_one_wins(isolated_engine: tuple[Settings, Engine]) -> None:
    settings, engine = isolated_engine
    with Session(engine, info={"settings": settings}) as session:
        project = make_project(session, state=S.ACTIVE)
        steward = make_staff(session)
        session.commit()
        code, steward_id = project.code, steward.id
    first = Session(engine, info={"settings": settings})
    second = Session(engine, info={"settings": settings}, expire_on_commit=False)
    try:
        p2 = projects.get_project_by_code(second, code)
        second.get(User, steward_id)
        second.commit()  # what it read is kept; SQLite cannot upgrade a stale read to a write
        p1 = projects.get_project_by_code(first, code)
        version = p1.version
        assert p2.version == version
        projects.freeze_project(
            first, p1, first.get(User, steward_id), utcnow(), settings, version=version,
            comment="Audit finding.",
        )  # fmt: skip
        first.commit()

        with pytest.raises(Conflict):
            projects.expire_project(
                second, p2, second.get(User, steward_id), utcnow(), settings, version=version
            )
        second.rollback()
    finally:
        first.close()
        second.close()
    with Session(engine) as session:
        assert projects.get_project_by_code(session, code).state is S.FROZEN


# --- applying -------------------------------------------------------------------------------------


def application(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "title": "Commuting and wellbeing",
        "purpose": "How commuting time relates to sick leave.",
        "compute_size": "small",
        "start_date": today() + timedelta(days=10),
        "end_date": today() + timedelta(days=375),
        "legal_basis": "Art. 41",
        "expected_publications": "One paper",
    }
    return values | overrides


def test_projects_researcher_applies_as_lead(db_session: Session, settings: Settings) -> None:
    lead, member = make_researcher(db_session), make_researcher(db_session)
    version = make_dataset_version(db_session)
    make_tariff(db_session)

    project = applications.apply_project(
        db_session,
        settings,
        actor=lead,
        now=utcnow(),
        dataset_version_ids=[version.id, version.id],
        member_ids=[member.id, lead.id],
        **application(),
    )

    assert project.state is S.DRAFT
    assert project_rules.CODE_PATTERN.fullmatch(project.code)
    assert project.lead_id == lead.id
    assert project.institution_id == lead.institution_id
    roles = {(m.user_id, m.role) for m in project.members}
    assert roles == {(lead.id, MemberRole.LEAD), (member.id, MemberRole.RESEARCHER)}
    assert [r.dataset_version_id for r in project.requested_datasets] == [version.id]
    assert project.quote_total is not None  # an estimate from the tariff in force
    assert project.quoted_at is None
    row = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "project_applied")).one()
    assert row.details["code"] == project.code
    assert "purpose" not in row.details  # free text never enters the audit trail


def test_projects_researcher_cannot_name_another_lead_or_a_code(
    db_session: Session, settings: Settings
) -> None:
    me, other = make_researcher(db_session), make_researcher(db_session)

    with pytest.raises(Forbidden, match="own project"):
        applications.apply_project(
            db_session, settings, actor=me, now=utcnow(), lead_id=other.id, **application()
        )
    with pytest.raises(Forbidden, match="codes"):
        applications.apply_project(
            db_session, settings, actor=me, now=utcnow(), code="4242", **application()
        )


def test_projects_staff_apply_with_a_code(db_session: Session, settings: Settings) -> None:
    steward, lead = make_staff(db_session), make_researcher(db_session)

    project = applications.apply_project(
        db_session, settings, actor=steward, now=utcnow(), lead_id=lead.id, code="4242",
        **application(),
    )  # fmt: skip

    assert project.code == "4242"
    with pytest.raises(Conflict, match="taken"):
        applications.apply_project(
            db_session, settings, actor=None, now=utcnow(), lead_id=lead.id, code="4242",
            **application(),
        )  # fmt: skip


@pytest.mark.parametrize("code", ["123", "123456", "0123", "12a4", " "])
def test_projects_bad_code_is_invalid(db_session: Session, settings: Settings, code: str) -> None:
    lead = make_researcher(db_session)

    with pytest.raises(Invalid, match="4 or 5 digits"):
        applications.apply_project(
            db_session, settings, actor=None, now=utcnow(), lead_id=lead.id, code=code,
            **application(),
        )  # fmt: skip


@pytest.mark.parametrize("role", [Role.OUTPUT_CHECKER, Role.OPS])
def test_projects_other_staff_cannot_apply(
    db_session: Session, settings: Settings, role: Role
) -> None:
    lead = make_researcher(db_session)

    with pytest.raises(Forbidden):
        applications.apply_project(
            db_session, settings, actor=make_staff(db_session, role), now=utcnow(),
            lead_id=lead.id, **application(),
        )  # fmt: skip


def _lapsed(session: Session, what: str) -> User:
    if what == "no_statement":
        return make_researcher(session, statement_valid_until=None)
    if what == "statement_expired":
        return make_researcher(session, statement_valid_until=today() - timedelta(days=1))
    if what == "institution_lapsed":
        old = make_institution(
            session,
            authorised_from=today() - timedelta(days=400),
            authorised_until=today() - timedelta(days=1),
        )
        return make_researcher(session, institution=old)
    if what == "suspended":
        return make_researcher(session, status=UserStatus.SUSPENDED)
    return make_staff(session)


LAPSES = ["no_statement", "statement_expired", "institution_lapsed", "suspended", "staff"]


@pytest.mark.parametrize("lapse", LAPSES)
def test_projects_lead_without_standing_is_refused(
    db_session: Session, settings: Settings, lapse: str
) -> None:
    lead = _lapsed(db_session, lapse)

    with pytest.raises(Invalid) as caught:
        applications.apply_project(
            db_session, settings, actor=None, now=utcnow(), lead_id=lead.id, **application()
        )

    assert caught.value.details["rule"] == "member_standing"
    assert caught.value.details["field"] == "lead_id"


@pytest.mark.parametrize("lapse", LAPSES)
def test_projects_member_without_standing_is_refused(
    db_session: Session, settings: Settings, lapse: str
) -> None:
    lead, member = make_researcher(db_session), _lapsed(db_session, lapse)

    with pytest.raises(Invalid) as caught:
        applications.apply_project(
            db_session, settings, actor=lead, now=utcnow(), member_ids=[member.id],
            **application(),
        )  # fmt: skip

    assert caught.value.details == {
        "field": "member_ids",
        "rule": "member_standing",
        "user_id": member.id,
    }


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"start_date": date(2000, 1, 1), "end_date": date(2000, 6, 1)}, "start_not_past"),
        ({"end_date": today() + timedelta(days=10)}, "end_after_start"),
        ({"end_date": today() + timedelta(days=10 + 366 * 5)}, "max_project_years"),
        ({"compute_size": "galactic"}, "compute_size"),
    ],
    ids=["start-past", "end-before-start", "too-long", "size"],
)
def test_projects_invalid_application(
    db_session: Session, settings: Settings, overrides: dict[str, Any], rule: str
) -> None:
    lead = make_researcher(db_session)

    with pytest.raises(Invalid) as caught:
        applications.apply_project(
            db_session, settings, actor=lead, now=utcnow(), **application(**overrides)
        )

    assert caught.value.details["rule"] == rule


def test_projects_longest_period_is_allowed(db_session: Session, settings: Settings) -> None:
    lead = make_researcher(db_session)
    start = today() + timedelta(days=1)
    end = start.replace(year=start.year + settings.max_project_years)

    project = applications.apply_project(
        db_session, settings, actor=lead, now=utcnow(),
        **application(start_date=start, end_date=end),
    )  # fmt: skip

    assert project.end_date == end


@pytest.mark.parametrize("field", ["title", "purpose"])
def test_projects_empty_or_control_text_is_invalid(
    db_session: Session, settings: Settings, field: str
) -> None:
    lead = make_researcher(db_session)
    for value in ["   ", "bad\x00text", "x" * 20_001]:
        with pytest.raises(Invalid):
            applications.apply_project(
                db_session, settings, actor=lead, now=utcnow(), **application(**{field: value})
            )


def test_projects_unavailable_or_unknown_dataset_is_invalid(
    db_session: Session, settings: Settings
) -> None:
    lead = make_researcher(db_session)
    future = make_dataset_version(db_session, available_from=today() + timedelta(days=30))
    withdrawn = make_dataset_version(
        db_session,
        available_from=today() - timedelta(days=60),
        available_until=today() - timedelta(days=1),
    )

    for version_id in (future.id, withdrawn.id, 2_000_000):
        with pytest.raises(Invalid) as caught:
            applications.apply_project(
                db_session, settings, actor=lead, now=utcnow(),
                dataset_version_ids=[version_id], **application(),
            )  # fmt: skip
        assert caught.value.details["field"] == "dataset_version_ids"


# --- the draft ------------------------------------------------------------------------------------


def test_projects_update_draft_changes_fields_and_membership_history(
    db_session: Session, settings: Settings, tariff: Tariff
) -> None:
    old_member, new_member = make_researcher(db_session), make_researcher(db_session)
    project = make_project(db_session, state=S.DRAFT, members=[old_member])
    version = make_dataset_version(db_session)
    now = utcnow()

    changes = applications.update_draft(
        db_session,
        project,
        project.lead,
        now,
        settings,
        version=project.version,
        title="A better title",
        purpose="A clearer purpose.",
        end_date=project.end_date + timedelta(days=30),
        member_ids=[new_member.id],
        dataset_version_ids=[version.id],
    )

    assert changes["title"] == ["Income and health", "A better title"]
    assert changes["purpose"] == "changed"
    assert changes["member_ids"] == [[old_member.id], [new_member.id]]
    assert project.title == "A better title"
    rows = {m.user_id: m for m in project.members}
    assert rows[old_member.id].removed_at == now
    assert rows[new_member.id].removed_at is None
    assert [r.dataset_version_id for r in project.requested_datasets] == [version.id]
    event = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "project_updated")
    ).one()
    assert "A clearer purpose." not in str(event.details)


def test_projects_update_draft_readding_a_member_gives_a_new_row(
    db_session: Session, settings: Settings
) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, state=S.DRAFT, members=[member])

    applications.update_draft(
        db_session, project, None, utcnow(), settings, version=project.version, member_ids=[]
    )
    applications.update_draft(
        db_session, project, None, utcnow(), settings, version=project.version,
        member_ids=[member.id],
    )  # fmt: skip

    rows = [m for m in projects.membership_history(project) if m.user_id == member.id]
    assert len(rows) == 2
    assert rows[0].removed_at is not None
    assert rows[1].removed_at is None
    assert projects.is_current_member(project, member.id)
    assert projects.is_current_member(project, project.lead_id)


@pytest.mark.parametrize("state", [s for s in ProjectState if s is not S.DRAFT])
def test_projects_only_a_draft_is_edited(
    db_session: Session, settings: Settings, state: ProjectState
) -> None:
    project = make_project(db_session, state=state)
    end = project.end_date

    with pytest.raises(Conflict, match="only a draft"):
        applications.update_draft(
            db_session, project, project.lead, utcnow(), settings, version=project.version,
            end_date=end + timedelta(days=300),
        )  # fmt: skip

    assert project.end_date == end


def test_projects_draft_edited_by_lead_or_steward_only(
    db_session: Session, settings: Settings
) -> None:
    member, outsider = make_researcher(db_session), make_researcher(db_session)
    project = make_project(db_session, state=S.DRAFT, members=[member])

    with pytest.raises(Forbidden):
        applications.update_draft(
            db_session, project, member, utcnow(), settings, version=project.version, title="X"
        )
    with pytest.raises(NotFound):
        applications.update_draft(
            db_session, project, outsider, utcnow(), settings, version=project.version, title="X"
        )
    for role in (Role.OUTPUT_CHECKER, Role.OPS):
        with pytest.raises(Forbidden):
            applications.update_draft(
                db_session, project, make_staff(db_session, role), utcnow(), settings,
                version=project.version, title="X",
            )  # fmt: skip
    applications.update_draft(
        db_session, project, make_staff(db_session), utcnow(), settings,
        version=project.version, title="Y",
    )  # fmt: skip
    assert project.title == "Y"


def test_projects_update_draft_stale_version(db_session: Session, settings: Settings) -> None:
    project = make_project(db_session, state=S.DRAFT)

    with pytest.raises(Conflict, match="reload"):
        applications.update_draft(
            db_session, project, project.lead, utcnow(), settings,
            version=project.version + 1, title="X",
        )  # fmt: skip


# --- effects of the steps -------------------------------------------------------------------------


def test_projects_submit_checks_members_standing(db_session: Session, settings: Settings) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, state=S.DRAFT, members=[member])
    member.statement_valid_until = today() - timedelta(days=1)

    with pytest.raises(Conflict, match=member.username):
        projects.submit_project(db_session, project, project.lead, utcnow(), settings)


def test_projects_quote_stores_the_quote(
    db_session: Session, settings: Settings, tariff: Tariff
) -> None:
    member = make_researcher(db_session)
    project = make_project(
        db_session,
        state=S.SUBMITTED,
        members=[member],
        start_date=date(2030, 1, 1),
        end_date=date(2030, 12, 31),
    )
    now = utcnow()

    projects.quote_project(db_session, project, make_staff(db_session), now, settings)

    assert project.tariff_id == tariff.id
    assert project.quoted_at == now
    # base 1000 + 2 researchers x 12 months x 100 + 1 topic x 12 months x 50
    assert project.quote_total == Decimal("4000.00")
    assert [line["amount"] for line in project.quote_lines] == ["1000.00", "2400.00", "600.00"]
    event = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "project_quoted")
    ).one()
    assert event.details["quote_total"] == "4000.00"


def test_projects_quote_uses_the_tariff_of_the_application_date(
    db_session: Session, settings: Settings
) -> None:
    old = make_tariff(db_session, valid_from=date(2000, 1, 1))
    make_tariff(db_session, valid_from=today() - timedelta(days=10), base_fee="9999.00")
    project = make_project(db_session, state=S.SUBMITTED)
    project.created_at = utcnow() - timedelta(days=30)

    projects.quote_project(db_session, project, None, utcnow(), settings)

    assert project.tariff_id == old.id
    late = make_project(db_session, state=S.SUBMITTED)
    projects.quote_project(db_session, late, None, utcnow(), settings)
    assert late.tariff_id != old.id


def test_projects_quote_without_tariff_is_a_conflict(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.SUBMITTED)  # and no tariff at all

    with pytest.raises(Conflict, match="No tariff"):
        projects.quote_project(db_session, project, None, utcnow(), settings)
    assert project.state is S.SUBMITTED


def test_projects_return_keeps_comments_and_drops_the_quote(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.ACCEPTED)

    projects.return_project(
        db_session, project, make_staff(db_session), utcnow(), settings,
        comment="Name the legal basis.",
    )  # fmt: skip

    assert project.state is S.DRAFT
    assert project.review_comments == "Name the legal basis."
    assert project.quoted_at is None
    assert project.quote_accepted_at is None


def test_projects_approve_grants_and_activates_when_started(
    db_session: Session, settings: Settings
) -> None:
    versions = [make_dataset_version(db_session) for _ in range(2)]
    project = make_project(db_session, state=S.ACCEPTED, versions=versions)
    steward = make_staff(db_session)
    now = utcnow()

    projects.approve_project(db_session, project, steward, now, settings)

    assert project.state is S.ACTIVE
    assert project.approved_by_id == steward.id
    assert project.approved_at == now
    assert project.activated_at == now
    granted = db_session.scalars(select(Grant).where(Grant.project_id == project.id)).all()
    assert sorted(g.dataset_version_id for g in granted) == sorted(v.id for v in versions)
    actions = audit_actions(db_session, project)
    assert actions[-4:] == [
        "grant_created",
        "grant_created",
        "project_approved",
        "project_activated",
    ]


def test_projects_approve_before_start_waits_for_the_start_date(
    db_session: Session, settings: Settings
) -> None:
    start = today() + timedelta(days=10)
    project = make_project(db_session, state=S.ACCEPTED, start_date=start)

    projects.approve_project(db_session, project, None, utcnow(), settings)

    assert project.state is S.APPROVED
    with pytest.raises(Conflict, match="starts on"):
        projects.activate_project(db_session, project, None, utcnow(), settings)
    on_start = datetime.combine(start, datetime.min.time(), tzinfo=UTC) + timedelta(hours=1)
    projects.activate_project(db_session, project, None, on_start, settings)
    assert project.state is S.ACTIVE
    assert project.activated_at == on_start


def test_projects_approve_refuses_a_withdrawn_dataset(
    db_session: Session, settings: Settings
) -> None:
    version = make_dataset_version(db_session)
    project = make_project(db_session, state=S.ACCEPTED, versions=[version])
    version.available_until = today() - timedelta(days=1)

    with pytest.raises(Conflict, match="no longer"):
        projects.approve_project(db_session, project, None, utcnow(), settings)


@pytest.mark.parametrize("action", [ProjectAction.FREEZE, ProjectAction.EXPIRE])
def test_projects_freeze_and_expiry_keep_grants(
    db_session: Session, settings: Settings, action: ProjectAction
) -> None:
    project = make_project(db_session, state=S.ACTIVE)

    projects.transition(db_session, project, action, None, utcnow(), settings, comment="Why.")

    assert project.state not in projects.ACCESS_STATES
    grants = db_session.scalars(select(Grant).where(Grant.project_id == project.id)).all()
    assert grants
    assert all(g.revoked_at is None for g in grants)


def test_projects_freeze_unfreeze_round_trip(db_session: Session, settings: Settings) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    steward = make_staff(db_session)

    projects.freeze_project(db_session, project, steward, utcnow(), settings, comment="Check.")
    projects.unfreeze_project(db_session, project, steward, utcnow(), settings)

    assert project.state is S.ACTIVE
    assert audit_actions(db_session, project)[-2:] == ["project_frozen", "project_unfrozen"]


def test_projects_delete_writes_record_and_scrubs_text(
    db_session: Session, settings: Settings
) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, state=S.ARCHIVED, members=[member], archived_at=LONG_AGO)
    request = ChangeRequest(
        project_id=project.id,
        kind=RequestKind.EXTENSION,
        payload={"new_end_date": "2031-01-01"},
        reason="Personal circumstances of a colleague.",
        requested_by_id=project.lead_id,
    )
    db_session.add(request)
    db_session.flush()
    steward = make_staff(db_session)
    now = utcnow()

    projects.delete_project(db_session, project, steward, now, settings)

    assert project.state is S.DELETED
    assert project.deleted_at == now
    assert (project.purpose, project.legal_basis, project.expected_publications) == ("", "", "")
    assert request.reason == ""
    assert db_session.get(Project, project.id) is project  # the row stays
    record = db_session.scalars(
        select(DeletionRecord).where(DeletionRecord.project_id == project.id)
    ).one()
    assert record.project_code == project.code
    assert record.deleted_by == steward.username
    assert record.summary["members"] == 2
    assert record.summary["state_before"] == "archived"
    assert record.summary["change_requests"] == 1
    assert len(record.summary["grants"]) == 1
    assert record.summary["end_date"] == project.end_date.isoformat()
    grants = db_session.scalars(select(Grant).where(Grant.project_id == project.id)).all()
    assert all(g.revoked_at == now for g in grants)
    assert all(m.removed_at is not None for m in project.members)


def test_projects_people_keep_an_archive_for_its_retention_period(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.ARCHIVED, archived_at=utcnow() - timedelta(days=1))

    with pytest.raises(Conflict, match="kept until"):
        projects.delete_project(db_session, project, make_staff(db_session), utcnow(), settings)
    projects.delete_project(db_session, project, None, utcnow(), settings)  # the system decides

    assert project.state is S.DELETED


def test_projects_lead_discards_own_draft(db_session: Session, settings: Settings) -> None:
    project = make_project(db_session, state=S.DRAFT)

    projects.delete_project(db_session, project, project.lead, utcnow(), settings)

    assert project.state is S.DELETED
    assert db_session.scalars(
        select(DeletionRecord).where(DeletionRecord.project_id == project.id)
    ).one()


# --- reading --------------------------------------------------------------------------------------


def test_projects_list_is_narrowed_to_own_projects(db_session: Session, settings: Settings) -> None:
    me = make_researcher(db_session)
    mine = make_project(db_session, lead=me)
    as_member = make_project(db_session, members=[me])
    other = make_project(db_session)
    left = make_project(db_session, members=[me])
    for row in left.members:
        if row.user_id == me.id:
            row.removed_at = utcnow()
    db_session.flush()

    items, total = projects.list_projects(db_session, me, limit=200)

    codes = {p.code for p in items}
    assert codes == {mine.code, as_member.code, left.code}  # also projects one has left
    assert other.code not in codes
    assert total == 3


def test_projects_list_filters_by_state(db_session: Session, settings: Settings) -> None:
    steward = make_staff(db_session)
    active = make_project(db_session, state=S.ACTIVE)
    make_project(db_session, state=S.DRAFT)

    items, _ = projects.list_projects(db_session, steward, state=S.ACTIVE, limit=200)

    assert active.code in {p.code for p in items}
    assert all(p.state is S.ACTIVE for p in items)


def test_projects_history_holds_project_request_and_grant_events(
    db_session: Session, settings: Settings
) -> None:
    project = make_project(db_session, state=S.ACCEPTED)

    projects.approve_project(db_session, project, None, utcnow(), settings)

    kinds = {row.object_type for row in projects.project_history(db_session, project)[0]}
    assert kinds == {"project", "grant"}
    other = make_project(db_session, state=S.ACCEPTED)
    assert projects.project_history(db_session, other)[1] == 0


def test_projects_without_costs_drops_amounts() -> None:
    details = {"code": "1234", "quote_total": "10.00", "amount": "1.00", "from": "submitted"}

    assert projects.without_costs(details) == {"code": "1234", "from": "submitted"}


def test_projects_find_by_code_refuses_non_codes(db_session: Session) -> None:
    for code in ["", "12", "abcd", "1234567", "12%4"]:
        assert projects.find_project_by_code(db_session, code) is None
    with pytest.raises(NotFound):
        projects.get_project_by_code(db_session, "99999")


# --- policy: project actions ----------------------------------------------------------------------


def test_projects_policy_scopes_of_project_actions() -> None:
    assert policy.required_scope(Action.PROJECT_READ) == policy.SCOPE_READ
    assert policy.required_scope(Action.PROJECT_COSTS_READ) == policy.SCOPE_READ
    writes = [a for a in Action if a.value.startswith("project.") and "read" not in a.value]
    assert writes
    assert {policy.required_scope(a) for a in writes} == {policy.SCOPE_PROJECTS_WRITE}
    assert policy.SCOPE_PROJECTS_WRITE in policy.scopes_for_role(Role.RESEARCHER)
    assert policy.SCOPE_PROJECTS_WRITE not in policy.scopes_for_role(Role.OPS)


def test_projects_policy_lead_reach(db_session: Session) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, members=[member])
    request = ChangeRequest(project=project, kind=RequestKind.EXTENSION, payload={})

    assert policy.can(project.lead, Action.PROJECT_SUBMIT, project)
    assert policy.can(project.lead, Action.PROJECT_REQUEST_CHANGE, request)
    assert policy.can_see(member, project)
    assert policy.can_see(member, request)
    assert not policy.can(member, Action.PROJECT_SUBMIT, project)
    assert not policy.can(member, Action.PROJECT_COSTS_READ, project)
    assert not policy.can_see(make_researcher(db_session), project)
    with pytest.raises(NotFound, match="Project"):
        policy.authorize(make_researcher(db_session), Action.PROJECT_READ, project)
    project.lead.status = UserStatus.SUSPENDED
    assert not policy.can_see(project.lead, project)
