"""The token state machine (every legal and illegal move), loans, sessions, software enrolment."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from admin_factories import make_token, make_user, make_user_session
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import tokens, totp
from orchestrator.config import Environment, Settings
from orchestrator.errors import Conflict, Forbidden
from orchestrator.models import (
    AuditEvent,
    Role,
    TokenKind,
    TokenState,
    TotpToken,
    User,
    UserSession,
    UserStatus,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment=Environment.TEST, data_dir=tmp_path, software_tokens_enabled=True)


Mover = Callable[[Session, TotpToken, User], object]

MOVES: dict[TokenState, Mover] = {
    TokenState.ON_LOAN: lambda s, t, u: tokens.assign_token(s, t, u),
    TokenState.RETURNED: lambda s, t, u: tokens.return_token(s, t),
    TokenState.LOST: lambda s, t, u: tokens.report_lost(s, t),
    TokenState.REVOKED: lambda s, t, u: tokens.revoke_token(s, t, reason="test"),
    TokenState.IN_STOCK: lambda s, t, u: tokens.restock_token(s, t),
}
LEGAL = {
    (kind, source, target)
    for kind, table in tokens.TRANSITIONS.items()
    for source, targets in table.items()
    for target in targets
}
ILLEGAL = sorted(
    (kind, source, target)
    for kind, source, target in itertools.product(TokenKind, TokenState, TokenState)
    if (kind, source, target) not in LEGAL
    # software tokens are born on loan: no software token is ever in another starting state
    and not (kind is TokenKind.SOFTWARE and source is not TokenState.ON_LOAN)
)


def token_in(session: Session, kind: TokenKind, state: TokenState) -> TotpToken:
    holder = make_user(session) if state is not TokenState.IN_STOCK else None
    return make_token(session, kind=kind, state=state, user=holder)


def open_sessions(session: Session, user: User) -> int:
    return len(
        session.scalars(
            select(UserSession).where(
                UserSession.user_id == user.id, UserSession.ended_at.is_(None)
            )
        ).all()
    )


@pytest.mark.parametrize(("kind", "source", "target"), sorted(LEGAL))
def test_tokens_legal_move_sets_state_date_and_audit(
    db_session: Session, kind: TokenKind, source: TokenState, target: TokenState
) -> None:
    token = token_in(db_session, kind, source)
    borrower = make_user(db_session)

    MOVES[target](db_session, token, borrower)

    assert token.state is target
    stamp = {
        TokenState.ON_LOAN: token.loaned_at,
        TokenState.RETURNED: token.returned_at,
        TokenState.LOST: token.lost_at,
        TokenState.REVOKED: token.revoked_at,
        TokenState.IN_STOCK: token.imported_at,
    }[target]
    assert stamp is not None
    event = db_session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()
    assert event.object_id == str(token.id)
    assert event.details["from"] == source.value
    assert event.action == tokens._ACTION[target]


@pytest.mark.parametrize(("kind", "source", "target"), ILLEGAL)
def test_tokens_illegal_move_conflicts_naming_state(
    db_session: Session, kind: TokenKind, source: TokenState, target: TokenState
) -> None:
    token = token_in(db_session, kind, source)
    borrower = make_user(db_session)

    with pytest.raises(Conflict) as caught:
        MOVES[target](db_session, token, borrower)

    assert caught.value.details["state"] == source.value
    assert source.value.replace("_", " ") in caught.value.message
    assert token.state is source


def test_tokens_assign_lends_to_user(db_session: Session) -> None:
    user = make_user(db_session)
    token = make_token(db_session)

    tokens.assign_token(db_session, token, user)

    assert token.user_id == user.id
    assert token.loaned_at is not None


def test_tokens_assign_to_pending_user_allowed(db_session: Session) -> None:
    user = make_user(db_session, status=UserStatus.PENDING)

    tokens.assign_token(db_session, make_token(db_session), user)


@pytest.mark.parametrize("status", [UserStatus.SUSPENDED, UserStatus.CLOSED])
def test_tokens_assign_to_disabled_user_conflicts(db_session: Session, status: UserStatus) -> None:
    user = make_user(db_session, status=status)
    token = make_token(db_session)

    with pytest.raises(Conflict, match=status.value):
        tokens.assign_token(db_session, token, user)

    assert token.state is TokenState.IN_STOCK


def test_tokens_one_token_on_loan_per_user(db_session: Session) -> None:
    user = make_user(db_session)
    first = make_token(db_session, serial="FIRST-1")
    tokens.assign_token(db_session, first, user)
    second = make_token(db_session)

    with pytest.raises(Conflict, match="FIRST-1"):
        tokens.assign_token(db_session, second, user)

    assert second.state is TokenState.IN_STOCK
    assert second.user_id is None


@pytest.mark.parametrize(
    "move",
    [
        lambda s, t: tokens.return_token(s, t),
        lambda s, t: tokens.report_lost(s, t),
        lambda s, t: tokens.revoke_token(s, t),
    ],
    ids=["returned", "lost", "revoked"],
)
def test_tokens_leaving_loan_ends_holder_sessions(
    db_session: Session, move: Callable[[Session, TotpToken], int]
) -> None:
    user = make_user(db_session)
    token = make_token(db_session, state=TokenState.ON_LOAN, user=user)
    make_user_session(db_session, user)
    other = make_user(db_session)
    make_user_session(db_session, other)

    ended = move(db_session, token)

    assert ended == 1
    assert open_sessions(db_session, user) == 0
    assert open_sessions(db_session, other) == 1


def test_tokens_restock_clears_holder_keeps_last_step(db_session: Session) -> None:
    user = make_user(db_session)
    token = make_token(db_session, state=TokenState.RETURNED, user=user)
    token.last_used_step = 123

    tokens.restock_token(db_session, token)

    assert token.state is TokenState.IN_STOCK
    assert token.user_id is None
    assert token.last_used_step == 123


def test_tokens_after_return_user_may_borrow_again(db_session: Session) -> None:
    user = make_user(db_session)
    first = make_token(db_session, state=TokenState.ON_LOAN, user=user)
    tokens.return_token(db_session, first)

    tokens.assign_token(db_session, make_token(db_session), user)


def test_tokens_list_researcher_sees_only_own(db_session: Session) -> None:
    me = make_user(db_session)
    mine = make_token(db_session, state=TokenState.ON_LOAN, user=me)
    make_token(db_session)
    make_token(db_session, state=TokenState.ON_LOAN, user=make_user(db_session))

    items, total = tokens.list_tokens(db_session, me)

    assert [t.id for t in items] == [mine.id]
    assert total == 1


def test_tokens_list_filters_by_state(db_session: Session) -> None:
    steward = make_user(db_session, role=Role.DATA_STEWARD)
    lost = make_token(db_session, state=TokenState.LOST, user=make_user(db_session))

    items, _ = tokens.list_tokens(db_session, steward, state=TokenState.LOST, limit=500)

    assert lost.id in [t.id for t in items]
    assert all(t.state is TokenState.LOST for t in items)


# --- software tokens ------------------------------------------------------------------------------


def test_tokens_software_enrolment_refused_when_disabled(
    db_session: Session, tmp_path: Path
) -> None:
    settings = Settings(environment=Environment.TEST, data_dir=tmp_path)

    with pytest.raises(Forbidden, match="KLUIS_SOFTWARE_TOKENS_ENABLED"):
        tokens.enrol_software_token(db_session, settings, make_user(db_session))


def test_tokens_software_enrolment_gives_working_uri_and_qr(
    db_session: Session, settings: Settings
) -> None:
    user = make_user(db_session, username="sofie")

    enrolment = tokens.enrol_software_token(db_session, settings, user)

    token = enrolment.token
    assert (token.kind, token.state, token.user_id) == (
        TokenKind.SOFTWARE,
        TokenState.ON_LOAN,
        user.id,
    )
    parsed = urlparse(enrolment.provisioning_uri)
    assert parsed.scheme == "otpauth"
    assert "sofie" in parsed.path
    secret = parse_qs(parsed.query)["secret"][0]
    seed = totp.decrypt_seed(settings, token.seed_encrypted)
    assert base64.b32decode(secret + "=" * (-len(secret) % 8)) == seed
    now = datetime.now(UTC)
    code = pyotp.TOTP(secret).at(now)
    assert totp.verify_code(settings, token, code, now) is not None
    assert enrolment.qr_svg.startswith("<svg")
    assert "xmlns" in enrolment.qr_svg
    assert secret not in repr(enrolment)
    event = db_session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()
    assert event.action == "token_enrolled"
    assert secret not in str(event.details)


def test_tokens_software_enrolment_with_token_on_loan_conflicts(
    db_session: Session, settings: Settings
) -> None:
    user = make_user(db_session)
    make_token(db_session, state=TokenState.ON_LOAN, user=user)

    with pytest.raises(Conflict, match="on loan already"):
        tokens.enrol_software_token(db_session, settings, user)
