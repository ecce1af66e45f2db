"""API tokens: shown once, stored hashed, scoped by role, expiring, revocable, audited."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from factories import make_user
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from orchestrator import apitokens
from orchestrator.config import Settings
from orchestrator.errors import Invalid
from orchestrator.models import ApiToken, AuditEvent, Role, UserStatus

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def create(
    db_session: Session,
    settings: Settings,
    role: Role = Role.RESEARCHER,
    scopes: list[str] | None = None,
    days: int = 30,
) -> tuple[ApiToken, str]:
    user = make_user(db_session, settings, role=role).user
    return apitokens.create_api_token(
        db_session, user, "ci job", scopes or ["read"], days, settings, now=NOW
    )


def test_create_api_token_plaintext_shape_and_stored_hashed(
    db_session: Session, db_settings: Settings
) -> None:
    token, plaintext = create(db_session, db_settings)

    prefix, secret = plaintext.removeprefix("kluis_").split("_", 1)
    assert plaintext.startswith("kluis_")
    assert prefix == token.prefix
    assert len(prefix) == 8
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = [str(value) for value in vars(token).values()]
    assert not any(secret in value for value in stored)


def test_create_api_token_audited_without_secret(
    db_session: Session, db_settings: Settings
) -> None:
    token, plaintext = create(db_session, db_settings)

    event = db_session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
    assert event is not None
    assert (event.action, event.object_id) == ("api_token_created", str(token.id))
    assert plaintext.split("_", 2)[2] not in str(event.details)


def test_create_api_token_unique_prefixes(db_session: Session, db_settings: Settings) -> None:
    prefixes = {create(db_session, db_settings)[0].prefix for _ in range(20)}

    assert len(prefixes) == 20


def test_create_api_token_duplicate_scopes_collapsed(
    db_session: Session, db_settings: Settings
) -> None:
    token, _ = create(db_session, db_settings, scopes=["read", "read", "projects:write"])

    assert token.scopes == ["projects:write", "read"]


@pytest.mark.parametrize(
    ("role", "scopes", "message"),
    [
        (Role.RESEARCHER, ["admin"], "may not grant"),
        (Role.RESEARCHER, ["airlock:review"], "may not grant"),
        (Role.OUTPUT_CHECKER, ["projects:write"], "may not grant"),
        (Role.RESEARCHER, ["root"], "Unknown scope"),
        (Role.RESEARCHER, [], "at least one"),
    ],
)
def test_create_api_token_scopes_limited_by_role(
    db_session: Session, db_settings: Settings, role: Role, scopes: list[str], message: str
) -> None:
    user = make_user(db_session, db_settings, role=role).user

    with pytest.raises(Invalid, match=message):
        apitokens.create_api_token(db_session, user, "x", scopes, 30, db_settings, now=NOW)


@pytest.mark.parametrize("days", [0, -1, 366])
def test_create_api_token_expiry_bounded(
    db_session: Session, db_settings: Settings, days: int
) -> None:
    user = make_user(db_session, db_settings).user

    with pytest.raises(Invalid, match="expires after 1 to 365 days"):
        apitokens.create_api_token(db_session, user, "x", ["read"], days, db_settings, now=NOW)


@pytest.mark.parametrize("name", ["", "   ", "n" * 101])
def test_create_api_token_name_bounded(
    db_session: Session, db_settings: Settings, name: str
) -> None:
    user = make_user(db_session, db_settings).user

    with pytest.raises(Invalid, match="name"):
        apitokens.create_api_token(db_session, user, name, ["read"], 1, db_settings, now=NOW)


def test_find_api_token_valid(db_session: Session, db_settings: Settings) -> None:
    token, plaintext = create(db_session, db_settings)

    assert apitokens.find_api_token(db_session, plaintext, NOW) is token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p[:-1] + ("A" if p[-1] != "A" else "B"),  # wrong secret
        lambda p: "kluis_zzzzzzzz_" + p.split("_", 2)[2],  # unknown prefix
        lambda p: p.replace("kluis_", "other_"),
        lambda p: p + "\x00",
        lambda p: "",
        lambda p: p * 50,
    ],
)
def test_find_api_token_wrong_plaintext_none(
    db_session: Session, db_settings: Settings, mangle: object
) -> None:
    _, plaintext = create(db_session, db_settings)

    assert apitokens.find_api_token(db_session, mangle(plaintext), NOW) is None  # type: ignore[operator]


def test_find_api_token_expired_none(db_session: Session, db_settings: Settings) -> None:
    _, plaintext = create(db_session, db_settings, days=1)

    assert apitokens.find_api_token(db_session, plaintext, NOW + timedelta(hours=23)) is not None
    assert apitokens.find_api_token(db_session, plaintext, NOW + timedelta(days=1)) is None


def test_find_api_token_revoked_none(db_session: Session, db_settings: Settings) -> None:
    token, plaintext = create(db_session, db_settings)

    apitokens.revoke_api_token(db_session, token, actor=token.user, now=NOW)

    assert apitokens.find_api_token(db_session, plaintext, NOW) is None
    event = db_session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
    assert event is not None
    assert event.action == "api_token_revoked"


def test_revoke_api_token_twice_keeps_first_date(
    db_session: Session, db_settings: Settings
) -> None:
    token, _ = create(db_session, db_settings)

    apitokens.revoke_api_token(db_session, token, now=NOW)
    apitokens.revoke_api_token(db_session, token, now=NOW + timedelta(days=1))

    assert token.revoked_at == NOW


@pytest.mark.parametrize("status", [UserStatus.SUSPENDED, UserStatus.CLOSED])
def test_find_api_token_inactive_user_none(
    db_session: Session, db_settings: Settings, status: UserStatus
) -> None:
    token, plaintext = create(db_session, db_settings)

    token.user.status = status
    db_session.flush()

    assert apitokens.find_api_token(db_session, plaintext, NOW) is None


def test_find_api_token_last_used_written_at_most_once_a_minute(
    db_session: Session, db_settings: Settings
) -> None:
    token, plaintext = create(db_session, db_settings)

    apitokens.find_api_token(db_session, plaintext, NOW)
    apitokens.find_api_token(db_session, plaintext, NOW + timedelta(seconds=30))
    assert token.last_used_at == NOW
    apitokens.find_api_token(db_session, plaintext, NOW + timedelta(seconds=60))
    assert token.last_used_at == NOW + timedelta(seconds=60)


def test_effective_scopes_narrowed_after_role_change(
    db_session: Session, db_settings: Settings
) -> None:
    token, _ = create(db_session, db_settings, role=Role.DATA_STEWARD, scopes=["read", "admin"])

    token.user.role = Role.RESEARCHER

    assert apitokens.effective_scopes(token, token.user) == frozenset({"read"})


def test_list_api_tokens_own_newest_first(db_session: Session, db_settings: Settings) -> None:
    user = make_user(db_session, db_settings).user
    first, _ = apitokens.create_api_token(db_session, user, "a", ["read"], 1, db_settings, now=NOW)
    later = NOW + timedelta(minutes=1)
    second, _ = apitokens.create_api_token(
        db_session, user, "b", ["read"], 1, db_settings, now=later
    )
    create(db_session, db_settings)  # someone else's

    assert apitokens.list_api_tokens(db_session, user) == [second, first]


def test_find_api_token_concurrent_use_mark_tolerated(
    isolated_engine: tuple[Settings, Engine],
) -> None:
    settings, engine = isolated_engine
    with Session(engine) as session:
        user = make_user(session, settings).user
        _, plaintext = apitokens.create_api_token(
            session, user, "ci", ["read"], 1, settings, now=NOW
        )
        session.commit()
    first, second = Session(engine), Session(engine)
    try:
        first.scalar(select(ApiToken.id))  # its snapshot starts here
        assert apitokens.find_api_token(second, plaintext, NOW) is not None
        second.commit()  # the other request marked the use and committed first

        found = apitokens.find_api_token(first, plaintext, NOW)
        first.commit()
    finally:
        first.close()
        second.close()

    assert found is not None
