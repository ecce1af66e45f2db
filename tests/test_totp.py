"""TOTP: seeds encrypted at rest, the accepted window, and single use (sequential and
concurrent, on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from factories import make_totp_token, make_user
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from orchestrator import totp
from orchestrator.config import Environment, Settings
from orchestrator.errors import Invalid
from orchestrator.models import TotpToken

NOW = datetime(2026, 11, 25, 12, 0, 10, tzinfo=UTC)  # 10 s into a 30 s step


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment=Environment.TEST, data_dir=tmp_path)


def test_encrypt_seed_round_trip(settings: Settings) -> None:
    seed = totp.new_software_seed()

    ciphertext = totp.encrypt_seed(settings, seed)

    assert seed.hex() not in ciphertext
    assert totp.decrypt_seed(settings, ciphertext) == seed


def test_decrypt_seed_other_key_refused(settings: Settings, tmp_path: Path) -> None:
    ciphertext = totp.encrypt_seed(settings, b"0123456789abcdefghij")
    other = Settings(
        environment=Environment.TEST, data_dir=tmp_path, secret_key=SecretStr("k" * 40)
    )

    with pytest.raises(Invalid, match="cannot be decrypted"):
        totp.decrypt_seed(other, ciphertext)


def test_encrypt_seed_prefers_seed_encryption_key(tmp_path: Path) -> None:
    base = {
        "environment": Environment.TEST,
        "data_dir": tmp_path,
        "secret_key": SecretStr("s" * 40),
    }
    with_seed_key = Settings(**base, seed_encryption_key=SecretStr("e" * 40))  # type: ignore[arg-type]
    without = Settings(**base)  # type: ignore[arg-type]

    ciphertext = totp.encrypt_seed(with_seed_key, b"0123456789abcdefghij")

    assert totp.decrypt_seed(with_seed_key, ciphertext) == b"0123456789abcdefghij"
    with pytest.raises(Invalid):
        totp.decrypt_seed(without, ciphertext)


def test_decrypt_seed_altered_ciphertext_refused(settings: Settings) -> None:
    ciphertext = totp.encrypt_seed(settings, b"0123456789abcdefghij")
    altered = ciphertext[:-6] + ("A" if ciphertext[-6] != "A" else "B") + ciphertext[-5:]

    with pytest.raises(Invalid):
        totp.decrypt_seed(settings, altered)


@pytest.mark.parametrize(
    ("steps", "accepted"),
    [(0, True), (-1, True), (-2, False), (1, False), (-10, False)],
)
def test_verify_code_window_is_current_and_one_before(
    db_session: Session, db_settings: Settings, steps: int, accepted: bool
) -> None:
    made = make_totp_token(db_session, db_settings)
    code = made.code(NOW, steps)

    step = totp.verify_code(db_settings, made.token, code, NOW)

    expected = totp.time_step(NOW, 30) + steps
    assert step == (expected if accepted else None)


def test_verify_code_no_drift_refuses_previous_step(db_session: Session, tmp_path: Path) -> None:
    strict = Settings(environment=Environment.TEST, data_dir=tmp_path, totp_drift_steps=0)
    made = make_totp_token(db_session, strict)

    assert totp.verify_code(strict, made.token, made.code(NOW, -1), NOW) is None
    assert totp.verify_code(strict, made.token, made.code(NOW), NOW) is not None


def test_verify_code_sha256_eight_digits_sixty_seconds(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_totp_token(db_session, db_settings, algorithm="SHA256", digits=8, period=60)
    code = made.code(NOW)

    assert len(code) == 8
    assert totp.verify_code(db_settings, made.token, code, NOW) == totp.time_step(NOW, 60)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "12345",
        "1234567",
        "12345a",
        " 12345",
        "١٢٣٤٥٦",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "123 456",
        "-12345",
    ],
)
def test_verify_code_malformed_refused(
    db_session: Session, db_settings: Settings, code: str
) -> None:
    made = make_totp_token(db_session, db_settings)

    assert totp.verify_code(db_settings, made.token, code, NOW) is None


def test_verify_code_used_step_refused(db_session: Session, db_settings: Settings) -> None:
    made = make_totp_token(db_session, db_settings)
    made.token.last_used_step = totp.time_step(NOW, 30)
    db_session.flush()

    assert totp.verify_code(db_settings, made.token, made.code(NOW), NOW) is None
    assert totp.verify_code(db_settings, made.token, made.code(NOW, -1), NOW) is None


def test_consume_step_twice_second_refused(db_session: Session, db_settings: Settings) -> None:
    made = make_totp_token(db_session, db_settings)
    step = totp.time_step(NOW, 30)

    first = totp.consume_step(db_session, made.token.id, step)
    second = totp.consume_step(db_session, made.token.id, step)

    assert (first, second) == (True, False)
    assert made.token.last_used_step == step


def test_consume_step_earlier_refused_later_accepted(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_totp_token(db_session, db_settings)
    step = totp.time_step(NOW, 30)
    totp.consume_step(db_session, made.token.id, step)

    assert not totp.consume_step(db_session, made.token.id, step - 1)
    assert totp.consume_step(db_session, made.token.id, step + 1)


def test_verify_then_consume_replayed_code_refused(
    db_session: Session, db_settings: Settings
) -> None:
    made = make_totp_token(db_session, db_settings)
    code = made.code(NOW)
    step = totp.verify_code(db_settings, made.token, code, NOW)
    assert step is not None
    assert totp.consume_step(db_session, made.token.id, step)

    later = NOW + timedelta(seconds=15)  # same code still inside its window

    assert totp.verify_code(db_settings, made.token, code, later) is None


def test_consume_step_concurrent_exactly_one_wins(
    isolated_engine: tuple[Settings, Engine],
) -> None:
    settings, engine = isolated_engine
    with Session(engine) as session:
        token_id = make_totp_token(session, settings).token.id
        session.commit()
    step = totp.time_step(NOW, 30)
    barrier = threading.Barrier(2)
    results: list[bool | str] = []

    def attempt() -> None:
        with Session(engine) as session:
            session.get(TotpToken, token_id)  # both read first, as a login does
            barrier.wait()
            try:
                won = totp.consume_step(session, token_id, step)
                session.commit()
                results.append(won)
            except Exception as exc:  # SQLite may report the loser as "database is locked"
                session.rollback()
                results.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results.count(True) == 1
    assert len(results) == 2
    with Session(engine) as session:
        assert session.get(TotpToken, token_id).last_used_step == step  # type: ignore[union-attr]


def test_provisioning_uri_carries_issuer_and_parameters() -> None:
    uri = totp.provisioning_uri(b"0123456789abcdefghij", "alice", "SHA256", 8, 60)

    assert uri.startswith("otpauth://totp/Kluis:alice?")
    assert "issuer=Kluis" in uri
    assert "digits=8" in uri
    assert "period=60" in uri
    assert "algorithm=SHA256" in uri


def test_make_user_code_matches_verify(db_session: Session, db_settings: Settings) -> None:
    made = make_user(db_session, db_settings)
    assert made.token is not None

    assert totp.verify_code(db_settings, made.token.token, made.code(NOW), NOW) is not None
