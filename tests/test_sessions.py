"""Sessions: fresh secrets, idle and absolute timeouts, ending one or all, CSRF, step-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from factories import make_user
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from orchestrator import sessions
from orchestrator.config import Settings
from orchestrator.models import AuditEvent, LoginAttempt, UserSession, UserStatus
from orchestrator.throttle import Throttled

NOW = datetime(2026, 11, 25, 12, 0, 10, tzinfo=UTC)


def audit_actions(db_session: Session) -> list[str]:
    return list(db_session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))


def test_open_session_stores_only_the_hash(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user

    user_session, secret = sessions.open_session(
        db_session, user, "192.0.2.1", "ua", db_settings, NOW
    )

    assert len(secret) >= 43
    assert user_session.secret_hash == sessions.hash_secret(secret)
    assert secret not in user_session.secret_hash
    assert user_session.expires_at == NOW + timedelta(hours=12)


def test_open_session_new_secret_and_id_every_time(
    db_session: Session, db_settings: Settings
) -> None:
    user = make_user(db_session, db_settings).user

    first, first_secret = sessions.open_session(db_session, user, "", "", db_settings, NOW)
    second, second_secret = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    assert first.id != second.id
    assert first_secret != second_secret


def test_find_session_valid_secret_found(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    opened, secret = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    assert sessions.find_session(db_session, secret, db_settings, NOW) is opened


@pytest.mark.parametrize("secret", ["", "x", "A" * 43, "A" * 5000, "\x00\ud800"])
def test_find_session_unknown_or_hostile_secret_none(
    db_session: Session, db_settings: Settings, secret: str
) -> None:
    user = make_user(db_session, db_settings).user
    sessions.open_session(db_session, user, "", "", db_settings, NOW)

    assert sessions.find_session(db_session, secret, db_settings, NOW) is None


def test_find_session_idle_timeout(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    _, secret = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    assert sessions.find_session(db_session, secret, db_settings, NOW + timedelta(minutes=29))
    # The use at +29 min slid the idle window; 31 min of silence after that ends it.
    later = NOW + timedelta(minutes=29 + 31)
    assert sessions.find_session(db_session, secret, db_settings, later) is None


def test_find_session_idle_timeout_without_use(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    _, secret = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    assert (
        sessions.find_session(db_session, secret, db_settings, NOW + timedelta(minutes=30)) is None
    )


def test_find_session_absolute_timeout_despite_activity(
    db_session: Session, db_settings: Settings
) -> None:
    user = make_user(db_session, db_settings).user
    _, secret = sessions.open_session(db_session, user, "", "", db_settings, NOW)
    moment = NOW
    while moment < NOW + timedelta(hours=12) - timedelta(minutes=20):
        moment += timedelta(minutes=20)
        assert sessions.find_session(db_session, secret, db_settings, moment) is not None

    at_limit = NOW + timedelta(hours=12)
    assert sessions.find_session(db_session, secret, db_settings, at_limit) is None


def test_find_session_last_seen_written_at_most_once_a_minute(
    db_session: Session, db_settings: Settings
) -> None:
    user = make_user(db_session, db_settings).user
    opened, secret = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    sessions.find_session(db_session, secret, db_settings, NOW + timedelta(seconds=50))
    assert opened.last_seen_at == NOW
    sessions.find_session(db_session, secret, db_settings, NOW + timedelta(seconds=61))
    assert opened.last_seen_at == NOW + timedelta(seconds=61)


def test_find_session_ended_none(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    opened, secret = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    sessions.end_session(db_session, opened, "logout", actor=user, now=NOW)

    assert sessions.find_session(db_session, secret, db_settings, NOW) is None
    assert opened.end_reason == "logout"
    assert audit_actions(db_session)[-1] == "session_ended"


@pytest.mark.parametrize("status", [UserStatus.SUSPENDED, UserStatus.CLOSED, UserStatus.PENDING])
def test_find_session_inactive_user_none(
    db_session: Session, db_settings: Settings, status: UserStatus
) -> None:
    user = make_user(db_session, db_settings).user
    _, secret = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    user.status = status
    db_session.flush()

    assert sessions.find_session(db_session, secret, db_settings, NOW) is None


def test_end_session_twice_keeps_first_end(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    opened, _ = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    sessions.end_session(db_session, opened, "logout", now=NOW)
    sessions.end_session(db_session, opened, "other", now=NOW + timedelta(minutes=1))

    assert (opened.ended_at, opened.end_reason) == (NOW, "logout")
    assert audit_actions(db_session).count("session_ended") == 1


def test_end_all_sessions_ends_every_open_session_at_once(
    db_session: Session, db_settings: Settings
) -> None:
    user = make_user(db_session, db_settings).user
    other = make_user(db_session, db_settings).user
    secrets_ = [sessions.open_session(db_session, user, "", "", db_settings, NOW)[1] for _ in "abc"]
    _, other_secret = sessions.open_session(db_session, other, "", "", db_settings, NOW)

    ended = sessions.end_all_sessions(db_session, user, "account_suspended")

    assert ended == 3
    assert all(sessions.find_session(db_session, s, db_settings, NOW) is None for s in secrets_)
    assert sessions.find_session(db_session, other_secret, db_settings, NOW) is not None
    event = db_session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
    assert event is not None
    assert event.action == "sessions_ended_all"
    assert event.details == {"reason": "account_suspended", "count": 3}


def test_list_sessions_only_live_own(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    other = make_user(db_session, db_settings).user
    live, _ = sessions.open_session(db_session, user, "", "", db_settings, NOW)
    ended, _ = sessions.open_session(db_session, user, "", "", db_settings, NOW)
    sessions.end_session(db_session, ended, "logout", now=NOW)
    sessions.open_session(db_session, other, "", "", db_settings, NOW)

    assert sessions.list_sessions(db_session, user, db_settings, NOW) == [live]


# --- CSRF -----------------------------------------------------------------------------------------


def test_csrf_token_bound_to_session(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    first, _ = sessions.open_session(db_session, user, "", "", db_settings, NOW)
    second, _ = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    token = sessions.csrf_token(db_settings, first)

    assert token == sessions.csrf_token(db_settings, first)
    sessions.check_csrf(db_settings, first, token)
    with pytest.raises(sessions.CsrfFailed):
        sessions.check_csrf(db_settings, second, token)


@pytest.mark.parametrize("submitted", [None, "", "0" * 64, "\ud800"])
def test_check_csrf_wrong_token_refused(
    db_session: Session, db_settings: Settings, submitted: str | None
) -> None:
    user = make_user(db_session, db_settings).user
    opened, _ = sessions.open_session(db_session, user, "", "", db_settings, NOW)

    with pytest.raises(sessions.CsrfFailed):
        sessions.check_csrf(db_settings, opened, submitted)


# --- step-up --------------------------------------------------------------------------------------


def test_step_up_fresh_code_accepted(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings)
    opened, _ = sessions.open_session(db_session, made.user, "", "", db_settings, NOW)

    until = sessions.step_up(db_session, opened, made.user, made.code(NOW), db_settings, NOW)

    assert opened.stepped_up_at == NOW
    assert until == NOW + timedelta(minutes=5)
    assert audit_actions(db_session)[-1] == "step_up_succeeded"


def test_step_up_code_used_for_login_refused(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings)
    opened, _ = sessions.open_session(db_session, made.user, "", "", db_settings, NOW)
    code = made.code(NOW)
    sessions.step_up(db_session, opened, made.user, code, db_settings, NOW)
    db_session.commit()

    with pytest.raises(sessions.StepUpFailed):
        sessions.step_up(db_session, opened, made.user, code, db_settings, NOW)


def test_step_up_wrong_code_refused_and_failure_kept(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    opened, _ = sessions.open_session(db_session, made.user, "", "", db_settings, NOW)
    db_session.commit()
    wrong = "000000" if made.code(NOW) != "000000" else "111111"

    with pytest.raises(sessions.StepUpFailed):
        sessions.step_up(db_session, opened, made.user, wrong, db_settings, NOW)

    assert opened.stepped_up_at is None
    assert audit_actions(db_session)[-1] == "step_up_failed"
    failures = db_session.scalar(
        select(func.count()).where(
            LoginAttempt.username == made.username, LoginAttempt.success.is_(False)
        )
    )
    assert failures == 1


def test_step_up_throttled_after_repeated_failures(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    opened, _ = sessions.open_session(db_session, made.user, "", "", db_settings, NOW)
    db_session.commit()
    wrong = "000000" if made.code(NOW) != "000000" else "111111"
    for _ in range(5):
        with pytest.raises(sessions.StepUpFailed):
            sessions.step_up(db_session, opened, made.user, wrong, db_settings, NOW)

    with pytest.raises(Throttled):
        sessions.step_up(db_session, opened, made.user, made.code(NOW), db_settings, NOW)


def test_require_recent_step_up_fresh_passes(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    opened, _ = sessions.open_session(db_session, user, "", "", db_settings, NOW)
    opened.stepped_up_at = NOW

    sessions.require_recent_step_up(opened, db_settings, NOW + timedelta(minutes=5))


def test_require_recent_step_up_expired_refused(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    opened, _ = sessions.open_session(db_session, user, "", "", db_settings, NOW)
    opened.stepped_up_at = NOW

    with pytest.raises(sessions.StepUpRequired) as caught:
        sessions.require_recent_step_up(opened, db_settings, NOW + timedelta(minutes=5, seconds=1))

    assert caught.value.code == "step_up_required"
    assert caught.value.status_code == 403


def test_require_recent_step_up_never_stepped_up_refused(
    db_session: Session, db_settings: Settings
) -> None:
    user = make_user(db_session, db_settings).user
    opened, _ = sessions.open_session(db_session, user, "", "", db_settings, NOW)
    opened.stepped_up_at = None

    with pytest.raises(sessions.StepUpRequired):
        sessions.require_recent_step_up(opened, db_settings, NOW)
    with pytest.raises(sessions.StepUpRequired):
        sessions.require_recent_step_up(None, db_settings, NOW)


def test_find_session_concurrent_slide_tolerated(isolated_engine: tuple[Settings, Engine]) -> None:
    settings, engine = isolated_engine
    with Session(engine) as session:
        user = make_user(session, settings).user
        _, secret = sessions.open_session(session, user, "", "", settings, NOW)
        session.commit()
    later = NOW + timedelta(minutes=2)  # due for a slide
    first, second = Session(engine), Session(engine)
    try:
        first.scalar(select(func.count()).select_from(UserSession))  # its snapshot starts here
        assert sessions.find_session(second, secret, settings, later) is not None
        second.commit()  # the other request slid it and committed first

        found = sessions.find_session(first, secret, settings, later)
        first.commit()
    finally:
        first.close()
        second.close()

    assert found is not None
