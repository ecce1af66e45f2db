"""The login use case: every check, one generic failure, throttling, single-use codes (also
under concurrency), and the client address behind trusted proxies."""

from __future__ import annotations

import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from factories import MadeUser, make_institution, make_user
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from orchestrator import login
from orchestrator.config import Environment, Settings
from orchestrator.errors import AuthFailed
from orchestrator.models import (
    AuditEvent,
    LoginAttempt,
    Role,
    TokenState,
    TotpToken,
    User,
    UserSession,
    UserStatus,
)
from orchestrator.throttle import Throttled

NOW = datetime.now(UTC).replace(microsecond=0)
SOURCE = "192.0.2.10"


def attempt(
    db_session: Session,
    settings: Settings,
    made: MadeUser,
    *,
    username: str | None = None,
    password: str | None = None,
    code: str | None = None,
    source: str = SOURCE,
    now: datetime = NOW,
) -> tuple[UserSession, str]:
    return login.log_in(
        db_session,
        settings,
        made.username if username is None else username,
        made.password if password is None else password,
        made.code(now) if code is None else code,
        source,
        "pytest",
        now,
    )


def wrong_code(made: MadeUser, now: datetime = NOW) -> str:
    return "000000" if made.code(now) != "000000" else "111111"


def last_event(db_session: Session) -> AuditEvent:
    event = db_session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
    assert event is not None
    return event


def count(db_session: Session, model: type, *where: object) -> int:
    return db_session.scalar(select(func.count()).select_from(model).where(*where)) or 0  # type: ignore[arg-type]


# --- success --------------------------------------------------------------------------------------


def test_log_in_valid_credentials_open_session(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()

    user_session, secret = attempt(db_session, db_settings, made)

    assert user_session.user_id == made.user.id
    assert user_session.secret_hash != secret
    assert user_session.stepped_up_at == NOW
    assert (user_session.source, user_session.user_agent) == (SOURCE, "pytest")
    assert made.token is not None
    assert made.token.token.last_used_step == int(NOW.timestamp()) // 30
    event = last_event(db_session)
    assert (event.action, event.actor_id, event.object_id) == (
        "login_succeeded",
        made.user.id,
        str(user_session.id),
    )
    assert count(db_session, LoginAttempt, LoginAttempt.success.is_(True)) == 1


def test_log_in_username_normalised(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings, username="alice")
    db_session.commit()

    user_session, _ = attempt(db_session, db_settings, made, username="  \uff21LICE ")

    assert user_session.user_id == made.user.id


def test_log_in_staff_needs_no_institution(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings, role=Role.DATA_STEWARD)
    db_session.commit()

    user_session, _ = attempt(db_session, db_settings, made)

    assert user_session.user_id == made.user.id


def test_log_in_source_inside_allowed_network(db_session: Session, db_settings: Settings) -> None:
    institution = make_institution(db_session, allowed_networks=["192.0.2.0/24", "2001:db8::/32"])
    made = make_user(db_session, db_settings, institution=institution)
    db_session.commit()

    user_session, _ = attempt(db_session, db_settings, made, source="192.0.2.77")

    assert user_session.user_id == made.user.id


def test_log_in_old_argon2_parameters_rehashed(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings)
    made.user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192).hash(made.password)
    db_session.commit()

    attempt(db_session, db_settings, made)

    assert made.user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert last_event(db_session).details["rehashed"] is True


# --- refusals: one answer for every reason --------------------------------------------------------


def _expired_institution(db_session: Session, settings: Settings) -> MadeUser:
    institution = make_institution(
        db_session,
        authorised_from=NOW.date() - timedelta(days=400),
        authorised_until=NOW.date() - timedelta(days=1),
    )
    return make_user(db_session, settings, institution=institution)


def _future_institution(db_session: Session, settings: Settings) -> MadeUser:
    institution = make_institution(
        db_session,
        authorised_from=NOW.date() + timedelta(days=1),
        authorised_until=NOW.date() + timedelta(days=400),
    )
    return make_user(db_session, settings, institution=institution)


def _returned_token(db_session: Session, settings: Settings) -> MadeUser:
    made = make_user(db_session, settings)
    assert made.token is not None
    made.token.token.state = TokenState.RETURNED
    return made


def _other_network(db_session: Session, settings: Settings) -> MadeUser:
    institution = make_institution(db_session, allowed_networks=["198.51.100.0/24"])
    return make_user(db_session, settings, institution=institution)


