"""Accounts: creation, usernames, activation links, status and role changes, resets, statements."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from admin_factories import (
    make_institution,
    make_token,
    make_user,
    make_user_session,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import accounts, passwords
from orchestrator.config import Environment, Settings
from orchestrator.errors import Conflict, Forbidden, Invalid, NotFound
from orchestrator.models import (
    ActivationLink,
    AuditEvent,
    Role,
    TokenKind,
    TokenState,
    User,
    UserSession,
    UserStatus,
)

PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment=Environment.TEST, data_dir=tmp_path)


def actions(session: Session, since: int = 0) -> list[str]:
    return list(
        session.scalars(
            select(AuditEvent.action).where(AuditEvent.seq > since).order_by(AuditEvent.seq)
        )
    )


def last_seq(session: Session) -> int:
    return session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1)) or 0


def new_researcher(
    session: Session, settings: Settings, username: str = "ann.smit", **kwargs: object
) -> tuple[User, str]:
    fields: dict[str, object] = {
        "username": username,
        "email": "ann@Example.ORG",
        "full_name": "Ann Smit",
        "role": Role.RESEARCHER,
    }
    fields.update(kwargs)
    if "institution_id" not in fields:
        fields["institution_id"] = make_institution(session).id
    return accounts.create_account(session, settings, **fields)  # type: ignore[arg-type]


def open_sessions(session: Session, user: User) -> int:
    return len(
        session.scalars(
            select(UserSession).where(
                UserSession.user_id == user.id, UserSession.ended_at.is_(None)
            )
        ).all()
    )


# --- creation -------------------------------------------------------------------------------------


def test_accounts_create_researcher_pending_with_link(
    db_session: Session, settings: Settings
) -> None:
    steward = make_user(db_session, role=Role.DATA_STEWARD)
    before = last_seq(db_session)

    user, secret = new_researcher(db_session, settings, username=" Ann.Smit ", actor=steward)

    assert user.username == "ann.smit"
    assert user.email == "ann@example.org"
    assert user.status is UserStatus.PENDING
    assert user.password_hash is None
    link = db_session.scalars(select(ActivationLink).where(ActivationLink.user_id == user.id)).one()
    assert link.secret_hash == accounts.hash_secret(secret) != secret
    assert link.expires_at - datetime.now(UTC) > timedelta(hours=71)
    assert actions(db_session, before) == ["user_created", "activation_link_issued"]


def test_accounts_create_staff_without_institution(db_session: Session, settings: Settings) -> None:
    user, _ = accounts.create_account(
        db_session,
        settings,
        username="checker1",
        email="c@example.org",
        full_name="C",
        role=Role.OUTPUT_CHECKER,
    )

    assert user.institution_id is None


def test_accounts_staff_with_institution_refused(db_session: Session, settings: Settings) -> None:
    institution = make_institution(db_session)

    with pytest.raises(Invalid, match="no institution"):
        accounts.create_account(
            db_session,
            settings,
            username="steward2",
            email="s@example.org",
            full_name="S",
            role=Role.DATA_STEWARD,
            institution_id=institution.id,
        )


def test_accounts_researcher_without_institution_refused(
    db_session: Session, settings: Settings
) -> None:
    with pytest.raises(Invalid, match="must belong to an institution"):
        new_researcher(db_session, settings, institution_id=None)


@pytest.mark.parametrize(
    ("start", "end"),
    [(-400, -1), (10, 400)],
    ids=["expired", "not_yet_started"],
)
def test_accounts_unauthorised_institution_blocks_new_researchers(
    db_session: Session, settings: Settings, start: int, end: int
) -> None:
    today = datetime.now(UTC).date()
    institution = make_institution(
        db_session,
        authorised_from=today + timedelta(days=start),
        authorised_until=today + timedelta(days=end),
    )

    with pytest.raises(Invalid, match="does not cover today") as caught:
        new_researcher(db_session, settings, institution_id=institution.id)

    assert caught.value.details["rule"] == "institution_authorised"


def test_accounts_unknown_institution_is_invalid(db_session: Session, settings: Settings) -> None:
    with pytest.raises(Invalid, match="no institution"):
        new_researcher(db_session, settings, institution_id=987_654)


@pytest.mark.parametrize(
    "raw",
    ["ab", "-ann", ".ann", "ann smit", "ann@example", "ann/../x", "a" * 65, "x" * 100_000, ""],
)
def test_accounts_bad_username_refused(db_session: Session, settings: Settings, raw: str) -> None:
    with pytest.raises(Invalid, match="3 to 64 characters"):
        new_researcher(db_session, settings, username=raw)


def test_accounts_fullwidth_username_collides_after_nfkc(
    db_session: Session, settings: Settings
) -> None:
    new_researcher(db_session, settings, username="john")

    fullwidth_john = "\uff2a\uff4f\uff48\uff4e"

    with pytest.raises(Conflict, match="taken"):
        new_researcher(db_session, settings, username=fullwidth_john)


def test_accounts_cyrillic_lookalike_username_refused(
    db_session: Session, settings: Settings
) -> None:
    with pytest.raises(Invalid):
        new_researcher(db_session, settings, username="j\u043ehn")  # Cyrillic "o"


def test_accounts_username_case_collision(db_session: Session, settings: Settings) -> None:
    new_researcher(db_session, settings, username="mary")

    with pytest.raises(Conflict):
        new_researcher(db_session, settings, username="MARY")


@pytest.mark.parametrize("email", ["", "no-at-sign", "a@b", "a b@example.org", "a@" + "x" * 260])
def test_accounts_bad_email_refused(db_session: Session, settings: Settings, email: str) -> None:
    with pytest.raises(Invalid, match="e-mail"):
        new_researcher(db_session, settings, email=email)


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "bell\x07"])
def test_accounts_bad_full_name_refused(db_session: Session, settings: Settings, name: str) -> None:
    with pytest.raises(Invalid, match="full name"):
        new_researcher(db_session, settings, full_name=name)


def test_accounts_steward_cannot_create_ops(db_session: Session, settings: Settings) -> None:
    steward = make_user(db_session, role=Role.DATA_STEWARD)

    with pytest.raises(Forbidden, match="ops"):
        accounts.create_account(
            db_session,
            settings,
            username="ops2",
            email="o@example.org",
            full_name="O",
            role=Role.OPS,
            actor=steward,
        )


def test_accounts_system_may_create_ops(db_session: Session, settings: Settings) -> None:
    user, _ = accounts.create_account(
        db_session, settings, username="ops3", email="o@example.org", full_name="O", role=Role.OPS
    )

    assert user.role is Role.OPS


# --- activation -----------------------------------------------------------------------------------


def test_accounts_activation_sets_password_and_activates(
    db_session: Session, settings: Settings
) -> None:
    user, secret = new_researcher(db_session, settings)
    before = last_seq(db_session)

    activated = accounts.activate_account(db_session, settings, secret=secret, password=PASSWORD)

    assert activated.id == user.id
    assert user.status is UserStatus.ACTIVE
    assert user.password_hash is not None
    assert passwords.verify_password(user.password_hash, PASSWORD)[0]
    assert "account_activated" in actions(db_session, before)


def test_accounts_activation_link_single_use(db_session: Session, settings: Settings) -> None:
    _, secret = new_researcher(db_session, settings)
    accounts.activate_account(db_session, settings, secret=secret, password=PASSWORD)

    with pytest.raises(Conflict, match="used already"):
        accounts.activate_account(db_session, settings, secret=secret, password=PASSWORD + "!")


def test_accounts_activation_link_expired(db_session: Session, settings: Settings) -> None:
    _, secret = new_researcher(db_session, settings)
    later = datetime.now(UTC) + timedelta(hours=settings.activation_link_hours, seconds=1)

    with pytest.raises(Conflict, match="expired"):
        accounts.activate_account(db_session, settings, secret=secret, password=PASSWORD, now=later)


@pytest.mark.parametrize("secret", ["", "nope", "x" * 10_000, "\ud800"])
def test_accounts_activation_unknown_link(
    db_session: Session, settings: Settings, secret: str
) -> None:
    with pytest.raises(NotFound, match="not valid"):
        accounts.activate_account(db_session, settings, secret=secret, password=PASSWORD)


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "at least 12"), ("password1234", "too common"), ("ann.smit-is-me-ok", "username")],
)
def test_accounts_activation_password_policy_keeps_link_usable(
    db_session: Session, settings: Settings, password: str, message: str
) -> None:
    user, secret = new_researcher(db_session, settings)

    with pytest.raises(Invalid, match=message):
        accounts.activate_account(db_session, settings, secret=secret, password=password)
    accounts.activate_account(db_session, settings, secret=secret, password=PASSWORD)

    assert user.status is UserStatus.ACTIVE


def test_accounts_new_link_expires_the_previous_one(
    db_session: Session, settings: Settings
) -> None:
    user, first = new_researcher(db_session, settings)
    second = accounts.issue_activation_link(db_session, settings, user)

    with pytest.raises(Conflict, match="expired"):
        accounts.activate_account(db_session, settings, secret=first, password=PASSWORD)
    accounts.activate_account(db_session, settings, secret=second, password=PASSWORD)


def test_accounts_activation_of_suspended_account_refused(
    db_session: Session, settings: Settings
) -> None:
    user, secret = new_researcher(db_session, settings)
    user.status = UserStatus.SUSPENDED

    with pytest.raises(Forbidden, match="suspended"):
        accounts.activate_account(db_session, settings, secret=secret, password=PASSWORD)


def test_accounts_activation_url_keeps_secret_out_of_path(settings: Settings) -> None:
    url = accounts.activation_url(settings, "s3cret")

    assert url.endswith("/activate?secret=s3cret")


# --- status ---------------------------------------------------------------------------------------


def test_accounts_suspend_ends_sessions_and_is_audited(
    db_session: Session, settings: Settings
) -> None:
    steward = make_user(db_session, role=Role.DATA_STEWARD)
    user = make_user(db_session)
    make_user_session(db_session, user)
    make_user_session(db_session, user)
    before = last_seq(db_session)

    ended = accounts.set_status(
        db_session, user, UserStatus.SUSPENDED, actor=steward, reason="left the institute"
    )

    assert ended == 2
    assert open_sessions(db_session, user) == 0
    assert user.status is UserStatus.SUSPENDED
    assert actions(db_session, before) == ["sessions_ended_all", "user_status_changed"]
    event = db_session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()
    assert event.details == {
        "from": "active",
        "to": "suspended",
        "reason": "left the institute",
        "sessions_ended": 2,
    }


def test_accounts_close_revokes_software_token_keeps_hardware_on_loan(
    db_session: Session, settings: Settings
) -> None:
    user = make_user(db_session)
    hardware = make_token(db_session, state=TokenState.ON_LOAN, user=user)
    software = make_token(db_session, state=TokenState.ON_LOAN, user=user, kind=TokenKind.SOFTWARE)

    accounts.set_status(db_session, user, UserStatus.CLOSED, reason="project ended")

    assert hardware.state is TokenState.ON_LOAN
    assert software.state is TokenState.REVOKED
    assert software.revoked_at is not None


def test_accounts_suspend_expires_activation_links(db_session: Session, settings: Settings) -> None:
    user, secret = new_researcher(db_session, settings)
    accounts.set_status(db_session, user, UserStatus.SUSPENDED, reason="doubt")
    accounts.set_status(db_session, user, UserStatus.ACTIVE)

    with pytest.raises(Conflict, match="expired"):
        accounts.activate_account(db_session, settings, secret=secret, password=PASSWORD)


def test_accounts_reactivate_suspended(db_session: Session, settings: Settings) -> None:
    user = make_user(db_session, status=UserStatus.SUSPENDED)

    accounts.set_status(db_session, user, UserStatus.ACTIVE)

    assert user.status is UserStatus.ACTIVE


@pytest.mark.parametrize("role", list(Role))
def test_accounts_own_status_change_refused(
    db_session: Session, settings: Settings, role: Role
) -> None:
    me = make_user(db_session, role=role)

    with pytest.raises(Forbidden, match="own account"):
        accounts.set_status(db_session, me, UserStatus.CLOSED, actor=me, reason="bye")

    assert me.status is UserStatus.ACTIVE


def test_accounts_status_same_state_conflicts(db_session: Session, settings: Settings) -> None:
    user = make_user(db_session)

    with pytest.raises(Conflict, match="active already"):
        accounts.set_status(db_session, user, UserStatus.ACTIVE)


def test_accounts_status_to_pending_refused(db_session: Session, settings: Settings) -> None:
    with pytest.raises(Invalid):
        accounts.set_status(db_session, make_user(db_session), UserStatus.PENDING)


def test_accounts_pending_cannot_be_activated_by_status(
    db_session: Session, settings: Settings
) -> None:
    user, _ = new_researcher(db_session, settings)

    with pytest.raises(Conflict, match="activation link"):
        accounts.set_status(db_session, user, UserStatus.ACTIVE)


@pytest.mark.parametrize("reason", [None, "", "   ", "x" * 501])
def test_accounts_suspend_needs_sane_reason(
    db_session: Session, settings: Settings, reason: str | None
) -> None:
    with pytest.raises(Invalid, match="reason"):
        accounts.set_status(db_session, make_user(db_session), UserStatus.SUSPENDED, reason=reason)


def test_accounts_status_stale_version_conflicts(db_session: Session, settings: Settings) -> None:
    user = make_user(db_session)

    with pytest.raises(Conflict, match="changed by someone else"):
        accounts.set_status(
            db_session, user, UserStatus.SUSPENDED, reason="x", version=user.version + 1
        )


# --- role -----------------------------------------------------------------------------------------


def test_accounts_steward_cannot_change_own_role(db_session: Session, settings: Settings) -> None:
    steward = make_user(db_session, role=Role.DATA_STEWARD)

    with pytest.raises(Forbidden, match="own role"):
        accounts.change_role(db_session, steward, Role.OUTPUT_CHECKER, actor=steward)

    assert steward.role is Role.DATA_STEWARD


def test_accounts_steward_cannot_promote_to_ops(db_session: Session, settings: Settings) -> None:
    steward = make_user(db_session, role=Role.DATA_STEWARD)
    checker = make_user(db_session, role=Role.OUTPUT_CHECKER)

    with pytest.raises(Forbidden, match="ops"):
        accounts.change_role(db_session, checker, Role.OPS, actor=steward)


def test_accounts_role_to_staff_clears_institution_and_ends_sessions(
    db_session: Session, settings: Settings
) -> None:
    steward = make_user(db_session, role=Role.DATA_STEWARD)
    user = make_user(db_session)
    make_user_session(db_session, user)
    before = last_seq(db_session)

    changed = accounts.change_role(db_session, user, Role.OUTPUT_CHECKER, actor=steward)

    assert changed
    assert user.role is Role.OUTPUT_CHECKER
    assert user.institution_id is None
    assert open_sessions(db_session, user) == 0
    assert actions(db_session, before) == ["sessions_ended_all", "user_role_changed"]


def test_accounts_role_to_researcher_needs_institution(
    db_session: Session, settings: Settings
) -> None:
    checker = make_user(db_session, role=Role.OUTPUT_CHECKER)

    with pytest.raises(Invalid, match="institution"):
        accounts.change_role(db_session, checker, Role.RESEARCHER)
    accounts.change_role(
        db_session, checker, Role.RESEARCHER, institution_id=make_institution(db_session).id
    )

    assert checker.role is Role.RESEARCHER


def test_accounts_same_role_changes_nothing(db_session: Session, settings: Settings) -> None:
    user = make_user(db_session)
    before = last_seq(db_session)

    assert not accounts.change_role(db_session, user, Role.RESEARCHER)
    assert last_seq(db_session) == before


# --- reset, profile, statement, lists -------------------------------------------------------------


def test_accounts_reset_password_clears_hash_ends_sessions_new_link_works(
    db_session: Session, settings: Settings
) -> None:
    user, secret = new_researcher(db_session, settings)
    accounts.activate_account(db_session, settings, secret=secret, password=PASSWORD)
    make_user_session(db_session, user)

    new_secret = accounts.reset_password(db_session, settings, user)

    assert user.password_hash is None
    assert open_sessions(db_session, user) == 0
    accounts.activate_account(db_session, settings, secret=new_secret, password=PASSWORD + "!")
    assert user.status is UserStatus.ACTIVE
    assert user.password_hash is not None


def test_accounts_reset_of_closed_account_conflicts(
    db_session: Session, settings: Settings
) -> None:
    user = make_user(db_session, status=UserStatus.CLOSED)

    with pytest.raises(Conflict, match="closed"):
        accounts.reset_password(db_session, settings, user)


def test_accounts_update_profile_moves_researcher_to_authorised_institution_only(
    db_session: Session, settings: Settings
) -> None:
    user = make_user(db_session)
    expired = make_institution(
        db_session, authorised_from=date(2020, 1, 1), authorised_until=date(2021, 1, 1)
    )
    current = make_institution(db_session)

    with pytest.raises(Invalid, match="does not cover today"):
        accounts.update_profile(db_session, user, institution_id=expired.id)
    changes = accounts.update_profile(
        db_session, user, institution_id=current.id, full_name=" Ann  B ", email="b@example.org"
    )

    assert set(changes) == {"institution_id", "full_name", "email"}
    assert user.full_name == "Ann  B"


def test_accounts_update_profile_staff_institution_refused(
    db_session: Session, settings: Settings
) -> None:
    staff = make_user(db_session, role=Role.OPS)

    with pytest.raises(Invalid, match="no institution"):
        accounts.update_profile(db_session, staff, institution_id=make_institution(db_session).id)


def test_accounts_statement_default_valid_one_year(db_session: Session, settings: Settings) -> None:
    user = make_user(db_session)
    signed = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)

    accounts.record_statement(db_session, user, signed_at=signed)

    assert user.statement_valid_until == date(2027, 3, 1)
    assert accounts.has_valid_statement(user, date(2027, 3, 1))
    assert not accounts.has_valid_statement(user, date(2027, 3, 2))


def test_accounts_statement_longer_than_a_year_refused(
    db_session: Session, settings: Settings
) -> None:
    user = make_user(db_session)
    signed = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)

    with pytest.raises(Invalid, match="at most 1 year"):
        accounts.record_statement(db_session, user, signed_at=signed, valid_until=date(2027, 3, 2))


def test_accounts_statement_in_future_refused(db_session: Session, settings: Settings) -> None:
    user = make_user(db_session)

    with pytest.raises(Invalid, match="future"):
        accounts.record_statement(db_session, user, signed_at=datetime.now(UTC) + timedelta(days=1))


def test_accounts_list_researcher_sees_only_self(db_session: Session, settings: Settings) -> None:
    me = make_user(db_session)
    make_user(db_session)

    items, total = accounts.list_users(db_session, me)

    assert [u.id for u in items] == [me.id]
    assert total == 1


def test_accounts_list_search_escapes_wildcards(db_session: Session, settings: Settings) -> None:
    make_user(db_session, username="under_score")
    make_user(db_session, username="underxscore")

    items, _ = accounts.list_users(db_session, None, query="under_")

    assert [u.username for u in items] == ["under_score"]


def test_accounts_list_filters_and_pages(db_session: Session, settings: Settings) -> None:
    institution = make_institution(db_session)
    for n in range(5):
        make_user(db_session, username=f"page-{n}", institution=institution)

    items, total = accounts.list_users(
        db_session, None, institution_id=institution.id, limit=2, offset=1
    )

    assert total == 5
    assert [u.username for u in items] == ["page-1", "page-2"]


def test_accounts_find_by_username_normalises(db_session: Session, settings: Settings) -> None:
    user = make_user(db_session, username="finn")

    assert accounts.find_user_by_username(db_session, " FINN ") is user
    assert accounts.find_user_by_username(db_session, "f") is None