REFUSALS = {
    "wrong_password": (lambda s, c: make_user(s, c), {"password": "not the password at all"}),
    "wrong_code": (lambda s, c: make_user(s, c), {"code": "wrong"}),
    "unknown_user": (lambda s, c: make_user(s, c), {"username": "nobody-by-this-name"}),
    "status_suspended": (lambda s, c: make_user(s, c, status=UserStatus.SUSPENDED), {}),
    "status_closed": (lambda s, c: make_user(s, c, status=UserStatus.CLOSED), {}),
    "status_pending": (lambda s, c: make_user(s, c, status=UserStatus.PENDING), {}),
    "no_password": (lambda s, c: make_user(s, c, password=None), {"password": "anything long"}),
    "institution_not_authorised": (_expired_institution, {}),
    "institution_not_yet_authorised": (_future_institution, {}),
    "no_valid_statement": (lambda s, c: make_user(s, c, statement_valid_until=None), {}),
    "statement_expired": (
        lambda s, c: make_user(s, c, statement_valid_until=NOW.date() - timedelta(days=1)),
        {},
    ),
    "staff_statement_expired": (
        lambda s, c: make_user(
            s, c, role=Role.OPS, statement_valid_until=NOW.date() - timedelta(days=1)
        ),
        {},
    ),
    "no_token": (lambda s, c: make_user(s, c, with_token=False), {"code": "123456"}),
    "token_returned": (_returned_token, {}),
    "source_not_allowed": (_other_network, {}),
}
EXPECTED_REASON = {
    "institution_not_yet_authorised": "institution_not_authorised",
    "statement_expired": "no_valid_statement",
    "staff_statement_expired": "no_valid_statement",
    "token_returned": "no_token",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_log_in_refused_with_one_generic_message(
    db_session: Session, db_settings: Settings, case: str
) -> None:
    factory, overrides = REFUSALS[case]
    made = factory(db_session, db_settings)
    db_session.commit()
    if overrides.get("code") == "wrong":
        overrides = {"code": wrong_code(made)}

    with pytest.raises(AuthFailed) as caught:
        attempt(db_session, db_settings, made, **overrides)  # type: ignore[arg-type]

    assert caught.value.message == "Invalid username, password or code"
    assert caught.value.details == {}
    event = last_event(db_session)
    assert event.action == "login_failed"
    assert event.details["reason"] == EXPECTED_REASON.get(case, case)
    # The failure was committed although the call raised: throttling can count it.
    assert count(db_session, LoginAttempt, LoginAttempt.success.is_(False)) == 1
    assert count(db_session, UserSession) == 0


def test_log_in_right_password_wrong_code_creates_nothing(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()

    with pytest.raises(AuthFailed):
        attempt(db_session, db_settings, made, code=wrong_code(made))

    assert count(db_session, UserSession) == 0
    assert made.token is not None
    assert db_session.get(TotpToken, made.token.token.id).last_used_step is None  # type: ignore[union-attr]


def test_log_in_code_replayed_refused(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()
    code = made.code(NOW)
    attempt(db_session, db_settings, made, code=code)
    db_session.commit()

    with pytest.raises(AuthFailed):
        attempt(db_session, db_settings, made, code=code, now=NOW + timedelta(seconds=20))

    assert last_event(db_session).details["reason"] == "wrong_code"
    assert count(db_session, UserSession) == 1


def test_log_in_next_code_after_replay_accepted(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()
    attempt(db_session, db_settings, made)
    db_session.commit()

    later = NOW + timedelta(seconds=30)
    user_session, _ = attempt(db_session, db_settings, made, now=later)

    assert user_session.user_id == made.user.id


def test_log_in_hostile_username_is_just_unknown(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()

    for username in ["\x00admin", "\ud800", "a" * 5000, "ﷺ" * 100, "' OR 1=1 --"]:
        with pytest.raises(AuthFailed):
            attempt(db_session, db_settings, made, username=username, now=NOW)
        db_session.commit()

    assert count(db_session, LoginAttempt) == 5


def test_log_in_concurrent_same_code_exactly_one_session(
    isolated_engine: tuple[Settings, Engine],
) -> None:
    settings, engine = isolated_engine
    with Session(engine) as session:
        made = make_user(session, settings)
        session.commit()
        username, password, code = made.username, made.password, made.code(NOW)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def try_login() -> None:
        with Session(engine) as session:
            barrier.wait()
            try:
                login.log_in(session, settings, username, password, code, SOURCE, "t", NOW)
                session.commit()
                outcomes.append("session")
            except AuthFailed:
                outcomes.append("refused")

    threads = [threading.Thread(target=try_login) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["refused", "session"]
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(UserSession)) == 1
        reasons = session.scalars(
            select(AuditEvent.action).where(AuditEvent.action.like("login_%"))
        ).all()
        assert sorted(reasons) == ["login_failed", "login_succeeded"]


def test_log_in_concurrent_different_users_all_succeed(
    isolated_engine: tuple[Settings, Engine],
) -> None:
    settings, engine = isolated_engine
    with Session(engine) as session:
        users = [make_user(session, settings) for _ in range(4)]
        session.commit()
        credentials = [(m.username, m.password, m.code(NOW)) for m in users]
    barrier = threading.Barrier(len(credentials))
    outcomes: list[str] = []

    def try_login(username: str, password: str, code: str) -> None:
        with Session(engine) as session:
            barrier.wait()
            try:
                login.log_in(session, settings, username, password, code, SOURCE, "t", NOW)
                session.commit()
                outcomes.append("session")
            except AuthFailed:
                outcomes.append("refused")

    threads = [threading.Thread(target=try_login, args=c) for c in credentials]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # On SQLite, too: logins of different users never refuse each other.
    assert outcomes == ["session"] * len(credentials)


# --- no user enumeration by timing ----------------------------------------------------------------


def test_log_in_unknown_user_costs_a_password_verify(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()

    samples: dict[str, list[float]] = {"unknown": [], "wrong": []}
    cases = {"unknown": {"username": "nobody-at-all"}, "wrong": {"password": "a wrong password"}}
    for i in range(7):
        # Interleaved, so a busy machine slows both alike; far apart in (injected) time, so
        # throttling never delays these attempts.
        moment = NOW + timedelta(hours=2 * i)
        for name, overrides in cases.items():
            start = time.perf_counter()
            with pytest.raises(AuthFailed):
                attempt(db_session, db_settings, made, now=moment, **overrides)  # type: ignore[arg-type]
            samples[name].append(time.perf_counter() - start)

    unknown = statistics.median(samples["unknown"])
    wrong_password = statistics.median(samples["wrong"])

    assert 0.5 <= unknown / wrong_password <= 2.0


# --- throttling -----------------------------------------------------------------------------------


def fail(db_session: Session, settings: Settings, made: MadeUser, at: datetime, **kw: str) -> None:
    with pytest.raises(AuthFailed):
        attempt(db_session, settings, made, password="not the password at all", now=at, **kw)  # type: ignore[arg-type]


def test_throttle_account_delays_grow_after_five_failures(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()
    for _ in range(5):
        fail(db_session, db_settings, made, NOW)

    with pytest.raises(Throttled) as first:
        attempt(db_session, db_settings, made, now=NOW)
    fail(db_session, db_settings, made, NOW + timedelta(seconds=1))  # waited 1 s: may try
    with pytest.raises(Throttled) as second:
        attempt(db_session, db_settings, made, now=NOW + timedelta(seconds=2))

    assert first.value.retry_after == 1
    assert second.value.retry_after == 1  # 2 s after the sixth failure at +1 s
    assert first.value.scope == "account"
    assert last_event(db_session).action == "login_throttled"


def test_throttle_refuses_right_credentials_and_keeps_code_unspent(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()
    for _ in range(5):
        fail(db_session, db_settings, made, NOW)

    with pytest.raises(Throttled):
        attempt(db_session, db_settings, made, now=NOW)

    assert made.token is not None
    assert db_session.get(TotpToken, made.token.token.id).last_used_step is None  # type: ignore[union-attr]
    assert count(db_session, UserSession) == 0


def test_throttle_account_ceiling_then_window_ends(db_session: Session, tmp_path: Path) -> None:
    settings = Settings(
        environment=Environment.TEST, data_dir=tmp_path, login_failures_per_account_hour=10
    )
    made = make_user(db_session, settings)
    db_session.commit()
    moment = NOW
    for n in range(10):
        fail(db_session, settings, made, moment)
        moment += timedelta(seconds=2 ** max(0, n - 3) + 1)  # always past the growing delay

    with pytest.raises(Throttled) as ceiling:
        attempt(db_session, settings, made, now=moment + timedelta(minutes=30))

    assert ceiling.value.retry_after > 20 * 60
    # An hour after the first failure the oldest leaves the window: the account may try again.
    user_session, _ = attempt(db_session, settings, made, now=NOW + timedelta(hours=1, seconds=1))
    assert user_session.user_id == made.user.id


def test_throttle_refused_attempts_do_not_extend_the_delay(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()
    for _ in range(5):
        fail(db_session, db_settings, made, NOW)
    for _ in range(20):
        with pytest.raises(Throttled):
            attempt(db_session, db_settings, made, now=NOW)

    user_session, _ = attempt(db_session, db_settings, made, now=NOW + timedelta(seconds=1))

    assert user_session.user_id == made.user.id


def test_throttle_success_starts_the_account_afresh(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()
    for _ in range(4):
        fail(db_session, db_settings, made, NOW)
    attempt(db_session, db_settings, made, now=NOW)
    db_session.commit()
    later = NOW + timedelta(seconds=30)
    fail(db_session, db_settings, made, later)

    user_session, _ = attempt(db_session, db_settings, made, now=later)  # no delay: 1 failure

    assert user_session.user_id == made.user.id


def test_throttle_per_source_across_accounts(db_session: Session, tmp_path: Path) -> None:
    settings = Settings(
        environment=Environment.TEST, data_dir=tmp_path, login_failures_per_source_hour=5
    )
    made = make_user(db_session, settings)
    db_session.commit()
    for i in range(5):
        fail(db_session, settings, made, NOW, username=f"guess-{i}")

    with pytest.raises(Throttled) as caught:
        attempt(db_session, settings, made, now=NOW + timedelta(minutes=1))
    user_session, _ = attempt(db_session, settings, made, source="198.51.100.7", now=NOW)

    assert caught.value.scope == "source"
    assert 58 * 60 <= caught.value.retry_after <= 59 * 60
    assert user_session.user_id == made.user.id


def test_throttle_per_source_ends_after_the_window(db_session: Session, tmp_path: Path) -> None:
    settings = Settings(
        environment=Environment.TEST, data_dir=tmp_path, login_failures_per_source_hour=5
    )
    made = make_user(db_session, settings)
    db_session.commit()
    for i in range(5):
        fail(db_session, settings, made, NOW, username=f"guess-{i}")

    user_session, _ = attempt(db_session, settings, made, now=NOW + timedelta(hours=1, seconds=1))

    assert user_session.user_id == made.user.id


# --- client address -------------------------------------------------------------------------------


TRUSTED = ["10.0.0.0/8", "2001:db8:ffff::/48"]


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "expected"),
    [
        ("203.0.113.5", "198.51.100.1", [], "203.0.113.5"),  # no trusted proxies: header ignored
        ("203.0.113.5", "198.51.100.1", TRUSTED, "203.0.113.5"),  # peer is not a proxy
        ("10.0.0.1", None, TRUSTED, "10.0.0.1"),
        ("10.0.0.1", "198.51.100.1", TRUSTED, "198.51.100.1"),
        ("10.0.0.1", "6.6.6.6, 198.51.100.1", TRUSTED, "198.51.100.1"),  # left part is claimed
        ("10.0.0.1", "198.51.100.1, 10.0.0.9", TRUSTED, "198.51.100.1"),  # two proxies
        ("10.0.0.1", "10.0.0.7, 10.0.0.9", TRUSTED, "10.0.0.7"),  # all trusted: left-most
        ("10.0.0.1", "198.51.100.1, garbage", TRUSTED, "10.0.0.1"),  # malformed: stop
        ("2001:db8:ffff::1", "2001:db8:1::5", TRUSTED, "2001:db8:1::5"),
        ("::ffff:10.0.0.1", "198.51.100.1", TRUSTED, "198.51.100.1"),  # IPv4-mapped peer
        ("testclient", "198.51.100.1", TRUSTED, "testclient"),
    ],
)
def test_client_address(peer: str, header: str | None, trusted: list[str], expected: str) -> None:
    assert login.client_address(peer, header, trusted) == expected


def test_client_address_huge_header_bounded() -> None:
    header = ", ".join(["10.0.0.3"] * 100_000) + ", 198.51.100.1"

    assert login.client_address("10.0.0.1", header, TRUSTED) == "198.51.100.1"


def test_normalise_username_nfkc_casefold_strip() -> None:
    assert login.normalise_username("  \uff21lice\u00a0") == "alice"
    assert login.normalise_username("STRASSE") == login.normalise_username("straße")


def test_users_table_untouched_by_failed_logins(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings)
    db_session.commit()
    version = made.user.version

    fail(db_session, db_settings, made, NOW)

    assert db_session.get(User, made.user.id).version == version  # type: ignore[union-attr]
